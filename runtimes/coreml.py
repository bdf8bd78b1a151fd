"""Core ML artifacts (.mlpackage): Apple's runtime on macOS, edgeship's reference evaluator elsewhere.

Apple's runtime (through coremltools) exists only on macOS. On every other host a .mlpackage runs
in the reference evaluator below: the ML Program as :mod:`edgeship.runtimes.mil` reads it, run op
by op with the numpy kernels of ``_mil_ops``, needing neither coremltools nor TensorFlow. Its
outputs are meaningful — they show what fp16, int8 weights, palettization or pruning did to the
model — but its speed is not Core ML's: the session is marked ``reference_only`` and reports never
show its latency as device latency.

    >>> session = load("model.pal4.mlpackage")                              # doctest: +SKIP
    >>> session.runtime, session.reference_only                             # doctest: +SKIP
    ('mil-numpy', True)
"""

from __future__ import annotations

import importlib.util
import inspect
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeship._deps import require
from edgeship.errors import BadArtifactError, EdgeshipError, RuntimeFailure, UnsupportedModelError
from edgeship.runtimes import mil
from edgeship.runtimes._mil_ops import OPS
from edgeship.runtimes._session import METADATA_KEY, Session

REFERENCE_RUNTIME = "mil-numpy"
REFERENCE_NOTE = "reference evaluator (numpy), not Apple's Core ML runtime"
_VARIADIC = {"values"}  # op parameters that take a list of tensors (concat, stack)
# ops that only select, move or clamp values: fp16 inputs give fp16-exact outputs, no rounding needed
_SELECTING = {
    "relu",
    "relu6",
    "max_pool",
    "reduce_max",
    "reduce_min",
    "maximum",
    "minimum",
    "reshape",
    "transpose",
    "squeeze",
    "expand_dims",
    "flatten2d",
    "concat",
    "stack",
    "slice_by_index",
    "tile",
    "identity",
    "upsample_nearest_neighbor",
}


def has_coreml() -> bool:
    """Whether Apple's Core ML runtime can be reached here: macOS with coremltools' native module.

    Checked without importing coremltools, which imports TensorFlow when it is installed.
    """
    if platform.system() != "Darwin":
        return False
    spec = importlib.util.find_spec("coremltools")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(any(Path(folder).glob("libcoremlpython*")) for folder in spec.submodule_search_locations)


def available() -> tuple[bool, str]:
    """Whether .mlpackage files run here (always) and, when not with Core ML itself, with what."""
    return True, "" if has_coreml() else REFERENCE_NOTE


def timing() -> tuple[bool, str]:
    """Whether latency measured here is Core ML's (on macOS only), and if not, why."""
    return (
        (True, "")
        if has_coreml()
        else (False, "Core ML runs on macOS only (this host evaluates ML Programs with numpy)")
    )


def import_runtime() -> None:
    """Import coremltools where Core ML runs (see edgeship.runtimes.preload); the evaluator needs nothing."""
    if has_coreml():
        require("coremltools", "run Core ML models")


class CoreMLSession(Session):
    """Apple's Core ML runtime through coremltools (macOS only)."""

    runtime = "coreml"

    def __init__(self, path: Path) -> None:
        if not has_coreml():
            raise UnsupportedModelError(
                f"cannot run {path.name} with Core ML on {platform.system()}: Core ML needs "
                "macOS and coremltools; load it with reference=True for the numpy evaluator"
            )
        package = mil.read(path)
        ct = require("coremltools", "run Core ML models")
        self.runtime_version = ct.__version__
        try:
            self._model = ct.models.MLModel(str(path))
        except Exception as exc:
            raise BadArtifactError(f"{path} could not be loaded by Core ML: {exc}") from exc
        super().__init__(path, package.inputs, package.outputs)
        self.dynamic_batch = _flexible_batch(package)
        self._recorded_text = (package.user_metadata or {}).get(METADATA_KEY)

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            result = self._model.predict(dict(zip(self._input_names, arrays)))
        except Exception as exc:
            raise RuntimeFailure(f"Core ML failed to run {self.path.name}: {exc}") from exc
        return [np.asarray(result[name]) for name in self._output_names]

    def _release(self) -> None:
        self._model = None


class ReferenceSession(Session):
    """The ML Program run by edgeship's numpy evaluator: right numbers, not Core ML's speed.

    ``threads`` is ignored: numpy's BLAS picks its own.
    """

    runtime = REFERENCE_RUNTIME
    runtime_version = REFERENCE_NOTE
    reference_only = True

    def __init__(self, path: Path) -> None:
        package = mil.read(path)
        super().__init__(path, package.inputs, package.outputs)
        self.dynamic_batch = _flexible_batch(package)
        self._recorded_text = (package.user_metadata or {}).get(METADATA_KEY)
        self.evaluator: Evaluator | None = Evaluator(package.program, where=path.name)

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.evaluator is None:
            raise RuntimeFailure(f"{self.path.name}: this session was closed; load the model again to run it")
        results = self.evaluator.run(dict(zip(self._input_names, arrays)))
        return [results[name] for name in self._output_names]

    def _release(self) -> None:
        self.evaluator = None


# -- the reference evaluator ---------------------------------------------------------------------
def round_fp16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to the nearest fp16 value (ties to even), kept as float32.

    A float32 bit trick (round the mantissa to 10 bits in place) was measured against this on
    this project's x86 host: 2-4x faster between about 4k and 100k elements, 2-10x slower below
    2k and above 500k, where batched validation runs. numpy's cast is exact and the simpler one.
    """
    with np.errstate(over="ignore"):  # beyond fp16's range is inf, as on the device
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


class Evaluator:
    """Runs a Program in numpy. Construction checks every op has a kernel (an unknown op is an
    UnsupportedModelError naming it), decompresses the weights and folds constant subgraphs."""

    def __init__(self, program: mil.Program, where: str = "the program") -> None:
        self.program, self.where = program, where
        self._types = dict(program.inputs)
        self._values: dict[str, Any] = {}  # constants, computed once
        self._steps: list[tuple[mil.Op, Callable[..., Any]]] = []
        live = {name for name, _ in program.inputs}
        for op in program.ops:
            self._types.update(op.outputs)
            if op.type == "const":
                self._values[op.outputs[0][0]] = self._constant(op)
                continue
            kernel = self._kernel(op)
            names = [b for refs in op.inputs.values() for b in refs if isinstance(b, str)]
            unknown = [n for n in names if n not in live and n not in self._values]
            if unknown:
                raise BadArtifactError(
                    f"op {op.type} '{op.name}' of {where} reads {unknown}, which no earlier op makes"
                )
            if any(n in live for n in names):
                self._steps.append((op, kernel))
                live.update(name for name, _ in op.outputs)
            else:
                self._apply(op, kernel, self._values)
        missing = [n for n in program.outputs if n not in live and n not in self._values]
        if missing:
            raise BadArtifactError(f"{where} returns {missing}, which no op makes")

    @property
    def op_types(self) -> list[str]:
        """The op types run per inference, in order (constants and decompression are done at load)."""
        return [op.type for op, _ in self._steps]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The program's outputs for ``feeds`` (input name -> array), in their declared dtypes."""
        env = self.values(feeds)
        return {name: self._output(env[name], self._types.get(name)) for name in self.program.outputs}

    def values(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Every value of one run by name: the constants (weights decompressed), the inputs and
        each op's outputs, as held (fp16 values as float32). What ``edgeship doctor`` compares op by op."""
        env = dict(self._values)
        for name, ttype in self.program.inputs:
            env[name] = self._store(np.asarray(feeds[name]), ttype)
        for op, kernel in self._steps:
            self._apply(op, kernel, env)
        return env

    @property
    def ops(self) -> list[mil.Op]:
        """The ops run per inference, in order."""
        return [op for op, _ in self._steps]

    @property
    def constants(self) -> Mapping[str, Any]:
        """The values computed at load: consts, decompressed weights and folded subgraphs."""
        return self._values

    def apply(self, op: mil.Op, env: Mapping[str, Any]) -> dict[str, Any]:
        """The outputs (name -> value) of ``op``, one of ``ops``, run on the values in ``env``."""
        scratch = {b: env[b] for refs in op.inputs.values() for b in refs if isinstance(b, str)}
        self._apply(op, self._kernel(op), scratch)
        return {name: scratch[name] for name, _ in op.outputs}

    def _constant(self, op: mil.Op) -> Any:
        val = op.inputs.get("val", ())
        if len(val) != 1 or not isinstance(val[0], mil.Literal) or len(op.outputs) != 1:
            raise BadArtifactError(
                f"const '{op.name}' of {self.where} has parameters {sorted(op.inputs)} and "
                f"{len(op.outputs)} outputs; a const holds one value 'val' and has one output: "
                "the program is corrupt"
            )
        try:
            return self._store(val[0].value, op.outputs[0][1])
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadArtifactError(
                f"const '{op.name}' of {self.where} holds a value its declared type "
                f"{op.outputs[0][1]} cannot hold ({exc}): the program is corrupt"
            ) from exc

    def _kernel(self, op: mil.Op) -> Callable[..., Any]:
        if op.blocks:
            raise UnsupportedModelError(
                f"{self.where} uses control flow (op {op.type} '{op.name}'), which the "
                "reference evaluator does not run; run it with Core ML on macOS"
            )
        kernel = OPS.get(op.type)
        if kernel is None:
            raise UnsupportedModelError(
                f"{self.where} uses op '{op.type}' (named '{op.name}'), which the reference evaluator does not "
                f"implement (it runs the {len(OPS)} ops of edgeship.runtimes._mil_ops.OPS). Run this model with "
                "Core ML on macOS, or build it without the layer that makes this op"
            )
        params = inspect.signature(kernel).parameters
        unknown = sorted(set(op.inputs) - set(params))
        required = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in op.inputs]
        if unknown or required:
            raise UnsupportedModelError(
                f"op {op.type} '{op.name}' of {self.where} has parameters {sorted(op.inputs)}; the reference "
                f"evaluator's kernel takes {list(params)} (unknown: {unknown}, missing: {required})"
            )
        return kernel

    def _apply(self, op: mil.Op, kernel: Callable[..., Any], env: dict[str, Any]) -> None:
        args = {}
        for param, refs in op.inputs.items():
            values = [env[b] if isinstance(b, str) else b.value for b in refs]
            args[param] = values if param in _VARIADIC else values[0]
        try:
            result = kernel(**args)
        except EdgeshipError:
            raise
        except Exception as exc:  # numpy's own errors: say which op failed
            raise RuntimeFailure(
                f"the reference evaluator failed on op {op.type} '{op.name}' of {self.where}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        results = result if isinstance(result, tuple) else (result,)
        selecting = op.type in _SELECTING  # fp16 in, fp16-exact out: no rounding pass
        for (name, ttype), value in zip(op.outputs, results):
            stored = value if selecting and ttype.dtype == "float16" else self._store(value, ttype)
            env[name] = self._checked(op, stored, ttype)

    def _checked(self, op: mil.Op, value: Any, ttype: mil.TensorType) -> Any:
        shape = ttype.shape
        if (
            isinstance(value, np.ndarray)
            and shape is not None
            and (value.ndim != len(shape) or any(d is not None and d != v for d, v in zip(shape, value.shape)))
        ):
            raise RuntimeFailure(
                f"op {op.type} '{op.name}' of {self.where} produced shape {list(value.shape)}, but the program "
                f"declares {['?' if d is None else d for d in shape]}: the reference evaluator's kernel is wrong "
                "for this op; run the model with Core ML on macOS and report the model"
            )
        return value

    @staticmethod
    def _store(value: Any, ttype: mil.TensorType) -> Any:
        """Floats are held as float32, rounded to fp16 where the program stores fp16."""
        if isinstance(value, str) or ttype.dtype in ("str", "object"):
            return value
        value = np.asarray(value)
        if ttype.dtype == "float16":
            return round_fp16(value)
        if ttype.dtype in ("float32", "float64"):
            return value.astype(np.float32, copy=False)
        return value.astype(ttype.dtype, copy=False)

    @staticmethod
    def _output(value: Any, ttype: mil.TensorType | None) -> Any:
        if ttype is not None and ttype.dtype in ("float16", "float64") and isinstance(value, np.ndarray):
            return value.astype(ttype.dtype)
        return value


def _flexible_batch(package: mil.Package) -> bool:
    return bool(package.inputs) and all(s.shape and s.shape[0] == -1 for s in package.inputs)


def load(path: Path, *, threads: int | None = None, reference: bool = False) -> Session:
    """Core ML where it exists, else (or with ``reference=True``) the numpy reference evaluator.

    ``threads`` is accepted for a uniform interface and ignored: neither runtime takes a count.
    """
    if has_coreml() and not reference:
        return CoreMLSession(path)
    return ReferenceSession(path)
