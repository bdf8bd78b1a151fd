"""Tasks: what a model's outputs mean, and the figures each is judged by against the float model.

    multiclass    softmax or logits over classes     accuracy (points), per-class F1, confusion
    binary        one sigmoid (or logit)             accuracy at 0.5 (points), ROC AUC
    multilabel    k sigmoids, a 0/1 target matrix    label accuracy (points), per-label F1
    regression    float targets                      MAE; the gate reads its growth in percent
    autoencoder   outputs shaped like the input      reconstruction error per sample; with 0/1
                                                     anomaly labels, the ROC AUC of that score

    >>> detect([np.zeros((4, 1))], ("classes",), inputs=(np.zeros((4, 3)),))
    ('binary',)

``detect`` reads the task from each output's shape and values and the dataset's targets; the
caller may fix it (``--task``). ``score`` measures one artifact's outputs against the float
reference's, per output, in numpy alone (a device can run it). Numbers are checked against
scikit-learn in the tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from edgeship import metrics
from edgeship.errors import BadInputError
from edgeship.records import AccuracyDelta, Headline

if TYPE_CHECKING:
    from edgeship.data import Dataset

__all__ = ["TASKS", "parse_task", "detect", "score", "Scorer", "said", "delta_of", "value_text"]

TASKS = ("multiclass", "binary", "multilabel", "regression", "autoencoder")


def parse_task(task: str | None) -> str | None:
    """A task name checked once where it enters; None means "detect it"."""
    if task is None or task == "" or task == "auto":
        return None
    if task not in TASKS:
        raise BadInputError(f"task must be one of {', '.join(TASKS)} (or auto); received {task!r}")
    return task


def detect(
    outputs: Sequence[np.ndarray], targets: Sequence[str], *, inputs: Sequence[np.ndarray], task: str | None = None
) -> tuple[str, ...]:
    """The task of each output: ``task`` (for output 0) when given, else read from the data."""
    found = []
    for i, out in enumerate(outputs):
        kind = targets[i] if i < len(targets) else None
        if task is not None and i == 0:
            found.append(task)
        elif kind == "classes":
            found.append("multiclass" if out.ndim == 2 and out.shape[1] > 1 else "binary")
        elif kind in ("multilabel", "regression"):
            found.append(kind)
        elif out.shape[1:] == inputs[0].shape[1:]:
            found.append("autoencoder")
        else:
            found.append("regression")
    return tuple(found)


def score(
    reference: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    labels: Sequence[np.ndarray | None],
    tasks: Sequence[str],
    *,
    inputs: Sequence[np.ndarray],
    names: Sequence[str] = (),
    classes: Sequence[str] = (),
) -> AccuracyDelta:
    """Every figure of an artifact's outputs (``actual``) against the float model's (``reference``).

    One AccuracyDelta; with several outputs its flat fields are output 0's and ``outputs`` holds
    one per output. ``labels`` are the targets per output (None where there are none).
    """
    if len(reference) != len(actual):
        raise BadInputError(f"the float model has {len(reference)} outputs, the artifact {len(actual)}")
    parts = []
    for i, (ref, out, task) in enumerate(zip(reference, actual, tasks)):
        ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        if ref.shape != out.shape:
            raise BadInputError(f"output {i}: the float model gives shape {ref.shape}, the artifact {out.shape}")
        y = labels[i] if i < len(labels) else None
        delta = _SCORERS[task](ref, out, y, inputs[0] if inputs else None, classes if i == 0 else ())
        parts.append(dataclasses.replace(delta, output=names[i] if i < len(names) else f"output_{i}"))
    if len(parts) == 1:
        return parts[0]
    return dataclasses.replace(parts[0], outputs=tuple(parts))


@dataclass
class Scorer:
    """Scores artifacts of one model on one split: the float outputs, targets and tasks, fixed once.

    >>> scorer = Scorer.for_split(dataset, reference_outputs)           # doctest: +SKIP
    >>> scorer(artifact_outputs).headline                                # doctest: +SKIP
    """

    reference: list[np.ndarray]
    labels: list[np.ndarray | None]
    tasks: tuple[str, ...]
    inputs: tuple[np.ndarray, ...]
    classes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def for_split(
        cls,
        dataset: Dataset,
        reference: np.ndarray | Sequence[np.ndarray],
        *,
        task: str | None = None,
        split: str = "test",
        names: Sequence[str] = (),
    ) -> Scorer:
        outputs = [np.asarray(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
        inputs = dataset.inputs(split)
        labels: list[np.ndarray | None] = list(dataset.labels(split))
        if not dataset.targets and labels:  # an autoencoder's anomaly labels
            labels = labels + [None] * (len(outputs) - 1)
        labels += [None] * (len(outputs) - len(labels))
        tasks = detect(outputs, dataset.targets, inputs=inputs, task=task)
        return cls(outputs, labels, tasks, inputs, tuple(dataset.classes), tuple(names))

    def __call__(self, actual: np.ndarray | Sequence[np.ndarray]) -> AccuracyDelta:
        outputs = [np.asarray(a) for a in (actual if isinstance(actual, (list, tuple)) else [actual])]
        return score(
            self.reference,
            align(self.reference, outputs),
            self.labels,
            self.tasks,
            inputs=self.inputs,
            names=self.names,
            classes=self.classes,
        )

    @property
    def task(self) -> str:
        return self.tasks[0] if self.tasks else ""


def align(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``outputs`` in the reference's order: converters may order a model's outputs differently
    (TFLite sorts them by name); each is matched by its shape where shapes tell them apart."""
    outputs = list(outputs)
    if len(outputs) != len(reference) or [o.shape for o in outputs] == [r.shape for r in reference]:
        return outputs
    shapes = [o.shape for o in outputs]
    if len(set(shapes)) != len(shapes):
        return outputs  # equal shapes: the order is all there is to go by
    by_shape = {o.shape: o for o in outputs}
    return [by_shape.get(r.shape, o) for r, o in zip(reference, outputs)]


class Judged(Protocol):
    """What ``said`` and ``delta_of`` read: an AccuracyDelta, or a doctor record carrying its figures
    (``RecoveryStep``, ``Diagnosis``)."""

    @property
    def headline(self) -> Headline | None: ...

    @property
    def accuracy_delta_pts(self) -> float | None: ...

    @property
    def sqnr_db(self) -> float: ...


def delta_of(delta: Judged) -> float:
    """The signed headline change of an AccuracyDelta (or a record with ``headline``): negative is worse."""
    head = getattr(delta, "headline", None)
    if head is not None:
        return float(head.delta)
    return float(getattr(delta, "accuracy_delta_pts", None) or 0.0)


def value_text(unit: str, value: float | None) -> str:
    """A headline value as people read it: accuracies in percent, AUC and errors as numbers."""
    if value is None:
        return "—"
    return f"{value * 100:.2f}%" if unit == "points" else f"{value:.4f}" if unit == "AUC points" else f"{value:.4g}"


def change_text(head: Headline) -> str:
    """The change as its unit reads: points gained (+) or lost (-); for a ``%`` unit the error's
    growth itself (``+3.10`` when it grew), though ``Headline.delta`` is negative when worse."""
    shown = -head.delta if head.unit.startswith("%") else head.delta
    return f"{shown + 0.0:+.2f}"  # + 0.0: no "-0.00"


def said(delta: Judged) -> str:
    """The headline change in words: ``accuracy -1.25 points``, ``MAE +3.10 % error growth``."""
    head = getattr(delta, "headline", None)
    if head is None:
        return f"SQNR {getattr(delta, 'sqnr_db', 0.0):.1f} dB"
    return f"{head.name} {change_text(head)} {head.unit}"


class _Errors(TypedDict):
    samples: int
    max_abs_error: float
    mean_abs_error: float
    sqnr_db: float
    cosine_similarity: float


def _errors(ref: np.ndarray, out: np.ndarray) -> _Errors:
    error = np.abs(out - ref)
    norm = float(np.linalg.norm(ref) * np.linalg.norm(out))
    return {
        "samples": int(len(ref)),
        "max_abs_error": float(error.max(initial=0.0)),
        "mean_abs_error": float(error.mean()) if error.size else 0.0,
        "sqnr_db": metrics.sqnr_db(ref, out),
        "cosine_similarity": float(np.sum(ref * out) / norm) if norm else 0.0,
    }


def _points(name: str, value: float, reference: float) -> Headline:
    return Headline(
        name=name, value=value, reference=reference, delta=round((value - reference) * 100, 6), unit="points"
    )


def _growth(name: str, value: float, reference: float) -> Headline:
    """An error figure: its growth over the float model's, in percent (negative delta is worse)."""
    growth = (value - reference) / reference * 100 if reference > 0 else (0.0 if value == 0 else 100.0)
    return Headline(name=name, value=value, reference=reference, delta=round(-growth, 6), unit="% error growth")


def _classified(ref_pred: np.ndarray, pred: np.ndarray, y: np.ndarray | None, n_classes: int) -> dict[str, Any]:
    agreement = float(np.mean(pred == ref_pred))
    if y is None:
        return {"accuracy": None, "reference_accuracy": None, "accuracy_delta_pts": None, "agreement": agreement}
    y = np.asarray(y).astype(np.int64).reshape(ref_pred.shape)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise BadInputError(
            f"the data's labels run {int(y.min())}..{int(y.max())}, but the model's output scores "
            f"{n_classes} classes (labels 0..{n_classes - 1}); validate it on data whose labels it predicts"
        )
    acc, ref_acc = metrics.accuracy(pred, y), metrics.accuracy(ref_pred, y)
    figures: dict[str, Any] = {
        "accuracy": acc,
        "reference_accuracy": ref_acc,
        "accuracy_delta_pts": round((acc - ref_acc) * 100, 6),
        "agreement": agreement,
    }
    if pred.ndim == 1:
        matrix = metrics.confusion_matrix(y, pred, n_classes)
        figures.update(
            per_class=metrics.per_class(matrix), confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix)
        )
    return figures


def _multiclass(ref, out, y, x, classes) -> AccuracyDelta:
    figures = _classified(ref.argmax(1), out.argmax(1), y, ref.shape[1])
    auc = metrics.roc_auc(np.asarray(y), out[:, 1]) if y is not None and ref.shape[1] == 2 else None
    head = _points("accuracy", figures["accuracy"], figures["reference_accuracy"]) if y is not None else None
    return AccuracyDelta(**_errors(ref, out), **figures, roc_auc=auc, task="multiclass", headline=head)


def _threshold(values: np.ndarray) -> float:
    """0.5 for probabilities, 0 for logits."""
    return 0.5 if values.min(initial=0.0) >= 0 and values.max(initial=0.0) <= 1 else 0.0


def _binary(ref, out, y, x, classes) -> AccuracyDelta:
    r, a = ref.reshape(len(ref), -1)[:, 0], out.reshape(len(out), -1)[:, 0]
    t = _threshold(r)
    figures = _classified((r > t).astype(np.int64), (a > t).astype(np.int64), y, 2)
    auc = metrics.roc_auc(np.asarray(y).reshape(-1), a) if y is not None else None
    head = _points("accuracy", figures["accuracy"], figures["reference_accuracy"]) if y is not None else None
    return AccuracyDelta(**_errors(ref, out), **figures, roc_auc=auc, task="binary", headline=head)


def _multilabel(ref, out, y, x, classes) -> AccuracyDelta:
    t = _threshold(ref)
    ref_pred, pred = (ref > t).astype(np.int64), (out > t).astype(np.int64)
    figures = _classified(ref_pred, pred, y, 2)
    per_label = {}
    if y is not None:
        y = np.asarray(y).astype(np.int64)
        tp = (pred * y).sum(0).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(pred.sum(0) > 0, tp / pred.sum(0), 0.0)
            recall = np.where(y.sum(0) > 0, tp / y.sum(0), 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        per_label = {
            "precision": tuple(map(float, precision)),
            "recall": tuple(map(float, recall)),
            "f1": tuple(map(float, f1)),
            "support": tuple(float(v) for v in y.sum(0)),
        }
    head = _points("label accuracy", figures["accuracy"], figures["reference_accuracy"]) if y is not None else None
    return AccuracyDelta(**_errors(ref, out), **{**figures, "per_class": per_label}, task="multilabel", headline=head)


def _regression(ref, out, y, x, classes) -> AccuracyDelta:
    if y is None:  # no targets: the error against the float outputs is the figure
        norm = float(np.linalg.norm(ref))
        relative = float(np.linalg.norm(out - ref)) / norm * 100 if norm else 0.0
        head = Headline(
            name="relative error vs float", value=relative, reference=0.0, delta=-relative, unit="% relative error"
        )
    else:
        y = np.asarray(y, np.float64)
        if y.size != ref.size:
            whole = y.size == len(ref) and np.all(np.isfinite(y)) and np.array_equal(y, np.round(y))
            hint = (
                f"they look like class ids stored as floats ({y.ravel()[:3].tolist()} …): store them as integers "
                "(y.astype(int)) or pass --task multiclass"
                if whole and ref.ndim == 2 and ref.shape[1] > 1
                else "give one target per model output value, or the task the outputs have (--task)"
            )
            raise BadInputError(
                f"the labels are float regression targets, {y.size} values for {len(ref)} samples, "
                f"but the model gives {ref.shape[1:] or 'one value'} per sample; {hint}"
            )
        y = y.reshape(ref.shape)
        head = _growth("MAE", float(np.abs(out - y).mean()), float(np.abs(ref - y).mean()))
    return AccuracyDelta(
        **_errors(ref, out),
        accuracy=None,
        reference_accuracy=None,
        accuracy_delta_pts=None,
        agreement=None,
        task="regression",
        headline=head,
    )


def reconstruction_error(outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Mean squared error per sample between an autoencoder's outputs and its inputs."""
    diff = np.asarray(outputs, np.float64) - np.asarray(inputs, np.float64).reshape(outputs.shape)
    return np.square(diff).reshape(len(diff), -1).mean(1)


def _autoencoder(ref, out, y, x, classes) -> AccuracyDelta:
    if x is None:
        raise BadInputError("scoring an autoencoder needs its inputs")
    e_ref, e_out = reconstruction_error(ref, x), reconstruction_error(out, x)
    auc = auc_ref = None
    if y is not None:
        labels = np.asarray(y).reshape(-1)
        auc, auc_ref = metrics.roc_auc(labels, e_out), metrics.roc_auc(labels, e_ref)
    if auc is not None and auc_ref is not None:
        head = Headline(
            name="anomaly ROC AUC",
            value=auc,
            reference=auc_ref,
            delta=round((auc - auc_ref) * 100, 6),
            unit="AUC points",
        )
    else:
        head = _growth("reconstruction error", float(e_out.mean()), float(e_ref.mean()))
    return AccuracyDelta(
        **_errors(ref, out),
        accuracy=None,
        reference_accuracy=None,
        accuracy_delta_pts=None,
        agreement=None,
        roc_auc=auc,
        task="autoencoder",
        headline=head,
    )


_SCORERS = {
    "multiclass": _multiclass,
    "binary": _binary,
    "multilabel": _multilabel,
    "regression": _regression,
    "autoencoder": _autoencoder,
}
