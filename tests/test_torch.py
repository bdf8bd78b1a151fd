"""PyTorch models in: a trained torch ResNet-8 converted to TFLite, ONNX and Core ML, validated without torch.

The model is edgeship's own torch zoo ResNet-8 (plain ``torch.nn``), trained a few epochs on the
digits in NCHW, once per module. Figures measured when this was written (2 cores): 97.5 % test
accuracy; fp32 files within 1.2e-6 of torch, Core ML fp16 within 1e-3, int8 agreeing with float on
every test sample (benchmarks/torch_vs_keras.py prints the whole table).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeship
from edgeship.errors import BadArtifactError, BadInputError, UnsupportedModelError

torch = pytest.importorskip("torch", reason="the [torch] extra is not installed")

EDGESHIP = [sys.executable, "-m", "edgeship.cli"]
TARGETS = "tflite:fp32,tflite:fp16,tflite:int8,tflite:int8-float-io,onnx:fp32,onnx:int8,coreml:fp16,coreml:w8"


@pytest.fixture(scope="module")
def nchw_digits():
    return edgeship.load_dataset("digits", preprocess="layout=nchw")


@pytest.fixture(scope="module")
def resnet8(nchw_digits):
    from edgeship.trainers.torch_zoo import build, fit

    return fit(build("resnet8", nchw_digits), nchw_digits, epochs=4)


@pytest.fixture(scope="module")
def converted(resnet8, nchw_digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch-out")
    edgeship.convert(resnet8, TARGETS, data=nchw_digits, out=out)
    return out


def test_the_zoo_resnet8_learns_the_digits(resnet8, nchw_digits):
    with torch.no_grad():
        predicted = resnet8(torch.from_numpy(np.array(nchw_digits.x_test))).argmax(1).numpy()
    assert np.mean(predicted == nchw_digits.y_test) >= 0.95


def test_every_format_is_made_from_a_torch_module_and_says_which_exporter(converted):
    manifest = edgeship.Manifest.load(converted)
    assert manifest.reference.format == "torch" and (converted / manifest.reference.path).name == "model.pt2"
    assert [a.name for a in manifest.artifacts] == TARGETS.split(",")
    exporters = {a.name: a.settings["exporter"] for a in manifest.artifacts}
    assert exporters["tflite:int8"].startswith("litert-torch 0.10")
    assert exporters["onnx:fp32"].startswith("torch.onnx dynamo (torch 2.13")
    assert "coremltools' PyTorch frontend" in exporters["coreml:fp16"]
    int8 = manifest.get("tflite:int8")  # ai-edge-quantizer on litert-torch's float file: int8 in and out
    assert int8.settings["quantizer"].startswith("ai-edge-quantizer") and int8.settings["calibration_samples"] == 200
    assert int8.inputs[0].dtype == "int8" and int8.outputs[0].dtype == "int8"
    assert list((converted / "reference" / "outputs").glob("*.npz"))  # torch's outputs, stored by convert


def test_validate_runs_every_file_against_torch_without_importing_torch(converted):
    code = (
        "import sys, json, edgeship; "
        f"r = edgeship.validate({str(converted)!r}, write_bundle=False); "
        "print(json.dumps({e.name: [e.validation.max_abs_error, e.validation.agreement] for e in r.artifacts})); "
        "print('torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    figures, torch_imported = run.stdout.strip().splitlines()[-2:]
    found = json.loads(figures)
    assert torch_imported == "False"
    assert found["tflite:fp32"][0] < 1e-5 and found["onnx:fp32"][0] < 1e-5
    assert found["coreml:fp16"][0] < 5e-3 and found["tflite:fp16"][0] < 5e-3
    assert found["tflite:int8"][1] >= 0.97 and found["onnx:int8"][1] >= 0.97 and found["tflite:int8-float-io"][1] >= 0.97


def test_a_pt2_file_converts_validates_and_benches_from_the_cli(resnet8, nchw_digits, tmp_path):
    example = torch.from_numpy(np.array(nchw_digits.x_test[:2]))
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(resnet8, (example,), dynamic_shapes=({0: batch},)), tmp_path / "net.pt2")
    out = tmp_path / "out"
    made = subprocess.run(
        [*EDGESHIP, "--quiet", "convert", str(tmp_path / "net.pt2"), "--to", "tflite:int8,onnx:int8,coreml:w8",
         "--data", "digits", "--preprocess", "layout=nchw", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    assert "Traceback" not in made.stderr
    assert sorted(a["name"] for a in json.loads(made.stdout)["artifacts"]) == ["coreml:w8", "onnx:int8", "tflite:int8"]
    checked = subprocess.run([*EDGESHIP, "--quiet", "validate", str(out), "--json"], capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert checked.returncode == 0, checked.stderr[-3000:]
    rows = {e["name"]: e for e in json.loads(checked.stdout)["artifacts"]}
    assert all(r["status"] == "ok" and r["agreement"] >= 0.95 for r in rows.values()), rows
    timed = subprocess.run([*EDGESHIP, "--quiet", "bench", str(out / "net.int8.tflite"), "--runs", "20",
                            "--min-seconds", "0", "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert timed.returncode == 0 and json.loads(timed.stdout)["p50_ms"] > 0, timed.stderr[-2000:]
    every = subprocess.run([*EDGESHIP, "--quiet", "bench", str(out), "--runs", "5", "--min-seconds", "0", "--json"],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert every.returncode == 0, every.stderr[-2000:]  # the folder stands for its artifacts, interleaved
    rows = json.loads(every.stdout)
    assert sorted(Path(r["model"]).name for r in rows) == ["net.int8.onnx", "net.int8.tflite", "net.w8.mlpackage"]
    assert all(r["p50_ms"] > 0 for r in rows)


def test_a_module_in_training_mode_is_refused(resnet8, nchw_digits, tmp_path):
    resnet8.train()
    try:
        with pytest.raises(BadInputError, match=r"in training mode .*model\.eval\(\)"):
            edgeship.convert(resnet8, "onnx:fp32", data=nchw_digits, out=tmp_path)
    finally:
        resnet8.eval()
    assert not (tmp_path / "manifest.json").exists()


def test_a_torch_model_without_examples_or_data_is_refused(resnet8, tmp_path):
    with pytest.raises(BadInputError, match="example inputs"):
        edgeship.convert(resnet8, "onnx:fp32", out=tmp_path)


def test_examples_the_model_does_not_take_are_refused(resnet8, tmp_path):
    with pytest.raises(BadInputError, match=r"does not run on the example inputs of shapes \[\(1, 3, 8, 8\)\]"):
        edgeship.convert(resnet8, "onnx:fp32", example=np.zeros((1, 3, 8, 8), np.float32), out=tmp_path)


def test_a_corrupt_pt2_is_a_bad_artifact(tmp_path):
    (tmp_path / "broken.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BadArtifactError, match="torch.export.load"):
        edgeship.convert(tmp_path / "broken.pt2", "onnx:fp32", data="digits", out=tmp_path / "out")


def test_a_precision_not_made_from_torch_is_refused_and_the_others_named(resnet8, nchw_digits, tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"tflite:int16x8 is not made from PyTorch models yet.*tflite:fp16"):
        edgeship.convert(resnet8, "tflite:int16x8", data=nchw_digits, out=tmp_path)


def test_tflite_fp16_from_torch_stores_conv_and_linear_weights_as_fp16(converted):
    manifest = edgeship.Manifest.load(converted)
    fp16, fp32 = manifest.get("tflite:fp16"), manifest.get("tflite:fp32")
    assert fp16.settings["weights"].startswith("fp16") and fp16.settings["quantizer"].startswith("ai-edge-quantizer")
    assert fp16.size_bytes < 0.6 * fp32.size_bytes  # measured 0.55: the conv and linear weights halved


def test_the_doctor_names_a_torch_models_layers_by_module_path(converted, nchw_digits):
    report = edgeship.diagnose(converted, data=nchw_digits, artifact="onnx:int8", samples=60)
    layers = {layer.name for layer in report.artifacts[0].layers}
    assert {"stem.0", "layer1.0.conv1", "layer2.0.conv2", "layer3.0.shortcut.0", "fc"} <= layers, sorted(layers)
    assert "torch.onnx dynamo" in report.artifacts[0].analysed_with


def test_the_doctor_compares_a_torch_tflite_layer_by_layer_by_module_path(converted, nchw_digits):
    report = edgeship.diagnose(converted, data=nchw_digits, samples=60)
    assert [a.artifact for a in report.artifacts] == ["tflite:int8", "tflite:int8-float-io", "onnx:int8", "coreml:w8"]
    assert not report.skipped
    coreml = {layer.name for layer in report.artifacts[-1].layers}  # matched in order, checked by weight shape
    assert coreml == {"stem.0", *(f"layer{i}.0.conv{j}" for i in (1, 2, 3) for j in (1, 2)),
                      "layer2.0.shortcut.0", "layer3.0.shortcut.0", "fc"}  # fmt: skip
    tflite = report.artifacts[0]
    layers = {layer.name: layer for layer in tflite.layers}
    assert {"stem.0", "layer1.0.conv1", "layer2.0.conv2", "layer3.0.shortcut.0", "layer2.0", "fc"} <= set(layers)
    assert layers["layer1.0.conv1"].readers == ("layer1.0.conv2",)
    assert all(layer.model_sqnr_db is not None and layer.sqnr_db > 20 for layer in tflite.layers)  # a model int8 takes
    assert "litert-torch's float file" in tflite.analysed_with


@pytest.fixture(scope="module")
def outlier_pt2(resnet8, tmp_path_factory) -> Path:
    """The trained ResNet-8 with two channels of layer2.0's first conv scaled up 1000x (its batch norm)
    and the next conv's weights for them down as much: the same function in float, an int8 collapse."""
    import copy

    net = copy.deepcopy(resnet8)
    with torch.no_grad():
        block = net.layer2[0]
        for c in (0, 1):
            block.bn1.weight[c] *= 1000
            block.bn1.bias[c] *= 1000
            block.conv2.weight[:, c] /= 1000
    path = tmp_path_factory.mktemp("outlier") / "outlier.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},)), path)
    return path


def test_the_doctor_recovers_a_collapsed_torch_tflite_for_camera_frames_from_the_cli(outlier_pt2, tmp_path):
    out = tmp_path / "out"
    made = subprocess.run(
        [*EDGESHIP, "--quiet", "convert", str(outlier_pt2), "--to", "tflite:int8", "--layout", "nhwc",
         "--data", "digits", "--preprocess", "layout=nchw", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    doctor = subprocess.run([*EDGESHIP, "--quiet", "doctor", str(out), "--max-drop", "1", "--json"],
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert doctor.returncode == 0 and "Traceback" not in doctor.stderr, doctor.stderr[-3000:]
    found = json.loads(doctor.stdout)["artifacts"][0]
    assert found["accuracy_delta_pts"] < -10  # measured -17.0: the outlier channels crush the others
    assert found["layers"][0]["name"] == "layer2.0.conv1"  # the scaled conv (+ batch norm + ReLU), worst
    recovery = found["recovery"]
    assert recovery["within_drop"] and recovery["test"]["accuracy_delta_pts"] > -1.5, recovery
    assert "equalization" not in json.dumps(recovery["steps"])  # Keras weights only: not offered here
    manifest = edgeship.Manifest.load(out)
    written = manifest.artifacts[-1]
    assert written.name.startswith("tflite:int8-") and written.settings["layout"] == "nhwc"
    checked = edgeship.validate(out, data=edgeship.load_dataset("digits", preprocess="layout=nchw"))
    assert checked.entry(written.name).validation.agreement >= 0.97


def test_layout_nhwc_makes_a_tflite_for_camera_frames_and_every_stage_feeds_it_its_own_layout(
    resnet8, nchw_digits, tmp_path
):
    out = tmp_path / "out"
    manifest = edgeship.convert(
        resnet8, "tflite:int8,onnx:fp32", data=nchw_digits, out=out, options={"tflite": {"layout": "nhwc"}}
    )
    tflite, onnx = manifest.get("tflite:int8"), manifest.get("onnx:fp32")
    assert tflite.inputs[0].shape == (1, 8, 8, 1) and tflite.settings["layout"] == "nhwc"
    assert tuple(onnx.inputs[0].shape[1:]) == (1, 8, 8) and "layout" not in onnx.settings
    report = edgeship.validate(out, data=nchw_digits)  # the same NCHW data, transposed for the NHWC file
    assert report.entry("tflite:int8").validation.agreement >= 0.97
    device = subprocess.run([*EDGESHIP, "--quiet", "device", "run", "--target", "local", "--bundle", str(out / "bundle"),
                             "--runs", "3", "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert device.returncode == 0, device.stderr[-2000:]
    assert all(a["outputs_ok"] for a in json.loads(device.stdout)["artifacts"])


def test_layout_nchw_is_refused_for_a_keras_model(float_model_dir, tmp_path):
    with pytest.raises(UnsupportedModelError, match="images are NHWC already"):
        edgeship.convert(float_model_dir, "tflite:fp32", data="digits", out=tmp_path,
                         options={"tflite": {"layout": "nchw"}})  # fmt: skip


def test_a_two_output_model_and_a_token_model_convert_to_every_format_asked(tmp_path, nchw_digits):
    nn = torch.nn
    torch.manual_seed(0)

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.classes, self.score = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(256, 10), nn.Linear(256, 1)

        def forward(self, x):
            h = torch.relu(self.conv(x)).flatten(1)
            return torch.softmax(self.classes(h), -1), torch.sigmoid(self.score(h))

    manifest = edgeship.convert(TwoHeads().eval(), "tflite:fp32,onnx:fp32,coreml:fp16", data=nchw_digits,
                                out=tmp_path / "two")  # fmt: skip
    assert all(len(a.outputs) == 2 for a in manifest.artifacts)

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(50, 8), nn.Linear(8, 3)

        def forward(self, ids):
            return torch.softmax(self.head(self.embed(ids).mean(1)), -1)

    ids = np.random.default_rng(0).integers(0, 50, (300, 6))  # int64, as numpy and torch keep ids
    np.savez(tmp_path / "tokens.npz", x_train=ids[:240], y_train=ids[:240, 0] % 3, x_test=ids[240:],
             y_test=ids[240:, 0] % 3)  # fmt: skip
    model = Tokens().eval()
    manifest = edgeship.convert(model, "tflite:fp32,onnx:fp32", data=tmp_path / "tokens.npz", out=tmp_path / "tok")
    tflite = manifest.get("tflite:fp32")
    assert tflite.inputs[0].dtype == "int32" and any("int32 where the PyTorch model takes int64" in n for n in tflite.notes)
    with edgeship.load(tmp_path / "tok" / tflite.path) as session:  # int64 ids go in as int32 where they fit
        with torch.no_grad():
            want = model(torch.from_numpy(ids[240:])).numpy()
        np.testing.assert_allclose(session.predict(ids[240:]), want, atol=1e-5)
        with pytest.raises(BadInputError, match="which do not fit"):
            session.predict(np.full((1, 6), 2**40, np.int64))


def test_a_program_exported_with_a_fixed_batch_is_converted_and_diagnosed(resnet8, nchw_digits, tmp_path):
    program = torch.export.export(resnet8, (torch.from_numpy(np.array(nchw_digits.x_test[:1])),))  # batch 1, fixed
    manifest = edgeship.convert(program, "onnx:int8", data=nchw_digits, out=tmp_path)
    assert manifest.get("onnx:int8").inputs[0].shape[0] == 1
    report = edgeship.diagnose(tmp_path, data=nchw_digits, samples=30)  # run one sample at a time, as the file takes
    assert report.artifacts[0].samples == 30 and "layer1.0.conv1" in {layer.name for layer in report.artifacts[0].layers}
