"""The doctor on Core ML weight compression: per-op error by the numpy evaluator, ops left uncompressed.

tiny_cnn's 2-bit palettes (``coreml:pal2``) cost it about 7 points on digits (tolerances.yaml);
the doctor must find the ops whose palettes hurt, leave the fewest uncompressed (fp16 weights)
to come within 1 point on the validation split, write ``tiny_cnn.pal2-float.mlpackage``, and
report the uncompressed ops as read back from the package. About 40 s on 2 cores.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeship.doctor import diagnose, readback
from edgeship.runtimes.mil import weighted_ops
from edgeship.records import Manifest

MAX_DROP = 1.0
LAYERS = {"conv_1", "conv_2", "dense_1", "logits"}  # tiny_cnn's compute layers


@pytest.fixture(scope="module")
def pal2_dir(tmp_path_factory, float_model_dir, digits) -> Path:
    from edgeship.converters import convert

    out = tmp_path_factory.mktemp("coreml-pal2")
    convert(float_model_dir, ["coreml:pal2"], data=digits, out=out)
    return out


@pytest.fixture(scope="module")
def doctored(pal2_dir, tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("coreml-doctored") / "out"
    shutil.copytree(pal2_dir, folder)
    return folder, diagnose(folder, data=digits, max_drop=MAX_DROP, runs=5, progress=lambda *a: None)


def test_per_op_error_names_keras_layers_and_says_damage(doctored):
    _, report = doctored
    d = report.diagnosis("coreml:pal2")
    assert {layer.name for layer in d.layers} == LAYERS  # every compressed op, named by its Keras layer
    assert all(layer.sqnr_db < 25 for layer in d.layers)  # 2-bit palettes: measured 13-18 dB
    assert d.accuracy_delta_pts < -MAX_DROP
    kinds = [a.kind for a in d.advice]
    assert kinds[0] == "damage" and "compression flips" in d.advice[0].message
    assert "weights" in kinds and not {"outliers", "channel-outliers", "normalisation", "few-samples"} & set(kinds)
    assert "numpy ML Program evaluator" in d.analysed_with


def test_recovery_leaves_ops_uncompressed_and_reports_the_file(doctored, digits):
    import edgeship

    folder, report = doctored
    r = report.diagnosis("coreml:pal2").recovery
    assert r.within_drop and r.method == "float" and r.chosen_on == "val"
    assert r.steps[0].method == "compression" and not r.steps[0].within_drop  # the plain rebuild misses
    assert r.artifact.name == "coreml:pal2-float" and r.artifact.path == "tiny_cnn.pal2-float.mlpackage"
    written = folder / r.artifact.path
    assert written.is_dir() and Manifest.load(folder).get("coreml:pal2-float") == r.artifact
    held = readback.read(written, LAYERS)
    assert held.float_layers == r.float_layers == tuple(sorted(r.requested_float_layers))
    assert held.compute_ops == r.compute_ops == 4 and 0 < len(held.float_ops) < 4
    assert 1.0 < r.size_ratio < 1.3  # measured 1.05: the uncompressed ops are the small ones
    assert r.p50_ratio is None and "macOS" in r.note  # no Core ML runtime here: not timed
    # tried after: the same ops at 8-bit palettes, and the whole model as pal4; the smallest fitting one won
    eight, finer = (next(s for s in r.steps if s.method == m) for m in ("8bit", "precision"))
    assert eight.changes == {"eight_bit_layers": list(r.requested_float_layers)} and finer.changes == {"precision": "pal4"}
    assert all(not (s.within_drop and s.size_bytes < r.artifact.size_bytes) for s in (eight, finer))
    # the figures reported on test are what validate measures on the written package
    validated = edgeship.validate(folder, data=digits, artifacts=["coreml:pal2-float"], write_bundle=False)
    assert validated.entry("coreml:pal2-float").accuracy_delta_pts == pytest.approx(r.test.accuracy_delta_pts, abs=1e-6)


def test_convert_keeps_and_narrows_ops_by_name_and_records_the_file(pal2_dir, tmp_path, float_model_dir, digits):
    from edgeship.converters import convert
    from edgeship.errors import UnsupportedModelError

    ops = [op.name for op, _ in weighted_ops(_program(pal2_dir / "tiny_cnn.pal2.mlpackage"))]
    convert(float_model_dir, ["coreml:pal2"], data=digits, out=tmp_path,
            options={"coreml": {"keep": ops[:1], "eight_bit": ops[-1:]}})
    package = tmp_path / "tiny_cnn.pal2.mlpackage"
    compressed = {op.name: c for op, c in weighted_ops(_program(package))}
    assert compressed == {name: name != ops[0] for name in ops}
    assert readback.read(package, LAYERS).float_layers == ("conv_1",)
    luts = [op for op in _program(package).ops if op.type == "constexpr_lut_to_dense"]
    assert sorted(np.asarray(op.inputs["lut"][0].value).size for op in luts) == [4, 4, 256]  # logits: 8 bits
    settings = Manifest.load(tmp_path).get("coreml:pal2").settings
    assert settings["uncompressed_ops"] == settings["kept_ops"] == ops[:1]  # read back, and as asked
    assert (settings["compressed_ops"], settings["compute_ops"], settings["eight_bit_ops"]) == (3, 4, ops[-1:])
    with pytest.raises(UnsupportedModelError, match="no 8-bit form"):
        convert(float_model_dir, ["coreml:w8"], data=digits, out=tmp_path / "w8", options={"coreml": {"eight_bit": ops}})
    assert not (tmp_path / "w8" / "tiny_cnn.w8.mlpackage").exists()


def test_a_finer_uniform_precision_wins_when_it_is_smaller(pal2_dir, tmp_path, digits):
    folder = Path(shutil.copytree(pal2_dir, tmp_path / "out"))
    report = diagnose(folder, data=digits, max_drop=MAX_DROP, max_layers=0, runs=5, progress=lambda *a: None)
    r = report.diagnosis("coreml:pal2").recovery
    assert [s.method for s in r.steps] == ["compression", "precision"]  # no op may stay uncompressed
    assert r.within_drop and r.method == "precision" and "the whole model as pal4" in r.note
    assert r.artifact.name == "coreml:pal4" and r.artifact.path == "tiny_cnn.pal4.mlpackage"
    assert r.artifact.settings["compression"] == "4-bit k-means palettization"  # its own record, not pal2's
    assert r.float_layers == () and r.compute_ops == 4 and r.artifact.settings["compressed_ops"] == 4
    assert Manifest.load(folder).get("coreml:pal4") == r.artifact
    assert 1.2 < r.size_ratio < 1.8
    # again: the folder's coreml:pal4 is examined, and pal2's recovery points at it without writing it over
    again = diagnose(folder, data=digits, max_drop=MAX_DROP, max_layers=0, runs=5, progress=lambda *a: None)
    assert [d.artifact for d in again.artifacts] == ["coreml:pal2", "coreml:pal4"]
    r2 = again.diagnosis("coreml:pal2").recovery
    assert r2.artifact == Manifest.load(folder).get("coreml:pal4") == r.artifact  # same file, same record
    assert "already in the folder and was not written again" in r2.note


def test_a_package_the_evaluator_cannot_run_is_skipped_not_fatal(tmp_path):
    import edgeship
    from edgeship.errors import UnsupportedModelError

    sys.path.insert(0, str(Path(__file__).parent))
    import byom_models

    case = byom_models.token_ids(tmp_path)  # Embedding: Core ML's gather, which the numpy evaluator lacks
    out = tmp_path / "out"
    edgeship.convert(case.model, ["tflite:int8", "coreml:pal4"], data=case.data, out=out)
    report = diagnose(out, data=case.data, progress=lambda *a: None)
    assert [d.artifact for d in report.artifacts] == ["tflite:int8"]
    (skipped,) = report.skipped
    assert skipped.startswith("coreml:pal4: ") and "gather" in skipped
    with pytest.raises(UnsupportedModelError, match="gather"):  # asked for by name, it is an error
        diagnose(out, data=case.data, artifact="coreml:pal4", progress=lambda *a: None)


def test_generically_named_ops_are_named_by_their_layer():
    """coremltools may call a conv ``conv_0_cast_fp16`` (seen on a two-input model); its parameters
    and readers keep the layer's name."""
    from edgeship.doctor.coreml import layer_names
    from edgeship.runtimes.mil import Literal, Op, Program, TensorType

    f16 = TensorType("float16", (1, 4))
    const = lambda name: Op("const", name, {"val": (Literal(np.zeros(4, np.float16)),)}, ((name, f16),))  # noqa: E731
    ops = (const("w0"), const("model_c1_Conv2Dx_pad_type_0"), const("w1"),
           Op("conv", "conv_0_cast_fp16", {"x": ("img",), "weight": ("w0",), "pad_type": ("model_c1_Conv2Dx_pad_type_0",)},
              (("conv_0_cast_fp16", f16),)),
           Op("linear", "linear_3", {"x": ("conv_0_cast_fp16",), "weight": ("w1",)}, (("linear_3", f16),)),
           Op("relu", "model_d1_Relu_cast_fp16", {"x": ("linear_3",)}, (("model_d1_Relu_cast_fp16", f16),)))
    program = Program("CoreML7", (("img", f16),), ("model_d1_Relu_cast_fp16",), ops)
    assert layer_names(program, {"c1", "d1"}) == {"conv_0_cast_fp16": "c1", "linear_3": "d1"}  # by param, by reader
    assert layer_names(program, set()) == {"conv_0_cast_fp16": "conv_0_cast_fp16", "linear_3": "linear_3"}


def test_evaluator_runs_one_op_as_the_program_does(pal2_dir, digits):
    from edgeship.runtimes import mil
    from edgeship.runtimes.coreml import Evaluator

    package = mil.read(pal2_dir / "tiny_cnn.pal2.mlpackage")
    evaluator = Evaluator(package.program)
    values = evaluator.values({package.inputs[0].name: digits.x_test[:7].astype(np.float32)})
    for op in evaluator.ops:
        alone = evaluator.apply(op, values)
        for name, value in alone.items():
            np.testing.assert_array_equal(value, values[name])


def _program(path: Path):
    from edgeship.runtimes import mil

    return mil.read(path).program
