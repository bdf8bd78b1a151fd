"""TFLite artifacts through LiteRT (ai-edge-litert), falling back to tflite_runtime, then tf.lite."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import BadArtifactError, MissingDependencyError, RuntimeFailure
from edgeship.records import TensorSpec
from edgeship.runtimes._session import Session

log = logging.getLogger(__name__)

# (module holding Interpreter, name reported as the runtime); tried in this order.
_INTERPRETERS = (
    ("ai_edge_litert.interpreter", "litert"),
    ("tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow.lite", "tf.lite"),
)


def _interpreter_class() -> tuple[type, str, str]:
    errors = []
    for module_name, label in _INTERPRETERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        top = importlib.import_module(module_name.split(".")[0])
        version = getattr(top, "__version__", "")
        if label != "litert":
            log.warning("ai-edge-litert is not installed; running .tflite with %s", label)
        return module.Interpreter, label, version
    raise MissingDependencyError(
        "running a .tflite model needs LiteRT; none of "
        f"{[m for m, _ in _INTERPRETERS]} imports ({'; '.join(errors)}). "
        "Install it with: pip install 'edgeship[litert]'"
    )


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]).kind in "iu" and scale > 0
    return TensorSpec(
        name=detail["name"],
        shape=tuple(int(d) for d in detail.get("shape_signature", detail["shape"])),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


def check_magic(path: Path) -> None:
    """Refuse files that are not TFLite flatbuffers before an interpreter parses them."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise BadArtifactError(
            f"{path} is not a TFLite model (no 'TFL3' identifier in its header; received {head!r}); "
            "re-export it or check the file was copied whole"
        )


class LiteRTSession(Session):
    def __init__(self, path: Path, *, threads: int | None = None, **_: Any) -> None:
        check_magic(path)
        interpreter_cls, self.runtime, self.runtime_version = _interpreter_class()
        try:
            kwargs = {"num_threads": threads} if threads else {}
            self._interp = interpreter_cls(model_path=str(path), **kwargs)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BadArtifactError(f"{path} could not be loaded by {self.runtime}: {exc}") from exc
        ins = self._interp.get_input_details()
        outs = self._interp.get_output_details()
        super().__init__(path, [_spec(d) for d in ins], [_spec(d) for d in outs])
        self.dynamic_batch = all(d["shape_signature"][0] == -1 for d in ins if len(d["shape"]))
        self._in_index = [d["index"] for d in ins]
        self._out_index = [d["index"] for d in outs]
        self._batch = [int(d["shape"][0]) if len(d["shape"]) else None for d in ins]
        self.threads = threads

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        interp = self._interp
        self._resize(arrays)
        for index, array in zip(self._in_index, arrays):
            interp.set_tensor(index, array)
        try:
            interp.invoke()
        except (RuntimeError, ValueError) as exc:
            raise RuntimeFailure(f"{self.runtime} failed to run {self.path.name}: {exc}") from exc
        return [interp.get_tensor(i) for i in self._out_index]

    def _resize(self, arrays: list[np.ndarray]) -> None:
        batches = [a.shape[0] if a.ndim else None for a in arrays]
        if batches == self._batch:
            return
        for index, array in zip(self._in_index, arrays):
            self._interp.resize_tensor_input(index, list(array.shape), strict=True)
        self._interp.allocate_tensors()
        self._batch = batches


def load(path: Path, **options: Any) -> LiteRTSession:
    return LiteRTSession(path, **options)
