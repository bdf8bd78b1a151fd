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
