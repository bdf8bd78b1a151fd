"""A toy format as a third party would add it: a float MLP stored as ``.npz`` weights, run by numpy.

tests/test_plugins.py copies this file into a temporary folder as ``edgeship_toy_npz.py`` beside a
``.dist-info`` whose entry_points.txt holds the one registry line::

    [edgeship.formats]
    npz = edgeship_toy_npz:FORMAT

so every edgeship process that can import it (the CLI, ``device run --target local``'s child) finds
the format. It uses only edgeship's public contracts (``edgeship.formats``, ``Session``) and the
helpers a converter module uses to write and describe a file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeship import _io
from edgeship.converters import _artifact
from edgeship.errors import BadArtifactError, UnsupportedModelError
from edgeship.formats import Format, Runtime
from edgeship.records import Artifact, TensorSpec
from edgeship.runtimes import Session

FORMAT = Format(name="npz", suffix=".npz", label="NumPy weights", converter=__name__,
                runtimes=(Runtime("numpy-mlp", __name__),), color="#7c3aed")
PRECISIONS = {"fp32": "float32 weights, a dense-layer forward pass in numpy"}
CHECK_TOLERANCE = {"fp32": 1e-4}
_ACTIVATIONS = ("linear", "relu", "softmax")


def convert(source: Any, out: Path, *, precision: str, calibration: Any = None, **options: Any) -> Artifact:
    """Write the Dense layers of a Keras MLP (Flatten, Dense, Dropout) as arrays in ``.npz``."""
    model = source.float_keras()
    if model is None:
        raise UnsupportedModelError(f"npz takes Keras models; {source.name} is a {source.kind} model")
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "Flatten", "Dropout"):
            continue
        activation = getattr(getattr(layer, "activation", None), "__name__", "")
        if kind != "Dense" or activation not in _ACTIVATIONS:
            raise UnsupportedModelError(f"npz stores Dense layers only; {source.name} has {layer.name} ({kind})")
        weights, bias = layer.get_weights()
        arrays[f"w{len(layers)}"], arrays[f"b{len(layers)}"] = weights.astype(np.float32), bias.astype(np.float32)
        layers.append(activation)
    arrays["layers"] = np.array(json.dumps({"activations": layers, "input_shape": list(source.input_shape)}))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = out / _artifact.file_name(source, precision, FORMAT.suffix)
    with _io.staged(path) as tmp:
        _io.write_bytes(tmp, buffer.getvalue())
        return _artifact.make(tmp, out, final=path, fmt=FORMAT.name, precision=precision, source=source,
                              settings={"layers": len(layers)})


class NumpyMLPSession(Session):
    runtime = "numpy-mlp"
    runtime_version = np.__version__

    def __init__(self, path: Path, weights: list[tuple[np.ndarray, np.ndarray, str]], shape: list[int]) -> None:
        outputs = weights[-1][0].shape[1]
        super().__init__(path, [TensorSpec(name="input", shape=(-1, *shape), dtype="float32")],
                         [TensorSpec(name="output", shape=(-1, outputs), dtype="float32")])
        self._weights = weights

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        x = arrays[0].reshape(len(arrays[0]), -1)
        for w, b, activation in self._weights:
            x = x @ w + b
            if activation == "relu":
                x = np.maximum(x, 0)
            elif activation == "softmax":
                x = np.exp(x - x.max(axis=1, keepdims=True))
                x = x / x.sum(axis=1, keepdims=True)
        return [x.astype(np.float32)]

    def _release(self) -> None:
        self._weights = []


def load(path: Path, *, threads: int | None = None) -> Session:
    try:
        with np.load(path, allow_pickle=False) as archive:
            plan = json.loads(str(archive["layers"]))
            weights = [(archive[f"w{i}"], archive[f"b{i}"], a) for i, a in enumerate(plan["activations"])]
    except Exception as exc:  # any damage: a clear error, not a traceback
        raise BadArtifactError(f"{path.name} is not a toy npz model ({type(exc).__name__}: {exc})") from exc
    return NumpyMLPSession(path, weights, plan["input_shape"])
