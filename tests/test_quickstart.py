"""The quickstart: all five stages on built-in data, one table, nothing unmeasured shown."""

from __future__ import annotations

import json

import numpy as np

from edgeship.bundle import load as load_bundle
from edgeship.pipeline import QUICKSTART_TARGETS
from edgeship.records import Manifest, Report


def test_quickstart_writes_every_artifact_and_record(quickstart_dir):
    manifest = Manifest.load(quickstart_dir)
    assert [a.name for a in manifest.artifacts] == list(QUICKSTART_TARGETS)
    assert manifest.dataset == "digits" and len(manifest.dataset_fingerprint) == 64
    for artifact in manifest.artifacts:
        assert (quickstart_dir / artifact.path).exists()
    assert (quickstart_dir / "reference" / "model.keras").is_file()
    assert (quickstart_dir / "model" / "training.json").is_file()


def test_int8_artifacts_are_within_one_point_of_float(quickstart_dir):
    report = Report.load(quickstart_dir)
    assert report.reference_accuracy > 0.95
    int8 = [e for e in report.artifacts if e.precision == "int8"]
    assert {e.format for e in int8} == {"tflite", "onnx"}
    for entry in int8:
        assert entry.accuracy_delta_pts >= -1.0 and entry.passed is True, entry
        assert entry.validation.agreement > 0.97


def test_float_artifacts_reproduce_the_reference(quickstart_dir):
    report = Report.load(quickstart_dir)
    for name in ("tflite:fp32", "onnx:fp32"):
        entry = report.entry(name)
        assert entry.validation.max_abs_error < 1e-4 and entry.validation.agreement == 1.0


def test_runnable_artifacts_are_benchmarked_and_coreml_says_why_not(quickstart_dir):
    report = Report.load(quickstart_dir)
    for entry in report.artifacts:
        if entry.format in ("tflite", "onnx"):
            b = entry.benchmark
            assert b.count >= 50 and b.batch == 1 and 0 < b.p50_ms <= b.p90_ms <= b.p99_ms
    coreml = report.entry("coreml:fp16")
    if coreml.validation is None:  # no Core ML runtime or evaluator here: say so, show no figure
        assert "needs macOS" in coreml.status and coreml.benchmark is None
    else:
        assert coreml.benchmark is None  # a reference evaluator's latency is never device latency


def test_bundle_holds_inputs_labels_and_expected_outputs(quickstart_dir):
    manifest, (inputs,), labels = load_bundle(quickstart_dir / "bundle")  # one input, one file
    assert inputs.shape == (64, 8, 8, 1) and labels.shape == (64,)
    names = {e.name for e in manifest.artifacts}
    assert {"tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8"} <= names
    for entry in manifest.artifacts:
        expected = np.load(quickstart_dir / "bundle" / entry.expected)
        assert expected.shape == (64, 10) and entry.max_abs_error > 0
    # the tolerance a device gets, per format and precision (softmax outputs: magnitude <= 1)
    bases = {e.name: (e.max_abs_error, e.tolerance_basis) for e in manifest.artifacts}
    assert bases["tflite:int8"][1].startswith("one int8 step of the output (scale")
    assert bases["tflite:int8"][0] <= 1.01 / 256 + 1e-9  # an int8 softmax output steps by 1/256
    assert bases["onnx:int8"][1].startswith("one int8 step of the output range") and bases["onnx:int8"][0] < 1.01 / 255
    assert bases["tflite:fp32"][0] <= 1e-4 and "CPU architecture" in bases["tflite:fp32"][1]
    assert bases["coreml:fp16"][0] <= 2e-2 and "Neural Engine" in bases["coreml:fp16"][1]
    assert manifest.edgeship_version == __import__("edgeship").__version__


def test_cli_quickstart_prints_the_table(quickstart_dir, quickstart_output):
    for column in ("artifact", "size", "accuracy", "Δ pts", "p50"):
        assert column in quickstart_output
    for name in QUICKSTART_TARGETS:
        assert name in quickstart_output
    assert json.loads((quickstart_dir / "report.json").read_text())["passed"] is True
