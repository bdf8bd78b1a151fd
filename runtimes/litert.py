"""TFLite artifacts through LiteRT (ai-edge-litert), falling back to tflite_runtime, then tf.lite."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeship._deps import quiet_native_stderr
from edgeship.errors import (
    BadArtifactError,
    BadInputError,
    MissingDependencyError,
    RuntimeFailure,
    UnsupportedModelError,
)
from edgeship.records import TensorSpec
from edgeship.runtimes._session import METADATA_KEY, Session

log = logging.getLogger(__name__)

# (module to import, attribute path of the Interpreter class, name reported as the runtime); tried
# in this order. tf.lite's Interpreter lives on the API module, not on the tensorflow.lite package.
_INTERPRETERS = (
    ("ai_edge_litert.interpreter", "Interpreter", "litert"),
    ("tflite_runtime.interpreter", "Interpreter", "tflite_runtime"),
    ("tensorflow", "lite.Interpreter", "tf.lite"),
)


def _interpreter_class() -> tuple[type, str, str]:
    """The first Interpreter that imports, its runtime label and version; says when it fell back."""
    errors = []
    for module_name, attribute, label in _INTERPRETERS:
        try:
            found: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        top = importlib.import_module(module_name.split(".")[0])
        version = getattr(top, "__version__", "")
        if label != "litert":
            log.warning("ai-edge-litert is not installed; running .tflite with %s", label)
        return found, label, version
    raise MissingDependencyError(
        "running a .tflite model needs LiteRT; none of "
        f"{[m for m, _, _ in _INTERPRETERS]} imports ({'; '.join(errors)}). "
        "Install it with: pip install 'edgeship[litert]'"
    )


def import_runtime() -> None:
    """Import the TFLite interpreter library (see edgeship.runtimes.preload)."""
    _interpreter_class()


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


def read_metadata(path: Path) -> str | None:
    """The ``edgeship`` metadata entry of a .tflite file (what convert recorded), read with the
    flatbuffers schema LiteRT ships; None when the file has none or LiteRT is not installed."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return None
    data = bytearray(path.read_bytes())
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_KEY.encode():
                buffer = model.Buffers(entry.Buffer())
                if buffer.Offset() > 1:  # a large model keeps buffers after the flatbuffer
                    return bytes(data[buffer.Offset() : buffer.Offset() + buffer.Size()]).decode()
                return bytes(buffer.DataAsNumpy()).decode() if buffer.DataLength() else None
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, AttributeError) as exc:
        raise BadArtifactError(f"{path}'s metadata cannot be read ({exc}); convert the model again") from exc
    return None


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
    """A LiteRT Interpreter (tflite_runtime or tf.lite where LiteRT is missing)."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        check_magic(path)
        interpreter_cls, self.runtime, self.runtime_version = _interpreter_class()
        try:
            kwargs = {"num_threads": threads} if threads else {}
            with quiet_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate" on every load
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
        self._allocated = [tuple(int(n) for n in d["shape"]) for d in ins]
        self._reallocate = False
        self.threads = threads
        self._recorded_text = read_metadata(path)

    @property
    def interpreter(self) -> Any:
        """The underlying LiteRT/TFLite Interpreter, for callers that need its own API."""
        return self._interp

    def _release(self) -> None:
        self._interp = None

    def _shape_changed(self, index: int, shape: tuple[int, ...]) -> None:
        if tuple(shape) == self._allocated[index]:
            return
        try:
            self._interp.resize_tensor_input(self._in_index[index], list(shape), strict=True)
        except (ValueError, RuntimeError) as exc:
            raise BadInputError(
                f"{self.runtime} cannot resize input '{self.inputs[index].name}' of {self.path.name} "
                f"to {list(shape)}: {exc}"
            ) from exc
        self._allocated[index] = tuple(shape)
        self._reallocate = True

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        interp = self._interp
        if self._reallocate:  # a batch size changed since the last call
            interp.allocate_tensors()
            self._reallocate = False
        if len(arrays) == 1:  # the usual single input: no loop on the per-call path
            interp.set_tensor(self._in_index[0], arrays[0])
        else:
            for index, array in zip(self._in_index, arrays):
                interp.set_tensor(index, array)
        try:
            interp.invoke()
        except (RuntimeError, ValueError) as exc:
            raise RuntimeFailure(f"{self.runtime} failed to run {self.path.name}: {exc}") from exc
        return [interp.get_tensor(i) for i in self._out_index]


def load(path: Path, *, threads: int | None = None) -> LiteRTSession:
    return LiteRTSession(path, threads=threads)


def op_profile(path: Path, threads: int | None, runs: int, warmup: int, top: int) -> Any:
    """The ops of ``path`` by time per inference, from TFLite's benchmark_model tool where it is installed."""
    import os
    import shutil
    import subprocess

    from edgeship.runtimes._profile import BENCHMARK_MODEL_ENV, parse_benchmark_model

    tool = os.environ.get(BENCHMARK_MODEL_ENV) or shutil.which("benchmark_model")
    if not tool:
        raise UnsupportedModelError(
            f"no per-op profile for {path.name}: LiteRT's Python API (Interpreter and CompiledModel) times no "
            "single op, and TFLite's "
            f"benchmark_model tool is not on PATH (nor named by ${BENCHMARK_MODEL_ENV}). Install that tool "
            "for a .tflite profile; ONNX artifacts profile with onnxruntime alone"
        )
    command = [
        tool,
        f"--graph={path}",
        "--enable_op_profiling=true",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
        f"--num_threads={threads or 1}",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeFailure(
            f"{' '.join(command)} failed (exit status {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return parse_benchmark_model(proc.stdout + proc.stderr, top=top)
