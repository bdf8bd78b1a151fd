"""The Session every runtime backend returns: specs, input checks and float <-> int8 I/O.

A backend subclasses Session and implements ``_invoke(arrays) -> list[np.ndarray]`` on inputs that
already have the model's dtype and order; everything a caller can get wrong is refused here, before
the interpreter sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgeship.errors import BadInputError, RuntimeFailure
from edgeship.records import TensorSpec

Feeds = Mapping[str, np.ndarray] | np.ndarray | Sequence[np.ndarray]


class Session:
    """A loaded model. ``run`` takes and returns float arrays unless ``raw=True``.

        >>> session = edgeship.load("model.int8.tflite")              # doctest: +SKIP
        >>> session.run({"input": x})["Identity"].argmax(-1)           # doctest: +SKIP
    """

    runtime: str = ""
    runtime_version: str = ""
    #: True when the backend accepts any batch size (the batch dimension is resized on demand).
    dynamic_batch: bool = True
    #: True for a reference evaluator standing in for the real runtime: outputs are meaningful,
    #: latency is not (reports never show it as device latency).
    reference_only: bool = False
    #: True once ``close`` released the interpreter
    closed: bool = False

    def __init__(self, path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.path = Path(path)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._input_names = tuple(s.name for s in self.inputs)
        self._name_set = frozenset(self._input_names)
        self._dtypes = tuple(np.dtype(s.dtype) for s in self.inputs)
        self._qparams = [_quant_params(s, d) for s, d in zip(self.inputs, self._dtypes)]
        self._output_names = tuple(s.name for s in self.outputs)
        self._dq_params = [_quant_params(s, np.dtype(s.dtype)) for s in self.outputs]
        self._dequantized = any(q is not None for q in self._dq_params)
        # the last shape each input passed the shape check with: later calls compare one tuple
        self._checked_shapes: list[tuple[int, ...] | None] = [None] * len(self.inputs)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape)}:{s.dtype}" for s in self.inputs)
        return f"<{type(self).__name__} {self.path.name} ({self.runtime}) inputs=[{ins}]>"

    # -- public --------------------------------------------------------------------------------
    def run(self, feeds: Feeds, *, raw: bool = False) -> dict[str, np.ndarray]:
        """Run one batch. ``feeds`` maps input names to arrays (a bare array serves a single input).

        Float arrays are quantized for int8/uint8 inputs and outputs are dequantized, unless
        ``raw`` is set: then arrays must already have the model's dtypes and outputs come back as
        the interpreter produced them.
        """
        if self.closed:
            raise RuntimeFailure(f"{self.path.name}: this session was closed; load the model again to run it")
        results = self._invoke(self._check(feeds, raw))
        if raw or not self._dequantized:
            return {self._output_names[0]: results[0]} if len(results) == 1 else dict(zip(self._output_names, results))
        return {name: _dequantize(r, q) for name, r, q in zip(self._output_names, results, self._dq_params)}

    def predict(self, x: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """The first output for ``x``, run in batches; float in, float out. ``x`` is one array, or
        one per input (in the model's input order) for a model with several."""
        return self.predict_outputs(x, batch_size=batch_size)[0]

    def predict_outputs(self, x: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 256) -> list[np.ndarray]:
        """Every output for ``x`` (one array, or one per input), run in batches; float in, float out."""
        arrays = [x] if isinstance(x, np.ndarray) else list(x)
        if len(arrays) != len(self.inputs):
            raise BadInputError(f"{self.path.name} takes {len(self.inputs)} input(s) {self._input_names}; "
                                f"received {len(arrays)} array(s)")
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise BadInputError(f"every input needs the same number of samples; received {[len(a) for a in arrays]}")
        step = batch_size if self.dynamic_batch else max(1, self.inputs[0].shape[0])
        parts: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for i in range(0, n, step):
            results = self.run(dict(zip(self._input_names, (a[i : i + step] for a in arrays))))
            for part, name in zip(parts, self._output_names):
                part.append(results[name])
        return [np.concatenate(p) if p else np.zeros((0,) + tuple(max(d, 0) for d in s.shape[1:]), np.float32)
                for p, s in zip(parts, self.outputs)]

    def sample_feeds(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Random float inputs of the right shape, for benchmarks and smoke tests."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            shape = tuple(batch if i == 0 else max(d, 1) for i, d in enumerate(spec.shape))
            if np.dtype(spec.dtype).kind == "f" or spec.quantized:
                feeds[spec.name] = rng.random(shape, dtype=np.float32)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        return feeds

    def close(self) -> None:
        """Release the interpreter and its buffers now (``with load(path) as session:`` does it on exit).

        Later calls of ``run`` raise RuntimeFailure; closing twice is harmless. A session that is
        never closed is released when it is garbage-collected.
        """
        if not self.closed:
            self._release()
            self.closed = True

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for backends --------------------------------------------------------------------------
    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _release(self) -> None:  # pragma: no cover - abstract
        """Drop the backend's references to its interpreter, so its memory can be freed."""
        raise NotImplementedError

    def _shape_changed(self, index: int, shape: tuple[int, ...]) -> None:
        """Called when input ``index`` arrives with a new (already checked) shape: a backend
        that must resize its tensors does it here, off the per-call path."""

    def _check(self, feeds: Feeds, raw: bool) -> list[np.ndarray]:
        """Inputs in the model's order and dtypes, or BadInputError naming expected and received."""
        if type(feeds) is dict and feeds.keys() == self._name_set:  # the common case, kept cheap
            if len(feeds) == 1:
                return [self._check_one(0, feeds[self._input_names[0]], raw)]
            values = [feeds[name] for name in self._input_names]
        else:
            values = self._ordered(feeds)
        return [self._check_one(i, value, raw) for i, value in enumerate(values)]

    def _ordered(self, feeds: Feeds) -> list[np.ndarray]:
        if isinstance(feeds, np.ndarray):
            feeds = [feeds]
        if isinstance(feeds, Mapping):
            if feeds.keys() != self._name_set:
                raise BadInputError(
                    f"{self.path.name} takes inputs {self._specs_text()}; received {sorted(feeds)}"
                )
            return [feeds[name] for name in self._input_names]
        feeds = list(feeds)
        if len(feeds) != len(self.inputs):
            raise BadInputError(
                f"{self.path.name} takes {len(self.inputs)} inputs {self._specs_text()}; "
                f"received {len(feeds)} arrays"
            )
        return feeds

    def _specs_text(self) -> str:
        return ", ".join(f"{s.name}{_shape(s.shape)}:{s.dtype}" for s in self.inputs)

    def _check_one(self, i: int, value: np.ndarray, raw: bool) -> np.ndarray:
        spec, dtype = self.inputs[i], self._dtypes[i]
        if type(value) is not np.ndarray:
            value = np.asarray(value)
        if value.shape != self._checked_shapes[i]:
            self._check_shape(spec, value)
            self._checked_shapes[i] = value.shape
            self._shape_changed(i, value.shape)
        if value.dtype is dtype or value.dtype == dtype:
            return value
        if raw or value.dtype.kind not in "fiub":
            raise BadInputError(
                f"input '{spec.name}' of {self.path.name} expects dtype {spec.dtype}"
                f"{' (raw mode: pass the model dtype, already quantized)' if raw else ''}; "
                f"received {value.dtype}"
            )
        if self._qparams[i] is not None and value.dtype.kind in "fiu":  # real values, e.g. uint8 pixels
            return _quantize(value if value.dtype.kind == "f" else value.astype(np.float32), self._qparams[i], dtype)
        if dtype.kind == "f":
            return value.astype(dtype)
        raise BadInputError(
            f"input '{spec.name}' of {self.path.name} expects dtype {spec.dtype}; received {value.dtype}"
        )

    def _check_shape(self, spec: TensorSpec, value: np.ndarray) -> None:
        if value.ndim != len(spec.shape) or any(
            want not in (-1, got) and not (i == 0 and self.dynamic_batch)
            for i, (want, got) in enumerate(zip(spec.shape, value.shape))
        ):
            raise BadInputError(
                f"input '{spec.name}' of {self.path.name} expects shape {_shape(spec.shape)} "
                f"({spec.dtype}); received shape {list(value.shape)} ({value.dtype})"
            )


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


def _quant_params(spec: TensorSpec, dtype: np.dtype) -> tuple[np.float32, ...] | None:
    """(scale, zero point, low, high) as float32 scalars: numpy resolves them fastest."""
    if not spec.quantized or dtype.kind not in "iu":
        return None
    info = np.iinfo(dtype)
    return np.float32(spec.scale), np.float32(spec.zero_point), np.float32(info.min), np.float32(info.max)


def _quantize(x: np.ndarray, params: tuple[np.float32, ...], dtype: np.dtype) -> np.ndarray:
    # q = clip(round(x / scale) + zero_point): in place, as each numpy call on a small input
    # costs about a microsecond and this runs on every call of an int8-input model
    scale, zero_point, low, high = params
    q = np.divide(x, scale, dtype=np.float32)
    np.rint(q, out=q)
    np.add(q, zero_point, out=q)
    np.minimum(q, high, out=q)
    np.maximum(q, low, out=q)
    return q.astype(dtype)


def _dequantize(y: np.ndarray, params: tuple[np.float32, ...] | None) -> np.ndarray:
    if params is None or y.dtype.kind not in "iu":
        return y
    out = y.astype(np.float32)
    np.subtract(out, params[1], out=out)
    np.multiply(out, params[0], out=out)
    return out
