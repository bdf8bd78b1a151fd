"""tensorflow-model-optimization wrappers: pruning, weight clustering and quantization-aware training,
and what they leave in the weights (sparsity, distinct values).

    prune ──► strip ──► [cluster ──► strip] ──► QAT with the scheme that keeps what came before:
      qat alone: default 8-bit   prune: prune-preserving   cluster: cluster-preserving   both: PCQAT

Pruning and clustering touch the layers that hold the model's size: Conv2D, DepthwiseConv2D and Dense
kernels of at least ``MIN_WEIGHTS`` weights, except the output layer (small, and the most sensitive).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from edgeship._deps import keras as _keras
from edgeship._deps import require
from edgeship._deps import tensorflow as _tf
from edgeship.errors import BadInputError, UnsupportedModelError

log = logging.getLogger(__name__)

MIN_WEIGHTS = 1024


def tfmot() -> Any:
    """tensorflow_model_optimization, imported after TensorFlow is configured for Keras 2."""
    _tf()
    return require("tensorflow_model_optimization", "prune, cluster or quantization-aware train")


def _kernel(layer: Any) -> Any:
    """The kernel variable of a Conv/Dense layer, or of the layer a tfmot wrapper holds (QAT wrappers
    replace the inner ``kernel`` attribute by its fake-quantized tensor, so search the variables)."""
    for weight in layer.weights:
        if weight.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel"):
            return weight
    return None


def target_layers(net: Any, min_weights: int = MIN_WEIGHTS) -> list[str]:
    """Names of the layers pruning and clustering act on (see the module docstring)."""
    keras = _keras()
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    output_layers = {t._keras_history.layer.name for t in net.outputs}
    names = []
    for layer in net.layers:
        inner = getattr(layer, "layer", layer)
        kernel = _kernel(layer)
        if isinstance(inner, kinds) and kernel is not None and layer.name not in output_layers:
            if int(np.prod(kernel.shape)) >= min_weights:
                names.append(layer.name)
    if not names:
        raise BadInputError(
            f"model '{net.name}' has no Conv2D, DepthwiseConv2D or Dense kernel of {min_weights}+ weights outside its "
            "output layer, so there is nothing to prune or cluster; train without --prune/--cluster"
        )
    return names


def _wrap_layers(net: Any, names: list[str], wrap: Any) -> Any:
    keras = _keras()
    return keras.models.clone_model(net, clone_function=lambda layer: wrap(layer) if layer.name in names else layer)


def prune(net: Any, sparsity: float, *, steps_per_epoch: int, epochs: int) -> tuple[Any, list[Any]]:
    """Wrap the target layers for pruning to ``sparsity``; returns (model, callbacks for fit).

    The polynomial schedule is derived from the steps per epoch (a fixed frequency stopped at 67% of
    a 75% target: docs/stack-notes.md fact 6) and ends one epoch before training does, so the last
    epoch trains at full sparsity.
    """
    sparsity_api = tfmot().sparsity.keras
    end_step = steps_per_epoch * max(1, epochs - 1)
    schedule = sparsity_api.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=max(1, min(steps_per_epoch // 2, end_step // 8)),
    )

    def wrap(layer: Any) -> Any:
        return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule)

    return _wrap_layers(net, target_layers(net), wrap), [sparsity_api.UpdatePruningStep()]


def strip_pruning(net: Any) -> Any:
    return tfmot().sparsity.keras.strip_pruning(net)


def cluster(net: Any, clusters: int, *, preserve_sparsity: bool) -> Any:
    """Wrap the target layers for weight clustering to ``clusters`` distinct values per kernel."""
    tfmot()
    from tensorflow_model_optimization.python.core.clustering.keras.experimental import cluster as api

    def wrap(layer: Any) -> Any:
        return api.cluster_weights(
            layer,
            number_of_clusters=clusters,
            preserve_sparsity=preserve_sparsity,
            cluster_centroids_init=api.CentroidInitialization.KMEANS_PLUS_PLUS,
        )

    return _wrap_layers(net, target_layers(net), wrap)


def strip_clustering(net: Any) -> Any:
    return tfmot().clustering.keras.strip_clustering(net)


def _find(net: Any, name: str) -> Any:
    for layer in net.layers:  # a tfmot wrapper is named after its layer with a prefix (quant_conv_1)
        if layer.name == name or getattr(getattr(layer, "layer", None), "name", None) == name:
            return layer
    raise BadInputError(f"model '{net.name}' has no layer '{name}'; it has {[each.name for each in net.layers]}")


def measure_sparsity(net: Any, layers: list[str] | None = None) -> dict[str, float]:
    """Fraction of exact zeros in each kernel of ``layers`` (default: every target layer), from the weights."""
    names = layers if layers is not None else target_layers(net)
    return {name: float(np.mean(np.asarray(_kernel(_find(net, name))) == 0)) for name in names}


def count_clusters(net: Any, layers: list[str] | None = None) -> dict[str, int]:
    """Distinct values in each kernel of ``layers`` (default: every target layer)."""
    names = layers if layers is not None else target_layers(net)
    return {name: int(np.unique(np.asarray(_kernel(_find(net, name)))).size) for name in names}


def quantize_aware(net: Any, *, preserve: str = "") -> Any:
    """Wrap a float tf_keras model for QAT with tfmot's default 8-bit scheme.

    ``preserve`` keeps what earlier stages made: "" (nothing), "sparsity" (PQAT), "clusters" (CQAT) or
    "sparsity+clusters" (PCQAT). A layer tfmot cannot quantize raises UnsupportedModelError naming it.
    """
    qk = tfmot().quantization.keras
    lambdas = [layer.name for layer in net.layers if type(layer).__name__ == "Lambda"]
    if lambdas:
        raise UnsupportedModelError(_cannot_quantize(lambdas[0], "Lambda"))
    try:
        if not preserve:
            return qk.quantize_model(net)
        return qk.quantize_apply(qk.quantize_annotate_model(net), _scheme(preserve))
    except (RuntimeError, ValueError) as exc:
        found = re.search(r"Layer (\S+?):<class '[\w.]*?(\w+)'>", str(exc))
        if found:
            raise UnsupportedModelError(_cannot_quantize(found.group(1), found.group(2))) from exc
        raise UnsupportedModelError(
            f"tensorflow-model-optimization cannot quantize model '{net.name}': {str(exc).splitlines()[0]}. "
            "Train without qat and convert with post-training int8 instead"
        ) from exc


def _cannot_quantize(layer: str, kind: str) -> str:
    return (
        f"quantization-aware training cannot quantize layer '{layer}' ({kind}): tfmot's default 8-bit scheme has "
        "no rule for it. Replace it with a supported layer (Conv2D, DepthwiseConv2D, Dense, BatchNormalization "
        "after a convolution, ReLU, pooling, Add, Concatenate, Reshape), give it a QuantizeConfig through "
        "tfmot's quantize_annotate_layer, or train without --qat and convert with post-training int8"
    )


def finish_qat(qat_net: Any, *, preserve: str = "") -> Any:
    """The QAT model to save and convert: cluster-preserving QAT's training variables (centroids,
    indices, original weights) removed, the quantizers and their ranges kept."""
    if "clusters" not in preserve:
        return qat_net
    return tfmot().experimental.combine.strip_clustering_cqat(qat_net)


def _scheme(preserve: str) -> Any:
    combine = tfmot().experimental.combine
    if preserve == "sparsity":
        return combine.Default8BitPrunePreserveQuantizeScheme()
    if preserve in ("clusters", "sparsity+clusters"):
        return _cluster_preserve_scheme(preserve_sparsity=preserve == "sparsity+clusters")
    raise BadInputError(f"preserve must be '', 'sparsity', 'clusters' or 'sparsity+clusters'; received {preserve!r}")


def _cluster_preserve_scheme(*, preserve_sparsity: bool) -> Any:
    """tfmot's cluster-preserving scheme with one weight quantizer per layer.

    tfmot 0.8.1 shares one quantizer object between all layers of a kind, and the first layer
    without zeros (an unpruned first or last layer) switches its sparsity preservation off for every
    layer: PCQAT then loses the pruned zeros. A fresh quantizer per layer keeps each layer's own.
    """
    tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        cluster_preserve_quantize_registry as registry,
    )

    class PerLayerRegistry(registry.Default8bitClusterPreserveQuantizeRegistry):
        def get_quantize_config(self, layer: Any) -> Any:
            self.__init__(preserve_sparsity)  # type: ignore[misc]  # new quantizer objects for this layer
            return super().get_quantize_config(layer)

    class Scheme(tfmot().experimental.combine.Default8BitClusterPreserveQuantizeScheme):  # type: ignore[misc]
        def get_quantize_registry(self) -> Any:
            return PerLayerRegistry(self.preserve_sparsity)

    return Scheme(preserve_sparsity=preserve_sparsity)


def init_quantizer_ranges(qat_net: Any, calibration: np.ndarray, *, max_passes: int = 12) -> int:
    """Set every activation quantizer's range from calibration data; returns the passes run.

    A freshly wrapped QAT model outputs a constant until its ranges see data (docs/stack-notes.md
    fact 5).

    tfmot's moving-average quantizers start at [-6, 6] and move 0.1% per step, so a short fine-tune
    leaves them wide. One training-mode pass updates each range by ema = d*old + (1-d)*batch; the
    batch range is solved from that and assigned. Passes repeat until no range moves, so ranges
    downstream see the already-fixed upstream ones. Other state a training-mode pass updates
    (BatchNormalization's moving statistics) is put back.
    """
    decay = 0.999
    ranges = [
        v
        for v in qat_net.variables
        if v.name.split("/")[-1].split(":")[0].endswith(("_min", "_max"))
        and "kernel" not in v.name
        and "quantize_layer" not in v.name
    ]
    kept = [(v, v.numpy()) for v in qat_net.non_trainable_variables if "moving_" in v.name]
    x = np.asarray(calibration, dtype=np.float32)
    passes = 0
    for passes in range(1, max_passes + 1):
        before = [v.numpy() for v in ranges]
        qat_net(x, training=True)
        moved = 0.0
        for var, old in zip(ranges, before):
            batch = (var.numpy() - decay * old) / (1 - decay)
            new = batch.astype(np.float32) if np.all(np.isfinite(batch)) else old
            var.assign(new)
            moved = max(moved, float(np.max(np.abs(new - old))))
        if moved < 1e-4 and passes > 1:
            break
    for var, value in kept:
        var.assign(value)
    return passes
