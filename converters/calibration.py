"""Calibration data for full-integer quantization: checked once, where it enters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.errors import BadInputError

DEFAULT_SAMPLES = 200

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
#: an array handed in as calibration data is cut to this many samples unless ``samples`` asks for
#: more; a Dataset gives ``samples`` from its training split, as many as it holds
MAX_SAMPLES = 500


def prepare(
    calibration: Any,
    input_shape: tuple[int, ...],
    *,
    target: str,
    samples: int = DEFAULT_SAMPLES,
    dtype: str = "float32",
) -> np.ndarray:
    """Return calibration samples shaped ``(n,) + input_shape`` in the model's input ``dtype``
    (float32, or integer ids for an Embedding) or say what is wrong.

    ``calibration`` is a Dataset (its calibration subset of ``samples``, at most the training
    split) or an array of samples (its first ``max(samples, MAX_SAMPLES)``).
    """
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise BadInputError(f"{target}: calibration_samples must be an integer of at least 1; received {samples!r}")
    cap = max(int(samples), MAX_SAMPLES)
    if calibration is None:
        raise BadInputError(
            f"{target} needs calibration data (a representative dataset) and none was given; "
            "pass data='digits' (or another dataset) or calibration=<array of samples>"
        )
    if hasattr(calibration, "calibration"):
        calibration = calibration.calibration(int(samples))
    x = np.asarray(calibration)
    if x.dtype.kind not in "fiu":
        raise BadInputError(f"calibration data for {target} must be numeric; received dtype {x.dtype}")
    if x.ndim == len(input_shape):
        x = x[None]
    if x.shape[1:] != tuple(input_shape):
        raise BadInputError(
            f"calibration data for {target} must have samples of shape {tuple(input_shape)} (the model's input); "
            f"received an array of shape {x.shape}"
        )
    if len(x) == 0:
        raise BadInputError(f"calibration data for {target} is empty; give 100-500 samples from the training split")
    if np.dtype(dtype).kind in "iu":
        if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
            raise BadInputError(
                f"{target}: the model takes {dtype} ids but the calibration samples are fractional "
                f"floats; pass the ids as stored (--preprocess none)"
            )
        return x[:cap].astype(dtype)
    x = x[:cap].astype(np.float32)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
        raise BadInputError(
            f"calibration data for {target} has {bad} samples with NaN or infinite values; clean them first"
        )
    return x


def prepare_all(
    calibration: Any, source: SourceModel, *, target: str, samples: int = DEFAULT_SAMPLES
) -> np.ndarray | list[np.ndarray]:
    """``prepare`` for every input of ``source``: one array for a single-input model, else a list
    in the model's input order (a Dataset gives one array per input; so must a caller)."""
    specs = source.input_specs
    if len(specs) == 1:
        return prepare(calibration, specs[0][0], target=target, samples=samples, dtype=specs[0][1])
    if hasattr(calibration, "calibration"):
        calibration = calibration.calibration(int(samples))
    if not isinstance(calibration, (tuple, list)) or len(calibration) != len(specs):
        raise BadInputError(
            f"{target}: the model has {len(specs)} inputs, so calibration data is one array per "
            f"input, in the model's order; received {type(calibration).__name__}"
        )
    arrays = [
        prepare(c, shape, target=f"{target} (input {i})", samples=samples, dtype=dtype)
        for i, (c, (shape, dtype)) in enumerate(zip(calibration, specs))
    ]
    if len({len(a) for a in arrays}) != 1:
        raise BadInputError(
            f"{target}: every input needs as many calibration samples; received {[len(a) for a in arrays]}"
        )
    return arrays
