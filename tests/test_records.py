"""The data model: JSON round trips, strict keys, schema versions, atomic writes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from edgeship import _io
from edgeship.errors import BadArtifactError, BadInputError
from edgeship.records import (
    SCHEMA_VERSION,
    AccuracyDelta,
    Artifact,
    BenchmarkResult,
    Gate,
    Manifest,
    Report,
    ReportEntry,
    TensorSpec,
    TrainingRecord,
)

SPEC = TensorSpec(name="input", shape=(-1, 8, 8, 1), dtype="int8", scale=0.0039, zero_point=-128)
ARTIFACT = Artifact(
    name="tflite:int8", path="m.int8.tflite", format="tflite", precision="int8", sha256="ab" * 32,
    size_bytes=1234, inputs=(SPEC,), outputs=(TensorSpec("out", (-1, 10), "int8", 0.0039, -128),),
    source="model", settings={"qat": True, "calibration_samples": 200},
)
DELTA = AccuracyDelta(
    samples=10, accuracy=0.9, reference_accuracy=0.95, accuracy_delta_pts=-5.0, agreement=0.9,
    max_abs_error=0.1, mean_abs_error=0.01, sqnr_db=30.0, cosine_similarity=0.99,
    per_class={"f1": (1.0, 0.5)}, confusion_matrix=((5, 0), (1, 4)), roc_auc=0.97, passed=False,
    failures=("accuracy dropped 5.00 points (max 1)",),
)
BENCH = BenchmarkResult(
    runtime="litert", runtime_version="2.3.0", threads=1, batch=1, init_ms=1.0, first_ms=0.5,
    warmup_mean_ms=0.02, count=200, mean_ms=0.02, std_ms=0.001, min_ms=0.01, max_ms=0.1, p5_ms=0.015,
    p50_ms=0.02, p90_ms=0.03, p95_ms=0.04, p99_ms=0.05, throughput=50000.0, peak_rss_bytes=10,
    rss_growth_bytes=0, model_size_bytes=1234, env={"cpu": "x"},
)


@pytest.mark.parametrize("record", [SPEC, ARTIFACT, DELTA, BENCH, Gate(1.0, 0.98)])
def test_round_trip_through_json(record):
    text = json.dumps(record.to_dict())
    assert type(record).from_dict(json.loads(text)) == record


def test_manifest_and_report_round_trip(tmp_path):
    manifest = Manifest(model="m", dataset="digits", dataset_fingerprint="f", reference=ARTIFACT, artifacts=(ARTIFACT,))
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path) == manifest
    entry = ReportEntry(name="tflite:int8", format="tflite", precision="int8", path="m", size_bytes=1,
                        validation=DELTA, benchmark=BENCH)
    missing = ReportEntry(name="coreml:fp16", format="coreml", precision="fp16", path="c", size_bytes=2,
                          status="not run: needs macOS")
    report = Report(model="m", dataset="digits", gate=Gate(max_drop=1.0), passed=False, artifacts=(entry, missing))
    report.save(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    # accuracy figures sit flat in the artifact object; unmeasured ones are null, not invented
    assert data["artifacts"][0]["accuracy_delta_pts"] == -5.0 and data["artifacts"][0]["benchmark"]["p50_ms"] == 0.02
    assert data["artifacts"][1]["accuracy"] is None and data["artifacts"][1]["benchmark"] is None
    assert Report.load(tmp_path) == report
    assert report.failed == (entry,)


def test_unknown_keys_are_rejected():
    data = ARTIFACT.to_dict() | {"colour": "blue"}
    with pytest.raises(BadInputError, match="unknown keys \\['colour'\\]"):
        Artifact.from_dict(data)
    nested = ARTIFACT.to_dict()
    nested["inputs"][0]["bits"] = 8
    with pytest.raises(BadInputError, match="bits"):
        Artifact.from_dict(nested)


def test_wrong_types_and_missing_keys_are_rejected():
    with pytest.raises(BadInputError, match="size_bytes"):
        Artifact.from_dict(ARTIFACT.to_dict() | {"size_bytes": "big"})
    data = ARTIFACT.to_dict()
    del data["sha256"]
    with pytest.raises(BadInputError, match="'sha256' is missing"):
        Artifact.from_dict(data)


def test_newer_schema_version_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(BadArtifactError, match="newer than this edgeship.*upgrade edgeship"):
        Manifest.load(tmp_path)


def test_an_older_device_is_told_which_edgeship_reads_the_bundle(tmp_path):
    from edgeship import __version__
    from edgeship.bundle import BundleManifest

    newer = BundleManifest.newest_schema + 1
    (tmp_path / "bundle.json").write_text(json.dumps({"schema_version": newer, "edgeship_version": "7.2.0"}))
    with pytest.raises(BadArtifactError) as caught:
        BundleManifest.load(tmp_path)
    assert f"newer than this edgeship {__version__} understands" in str(caught.value)
    assert "written by edgeship 7.2.0: pip install 'edgeship>=7.2.0'" in str(caught.value)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"schema_version": "1"}', '{"schema_version": 1, "artifacts": [1]}'])
def test_corrupt_files_raise_bad_artifact(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(BadArtifactError, match="manifest.json"):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("content", ['{"a": ' * 5000 + "1" + "}" * 5000, "[" * 200000 + "]" * 200000])
def test_deeply_nested_json_is_a_bad_artifact_not_a_recursion_error(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(BadArtifactError, match="nested deeper than 64 levels"):
        Manifest.load(tmp_path)


def test_a_recorded_file_must_have_its_size_and_its_hash(tmp_path):
    from edgeship.records import verified_path

    path = tmp_path / "m.int8.tflite"
    path.write_bytes(b"x" * 1234)
    right = dataclasses.replace(ARTIFACT, sha256=_io.sha256_path(path))
    assert verified_path(tmp_path, right) == path
    with pytest.raises(BadArtifactError, match="holds 1234 bytes, but the manifest records 1000"):
        verified_path(tmp_path, dataclasses.replace(right, size_bytes=1000))
    with pytest.raises(BadArtifactError, match="has sha256 .* but the manifest records abababab"):
        verified_path(tmp_path, ARTIFACT)


def test_training_record_round_trip(tmp_path):
    record = TrainingRecord(model="tiny_cnn", dataset="digits", history={"loss": (1.0, 0.5)}, test_accuracy=0.98,
                            sparsity={"conv2d": 0.75}, files={"model": "model.keras"})
    record.save(tmp_path)
    assert TrainingRecord.load(tmp_path) == record


def test_gate_checks_drop_and_agreement():
    gate = Gate(max_drop=1.0, min_agreement=0.95)
    assert gate.check(DELTA) == ("accuracy dropped 5.00 points (max 1)", "agreement 0.9000 is below 0.95")
    assert Gate(max_drop=10).check(DELTA) == ()
    assert not Gate().active
    with pytest.raises(BadInputError):
        Gate(min_agreement=1.5)
    with pytest.raises(BadInputError):
        Gate(max_drop=-1)


def test_a_report_entry_reads_its_figures_from_its_validation():
    entry = ReportEntry(name="tflite:int8", format="tflite", precision="int8", path="m.tflite", size_bytes=1,
                        validation=DELTA)
    assert (entry.accuracy, entry.accuracy_delta_pts) == (0.9, -5.0)
    assert entry.accuracy_delta_pts == pytest.approx((DELTA.accuracy - DELTA.reference_accuracy) * 100)
    row = entry.to_dict()
    assert (row["accuracy"], row["accuracy_delta_pts"], row["agreement"]) == (0.9, -5.0, 0.9)


def test_gate_bounds_hold_at_the_bound_and_fail_just_past_it():
    gate = Gate(max_drop=1.0, min_agreement=0.95)
    assert gate.check(dataclasses.replace(DELTA, accuracy_delta_pts=-1.0, agreement=0.95)) == ()
    failures = gate.check(dataclasses.replace(DELTA, accuracy_delta_pts=-1.01, agreement=0.9499))
    assert failures == ("accuracy dropped 1.01 points (max 1)", "agreement 0.9499 is below 0.95")


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    _io.write_json(target, {"v": 1})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        _io.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_staged_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "m.mlpackage"
    with _io.staged(target, directory=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with _io.staged(target, directory=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("converter died")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]
