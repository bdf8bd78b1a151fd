"""Converters: every format x precision on two zoo models, checked numerically against float."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import edgeship
from edgeship.converters import FORMATS, convert, parse_targets
from edgeship.errors import AccuracyGateError, BadArtifactError, BadInputError, UnsupportedModelError
from edgeship.records import Manifest, Report

from conftest import MATRIX_MODELS as MODELS, MATRIX_TARGETS as RUNNABLE, TOLERANCES


@pytest.fixture(scope="module")
def matrix(conversion_matrix) -> dict[str, tuple[Path, Report]]:
    return conversion_matrix


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("target", RUNNABLE)
def test_artifact_matches_float_within_tolerance(matrix, model, target):
    entry = matrix[model][1].entry(target)
    tol = TOLERANCES[model][target]
    v = entry.validation
    assert v is not None, entry.status
    assert v.max_abs_error <= tol.get("max_abs", 1.0), v
    assert v.agreement >= tol["min_agreement"], v
    assert v.accuracy_delta_pts >= -tol["max_drop"], v
    if "min_drop" in tol:  # a precision that breaks by design: the break is there
        assert v.accuracy_delta_pts <= -tol["min_drop"], v


def test_every_target_has_a_bound_that_can_fail():
    assert set(TOLERANCES) >= set(MODELS) and all(set(TOLERANCES[m]) == set(RUNNABLE) for m in MODELS)
    for model, rows in TOLERANCES.items():
        for target, tol in rows.items():
            assert tol.get("max_abs", 0.0) < 1.0, (model, target)  # softmax outputs never differ by 1 or more
            assert "max_abs" in tol or "min_drop" in tol, (model, target)


@pytest.mark.parametrize("model", MODELS)
def test_coreml_artifacts_are_saved_as_ml_programs(matrix, model):
    ct = pytest.importorskip("coremltools")
    folder = matrix[model][0]
    manifest = Manifest.load(folder)
    sizes = {}
    for target in [t for t in RUNNABLE if t.startswith("coreml:")]:
        artifact = manifest.get(target)
        spec = ct.utils.load_spec(str(folder / artifact.path))
        assert spec.WhichOneof("Type") == "mlProgram"
        assert artifact.inputs[0].name == "input" and artifact.inputs[0].shape[1:] == (8, 8, 1)
        # per-block scales and grouped palettes are iOS18 ops; everything else runs from iOS16
        ios18 = target in ("coreml:w8-block", "coreml:w4-block", "coreml:pal4-grouped")
        assert artifact.settings["minimum_deployment_target"] == ("iOS18" if ios18 else "iOS16"), target
        sizes[target] = artifact.size_bytes
    # compression really shrinks the weights: fp32 > fp16 > w8 > pal4 > pal2
    assert sizes["coreml:fp32"] > sizes["coreml:fp16"] > sizes["coreml:w8"] > sizes["coreml:pal4"] > sizes["coreml:pal2"]
    assert sizes["coreml:fp16"] > sizes["coreml:w8-block"] > sizes["coreml:w4-block"]
    assert sizes["coreml:w8"] > sizes["coreml:pal4-grouped"]


def test_quantized_files_are_smaller(matrix):
    manifest = Manifest.load(matrix["tiny_cnn"][0])
    size = {a.name: a.size_bytes for a in manifest.artifacts}
    assert size["tflite:int8"] < size["tflite:fp16"] < size["tflite:fp32"]
    assert size["onnx:int8"] < size["onnx:fp32"] / 2
    assert manifest.get("onnx:int8").settings["format"] == "QDQ"
    assert isinstance(manifest.get("onnx:int8").settings["reduce_range"], bool)
    assert manifest.get("onnx:fp32").settings["opset"] <= 18


def test_qat_int8_artifacts_are_within_one_point(quickstart_dir):
    manifest = Manifest.load(quickstart_dir)
    assert manifest.get("onnx:int8").settings["route"].startswith("QAT model -> int8 TFLite")
    report = Report.load(quickstart_dir)
    for name in ("tflite:int8", "onnx:int8"):
        assert report.entry(name).accuracy_delta_pts >= -1.0


def test_damaged_artifact_fails_the_gate(damaged_dir, tmp_path, digits):
    folder = shutil.copytree(damaged_dir, tmp_path / "damaged")
    with pytest.raises(AccuracyGateError, match="tflite:int8-float-io") as info:
        edgeship.validate(folder, data=digits, max_drop=1.0)
    report = info.value.report
    assert {e.name for e in report.failed} == {"tflite:int8-float-io", "onnx:int8"}
    assert report.entry("tflite:int8-float-io").accuracy < 0.5
    assert Report.load(folder).passed is False


@pytest.mark.parametrize("calibration", ["missing", "empty", "shape", "nan", "text"])
def test_bad_calibration_is_refused_and_writes_nothing(float_model_dir, tmp_path, calibration):
    samples = {
        "missing": None,
        "empty": np.zeros((0, 8, 8, 1), np.float32),
        "shape": np.zeros((10, 8, 8), np.float32),
        "nan": np.full((10, 8, 8, 1), np.nan, np.float32),
        "text": np.array([["a"]]),
    }[calibration]
    with pytest.raises(BadInputError, match="calibration"):
        convert(float_model_dir, ["tflite:int8"], calibration=samples, out=tmp_path)
    assert not list(tmp_path.glob("*.tflite")) and not list(tmp_path.glob(".*partial*"))


def test_one_failed_target_never_stops_the_others(float_model_dir, tmp_path, digits):
    """A target that fails (here an opset tf2onnx cannot write) is said at the end, after every
    other target was made and recorded; nothing of the failed one is left behind."""
    from edgeship.errors import ConversionError

    with pytest.raises(ConversionError) as info:
        convert(float_model_dir, ["tflite:fp32", "onnx:fp32", "tflite:int8"], data=digits, out=tmp_path,
                options={"onnx:fp32": {"opset": 99}})
    message = str(info.value)
    assert message.startswith(f"made tflite:fp32, tflite:int8 in {tmp_path}; onnx:fp32 failed: opset must be")
    assert [a.name for a in Manifest.load(tmp_path).artifacts] == ["tflite:fp32", "tflite:int8"]
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*partial*"))
    # every target asked for fails the same way: that error's own kind, each target said
    with pytest.raises(BadInputError, match="tflite:int8 failed: .*calibration.*; onnx:int8 failed: .*calibration"):
        convert(float_model_dir, ["tflite:int8", "onnx:int8"], out=tmp_path / "none")


def _weights_as_inputs(path: Path) -> None:
    """What tf2onnx did to a third-party SavedModel: two weight tensors left as graph inputs."""
    import onnx

    model = onnx.load(str(path))
    moved = [init for init in model.graph.initializer if len(init.dims) >= 2][:2]
    for init in moved:
        model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        model.graph.initializer.remove(init)
    path.write_bytes(model.SerializeToString())


def test_every_artifact_is_checked_against_its_source_before_it_is_recorded(float_model_dir, quickstart_dir,
                                                                             tmp_path, digits, monkeypatch):
    """A file whose interface or outputs differ from the source is not recorded, not left behind,
    and said; the other targets are made."""
    from edgeship.converters import onnx as onnx_format, tflite as tflite_format
    from edgeship.errors import ConversionError

    real_onnx, real_tflite = onnx_format.convert, tflite_format.convert

    def onnx_with_weight_inputs(source, out, **kw):
        artifact = real_onnx(source, out, **kw)
        _weights_as_inputs(out / artifact.path)
        return artifact

    def tflite_of_another_model(source, out, **kw):  # the same interface, other weights
        artifact = real_tflite(source, out, **kw)
        if kw["precision"] == "fp32":
            shutil.copyfile(quickstart_dir / "tiny_cnn.fp32.tflite", out / artifact.path)
        return artifact

    monkeypatch.setattr(onnx_format, "convert", onnx_with_weight_inputs)
    monkeypatch.setattr(tflite_format, "convert", tflite_of_another_model)
    with pytest.raises(ConversionError) as info:
        convert(float_model_dir, ["tflite:fp32", "tflite:int8", "onnx:fp32"], data=digits, out=tmp_path)
    message = str(info.value)
    assert "tflite:fp32: the file written does not match tiny_cnn, so it was not recorded: output" in message
    assert "from the float model on 8 test samples (a fp32 file stays within" in message
    assert "onnx:fp32: the file written does not match tiny_cnn, so it was not recorded: 2 extra input(s) that look like weights" in message
    assert [a.name for a in Manifest.load(tmp_path).artifacts] == ["tflite:int8"]
    assert sorted(p.name for p in tmp_path.glob("[!.]*.*")) == ["manifest.json", "tiny_cnn.int8.tflite"]


def test_dataset_that_does_not_fit_the_model_is_refused(float_model_dir, tmp_path):
    with pytest.raises(BadInputError, match=r"inputs of shape \(8, 8, 1\).*'iris'"):
        convert(float_model_dir, ["tflite:fp32"], data="iris", out=tmp_path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", bytes(range(256)) * 10])
def test_corrupt_model_file_is_refused(tmp_path, content):
    bad = tmp_path / "model.keras"
    bad.write_bytes(content)
    with pytest.raises(BadArtifactError, match="model.keras"):
        convert(bad, ["tflite:fp32"], out=tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unknown_targets_list_the_valid_ones():
    with pytest.raises(BadInputError, match="edgeship converts to"):
        parse_targets("tensorrt:int8")
    with pytest.raises(BadInputError, match="choose one of"):
        parse_targets("onnx:int4")
    assert parse_targets("tflite:fp32, onnx ,tflite:fp32") == [("tflite", "fp32"), ("onnx", "fp32")]
    assert set(FORMATS) == {"tflite", "onnx", "coreml"}


def test_unsupported_op_is_named(tmp_path, digits):
    from edgeship._deps import keras as _keras, tensorflow as _tf

    keras, tf = _keras(), _tf()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    # tf.math.bessel_i0e has no TFLite builtin kernel
    x = keras.layers.Lambda(lambda t: tf.math.special.bessel_i0e(t))(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    with pytest.raises(UnsupportedModelError, match=r"tf\.BesselI0e.*No other format takes this model"):
        convert(model, ["tflite:int8"], data=digits, out=tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"ONNX has no operator for the TensorFlow op\(s\) BesselI0e"):
        convert(model, ["onnx:fp32"], data=digits, out=tmp_path)
    assert not list(tmp_path.glob("*.tflite")) and not list(tmp_path.glob("*.onnx"))
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_saved_model_and_keras3_convert_through_the_same_api(float_model_dir, tmp_path, digits):
    saved = float_model_dir / "saved_model"
    manifest = convert(saved, ["tflite:int8", "onnx:fp32", "coreml:fp16"], data=digits, out=tmp_path / "sm")
    assert manifest.reference.format == "saved_model"
    report = edgeship.validate(tmp_path / "sm", data=digits, max_drop=1.0, write_bundle=False)
    assert report.entry("onnx:fp32").validation.max_abs_error < 1e-4

    import keras  # Keras 3, as installed beside tf_keras

    k3 = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(10, activation="softmax")])
    k3.compile("adam", "sparse_categorical_crossentropy")
    k3.fit(digits.x_train, digits.y_train, epochs=3, verbose=0)
    manifest = convert(k3, ["tflite:fp32", "tflite:int8", "onnx:fp32"], data=digits, out=tmp_path / "k3")
    assert manifest.reference.format == "saved_model"
    report = edgeship.validate(tmp_path / "k3", data=digits, write_bundle=False)
    assert report.entry("tflite:fp32").validation.max_abs_error < 1e-4
    assert report.entry("onnx:fp32").validation.max_abs_error < 1e-4
    assert report.entry("tflite:int8").accuracy_delta_pts > -2.0


def test_inputs_whose_names_sort_against_their_order_are_calibrated_and_diagnosed_by_name(tmp_path):
    # TFLite orders a graph's inputs by name: "aa_side" comes before "zz_image", the model's first input
    import tf_keras as k

    k.utils.set_random_seed(0)  # the random weights decide how close int8 comes: the same ones every run
    image, side = k.Input((8, 8, 1), name="zz_image"), k.Input((2,), name="aa_side")
    joined = k.layers.Concatenate()([k.layers.Flatten()(image), side])
    model = k.Model([image, side], k.layers.Dense(10, activation="softmax")(joined))
    rng = np.random.default_rng(0)
    x = [rng.random((120, 8, 8, 1), dtype=np.float32), rng.random((120, 2), dtype=np.float32) * 50]
    labels = model.predict(x, verbose=0).argmax(1)
    np.savez(tmp_path / "two.npz", x_train_0=x[0][:80], x_train_1=x[1][:80], y_train=labels[:80],
             x_test_0=x[0][80:], x_test_1=x[1][80:], y_test=labels[80:])
    manifest = convert(model, ["tflite:int8"], data=tmp_path / "two.npz", out=tmp_path / "out")
    session = edgeship.load(tmp_path / "out" / manifest.get("tflite:int8").path)
    got, want = session.predict_outputs(x)[0], model.predict(x, verbose=0)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95 and np.abs(got - want).max() < 0.1
    diagnosis = edgeship.diagnose(tmp_path / "out", samples=40).artifacts[0]
    assert diagnosis.layers and diagnosis.agreement >= 0.95
