"""Facts about tf_keras models that more than one stage reads (imports nothing heavy itself)."""

from __future__ import annotations

from typing import Any


def is_qat(model: Any) -> bool:
    """Whether ``model`` holds tfmot's quantization-aware wrappers (QuantizeLayer, QuantizeWrapper…).

    Such a model converts to int8 from its own ranges, needs tfmot's scope to reload, and saves as
    ``.h5`` only (its wrappers do not reload from ``.keras``).
    """
    return any(type(layer).__name__.startswith("Quantize") for layer in getattr(model, "layers", ()))
