"""validate on folders that hold more than the happy path: an artifact the evaluator cannot run,
a gate with nothing evaluated, sessions that are closed, and what converters warn about."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest

from edgeship.converters import _notes
from edgeship.errors import AccuracyGateError, RuntimeFailure
from edgeship.records import Manifest, TensorSpec
from edgeship.runtimes import load
from edgeship.validation import validate


def _erf_artifact(folder: Path) -> None:
    """Add to ``folder``'s manifest a Core ML artifact whose op (erf) the numpy evaluator lacks."""
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb

    from edgeship.converters import _artifact

    program = mb.program(input_specs=[mb.TensorSpec(shape=(1, 8, 8, 1))],
                         opset_version=ct.target.iOS16)(lambda x: mb.erf(x=x))
    path = folder / "tiny_cnn.erf.mlpackage"
    ct.convert(program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
               minimum_deployment_target=ct.target.iOS16, skip_model_load=True).save(str(path))
    spec = TensorSpec(name="x", shape=(1, 8, 8, 1), dtype="float32")

    class Source:  # what _artifact.make reads of a source model
        origin, name = "a MIL program with erf", "tiny_cnn"

    artifact = _artifact.make(path, folder, fmt="coreml", precision="erf", source=Source, settings={},
                              inputs=(spec,), outputs=(spec,))
    Manifest.load(folder).with_artifact(artifact).save(folder)


@pytest.fixture()
def folder(quickstart_dir, tmp_path) -> Path:
    out = Path(shutil.copytree(quickstart_dir, tmp_path / "out"))
    _erf_artifact(out)
    return out


def test_an_artifact_the_runtime_cannot_take_does_not_abort_the_folder(folder, digits):
    report = validate(folder, data=digits, max_drop=1.0, write_bundle=False)
    skipped = report.entry("coreml:erf")
    assert skipped.validation is None and skipped.passed is None
    assert skipped.status.startswith("not evaluated:") and "erf" in skipped.status
    evaluated = [e for e in report.artifacts if e.validation is not None]
    assert {e.name for e in evaluated} == {"tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8", "coreml:fp16"}
    assert report.passed is True


def test_a_gate_with_nothing_evaluated_fails(folder, digits):
    manifest = Manifest.load(folder)
    Manifest(model=manifest.model, dataset=manifest.dataset, dataset_fingerprint=manifest.dataset_fingerprint,
             reference=manifest.reference, artifacts=(manifest.get("coreml:erf"),)).save(folder)
    with pytest.raises(AccuracyGateError, match=r"none of the 1 artifact\(s\) could be evaluated.*coreml:erf"):
        validate(folder, data=digits, max_drop=1.0, write_bundle=False)
    assert validate(folder, data=digits, write_bundle=False).passed is None  # no gate, nothing to fail


@pytest.mark.parametrize("name", ["tiny_cnn.int8.tflite", "tiny_cnn.int8.onnx", "tiny_cnn.fp16.mlpackage"])
def test_closing_a_session_releases_its_interpreter(quickstart_dir, name):
    x = np.zeros((1, 8, 8, 1), np.float32)
    with load(quickstart_dir / name) as session:
        held = session.interpreter if hasattr(session, "interpreter") else session.evaluator
        released = weakref.ref(held)
        session.run(x)
    del held
    gc.collect()
    assert released() is None, "the interpreter outlived close()"
    assert session.closed
    with pytest.raises(RuntimeFailure, match="session was closed; load the model again"):
        session.run(x)
    session.close()  # twice is harmless


def test_converter_warnings_logs_and_native_warnings_become_notes():
    from edgeship._deps import quiet_native

    with quiet_native(), _notes.collect() as notes:
        warnings.warn("op 'Erf' stays in float: no int8 kernel", UserWarning)
        warnings.warn("distutils Version classes are deprecated", DeprecationWarning)
        logging.getLogger("tf2onnx.tfonnx").warning("unsupported op Foo kept as a custom op")
        logging.getLogger("coremltools").warning("TensorFlow version 2.21.0 has not been tested with coremltools.")
        os.write(2, b"W0000 00:00:1.0 123 quantize.cc:88] layer conv_3 left in float32\n")
        os.write(2, b"fully_quantize: 0, inference_type: 6\n")
        assert notes == []  # filled when the block ends
    assert sorted(notes) == ["layer conv_3 left in float32", "op 'Erf' stays in float: no int8 kernel",
                             "tf2onnx.tfonnx: unsupported op Foo kept as a custom op"]
