"""Hostile model files: external data that leaves the folder, Keras Lambda layers."""

from __future__ import annotations

import numpy as np
import pytest

import edgeship
from edgeship.errors import BadArtifactError

onnx = pytest.importorskip("onnx")


def _model_with_external_weight(folder, location: str):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "link.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    path = _model_with_external_weight(folder, location)
    with pytest.raises(BadArtifactError, match=f"tensor 'w' keeps its data at '{location}', outside"):
        edgeship.load(path)


def test_external_data_beside_the_model_loads(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    session = edgeship.load(_model_with_external_weight(tmp_path, "weights.bin"))
    x = np.arange(4, dtype=np.float32)[None]
    np.testing.assert_array_equal(session.run({"x": x})["y"], x)


def _lambda_model():
    from edgeship._deps import keras as _keras

    keras = _keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layers_are_refused_unless_trusted(tmp_path, digits, suffix):
    from edgeship.trainers.saving import save_keras

    path = save_keras(_lambda_model(), tmp_path / f"model{suffix}")
    with pytest.raises(BadArtifactError, match=r"Lambda layer\(s\) \['doubler'\].*runs the Python code.*trust_code"):
        edgeship.convert(path, ["tflite:fp32"], data=digits, out=tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    if suffix == ".h5":  # .keras Lambda bytecode is refused by Keras' own safe mode as well
        manifest = edgeship.convert(path, ["tflite:fp32"], data=digits, out=tmp_path / "trusted", trust_code=True)
        assert manifest.get("tflite:fp32").size_bytes > 0
        # on the data convert ran it on, validate reads the float outputs convert stored: no code runs
        report = edgeship.validate(tmp_path / "trusted", data=digits, write_bundle=False)
        assert report.entry("tflite:fp32").validation.max_abs_error < 1e-4
        other = edgeship.load_dataset("digits", seed=7)  # other data: the reference itself must run
        with pytest.raises(BadArtifactError, match="Lambda"):
            edgeship.validate(tmp_path / "trusted", data=other)
        report = edgeship.validate(tmp_path / "trusted", data=other, trust_code=True, write_bundle=False)
        assert report.entry("tflite:fp32").validation.max_abs_error < 1e-4


def test_tampered_reference_is_refused(float_model_dir, tmp_path, digits):
    edgeship.convert(float_model_dir, ["tflite:fp32"], data=digits, out=tmp_path)
    reference = tmp_path / "reference" / "model.keras"
    original = reference.read_bytes()
    reference.write_bytes(original + b"\0")  # another size
    with pytest.raises(BadArtifactError, match="reference: model.keras holds .* bytes, but the manifest records"):
        edgeship.validate(tmp_path, data=digits)
    reference.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # the same size, other bytes
    with pytest.raises(BadArtifactError, match="reference: model.keras has sha256"):
        edgeship.validate(tmp_path, data=digits)
