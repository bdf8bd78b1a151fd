"""What validation and benchmarking measure: per-artifact figures, the gate, and the report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from edgeship.errors import BadInputError
from edgeship.records._base import REPORT_NAME, SCHEMA_VERSION, Record, VersionedFile

__all__ = ["AccuracyDelta", "BenchmarkResult", "ReportEntry", "Gate", "Report"]


@dataclass(frozen=True)
class Headline(Record):
    """The one figure a task is judged by, against the float reference's, in ``unit``.

    ``delta`` is signed so that negative is worse: accuracy points lost (classification), AUC
    points lost (anomaly detection), or the error's relative growth in percent (regression,
    reconstruction). The gate's ``max_drop`` is in this unit.
    """

    name: str
    value: float
    reference: float
    delta: float
    unit: str


@dataclass(frozen=True)
class AccuracyDelta(Record):
    """An artifact measured against its float reference on the same held-out split.

    ``task`` says what the outputs mean (multiclass, binary, multilabel, regression, autoencoder);
    figures that do not apply to it are None (accuracy for regression) or empty (per-class figures
    where there are no classes). ``headline`` is the task's figure; ``outputs`` holds the same
    figures per output of a model with several (the flat fields are output 0's).
    """

    samples: int
    accuracy: float | None
    reference_accuracy: float | None
    accuracy_delta_pts: float | None
    agreement: float | None
    max_abs_error: float
    mean_abs_error: float
    sqnr_db: float
    cosine_similarity: float
    per_class: dict[str, tuple[float, ...]] = field(default_factory=dict)
    confusion_matrix: tuple[tuple[int, ...], ...] = ()
    roc_auc: float | None = None
    passed: bool | None = None
    failures: tuple[str, ...] = ()
    task: str = "multiclass"
    headline: Headline | None = None
    output: str = ""
    outputs: tuple[AccuracyDelta, ...] = ()


@dataclass(frozen=True)
class BenchmarkResult(Record):
    """Latency statistics the way TFLite's benchmark_model reports them (times in milliseconds).

    ``timed`` says what each timed call covered: ``"model (raw int8 I/O)"`` (the runtime call on
    inputs already in the model's dtypes, as benchmark_model times it) or ``"float I/O wrapper"``
    (``Session.run`` on float inputs, conversion included); empty in files written before it was
    recorded. ``io_ms`` is the float <-> model-dtype conversion per call (quantize inputs and
    dequantize outputs; 0 for a float model), timed apart from the model: p50, like ``p50_ms``.
    """

    runtime: str
    runtime_version: str
    threads: int | None
    batch: int
    init_ms: float
    first_ms: float
    warmup_mean_ms: float
    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p5_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float
    peak_rss_bytes: int
    rss_growth_bytes: int
    model_size_bytes: int
    env: dict[str, Any] = field(default_factory=dict)
    timed: str = ""
    io_ms: float | None = None


@dataclass(frozen=True)
class ReportEntry(Record):
    """One artifact's row in report.json: its identity, accuracy figures (flat) and benchmark.

    ``status`` is "ok" when every figure was measured; otherwise it says why a figure is missing
    (for example "not run: needs macOS"), and the missing figures are null, never invented.
    """

    name: str
    format: str
    precision: str
    path: str
    size_bytes: int
    status: str = "ok"
    evaluated_with: str = ""
    validation: AccuracyDelta | None = None
    benchmark: BenchmarkResult | None = None

    _accuracy_keys: ClassVar[frozenset[str]] = frozenset(f.name for f in dataclasses.fields(AccuracyDelta))

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in super().to_dict().items() if k != "validation"}
        if self.validation is not None:
            data.update(self.validation.to_dict())
        else:
            data.update({k: None for k in ("accuracy", "accuracy_delta_pts", "agreement", "passed")})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise BadInputError(f"ReportEntry: expected an object, received {type(data).__name__}")
        flat = {k: v for k, v in data.items() if k in cls._accuracy_keys}
        rest = {k: v for k, v in data.items() if k not in cls._accuracy_keys}
        measured = flat.get("samples") is not None
        if measured:
            rest["validation"] = flat
        return super().from_dict(rest)

    @property
    def accuracy(self) -> float | None:
        return None if self.validation is None else self.validation.accuracy

    @property
    def accuracy_delta_pts(self) -> float | None:
        return None if self.validation is None else self.validation.accuracy_delta_pts

    @property
    def passed(self) -> bool | None:
        return None if self.validation is None else self.validation.passed


@dataclass(frozen=True)
class Gate(Record):
    """The accuracy gate: an artifact fails when its headline figure falls more than ``max_drop``
    below the float reference's (accuracy points for classification, AUC points for anomaly
    detection, percent error growth for regression), or agrees with the reference's predictions
    on less than ``min_agreement``."""

    max_drop: float | None = None
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None and not self.max_drop >= 0:
            raise BadInputError(f"max_drop must be >= 0 points, received {self.max_drop}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise BadInputError(f"min_agreement must be a fraction in [0, 1], received {self.min_agreement}")

    @property
    def active(self) -> bool:
        return self.max_drop is not None or self.min_agreement is not None

    def check(self, delta: AccuracyDelta) -> tuple[str, ...]:
        """The reasons ``delta`` fails this gate (empty when it passes): ``max_drop`` is in each
        output's headline unit; ``min_agreement`` applies where agreement does."""
        failures = []
        for one in delta.outputs or (delta,):
            where = f"{one.output}: " if delta.outputs else ""
            head = one.headline
            if self.max_drop is not None and head is not None and -head.delta > self.max_drop:
                what = "rose" if head.unit.startswith("%") else "dropped"
                failures.append(f"{where}{head.name} {what} {-head.delta:.2f} {head.unit} (max {self.max_drop:g})")
            elif (
                self.max_drop is not None
                and head is None
                and one.accuracy_delta_pts is not None
                and -one.accuracy_delta_pts > self.max_drop
            ):
                failures.append(f"{where}accuracy dropped {-one.accuracy_delta_pts:.2f} points (max {self.max_drop:g})")
            if self.min_agreement is not None and one.agreement is not None and one.agreement < self.min_agreement:
                failures.append(f"{where}agreement {one.agreement:.4f} is below {self.min_agreement:g}")
        return tuple(failures)


@dataclass(frozen=True)
class Report(VersionedFile):
    """Everything one run measured (``report.json``); the HTML page is rendered from it."""

    file_name: ClassVar[str] = REPORT_NAME
    written_by: ClassVar[str] = "edgeship validate"

    schema_version: int = SCHEMA_VERSION
    edgeship_version: str = ""
    created: str = ""
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    split: str = "test"
    reference_accuracy: float | None = None
    task: str = ""
    preprocess: str = ""
    reference_per_class: dict[str, tuple[float, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    gate: Gate = field(default_factory=Gate)
    passed: bool | None = None
    host: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    artifacts: tuple[ReportEntry, ...] = ()
    notes: tuple[str, ...] = ()

    def entry(self, name: str) -> ReportEntry:
        for entry in self.artifacts:
            if entry.name == name:
                return entry
        raise BadInputError(f"no artifact named '{name}' in the report; it holds {[e.name for e in self.artifacts]}")

    @property
    def failed(self) -> tuple[ReportEntry, ...]:
        return tuple(e for e in self.artifacts if e.passed is False)
