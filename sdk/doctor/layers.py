"""Per-layer figures: which Keras layer a converted tensor belongs to, running error sums per
tensor, the ranking, and the Probe a format's debugger hands back to the doctor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.doctor.records import LayerError
from edgeship.metrics import sqnr_db_from_sums as _db
from edgeship.progress import Progress
from edgeship.records import Gate, Manifest

if TYPE_CHECKING:
    from edgeship.data import Dataset
    from edgeship.tasks import Scorer

__all__ = ["layer_name", "op_layer", "leaf_names", "LayerTrace", "unique_names", "ranked", "Probe", "Context"]


def layer_name(tensor: str, known: Collection[str] | None = None) -> str:
    """The Keras layer a converter-made tensor or node name belongs to.

    ``model/conv_1/Conv2D;model/conv_1/Relu`` -> ``conv_1``; ``model/dense/MatMul/MatMulAddFusion``
    -> ``dense``; a name without ``/`` is its own layer. With ``known`` (the model's leaf layer
    names, ``leaf_names``) the innermost known part wins, so a layer inside a nested backbone
    (``outer/backbone/conv_1/Conv2D``) is ``conv_1``, not the backbone.
    """
    first = tensor.split(";")[0].split(":")[0]
    parts = [p for p in first.split("/") if p and "PartitionedCall" not in p]
    if known:
        inner = [p for p in parts if p in known]
        if inner:
            return inner[-1]
    if len(parts) >= 3:
        return parts[1]
    if len(parts) == 2:
        return parts[0] if parts[1][:1].isupper() else parts[1]
    return parts[0] if parts else tensor


def op_layer(name: str, known: Collection[str] | None = None) -> str:
    """The Keras layer a Core ML op belongs to. coremltools joins a TensorFlow name's parts with
    ``_`` (``tiny_cnn/conv_1/BiasAdd`` -> ``tiny_cnn_conv_1_BiasAdd_cast_fp16``), so the known leaf
    name (``leaf_names``) found last in it wins, the longer on a tie (``dense_1`` over ``dense``);
    the op's own name where none is found."""
    best: tuple[int, int, str] | None = None
    for layer in known or ():
        key = re.sub(r"\W", "_", layer)
        for match in re.finditer(rf"(?:^|_){re.escape(key)}(?=_|$)", name):
            found = (match.end(), len(key), layer)
            best = found if best is None or found[:2] > best[:2] else best
    return best[2] if best is not None else name


def leaf_names(model: Any) -> frozenset[str]:
    """The names of every layer of a Keras ``model`` that is not itself a model, nested ones included."""
    if model is None or not hasattr(model, "layers"):
        return frozenset()
    names: set[str] = set()
    for layer in model.layers:
        inner = getattr(layer, "layer", None)  # TimeDistributed, Bidirectional and other wrappers
        if hasattr(layer, "layers"):
            names |= leaf_names(layer)
        else:
            names.add(layer.name)
            if inner is not None and hasattr(inner, "name"):
                names.add(inner.name)
    return frozenset(names)


class LayerTrace:
    """Running sums for one quantized tensor over batches of (float, dequantized int8) values."""

    _KEEP = 200_000  # |x| values kept for the percentile

    def __init__(
        self,
        name: str,
        op: str,
        tensor: str,
        *,
        channel_axis: int = -1,
        scale: float | None = None,
        zero_point: int | None = None,
    ) -> None:
        self.name, self.op, self.tensor, self.axis = name, op, tensor, channel_axis
        self.layer = name  # the Keras layer; ``name`` may gain a suffix to stay unique
        self.scale, self.zero_point = scale, zero_point
        self.readers: tuple[str, ...] = ()
        self.signal: np.ndarray | None = None
        self.noise: np.ndarray | None = None
        self.peak: np.ndarray | None = None
        self.lo, self.hi, self.max_err = np.inf, -np.inf, 0.0
        self.model_signal = self.model_noise = 0.0
        self.model_seen = False
        self._abs: list[np.ndarray] = []

    def _channels(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 2:
            return x.reshape(-1, 1)
        x = np.moveaxis(x, self.axis, -1)
        return x.reshape(-1, x.shape[-1])

    def add(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        """One batch of this layer's float output and its dequantized int8 output."""
        f, q = self._channels(reference), self._channels(quantized)
        err = q - f
        signal, noise, peak = self._sums(f.shape[1])
        signal += np.square(f).sum(0)  # in place: the arrays held
        noise += np.square(err).sum(0)
        self.peak = np.maximum(peak, np.abs(f).max(0, initial=0.0))
        self.lo, self.hi = min(self.lo, float(f.min(initial=np.inf))), max(self.hi, float(f.max(initial=-np.inf)))
        self.max_err = max(self.max_err, float(np.abs(err).max(initial=0.0)))
        flat = np.abs(f).ravel()
        self._abs.append(flat[:: max(1, flat.size // (self._KEEP // 16))])

    def _sums(self, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The running sums per channel (signal, noise, peak |x|), zeros before the first batch."""
        if self.signal is None or self.noise is None or self.peak is None:
            self.signal, self.noise, self.peak = (np.zeros(channels) for _ in range(3))
        return self.signal, self.noise, self.peak

    def add_model(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        """One batch of the all-float model's value of this tensor and the int8 model's."""
        f = np.asarray(reference, np.float64)
        self.model_signal += float(np.square(f).sum())
        self.model_noise += float(np.square(np.asarray(quantized, np.float64) - f).sum())
        self.model_seen = True

    def result(self) -> LayerError:
        if self.signal is None:  # never fed: nothing measured, nothing to blame
            self.add(np.zeros(1), np.zeros(1))
        signal, noise, peak = self._sums(1)
        live = signal > 0
        per_channel = [_db(s, n) for s, n in zip(signal[live], noise[live])]
        total_s, total_n = float(signal.sum()), float(noise.sum())
        values = np.concatenate(self._abs)
        p999 = float(np.percentile(values, 99.9)) if values.size else 0.0
        top = float(peak.max(initial=0.0))
        median_peak = float(np.median(peak[peak > 0])) if np.any(peak > 0) else 0.0
        return LayerError(
            name=self.name,
            op=self.op,
            tensor=self.tensor,
            sqnr_db=float(np.median(per_channel)) if per_channel else _db(total_s, total_n),
            tensor_sqnr_db=_db(total_s, total_n),
            model_sqnr_db=_db(self.model_signal, self.model_noise) if self.model_seen else None,
            rel_error=float(np.sqrt(total_n / total_s)) if total_s > 0 else 0.0,
            max_abs_error=self.max_err,
            range_min=float(self.lo),
            range_max=float(self.hi),
            p999_abs=p999,
            outlier_ratio=top / p999 if p999 > 0 else 1.0,
            channel_spread=top / median_peak if median_peak > 0 else 1.0,
            channels=int(len(peak)),
            scale=self.scale,
            zero_point=self.zero_point,
            readers=self.readers,
        )


def unique_names(traces: Sequence[LayerTrace]) -> None:
    """Rename repeats (two tensors of one Keras layer) to ``layer:op`` so every name is a key."""
    seen: set[str] = set()
    for trace in traces:
        name = trace.name
        if name in seen:
            name = f"{trace.name}:{trace.op.lower()}"
            n = 2
            while name in seen:
                name, n = f"{trace.name}:{trace.op.lower()}{n}", n + 1
        trace.name = name
        seen.add(name)


def ranked(layers: Iterable[LayerError]) -> tuple[LayerError, ...]:
    """Worst first: lowest per-channel SQNR, then lowest tensor-wide SQNR."""
    return tuple(sorted(layers, key=lambda layer: (layer.sqnr_db, layer.tensor_sqnr_db)))


@dataclass
class Probe:
    """What a backend's debugger hands back: the layers, and a builder of mixed-precision models.

    ``build(float_layers)`` returns the model bytes (or the path of the model it wrote: a Core ML
    package is a folder) with those layers (LayerError names) in float and the rest quantized as
    the artifact was; ``build(())`` is the all-int8 rebuild, a step of method ``rebuild_method``.
    ``input_range`` is the float input range the *artifact* was calibrated to, when it says.
    """

    layers: list[LayerError]
    build: Callable[[Sequence[str]], bytes | Path]
    suffix: str
    analysed_with: str
    input_range: tuple[float, float] | None = None
    close: Callable[[], None] = lambda: None
    rebuild_method: str = "calibration"
    #: Core ML: the model with those layers compressed at 8 bits in the artifact's own family
    eight_bit: Callable[[Sequence[str]], bytes | Path] | None = None
    #: Core ML: (precision, builder of (path, settings)) of the next finer uniform precision
    finer: tuple[str, Callable[[], tuple[Path, dict[str, Any]]]] | None = None
    #: the layout the built models take ("nhwc": a .tflite made channels-last from a PyTorch model)
    layout: str | None = None


@dataclass
class Context:
    """What every step of one doctor run shares: the folder, its data and float outputs, the settings."""

    folder: Path
    manifest: Manifest
    dataset: Dataset
    scorer: Scorer  # the float outputs on the test split, the targets, the task
    gate: Gate
    calibration: np.ndarray | Sequence[np.ndarray] | None  # one array per input for several
    samples: int
    max_layers: int
    runs: int
    progress: Progress
    #: the float outputs on the split candidates are chosen on (validation; test where it is empty)
    select: Scorer | None = None
    select_split: str = "test"
    #: why candidates are chosen on test, when they are (said in the recovery's note)
    select_note: str = ""
    #: whether recovery tries cross-layer equalization before float layers
    equalize: bool = True
    #: the most training samples recovery recalibrates with
    calibration_samples: int = 1000
    #: seconds after which recovery tries no further model (None: no limit)
    time_budget: float | None = None
    #: whether recovery tries int16 activations before float layers
    int16: bool = True
    #: epochs of quantization-aware fine-tuning tried last (0: none)
    qat_epochs: int = 0

    def select_scorer(self) -> Scorer:
        return self.select if self.select is not None else self.scorer
