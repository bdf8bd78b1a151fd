"""Accuracy and output-error figures, in numpy alone so a device can compute them too."""

from __future__ import annotations

import numpy as np

from edgeship.errors import BadInputError
from edgeship.records import AccuracyDelta

#: SQNR reported when an artifact reproduces its reference exactly (JSON has no infinity).
SQNR_EXACT_DB = 300.0


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of ``predicted`` equal to ``labels``, entry by entry: top-1 accuracy for class
    ids (``outputs.argmax(-1)``), label accuracy for 0/1 label matrices. Every accuracy edgeship
    reports (validation, bundles, the device check) is this one.

        >>> accuracy(np.array([2, 0, 1, 1]), np.array([2, 0, 1, 0]))
        0.75
    """
    return float(np.mean(predicted == labels))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix


def per_class(matrix: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "precision": tuple(float(v) for v in precision),
        "recall": tuple(float(v) for v in recall),
        "f1": tuple(float(v) for v in f1),
        "support": tuple(float(v) for v in actual),
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Binary ROC AUC by the rank statistic (ties share ranks); None when one class is absent."""
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``actual`` against ``reference``, in dB."""
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(actual.astype(np.float64) - reference)))
    return sqnr_db_from_sums(signal, noise)


def sqnr_db_from_sums(signal: float, noise: float) -> float:
    """SQNR in dB from summed squares of signal and noise, capped at ±``SQNR_EXACT_DB``."""
    if noise == 0:
        return SQNR_EXACT_DB
    if signal == 0:
        return -SQNR_EXACT_DB
    return float(min(SQNR_EXACT_DB, 10 * np.log10(signal / noise)))


def compare(reference: np.ndarray, actual: np.ndarray, labels: np.ndarray) -> AccuracyDelta:
    """Every figure of ``actual`` (an artifact's outputs) against ``reference`` (the float model's)."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    labels = np.asarray(labels)
    if reference.shape != actual.shape or reference.ndim != 2 or len(labels) != len(reference):
        raise BadInputError(
            f"outputs to compare must be (samples, classes) arrays of one shape with one label each; received "
            f"reference {reference.shape}, artifact {actual.shape}, labels {labels.shape}"
        )
    classes = reference.shape[1]
    ref_pred, pred = reference.argmax(1), actual.argmax(1)
    ref_acc, acc = accuracy(ref_pred, labels), accuracy(pred, labels)
    matrix = confusion_matrix(labels, pred, classes)
    error = np.abs(actual - reference)
    norm = float(np.linalg.norm(reference) * np.linalg.norm(actual))
    return AccuracyDelta(
        samples=int(len(labels)),
        accuracy=acc,
        reference_accuracy=ref_acc,
        accuracy_delta_pts=round((acc - ref_acc) * 100, 6),
        agreement=float(np.mean(pred == ref_pred)),
        max_abs_error=float(error.max()),
        mean_abs_error=float(error.mean()),
        sqnr_db=sqnr_db(reference, actual),
        cosine_similarity=float(np.sum(reference * actual) / norm) if norm else 0.0,
        per_class=per_class(matrix),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix),
        roc_auc=roc_auc(labels, actual[:, 1]) if classes == 2 else None,
    )
