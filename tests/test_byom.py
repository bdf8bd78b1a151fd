"""Bring your own model: fourteen models built the way their owners build them, each through
convert -> validate (without --data) -> doctor -> bench -> a local device run, in one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeship as es
from edgeship.errors import UnsupportedModelError

sys.path.insert(0, str(Path(__file__).parent))
import byom_models  # noqa: E402

CASES = [b.__name__ for b in byom_models.BUILDERS]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[byom_models.Case, Path, str]]:
    """Every case built, converted (refusals recorded) and validated once; read-only."""
    work = tmp_path_factory.mktemp("byom")
    done = {}
    for build in byom_models.BUILDERS:
        case = build(work)
        out = work / f"out-{case.name}"
        refusal = ""
        try:
            es.convert(case.model, case.targets, data=case.data, preprocess=case.preprocess, out=out)
        except UnsupportedModelError as exc:
            refusal = str(exc)
        done[case.name] = (case, out, refusal)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_convert_makes_every_format_that_takes_the_model_and_names_the_rest(converted, name):
    case, out, refusal = converted[name]
    made = {a.name for a in es.Manifest.load(out).artifacts} if (out / "manifest.json").exists() else set()
    assert made == set(case.targets) - set(case.refused), refusal
    for target, words in case.refused.items():
        named = target in refusal or set(case.refused) == set(case.targets)  # refused whole: before any format
        assert named and words in refusal, refusal
    assert "\n" not in refusal


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_validate_finds_the_data_and_scores_the_task(converted, name):
    from sklearn import metrics as sk

    case, out, _ = converted[name]
    report = es.validate(out)  # no data: the manifest knows the file and its preprocessing
    assert report.task == case.task and not report.notes
    if case.task in ("multiclass", "binary"):
        assert report.reference_accuracy >= 0.8  # the data reached the float model as it was trained
    from edgeship.validation import dataset_for

    data = dataset_for(out, es.Manifest.load(out), None)  # as validate found it: the recorded file and options
    assert data.path == str(Path(case.data).resolve()) or data.name == case.data
    labels = data.labels("test")
    for entry in report.artifacts:
        v = entry.validation
        if entry.name in case.not_evaluated:
            assert v is None and entry.status.startswith("not evaluated")
            continue
        assert v is not None and v.task == case.task and v.headline is not None, (entry.name, entry.status)
        assert abs(v.headline.delta) <= 5.0, (entry.name, v.headline)  # a healthy conversion of each kind
        outputs = es.load(out / entry.path).predict_outputs(data.inputs("test"))
        outputs.sort(key=lambda o: -o.shape[-1])  # TFLite orders outputs by name; two_outputs' class head is widest
        _check_against_sklearn(sk, case.task, v, outputs, labels, data)


def _check_against_sklearn(sk, task, v, outputs, labels, data) -> None:
    first = outputs[0]
    if task == "multiclass":
        assert v.accuracy == pytest.approx(sk.accuracy_score(labels[0], first.argmax(1)))
        f1 = sk.f1_score(labels[0], first.argmax(1), average=None, labels=range(first.shape[1]), zero_division=0)
        np.testing.assert_allclose(v.per_class["f1"], f1, atol=1e-9)
    elif task == "binary":
        assert v.accuracy == pytest.approx(sk.accuracy_score(labels[0], first.reshape(-1) > 0.5))
        assert v.roc_auc == pytest.approx(sk.roc_auc_score(labels[0], first.reshape(-1)))
    elif task == "multilabel":
        assert v.accuracy == pytest.approx(np.mean((first > 0.5) == labels[0]))
        f1 = sk.f1_score(labels[0], first > 0.5, average=None, zero_division=0)
        np.testing.assert_allclose(v.per_class["f1"], f1, atol=1e-9)
    elif task == "regression":
        assert v.headline.value == pytest.approx(sk.mean_absolute_error(labels[0], first.reshape(-1)))
        assert v.accuracy is None and v.agreement is None
    elif task == "autoencoder":
        error = np.square(first - data.inputs("test")[0]).mean(1)
        assert v.roc_auc == pytest.approx(sk.roc_auc_score(labels[0], error))
        assert v.headline.name == "anomaly ROC AUC" and v.headline.value >= 0.9


@pytest.mark.slow
def test_two_outputs_are_scored_per_output(converted):
    _, out, _ = converted["two_outputs"]
    report = json.loads((out / "report.json").read_text())
    entry = next(e for e in report["artifacts"] if e["name"] == "tflite:int8")
    assert [o["task"] for o in entry["outputs"]] == ["multiclass", "binary"]
    assert entry["accuracy"] == entry["outputs"][0]["accuracy"] and entry["outputs"][1]["roc_auc"] > 0.9
    assert {"accuracy", "accuracy_delta_pts", "agreement", "sqnr_db", "headline", "task"} <= set(entry)


@pytest.mark.slow
def test_a_model_fed_the_wrong_preprocessing_scores_near_chance_and_the_report_says_so(converted, tmp_path):
    case, _, _ = converted["nested_rescaling"]  # takes 0..255 pixels; the default for uint8 images is x/255
    out = tmp_path / "wrong"
    es.convert(case.model, "tflite:int8", data=case.data, out=out)
    report = es.validate(out)
    assert report.reference_accuracy < 0.2
    assert report.notes and "check the preprocessing first" in report.notes[0] and "--preprocess none" in report.notes[0]


@pytest.mark.slow
def test_the_preprocessing_and_classes_travel_inside_each_artifact(converted):
    from edgeship.converters import _metadata

    case, out, _ = converted["nchw_onnx"]
    artifact = es.Manifest.load(out).get("onnx:int8")
    meta = _metadata.read(out / artifact.path, "onnx")
    assert meta["preprocess"] == "scale=0.0625,layout=nchw" and meta["classes"] == [str(i) for i in range(10)]
    case, out, _ = converted["multilabel"]
    for artifact in es.Manifest.load(out).artifacts:
        assert _metadata.read(out / artifact.path, artifact.format)["classes"] == ["a", "b", "c", "d"]


@pytest.mark.slow
def test_changed_data_is_refused_and_given_data_is_used(converted, tmp_path):
    import shutil

    case, out, _ = converted["regression"]
    data = Path(case.data)
    moved = tmp_path / "out"
    shutil.copytree(out, moved)
    arrays = dict(np.load(data))
    arrays["y_test"] = arrays["y_test"] + 1
    np.savez(tmp_path / "changed.npz", **arrays)
    manifest = es.Manifest.load(moved)
    import dataclasses

    dataclasses.replace(manifest, data_path=str(tmp_path / "changed.npz")).save(moved)
    with pytest.raises(es.BadArtifactError, match="changed since the artifacts were converted"):
        es.validate(moved)
    report = es.validate(moved, data=str(tmp_path / "changed.npz"))  # asked for: used, with a warning
    assert report.dataset == "changed"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["autoencoder", "regression", "two_outputs", "nchw_onnx", "token_ids",
                                  "nested_rescaling", "two_inputs"])
def test_doctor_bench_and_device_run_take_every_task(converted, name):
    from edgeship import bundle
    from edgeship.runtimes.targets import run_targets

    case, out, _ = converted[name]
    report = es.validate(out)  # writes the bundle the device run takes
    validated = {e.name: e for e in report.artifacts}
    doctor = es.diagnose(out, max_drop=5.0, samples=50, max_layers=2, runs=20)
    assert doctor.artifacts and all(d.headline is not None and d.layers for d in doctor.artifacts)
    for d in doctor.artifacts:  # the doctor scores the artifact on the same split as validate
        assert d.accuracy == validated[d.artifact].accuracy and d.samples == 50, d.artifact
        # within the drop where it is reported (measured: within a point everywhere): nothing to recover
        assert d.headline.delta >= -5.0 and d.recovery.within_drop and d.recovery.artifact is None, d.recovery
    if name == "autoencoder":  # anomaly labels mark the test split only: val cannot be judged in AUC points
        assert {d.recovery.chosen_on for d in doctor.artifacts} == {"test"}
        assert all("the validation split is judged by" in d.recovery.note for d in doctor.artifacts)
    int8 = next(a for a in es.Manifest.load(out).artifacts if a.precision == "int8")
    assert es.benchmark(out / int8.path, runs=20, warmup=2).p50_ms > 0
    [device] = run_targets(["local"], out / "bundle", runs=5, warmup=1)
    assert not device.error and device.passed is True, device
    manifest, inputs, _ = bundle.load(out / "bundle")
    assert len(inputs) == len(device.inputs) == (2 if name == "two_inputs" else 1)
    host = {e.name: e for e in manifest.artifacts}
    for check in device.artifacts:  # the device ran every input: its figures are the host's
        assert check.outputs_ok and check.samples == len(inputs[0]), check
        assert (check.benchmark is None) == check.runtime.startswith("mil-numpy"), check  # no reference timings
        assert check.accuracy == host[check.name].host_accuracy, check


def _plain_tflite(model_path: Path, calibration: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """A float and an int8 (int8 I/O) .tflite made with the plain TFLiteConverter, as vendors make them."""
    from edgeship._deps import keras, tensorflow

    tf, model = tensorflow(), keras().models.load_model(model_path)
    float_path, int8_path = folder / "vendor.float.tflite", folder / "vendor.int8.tflite"
    float_path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    int8_path.write_bytes(converter.convert())
    return float_path, int8_path


@pytest.mark.slow
def test_third_party_files_are_measured_against_their_float_model(converted, tmp_path):
    import subprocess

    from edgeship.validation import validate_files

    case, _, _ = converted["multiclass_cnn"]
    data = es.load_dataset(case.data, preprocess=case.preprocess)
    float_path, int8_path = _plain_tflite(case.model, data.calibration(100).astype(np.float32), tmp_path)
    report = validate_files(float_path, [int8_path], data=case.data, preprocess=case.preprocess, max_drop=2.0)
    [entry] = report.artifacts
    assert entry.validation.task == "multiclass" and report.reference_accuracy >= 0.8
    assert abs(entry.validation.headline.delta) <= 2.0 and entry.validation.agreement >= 0.95
    result = subprocess.run([sys.executable, "-m", "edgeship.cli", "validate", "--reference", str(float_path),
                             str(int8_path), "--data", case.data, "--preprocess", case.preprocess, "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["artifacts"][0]["accuracy"] == pytest.approx(entry.accuracy)


@pytest.mark.slow
def test_the_cli_validates_without_data_and_refuses_in_one_line(converted, tmp_path):
    import subprocess

    cli = [sys.executable, "-m", "edgeship.cli"]
    _, out, _ = converted["binary_sigmoid"]
    checked = subprocess.run(cli + ["validate", str(out), "--max-drop", "2"], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0 and "binary" in checked.stdout and "accuracy" in checked.stdout, checked.stdout
    case, _, _ = converted["nchw_onnx"]
    refused = subprocess.run(cli + ["convert", str(case.model), "--to", "onnx:dynamic,tflite:int8", "--data", case.data,
                                    "--preprocess", case.preprocess, "--out", str(tmp_path / "refused")],
                             capture_output=True, text=True, timeout=300)
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 1 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "made onnx:dynamic" in lines[0] and "refused tflite:int8" in lines[0] and "ONNX model" in lines[0]
    assert (tmp_path / "refused" / "nchw.dynamic.onnx").exists()  # the format that takes it was still made


@pytest.mark.slow
def test_two_inputs_reach_every_format_in_their_own_order(converted):
    case, out, _ = converted["two_inputs"]
    for artifact in es.Manifest.load(out).artifacts:
        shapes = sorted(tuple(spec.shape[1:]) for spec in artifact.inputs)
        assert shapes == [(2,), (8, 8, 1)], (artifact.name, artifact.inputs)



@pytest.mark.slow
def test_a_two_input_bundle_carries_both_inputs_and_an_older_reader_is_told_why(converted, tmp_path):
    import shutil
    import subprocess

    from edgeship import _io, bundle

    _, out, _ = converted["two_inputs"]
    es.validate(out)
    folder = tmp_path / "bundle"
    shutil.copytree(out / "bundle", folder)
    doc = json.loads((folder / "bundle.json").read_text())
    assert doc["inputs"] == ["inputs.npy", "inputs_1.npy"] and doc["schema_version"] == bundle.MULTI_INPUT_SCHEMA
    manifest, (image, side), labels = bundle.load(folder)
    assert image.shape == (64, 8, 8, 1) and side.shape == (64, 2) and len(labels) == 64
    proc = subprocess.run([sys.executable, "-m", "pytest", "device_tests", "--bundle", str(folder), "-q",
                           "-p", "no:cacheprovider", "--runs", "5"], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=300)
    # every artifact's outputs and accuracy on both inputs (Core ML's latency is skipped off macOS)
    assert proc.returncode == 0 and f"{1 + 3 * len(manifest.artifacts) - 1} passed" in proc.stdout, proc.stdout[-2000:]
    side_file = folder / "inputs_1.npy"
    np.save(side_file, side[:10])  # a second input that lost samples, its checksum updated to match
    doc["files"]["inputs_1.npy"] = _io.sha256_path(side_file)
    (folder / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(es.BadArtifactError, match=r"input files hold \[64, 10\] samples"):
        bundle.load(folder)


# ---------------------------------------------------------------- preprocessing on the device

def _replayed(out: Path) -> tuple[es.bundle.BundleManifest, np.ndarray, dict]:
    """validate's bundle of ``out`` (written again), its raw inputs and a local device run's report."""
    from edgeship.runtimes.targets import run_targets

    es.validate(out)
    manifest, inputs, _ = es.bundle.load(out / "bundle")
    (report,) = run_targets(["local"], out / "bundle", runs=0)
    return manifest, inputs[0], report.to_dict()


@pytest.mark.slow
def test_a_mean_std_model_gets_raw_pixels_and_the_device_applies_the_recorded_step(converted, tmp_path):
    case, _, _ = converted["multiclass_cnn"]  # trained on x/16; (x - 0.5)/16 is the same model, shifted
    out = tmp_path / "meanstd"
    es.convert(case.model, ["tflite:int8", "onnx:int8", "coreml:fp16"], data=case.data,
               preprocess="mean=0.5,std=16", out=out)  # fmt: skip
    manifest, raw, report = _replayed(out)
    assert manifest.schema_version == es.bundle.RAW_INPUT_SCHEMA and manifest.raw_inputs
    assert raw.dtype == np.uint8 and raw.max() == 16  # as the owner keeps them: 0..16, not scaled
    assert report["passed"] is True and report["preprocessed_here"].startswith("mean=0.5,std=16.0 (- mean (0.5,)")
    assert [a["agreement"] for a in report["artifacts"]] == [1.0, 1.0, 1.0]
    for artifact in es.Manifest.load(out).artifacts:
        session = es.load(out / artifact.path)
        assert session.metadata["preprocess"] == "mean=0.5,std=16.0" and "preprocessing" not in session.metadata
        by_hand = session.predict((raw.astype(np.float32) - np.float32(0.5)) / np.float32(16))
        np.testing.assert_array_equal(session.predict(raw, preprocess=True), by_hand)


@pytest.mark.slow
def test_a_model_that_takes_0_255_pixels_gets_them_as_stored_on_the_device(converted, tmp_path):
    import shutil

    case, out, _ = converted["nested_rescaling"]  # a Rescaling layer inside: --preprocess none
    shutil.copytree(out, tmp_path / "out")
    manifest, raw, report = _replayed(tmp_path / "out")
    assert manifest.raw_inputs is False and manifest.preprocess == "none" and raw.dtype == np.uint8
    assert raw.max() > 200 and report["passed"] is True and report["preprocessed_here"] == ""
    session = es.load(tmp_path / "out" / es.Manifest.load(out).get("tflite:int8").path)
    assert session.preprocess.identity
    np.testing.assert_array_equal(session.predict(raw, preprocess=True), session.predict(raw))


@pytest.mark.slow
def test_an_nchw_onnx_model_gets_channels_last_pixels_and_the_device_transposes(converted, tmp_path):
    import shutil

    case, out, _ = converted["nchw_onnx"]
    shutil.copytree(out, tmp_path / "out")
    manifest, raw, report = _replayed(tmp_path / "out")
    assert manifest.raw_inputs and raw.shape[1:] == (8, 8, 1) and raw.dtype == np.uint8  # stored: N, H, W, C
    session = es.load(tmp_path / "out" / es.Manifest.load(out).get("onnx:int8").path)
    assert session.inputs[0].shape[1:] == (1, 8, 8) and session.preprocess.layout == "nchw"
    assert report["passed"] is True and "channels-last -> channels-first" in report["preprocessed_here"]
    assert all(a["status"] == "ok" and a["agreement"] == 1.0 for a in report["artifacts"])


@pytest.mark.slow
def test_a_bundle_whose_artifact_records_another_preprocessing_fails_that_artifact(converted, tmp_path):
    import shutil

    from edgeship.runtimes.targets import run_targets

    case, out, _ = converted["nchw_onnx"]
    shutil.copytree(out, tmp_path / "out")
    es.validate(tmp_path / "out")
    folder = tmp_path / "out" / "bundle"
    data = json.loads((folder / "bundle.json").read_text())
    data["preprocess"] = "unit,layout=nchw"  # the bundle's raw inputs made for another spec
    (folder / "bundle.json").write_text(json.dumps(data))
    (report,) = run_targets(["local"], folder, runs=0)
    first = report.artifacts[0]
    assert report.passed is False and first.status == "failed"
    assert "records the preprocessing 'scale=0.0625,layout=nchw', but the bundle's raw inputs were made for " \
           "'scale=0.00392156862745098,layout=nchw': the bundle was built for other artifacts" in first.reason


@pytest.mark.slow
@pytest.mark.parametrize("name", ["multiclass_cnn", "nchw_onnx", "two_inputs", "token_ids"])
def test_bundles_replay_in_the_browser_as_on_the_host(converted, name, tmp_path):
    """Raw 0..16 pixels scaled in the page (and moved channels-first for the NCHW file), two inputs
    fed by name, integer ids: each in LiteRT.js or onnxruntime-web, against this host's outputs."""
    import shutil

    from edgeship.errors import MissingDependencyError
    from edgeship.runtimes import _browser
    from edgeship.runtimes.targets import run_targets

    try:
        _browser.find_chromium()
        _browser.setup()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    case, out, _ = converted[name]
    shutil.copytree(out, tmp_path / "out")
    es.validate(tmp_path / "out")
    manifest = es.bundle.BundleManifest.load(tmp_path / "out" / "bundle")
    (report,) = run_targets(["browser"], tmp_path / "out" / "bundle", runs=5)
    ran = [a for a in report.artifacts if a.browser_p50_ms is not None]
    assert report.passed is True and ran, (report.error, [(a.name, a.status, a.reason) for a in report.artifacts])
    assert all(a.status == "ok" and a.agreement in (None, 1.0) for a in ran), [(a.name, a.status) for a in ran]
    assert bool(report.preprocessed_here) == manifest.raw_inputs and len(report.inputs) == len(manifest.input_files)
