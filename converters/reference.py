"""The float reference every artifact is validated against, kept in ``out/reference/``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeship import _io
from edgeship._deps import tensorflow as _tf
from edgeship.errors import BadArtifactError
from edgeship.records import Artifact, Manifest, TensorSpec, verified_path

FOLDER = "reference"


def write(source: Any, out: Path) -> Artifact:
    """Copy or save ``source``'s float model into ``out/reference`` and describe it."""
    out.mkdir(parents=True, exist_ok=True)
    if source.kind == "onnx":
        path = out / FOLDER / "model.onnx"
        path.parent.mkdir(exist_ok=True)
        _io.write_bytes(path, source.onnx.read_bytes())
        fmt = "onnx"
    elif source.kind == "saved_model":
        path = out / FOLDER / "saved_model"
        path.parent.mkdir(exist_ok=True)
        if path.resolve() != Path(source.saved_model).resolve():
            with _io.staged(path, directory=True) as tmp:
                shutil.copytree(source.saved_model, tmp, dirs_exist_ok=True)
        fmt = "saved_model"
    else:
        from edgeship.trainers.saving import save_keras

        path = save_keras(source.float_keras(), out / FOLDER / "model.keras")
        fmt = "keras"
    specs = tuple(TensorSpec(name="input" if i == 0 else f"input_{i}", shape=(-1,) + tuple(shape), dtype=dtype)
                  for i, (shape, dtype) in enumerate(source.input_specs))
    return Artifact(
        name="reference", path=path.relative_to(out).as_posix(), format=fmt, precision="fp32",
        sha256=_io.sha256_path(path), size_bytes=_io.size_bytes(path), inputs=specs, outputs=(),
        source=source.origin, settings={"role": "float reference"},
    )


def predictor(folder: Path, manifest: Manifest, *, trust_code: bool = False) -> Callable[[Any], list[np.ndarray]]:
    """A function mapping a batch of inputs (one array, or one per input) to the reference
    model's outputs, one array per output in the model's order."""
    ref = manifest.reference
    if ref is None:
        raise BadArtifactError(f"{folder}/manifest.json names no float reference; convert again to write one")
    path = verified_path(folder, ref)
    if ref.format == "onnx":
        from edgeship.runtimes import load

        session = load(path)
        return lambda x: session.predict_outputs(x)
    if ref.format == "saved_model":
        tf = _tf()
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]

        def run(batch: np.ndarray) -> list[np.ndarray]:
            result = fn(tf.constant(batch))
            return [result[k].numpy() for k in sorted(result)]

        return lambda x: _batched(run, x)
    from edgeship.trainers.saving import load_keras

    model = load_keras(path, trust_code=trust_code)

    def predict(x: Any) -> list[np.ndarray]:
        out = model.predict(list(x) if isinstance(x, tuple) else x, batch_size=256, verbose=0)
        return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]

    return predict


def _batched(fn: Callable[[np.ndarray], list[np.ndarray]], x: np.ndarray, size: int = 256) -> list[np.ndarray]:
    parts = [fn(x[i : i + size]) for i in range(0, len(x), size)]
    return [np.concatenate(outputs) for outputs in zip(*parts)]
