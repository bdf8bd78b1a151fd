"""The Session every runtime backend returns: specs, input checks and float <-> int8 I/O.

A backend subclasses Session and implements ``_invoke(arrays) -> list[np.ndarray]`` on inputs that
already have the model's dtype and order; everything a caller can get wrong is refused here, before
the interpreter sees it. Float <-> int8 conversion runs on every call of an int8-I/O model in float
mode, so it works in buffers kept per input shape (``_Quantizer``) and a lookup table for small
outputs (``_Dequantizer``); ``benchmarks/bench_io.py`` times it against the plain numpy version.
A session also gives what convert recorded in the file (``metadata``, ``preprocess``) and applies
that preprocessing to raw inputs (``predict(raw, preprocess=True)``).

This module is long because the Session contract (checks, batching, I/O conversion, the file's
record) is one class that every backend shares; its helpers sit beside it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import BadArtifactError, BadInputError, RuntimeFailure
from edgeship.preprocess import Preprocess
from edgeship.records import TensorSpec

#: the metadata entry edgeship writes into each artifact (TFLite metadata, ONNX metadata_props,
#: Core ML user-defined metadata): JSON with ``preprocess``, ``classes``, ``task``, ``dataset``
METADATA_KEY = "edgeship"

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
    #: the hardware that runs the model: cpu, gpu or npu
    accelerator: str = "cpu"
    #: the file's ``edgeship`` metadata text, as the backend read it (None: the file has none)
    _recorded_text: str | None = None

    def __init__(self, path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.path = Path(path)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._input_names = tuple(s.name for s in self.inputs)
        self._name_set = frozenset(self._input_names)
        self._dtypes = tuple(np.dtype(s.dtype) for s in self.inputs)
        self._quantizers = [_Quantizer.of(s) for s in self.inputs]
        self._output_names = tuple(s.name for s in self.outputs)
        self._dequantizers = [_Dequantizer.of(s) for s in self.outputs]
        self._dequantized = any(d is not None for d in self._dequantizers)
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
        return self._decode(results)

    def model_inputs(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """``feeds`` as the model takes them (int8 inputs quantized, floats cast to the model's
        float type), checked and in new arrays: what ``run(feeds, raw=True)`` accepts.

            >>> raw = session.model_inputs({"input": x})                    # doctest: +SKIP
            >>> session.run(raw, raw=True)                                  # doctest: +SKIP
        """
        return {name: np.array(a) for name, a in zip(self._input_names, self._check(feeds, raw=False))}

    def raw_call(self, feeds: Feeds) -> tuple[Callable[[list[np.ndarray]], list[np.ndarray]], list[np.ndarray]]:
        """``(call, arrays)``: the backend's interpreter call and ``feeds`` checked once, in the
        model's dtypes and order. ``call(arrays)`` runs the model with nothing of edgeship's in
        between (no checks, no conversion): what benchmarks time, as benchmark_model does."""
        if self.closed:
            raise RuntimeFailure(f"{self.path.name}: this session was closed; load the model again to run it")
        return self._invoke, [np.array(a) for a in self._check(feeds, raw=False)]

    def model_dtypes(self) -> str:
        """The dtypes the interpreter sees, for reports: "int8", or "int8 in, float32 out"."""
        ins = "/".join(dict.fromkeys(s.dtype for s in self.inputs))
        outs = "/".join(dict.fromkeys(s.dtype for s in self.outputs))
        return ins if ins == outs else f"{ins} in, {outs} out"

    @property
    def metadata(self) -> dict[str, Any]:
        """What convert recorded in the file (``preprocess``, ``classes``, ``task``, ``dataset``);
        ``{}`` for a file edgeship did not write."""
        text = self._recorded_text
        try:
            data = json.loads(text) if text else {}
        except ValueError as exc:
            raise BadArtifactError(
                f"{self.path.name}'s edgeship metadata is not JSON ({exc}); convert it again"
            ) from exc
        if not isinstance(data, dict):
            raise BadArtifactError(f"{self.path.name}'s edgeship metadata is {type(data).__name__}, not an object")
        return data

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing recorded in the file: what turns the stored data (camera pixels, raw
        features) into this model's inputs; the identity when none is recorded."""
        spec = self.metadata.get("preprocess") or "none"
        try:
            return Preprocess.parse(spec)
        except BadInputError as exc:
            raise BadArtifactError(f"{self.path.name} records a preprocessing edgeship cannot apply: {exc}") from exc

    def predict(
        self, x: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 256, preprocess: bool = False
    ) -> np.ndarray:
        """The first output for ``x``, run in batches; float in, float out. ``x`` is one array, or
        one per input (in the model's input order) for a model with several. With ``preprocess``,
        ``x`` is raw data (as stored: 0..255 pixels, channels last) and the file's recorded
        preprocessing (``self.preprocess``) is applied to it first, as on a device."""
        return self.predict_outputs(x, batch_size=batch_size, preprocess=preprocess)[0]

    def predict_outputs(
        self, x: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 256, preprocess: bool = False
    ) -> list[np.ndarray]:
        """Every output for ``x`` (one array, or one per input), run in batches; float in, float out.

        ``x`` may be anything sliced into numpy arrays (``edgeship.data``' lazy arrays): only one
        batch of inputs is held at a time. ``preprocess``: as in ``predict``."""
        if preprocess:
            x = self.preprocessed(x)
        arrays = self._in_model_order(x)
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise BadInputError(f"every input needs the same number of samples; received {[len(a) for a in arrays]}")
        step = batch_size if self.dynamic_batch else max(1, self.inputs[0].shape[0])
        parts: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for i in range(0, n, step):
            results = self.run(dict(zip(self._input_names, (a[i : i + step] for a in arrays))))
            for part, name in zip(parts, self._output_names):
                part.append(results[name])
        return [
            np.concatenate(p) if p else np.zeros((0,) + tuple(max(d, 0) for d in s.shape[1:]), np.float32)
            for p, s in zip(parts, self.outputs)
        ]

    def preprocessed(self, x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw ``x`` (one array, or one per input) with the file's recorded preprocessing applied."""
        spec = self.preprocess
        arrays: list[Any] = [x] if isinstance(x, np.ndarray) or hasattr(x, "shape") else list(x)
        return [
            a.map(spec.apply) if not isinstance(a, np.ndarray) and hasattr(a, "map") else spec.apply(np.asarray(a))
            for a in arrays
        ]

    def _in_model_order(self, x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """``x`` (one array, a lazy array, or one per input in the source model's order) as a list in
        this file's input order (``in_order``), once its count of inputs is checked."""
        arrays: list[np.ndarray] = [x] if isinstance(x, np.ndarray) or hasattr(x, "shape") else list(x)  # type: ignore[list-item]
        if len(arrays) != len(self.inputs):
            raise BadInputError(
                f"{self.path.name} takes {len(self.inputs)} input(s) {self._input_names}; "
                f"received {len(arrays)} array(s)"
            )
        return in_order([s.shape for s in self.inputs], arrays)

    def feeds_for(self, x: np.ndarray | Sequence[np.ndarray], samples: int | None = None) -> dict[str, np.ndarray]:
        """``x`` (one array, or one per input in the source model's order) keyed by this file's
        input names, the first ``samples`` of each: what ``run`` and ``benchmark(feeds=…)`` take.

            >>> edgeship.benchmark(path, feeds=session.feeds_for([images, side], 1))  # doctest: +SKIP
        """
        return {name: a[:samples] for name, a in zip(self._input_names, self._in_model_order(x))}

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

    def _decode(self, results: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {name: r if d is None else d(r) for name, r, d in zip(self._output_names, results, self._dequantizers)}

    def _float_io(self, feeds: Feeds, results: list[np.ndarray]) -> None:
        """The float <-> model-dtype work ``run`` does around one interpreter call (float feeds in,
        raw ``results`` out), without the call: what benchmarks time as ``io_ms``."""
        self._check(feeds, raw=False)
        if self._dequantized:
            self._decode(results)

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
                raise BadInputError(f"{self.path.name} takes inputs {self._specs_text()}; received {sorted(feeds)}")
            return [feeds[name] for name in self._input_names]
        feeds = list(feeds)
        if len(feeds) != len(self.inputs):
            raise BadInputError(
                f"{self.path.name} takes {len(self.inputs)} inputs {self._specs_text()}; received {len(feeds)} arrays"
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
        quantize = self._quantizers[i]
        if quantize is not None and value.dtype.kind in "fiu":  # real values, e.g. uint8 pixels
            return quantize(value if value.dtype.kind == "f" else value.astype(np.float32))
        if dtype.kind == "f":
            return value.astype(dtype)
        if dtype.kind in "iu" and value.dtype.kind in "iu":  # ids stored wider than the file takes them
            bounds = np.iinfo(dtype)
            if value.size == 0 or (bounds.min <= value.min() and value.max() <= bounds.max):
                return value.astype(dtype)
            raise BadInputError(
                f"input '{spec.name}' of {self.path.name} takes {spec.dtype} values; received {value.dtype} values "
                f"from {value.min()} to {value.max()}, which do not fit"
            )
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


def in_order(shapes: Sequence[Sequence[int]], arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``arrays`` (in a source model's input order) rearranged to fit ``shapes`` (a converted file's
    inputs, -1 for an open dimension): converters may order inputs differently (TFLite sorts them
    by name), so each array goes to the one input its sample shape fits; as given where ambiguous."""

    def fits(shape: Sequence[int], a: np.ndarray) -> bool:
        return a.ndim == len(shape) and all(w in (-1, g) for w, g in zip(shape[1:], a.shape[1:]))

    arrays = list(arrays)
    if len(arrays) < 2 or all(fits(s, a) for s, a in zip(shapes, arrays)):
        return arrays
    matches = [[a for a in arrays if fits(s, a)] for s in shapes]
    return [m[0] for m in matches] if all(len(m) == 1 for m in matches) else arrays


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


# numpy's clip ufunc itself: np.clip's Python wrapper costs about 5 µs a call on a small input
_clip = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", None)


class _Quantizer:
    """float -> int8/uint8 for one input: q = clip(rint(x / scale) + zero_point, low, high), in float32.

    Works in a float32 and an int8 buffer kept per input shape (a few shapes at most), so a call
    allocates nothing; the interpreter copies the int8 buffer in before the next call reuses it.
    """

    __slots__ = ("scale", "zero_point", "low", "high", "dtype", "_buffers")
    _MAX_SHAPES = 4

    def __init__(self, scale: float, zero_point: int, dtype: np.dtype) -> None:
        info = np.iinfo(dtype)
        # float32 scalars: numpy resolves them fastest, and the arithmetic stays in float32
        self.scale, self.zero_point = np.float32(scale), np.float32(zero_point)
        self.low, self.high, self.dtype = np.float32(info.min), np.float32(info.max), dtype
        self._buffers: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def of(cls, spec: TensorSpec) -> _Quantizer | None:
        dtype = np.dtype(spec.dtype)
        if not spec.quantized or dtype.kind not in "iu" or spec.scale is None or spec.zero_point is None:
            return None
        return cls(spec.scale, spec.zero_point, dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        buffers = self._buffers.get(x.shape)
        if buffers is None:
            if len(self._buffers) >= self._MAX_SHAPES:
                self._buffers.clear()
            buffers = self._buffers[x.shape] = (np.empty(x.shape, np.float32), np.empty(x.shape, self.dtype))
        f, q = buffers
        np.divide(x, self.scale, out=f, dtype=np.float32)
        np.rint(f, out=f)
        np.add(f, self.zero_point, out=f)
        if _clip is not None:
            _clip(f, self.low, self.high, out=f)
        else:  # pragma: no cover - a numpy without the clip ufunc
            np.minimum(f, self.high, out=f)
            np.maximum(f, self.low, out=f)
        np.copyto(q, f, casting="unsafe")
        return q


class _Dequantizer:
    """int8/uint8 -> float32 for one output: (q - zero_point) * scale, in float32.

    Outputs of up to ``_TABLE_UP_TO`` elements (class scores) are read from a table of the 256
    possible values, one numpy call; larger ones are converted in place, where the table's index
    conversion would cost more than it saves. Both give the same bits as the arithmetic.
    """

    __slots__ = ("scale", "zero_point", "_table")
    _TABLE_UP_TO = 1024

    def __init__(self, scale: float, zero_point: int, dtype: np.dtype) -> None:
        self.scale, self.zero_point = np.float32(scale), np.float32(zero_point)
        # indexed by the byte's unsigned value: int8 -128 is byte 128
        codes = np.arange(256, dtype=np.uint8).view(dtype) if dtype.itemsize == 1 else None
        self._table = None if codes is None else self._arithmetic(codes)

    @classmethod
    def of(cls, spec: TensorSpec) -> _Dequantizer | None:
        dtype = np.dtype(spec.dtype)
        if not spec.quantized or dtype.kind not in "iu" or spec.scale is None or spec.zero_point is None:
            return None
        return cls(spec.scale, spec.zero_point, dtype)

    def _arithmetic(self, y: np.ndarray) -> np.ndarray:
        out = y.astype(np.float32)
        np.subtract(out, self.zero_point, out=out)
        np.multiply(out, self.scale, out=out)
        return out

    def __call__(self, y: np.ndarray) -> np.ndarray:
        if y.dtype.kind not in "iu":
            return y
        if self._table is not None and y.size <= self._TABLE_UP_TO and y.dtype.itemsize == 1 and _LITTLE:
            return self._table.take(y.view(np.uint8))
        return self._arithmetic(y)


_LITTLE = sys.byteorder == "little"


def in_layout(arrays: Sequence[np.ndarray], layout: str | None) -> tuple[np.ndarray, ...]:
    """``arrays`` (in the source model's layout) as a file of ``layout`` takes them: ``"nhwc"`` is
    recorded by a file made channels-last from a channels-first model (a PyTorch model converted
    with ``layout=nhwc``), whose 4-D inputs are transposed here; anything else leaves them as they are."""
    if layout != "nhwc":
        return tuple(arrays)
    return tuple(np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1))) if np.ndim(a) == 4 else a for a in arrays)
