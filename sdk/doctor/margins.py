"""Agreement with float by the float model's top-2 margin: is a drop on inputs the float model
itself is unsure about, or on ones it is sure of?

The margin is the gap between the two largest class probabilities of the float model (after a
softmax where the outputs are logits; ``|2p - 1|`` for one sigmoid). int8 moves a healthy model's
probabilities by a few hundredths, so it flips samples with a margin under ~0.1 and leaves
confident ones alone; a damaged layer flips confident samples too.

Bins: [0, 0.1) near-ties, which any rounding may flip; [0.1, 0.25) borderline; [0.25, 0.5) and
[0.5, 1] confident, which a healthy int8 model should not flip. ``CONFIDENT`` (0.25) sits where
a healthy model's int8 error (a few hundredths) can no longer reach, with room to spare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeship.doctor.records import MarginBin, Margins

__all__ = ["EDGES", "CONFIDENT", "top2_margin", "predictions", "strata"]

EDGES = (0.0, 0.1, 0.25, 0.5, 1.0)
CONFIDENT = 0.25


def _is_probability(values: np.ndarray, *, rows_sum_to_one: bool) -> bool:
    if values.size == 0 or values.min() < 0 or values.max() > 1:
        return False
    return not rows_sum_to_one or bool(np.allclose(values.sum(1), 1.0, atol=1e-3))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def top2_margin(reference: np.ndarray, task: str) -> np.ndarray | None:
    """The float model's top-2 probability margin per sample; None for tasks without classes."""
    ref = np.asarray(reference, np.float64)
    if task == "multiclass" and ref.ndim == 2 and ref.shape[1] > 1:
        probs = ref if _is_probability(ref, rows_sum_to_one=True) else _softmax(ref)
        top = np.sort(probs, axis=1)[:, -2:]
        return top[:, 1] - top[:, 0]
    if task == "binary":
        r = ref.reshape(len(ref), -1)[:, 0]
        p = r if _is_probability(r, rows_sum_to_one=False) else 1.0 / (1.0 + np.exp(-r))
        return np.abs(2.0 * p - 1.0)
    return None


def predictions(outputs: np.ndarray, task: str) -> np.ndarray:
    """Top-1 class (multiclass) or the 0/1 decision (binary, 0.5 on probabilities, 0 on logits)."""
    out = np.asarray(outputs, np.float64)
    if task == "multiclass":
        return out.argmax(1)
    r = out.reshape(len(out), -1)[:, 0]
    return (r > (0.5 if _is_probability(r, rows_sum_to_one=False) else 0.0)).astype(np.int64)


def strata(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray], task: str, split: str) -> Margins | None:
    """Output 0's agreement with float per margin bin on ``split``; None where it has no classes."""
    if not reference or not actual or not len(reference[0]):
        return None
    ref, out = np.asarray(reference[0], np.float64), np.asarray(actual[0], np.float64)
    if task == "binary" and _is_probability(ref.reshape(-1), rows_sum_to_one=False) != _is_probability(
        out.reshape(-1), rows_sum_to_one=False
    ):
        return None  # one side logits, the other probabilities: decisions would not compare
    margin = top2_margin(ref, task)
    if margin is None or out.shape != ref.shape:
        return None
    agree = predictions(ref, task) == predictions(out, task)
    bins = []
    for low, high in zip(EDGES[:-1], EDGES[1:]):
        inside = (margin >= low) & ((margin < high) if high < EDGES[-1] else (margin <= high))
        n, ok = int(inside.sum()), int(agree[inside].sum())
        bins.append(MarginBin(low=low, high=high, samples=n, agreed=ok, agreement=ok / n if n else None))
    sure = margin >= CONFIDENT
    return Margins(
        split=split,
        bins=tuple(bins),
        confident_from=CONFIDENT,
        median_margin=float(np.median(margin)),
        disagreement_median_margin=float(np.median(margin[~agree])) if (~agree).any() else None,
        confident_agreement=float(agree[sure].mean()) if sure.any() else None,
    )
