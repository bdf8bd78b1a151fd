"""Cross-layer equalization: the same float function with channel ranges int8 can hold.

Data-free quantization (Nagel et al., 2019): where a layer's output reaches the next conv/dense
layer through positively homogeneous ops only (ReLU, LeakyReLU, pooling, padding, dropout;
``relu(x / s) = relu(x) / s`` for s > 0), channel i of the first layer's output can be divided by
``s_i`` and the next layer's input weights for that channel multiplied by it without changing the
float model. Choosing ``s_i = sqrt(r1_i / r2_i)`` (``r1``: the channel's output weight range,
BatchNormalization folded in; ``r2``: the next layer's input weight range for it) gives both the
same range, so one channel that runs 500x wider than its neighbours no longer sets the per-tensor
activation scale that crushes them. Pairs are found inside nested models (a backbone behind
preprocessing layers) too; chains are swept until the scales settle.

Only Keras models are equalized; the result is a clone (the caller's model is left as it was).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship._deps import keras as _keras
from edgeship.errors import UnsupportedModelError

log = logging.getLogger(__name__)

__all__ = ["Pair", "equalize", "find_pairs"]

_SWEEPS = 20

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
_SETTLED = 1e-3  # largest |log s| of a sweep at which the scales count as settled
_TINY = 1e-12


@dataclass(frozen=True)
class Pair:
    """One equalized pair: ``scaled`` (the layer whose output channels are divided, ``first`` or
    the BatchNormalization after it) and ``second`` (whose input weights are multiplied);
    ``spread_before``/``after`` are the widest over the median channel range at ``scaled``'s output."""

    first: str
    scaled: str
    second: str
    channels: int
    spread_before: float
    spread_after: float


def _kinds(keras: Any) -> tuple[tuple[type, ...], tuple[type, ...]]:
    L = keras.layers
    weighted = (L.Conv2D, L.Dense, L.DepthwiseConv2D)
    passing = (
        L.ReLU,
        L.LeakyReLU,
        L.MaxPooling2D,
        L.AveragePooling2D,
        L.GlobalAveragePooling2D,
        L.GlobalMaxPooling2D,
        L.Dropout,
        L.SpatialDropout2D,
        L.ZeroPadding2D,
    )
    return weighted, passing


def _homogeneous(keras: Any, layer: Any) -> bool:
    """Whether ``layer`` commutes with a positive per-channel scale and keeps channels in place."""
    _, passing = _kinds(keras)
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        return cfg.get("max_value") is None and not cfg.get("threshold")  # ReLU6 clips: not homogeneous
    if isinstance(layer, keras.layers.Activation):
        return _activation(layer) in ("relu", "linear")
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return False
    return isinstance(layer, passing)


def _activation(layer: Any) -> str:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", str(fn)) if fn is not None else "linear"


def _weighted(keras: Any, layer: Any) -> bool:
    weighted, _ = _kinds(keras)
    if not isinstance(layer, weighted) or type(layer).__name__.startswith("Quant"):
        return False
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        if getattr(layer, "groups", 1) != 1 or type(layer) is not keras.layers.Conv2D:
            return False  # grouped, separable and transposed convolutions map channels otherwise
    return True


def _consumers(model: Any) -> dict[str, list[str] | None]:
    """Layer name -> the names of the layers that read its output, inside ``model``; None for a
    layer called more than once (a shared layer cannot be scaled for one caller)."""
    keras = _keras()
    if isinstance(model, keras.Sequential):
        names = [each.name for each in model.layers]
        chain: dict[str, list[str] | None] = {a: [b] for a, b in zip(names, names[1:])}
        return chain | ({names[-1]: []} if names else {})
    config = model.get_config()
    readers: dict[str, list[str] | None] = {entry["name"]: [] for entry in config["layers"]}
    for layer in config["layers"]:
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            readers[layer["name"]] = None
        for node in nodes:
            for inbound in node if isinstance(node, list) else [node]:
                producer = inbound[0] if isinstance(inbound, (list, tuple)) else inbound.get("args", [{}])
                read = readers.get(producer) if isinstance(producer, str) else None
                if read is not None:
                    read.append(layer["name"])
    outputs = {o[0] for o in config.get("output_layers", [])}
    for name in outputs:  # a model output is read outside: its layer cannot be scaled
        read = readers.get(name)
        if read is not None:
            read.append("<output>")
    return readers


def find_pairs(model: Any) -> list[tuple[Any, Any, Any]]:
    """(first, scaled, second) layer triples of ``model`` and every model nested in it."""
    keras = _keras()
    found: list[tuple[Any, Any, Any]] = []
    try:
        readers = _consumers(model)
    except Exception as exc:  # a model whose config cannot be read has no pairs we can trust
        log.info("equalization skips %s: its graph could not be read (%s)", model.name, exc)
        return found
    by_name = {each.name: each for each in model.layers}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(find_pairs(layer))
            continue
        if not _weighted(keras, layer) or _activation(layer) not in ("relu", "linear"):
            continue
        scaled, current = layer, layer
        while True:
            after = readers.get(current.name) if readers else None
            if not after or len(after) != 1 or after[0] not in by_name:
                break
            nxt = by_name[after[0]]
            if isinstance(nxt, keras.layers.BatchNormalization):
                axis = nxt.axis if isinstance(nxt.axis, int) else (nxt.axis[0] if len(nxt.axis) == 1 else None)
                if axis not in (-1, len(nxt.input_shape) - 1) or not (nxt.scale and nxt.center):
                    break
                scaled, current = nxt, nxt
                continue
            if _homogeneous(keras, nxt):
                current = nxt
                continue
            if _weighted(keras, nxt) and readers.get(nxt.name) is not None:
                found.append((layer, scaled, nxt))
            break
    return found


def _out_range(first: Any, scaled: Any) -> np.ndarray:
    """Per output channel, the largest |weight| of ``first`` times the BatchNormalization's gain."""
    kernel = np.asarray(first.get_weights()[0], np.float64)
    if kernel.ndim == 4 and type(first).__name__ == "DepthwiseConv2D":
        kernel = kernel.reshape(kernel.shape[0], kernel.shape[1], -1)
    r = np.abs(kernel.reshape(-1, kernel.shape[-1])).max(0)
    if scaled is not first:
        gamma, _, _, var = _bn(scaled)
        r = r * np.abs(gamma) / np.sqrt(var + scaled.epsilon)
    return r


def _in_range(second: Any) -> np.ndarray:
    """Per input channel, the largest |weight| of ``second``."""
    kernel = np.abs(np.asarray(second.get_weights()[0], np.float64))
    axis = kernel.ndim - 2  # (…, in, out) for Conv2D and Dense; (kh, kw, in, multiplier) for depthwise
    return np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1).max(1)


def _bn(layer: Any) -> tuple[np.ndarray, ...]:
    weights = dict(zip([w.name.split("/")[-1].split(":")[0] for w in layer.weights], layer.get_weights()))
    return (
        np.asarray(weights["gamma"], np.float64),
        np.asarray(weights["beta"], np.float64),
        np.asarray(weights["moving_mean"], np.float64),
        np.asarray(weights["moving_variance"], np.float64),
    )


def _divide_outputs(scaled: Any, s: np.ndarray) -> None:
    weights = scaled.get_weights()
    if type(scaled).__name__ == "BatchNormalization":
        names = [w.name.split("/")[-1].split(":")[0] for w in scaled.weights]
        for i, name in enumerate(names):
            if name in ("gamma", "beta"):
                weights[i] = (weights[i] / s).astype(weights[i].dtype)
    else:
        kernel = weights[0]
        shape = kernel.shape
        if kernel.ndim == 4 and type(scaled).__name__ == "DepthwiseConv2D":
            kernel = kernel.reshape(shape[0], shape[1], -1)
        weights[0] = (kernel / s).reshape(shape).astype(weights[0].dtype)
        if len(weights) > 1:
            weights[1] = (weights[1] / s).astype(weights[1].dtype)
    scaled.set_weights(weights)


def _multiply_inputs(second: Any, s: np.ndarray) -> None:
    weights = second.get_weights()
    kernel = weights[0]
    axis = kernel.ndim - 2
    shape = [1] * kernel.ndim
    shape[axis] = len(s)
    weights[0] = (kernel * s.reshape(shape)).astype(kernel.dtype)
    second.set_weights(weights)


def _spread(r: np.ndarray) -> float:
    live = r[r > _TINY]
    return float(live.max() / np.median(live)) if live.size else 1.0


def equalize(model: Any) -> tuple[Any, list[Pair]]:
    """A clone of the Keras ``model`` with every equalizable pair equalized, and the pairs.

        >>> equalized, pairs = equalize(model)                           # doctest: +SKIP
        >>> [(p.scaled, p.second, round(p.spread_before), round(p.spread_after)) for p in pairs]  # doctest: +SKIP

    Raises UnsupportedModelError for a model Keras cannot clone (custom layers without
    ``get_config``).
    """
    keras = _keras()
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception as exc:  # clone_model raises whatever a layer's from_config raises
        raise UnsupportedModelError(
            f"cross-layer equalization needs a model Keras can clone; {model.name} cannot "
            f"be ({type(exc).__name__}: {str(exc)[:200]}): convert without equalize"
        ) from exc
    # channels line up through everything find_pairs passes; the check keeps a surprise harmless
    triples = [t for t in find_pairs(clone) if len(_out_range(t[0], t[1])) == len(_in_range(t[2]))]
    before = [_spread(_out_range(f, s)) for f, s, _ in triples]
    for _ in range(_SWEEPS):
        moved = 0.0
        for first, scaled, second in triples:
            r1, r2 = _out_range(first, scaled), _in_range(second)
            ok = (r1 > _TINY) & (r2 > _TINY)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            s[ok] /= np.exp(np.mean(np.log(s[ok])))  # keep the layer's overall scale where it was
            moved = max(moved, float(np.abs(np.log(s)).max(initial=0.0)))
            _divide_outputs(scaled, s)
            _multiply_inputs(second, s)
        if moved < _SETTLED:
            break
    pairs = []
    for (first, scaled, second), spread in zip(triples, before):
        r1 = _out_range(first, scaled)
        pairs.append(
            Pair(
                first=first.name,
                scaled=scaled.name,
                second=second.name,
                channels=len(r1),
                spread_before=spread,
                spread_after=_spread(r1),
            )
        )
    return clone, pairs


def source(model: SourceModel, target: str) -> tuple[SourceModel, dict[str, Any]]:
    """The SourceModel ``model`` with its float Keras model equalized, and the settings that say
    what was done (recorded in the artifact)."""
    import dataclasses

    if model.keras is None or model.qat:
        what = "a QAT model (its ranges were trained)" if model.qat else f"a {model.kind} model"
        raise UnsupportedModelError(
            f"{target}: cross-layer equalization rescales Keras weights; {model.name} is "
            f"{what}: convert it without equalize"
        )
    equalized, pairs = equalize(model.float_keras())
    worst = max(pairs, key=lambda p: p.spread_before, default=None)
    log.info(
        "%s: %d layer pair(s) equalized%s",
        target,
        len(pairs),
        f"; widest channel spread {worst.spread_before:.1f}x -> {worst.spread_after:.1f}x at {worst.scaled}"
        if worst
        else " (none found: the model is quantized as it is)",
    )
    settings = {
        "equalized": [f"{p.scaled}->{p.second}" for p in pairs],
        "equalized_spread": {p.scaled: [round(p.spread_before, 2), round(p.spread_after, 2)] for p in pairs},
    }
    return dataclasses.replace(model, keras=equalized, reference=equalized), settings
