"""The Session every runtime backend returns: specs, input checks and float <-> int8 I/O.

A backend subclasses Session and implements ``_invoke(arrays) -> list[np.ndarray]`` on inputs that
already have the model's dtype and order; everything a caller can get wrong is refused here, before
the interpreter sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgeship.errors import BadInputError
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

    def __init__(self, path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        self.path = Path(path)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._input_names = tuple(s.name for s in self.inputs)
        self._dtypes = tuple(np.dtype(s.dtype) for s in self.inputs)

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
        arrays = self._check(feeds, raw)
        results = self._invoke(arrays)
        if raw:
            return dict(zip(self._output_names, results))
        return {s.name: _dequantize(r, s) for s, r in zip(self.outputs, results)}

    def predict(self, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """The first output for ``x`` (a single-input model), run in batches; float in, float out."""
        if len(self.inputs) != 1:
            raise BadInputError(f"predict() takes single-input models; this one has inputs {self._input_names}")
        step = batch_size if self.dynamic_batch else max(1, self.inputs[0].shape[0])
        parts = [self.run({self._input_names[0]: x[i : i + step]})[self.outputs[0].name] for i in range(0, len(x), step)]
        return np.concatenate(parts) if parts else np.zeros((0,) + tuple(self.outputs[0].shape[1:]), np.float32)

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
        """Release the interpreter (sessions are also released when garbage-collected)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for backends --------------------------------------------------------------------------
    @property
    def _output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, feeds: Feeds, raw: bool) -> list[np.ndarray]:
        if isinstance(feeds, np.ndarray):
            feeds = [feeds]
        if not isinstance(feeds, Mapping):
            feeds = list(feeds)
            if len(feeds) != len(self.inputs):
                raise BadInputError(
                    f"{self.path.name} takes {len(self.inputs)} inputs {list(self._input_names)}; "
                    f"received {len(feeds)} arrays"
                )
            feeds = dict(zip(self._input_names, feeds))
        elif feeds.keys() != set(self._input_names):
            raise BadInputError(
                f"{self.path.name} takes inputs {list(self._input_names)}; received {sorted(feeds)}"
            )
        return [self._check_one(spec, dtype, feeds[spec.name], raw) for spec, dtype in zip(self.inputs, self._dtypes)]

    def _check_one(self, spec: TensorSpec, dtype: np.dtype, value: np.ndarray, raw: bool) -> np.ndarray:
        value = np.asarray(value)
        if value.ndim != len(spec.shape) or any(
            want not in (-1, got) and not (i == 0 and self.dynamic_batch)
            for i, (want, got) in enumerate(zip(spec.shape, value.shape))
        ):
            raise BadInputError(
                f"input '{spec.name}' of {self.path.name} expects shape {_shape(spec.shape)} "
                f"({spec.dtype}); received shape {list(value.shape)}"
            )
        if value.dtype == dtype:
            return value
        if raw or value.dtype.kind not in "fiub":
            raise BadInputError(
                f"input '{spec.name}' of {self.path.name} expects dtype {spec.dtype}"
                f"{' (raw mode)' if raw else ''}; received {value.dtype}"
            )
        if spec.quantized and value.dtype.kind == "f":
            return _quantize(value, spec, dtype)
        if dtype.kind == "f":
            return value.astype(dtype)
        raise BadInputError(
            f"input '{spec.name}' of {self.path.name} expects dtype {spec.dtype}; received {value.dtype}"
        )


def _shape(shape: Sequence[int]) -> list[int | str]:
    return ["N" if d == -1 else d for d in shape]


def _quantize(x: np.ndarray, spec: TensorSpec, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(x / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.quantized and y.dtype.kind in "iu":
        return (y.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)
    return y
