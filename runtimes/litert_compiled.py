"""TFLite artifacts through LiteRT's CompiledModel, the API LiteRT 2.x recommends over the Interpreter.

    >>> session = edgeship.load("model.int8.tflite", runtime="litert-compiled", accelerator="cpu")  # doctest: +SKIP
    >>> session.accelerator                                                                       # doctest: +SKIP
    'cpu'

The model is compiled for one accelerator (cpu, gpu or npu) and for that one alone: with the CPU
as fallback LiteRT compiles for an NPU that is not there (every op then runs on the CPU) and its
Python API cannot say which ops ran where, so a figure labelled "npu" could not be trusted. So
``session.accelerator`` is what runs the whole model, and an accelerator this host lacks (or that
cannot take every op of the model) is refused in one line that names those available.
CompiledModel's tensor details carry no quantization parameters, so the specs are read with
LiteRT's Interpreter (without its delegates) and matched by tensor index. LiteRT's Python API
times no single op (neither the Interpreter nor CompiledModel):
``edgeship bench --profile`` on a ``.tflite`` uses TFLite's benchmark_model tool.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeship._deps import native_is_quiet, quiet_native, quiet_native_stderr, require
from edgeship.errors import BadArtifactError, BadInputError, RuntimeFailure
from edgeship.runtimes._session import Session
from edgeship.runtimes.litert import _spec, check_magic, read_metadata

__all__ = ["ACCELERATORS", "CompiledModelSession", "load", "available_accelerators"]

ACCELERATORS = ("cpu", "gpu", "npu")
#: what a host needs before LiteRT can use each accelerator, for the refusal's "what to do"
_NEEDS = {
    "gpu": "a GPU LiteRT can drive (OpenCL, or WebGPU over Vulkan/Metal)",
    "npu": "an NPU with its vendor's LiteRT dispatch library (Qualcomm, MediaTek, Google Tensor, Intel OpenVINO)",
}

_environment: Any = None  # one LiteRT Environment per process: creating one registers every accelerator


def _litert() -> Any:
    return require("ai_edge_litert.compiled_model", "run .tflite models with LiteRT's CompiledModel")


def import_runtime() -> None:
    """Import LiteRT's CompiledModel (see edgeship.runtimes.preload)."""
    _shared_environment()


def _shared_environment() -> Any:
    global _environment
    if _environment is None:
        lib = _litert()
        with quiet_native_stderr():
            _environment = lib._create_default_environment()
        atexit.register(_release_environment, native_is_quiet())
    return _environment


def _release_environment(quiet: bool) -> None:
    """At exit, release the Environment while Python still runs; ``quiet``: whether the caller had
    native output silenced (``quiet_native()``, as the CLI does) when the Environment was made.

    LiteRT's C++ side logs every accelerator it destroys, some of it after Python is done, where no
    block can reach it. So for a quiet caller alone, fd 2 then goes to /dev/null for what is left
    of the process: the one effect that outlasts ``quiet_native()``, taken only on request; a
    library caller who never asked keeps its stderr to the end."""
    global _environment
    with quiet_native(quiet), quiet_native_stderr():
        _environment = None
        gc.collect()  # sessions left in reference cycles hold it too
    if quiet:
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def _compile(path: Path, accelerator: str, threads: int | None) -> Any:
    """A CompiledModel of ``path`` for ``accelerator`` alone; LiteRT's errors raise."""
    lib = _litert()
    flags = lib.HardwareAccelerator[accelerator.upper()]
    options = lib.Options(hardware_accelerators=flags, cpu_options=lib.CpuOptions(num_threads=threads or 0))
    with quiet_native_stderr():  # LiteRT logs every accelerator it registers, on every load
        return lib.CompiledModel.from_file(str(path), environment=_shared_environment(), options=options)


def available_accelerators(path: str | Path) -> list[str]:
    """The accelerators LiteRT compiles all of ``path`` for on this host (cpu; gpu, npu where present)."""
    found = []
    for accelerator in ACCELERATORS:
        try:
            _compile(Path(path), accelerator, threads=1)
        except (RuntimeError, ValueError):
            continue
        found.append(accelerator)
    return found


def _unavailable(path: Path, accelerator: str) -> BadInputError:
    others = available_accelerators(path)
    return BadInputError(
        f"LiteRT could not compile {path.name} for the {accelerator.upper()} alone here: that needs "
        f"{_NEEDS[accelerator]}, able to take every op; accelerators available for this model here: "
        f"{', '.join(others) or 'none'}; received accelerator={accelerator!r}. Use accelerator 'cpu', or run "
        f"on a device with such a{'n' if accelerator == 'npu' else ''} {accelerator.upper()}"
    )


class CompiledModelSession(Session):
    """A LiteRT CompiledModel on one accelerator; inputs and outputs go through its TensorBuffers."""

    runtime = "litert-compiled"

    def __init__(self, path: Path, *, threads: int | None = None, accelerator: str = "cpu") -> None:
        check_magic(path)
        lib = _litert()
        self.runtime_version = getattr(require("ai_edge_litert"), "__version__", "")
        try:
            self._model = _compile(path, accelerator, threads)
        except (RuntimeError, ValueError) as exc:
            if accelerator != "cpu":
                raise _unavailable(path, accelerator) from exc
            raise BadArtifactError(f"{path} could not be compiled by LiteRT: {exc}") from exc
        self.accelerator, self.threads = accelerator, threads
        signature = self._model.get_signature_by_index(0)
        key = signature["key"]
        ins, outs = self._model.get_input_tensor_details(key), self._model.get_output_tensor_details(key)
        by_index = _details_by_tensor_index(path, lib)
        super().__init__(
            path,
            [_spec(by_index[ins[n]["index"]]) for n in signature["inputs"]],
            [_spec(by_index[outs[n]["index"]]) for n in signature["outputs"]],
        )
        self.dynamic_batch = all(len(s.shape) and s.shape[0] == -1 for s in self.inputs)
        self._allocated = [tuple(ins[n]["shape"]) for n in signature["inputs"]]
        self._recorded_text = read_metadata(path)
        self._buffers()

    def _buffers(self) -> None:
        """(Re)create the TensorBuffers for the current input shapes, and note each output's size."""
        with quiet_native_stderr():  # LiteRT creates (and logs) an Environment of its own for them
            self._in_buffers = self._model.create_input_buffers(0)
            self._out_buffers = self._model.create_output_buffers(0)
            shapes = [tuple(b.get_tensor_details()["shape"]) for b in self._out_buffers]
        self._out_layout = [(shape, int(np.prod(shape)), np.dtype(s.dtype)) for shape, s in zip(shapes, self.outputs)]

    @property
    def compiled_model(self) -> Any:
        """The underlying ``ai_edge_litert.compiled_model.CompiledModel``, for callers that need its API."""
        return self._model

    def _release(self) -> None:
        with quiet_native_stderr():
            self._model = self._in_buffers = self._out_buffers = None

    def _shape_changed(self, index: int, shape: tuple[int, ...]) -> None:
        if tuple(shape) == self._allocated[index]:
            return
        try:
            self._model.resize_input_tensor(index, list(shape))
        except (RuntimeError, ValueError) as exc:
            raise BadInputError(
                f"LiteRT cannot resize input '{self.inputs[index].name}' of {self.path.name} to {list(shape)}: {exc}"
            ) from exc
        self._allocated[index] = tuple(shape)
        self._buffers()

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for buffer, array in zip(self._in_buffers, arrays):
            buffer.write(array)
        try:
            self._model.run_by_index(0, self._in_buffers, self._out_buffers)
        except (RuntimeError, ValueError) as exc:
            raise RuntimeFailure(f"LiteRT's CompiledModel failed to run {self.path.name}: {exc}") from exc
        return [
            buffer.read(size, dtype).reshape(shape)
            for buffer, (shape, size, dtype) in zip(self._out_buffers, self._out_layout)
        ]


def _details_by_tensor_index(path: Path, lib: Any) -> dict[int, dict[str, Any]]:
    """Input and output details (with quantization) from LiteRT's Interpreter, keyed by tensor index."""
    interpreter_module = require("ai_edge_litert.interpreter", "read a .tflite model's tensor details")
    resolver = interpreter_module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # no XNNPACK set-up to read specs
    try:
        interpreter = interpreter_module.Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    except (RuntimeError, ValueError) as exc:
        raise BadArtifactError(f"{path} could not be read by LiteRT: {exc}") from exc
    return {d["index"]: d for d in (*interpreter.get_input_details(), *interpreter.get_output_details())}


def load(path: Path, *, threads: int | None = None, accelerator: str | None = None) -> CompiledModelSession:
    accelerator = (accelerator or "cpu").lower()
    if accelerator not in ACCELERATORS:
        raise BadInputError(f"accelerator must be one of {list(ACCELERATORS)}; received {accelerator!r}")
    return CompiledModelSession(path, threads=threads, accelerator=accelerator)
