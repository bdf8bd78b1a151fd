"""The doctor's data model: what it measured per layer, advised, tried and wrote (``doctor.json``).

Imports none of the doctor's parts, so every part can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeship.errors import BadInputError
from edgeship.records import SCHEMA_VERSION, Artifact, Headline, Record, VersionedFile

__all__ = ["LayerError", "Advice", "MarginBin", "Margins", "RecoveryStep", "Recovery", "Diagnosis", "DoctorReport"]


@dataclass(frozen=True)
class LayerError(Record):
    """One quantized tensor: how far its int8 values sit from float, and what its range looks like.

    ``sqnr_db`` (the ranking figure) is the median over channels of each channel's SQNR: a
    tensor-wide SQNR is dominated by its largest channels and hides the ones int8 crushed.
    ``tensor_sqnr_db`` is the tensor-wide figure and ``model_sqnr_db`` the same tensor against the
    all-float model (errors accumulated from every layer before it). All three are local to this
    layer's own quantization except ``model_sqnr_db``. ``outlier_ratio`` is max |x| over its
    99.9th percentile; ``channel_spread`` the widest channel's peak over the median channel's.
    """

    name: str
    op: str
    tensor: str
    sqnr_db: float
    tensor_sqnr_db: float
    model_sqnr_db: float | None = None
    rel_error: float = 0.0
    max_abs_error: float = 0.0
    range_min: float = 0.0
    range_max: float = 0.0
    p999_abs: float = 0.0
    outlier_ratio: float = 1.0
    channel_spread: float = 1.0
    channels: int = 1
    scale: float | None = None
    zero_point: int | None = None
    readers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Advice(Record):
    """One finding: ``kind`` is ambiguity or damage (the verdict), outliers, channel-outliers, few-samples,
    normalisation, or weights (a Core ML op its compressed weights hurt)."""

    kind: str
    message: str
    layer: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MarginBin(Record):
    """Samples whose float top-2 probability margin lies in [low, high), and how many the artifact
    classified as float did (``agreement`` is None for an empty bin)."""

    low: float
    high: float
    samples: int
    agreed: int
    agreement: float | None = None


@dataclass(frozen=True)
class Margins(Record):
    """Agreement with float by the float model's top-2 margin on one split (classification only).

    Low-margin samples are ones the float model itself is unsure about: int8 flips them first.
    ``confident_from`` is the margin from which a sample counts as confident; the medians tell
    where the disagreements sit against all samples (None when there are none)."""

    split: str
    bins: tuple[MarginBin, ...]
    confident_from: float
    median_margin: float
    disagreement_median_margin: float | None = None
    confident_agreement: float | None = None

    @property
    def disagreements(self) -> int:
        return sum(b.samples - b.agreed for b in self.bins)

    @property
    def unsure_disagreements(self) -> int:
        return sum(b.samples - b.agreed for b in self.bins if b.high <= self.confident_from)


@dataclass(frozen=True)
class RecoveryStep(Record):
    """One model tried, scored on ``split`` (candidates on the validation split; the chosen one
    again on test, with its margin strata). ``method`` is how it was made: ``calibration`` (the
    artifact's settings re-quantized, or ``changes`` such as more samples or another calibration
    method), ``equalization`` (cross-layer equalization, then the artifact's settings) or
    ``float`` (``float_layers`` kept in float, the rest int8)."""

    float_layers: tuple[str, ...]
    accuracy: float | None
    accuracy_delta_pts: float | None
    agreement: float | None
    sqnr_db: float
    size_bytes: int
    within_drop: bool
    headline: Headline | None = None
    split: str = "test"
    margins: Margins | None = None
    method: str = "float"
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recovery(Record):
    """The search for a mixed-precision artifact within ``max_drop`` points, and what it cost.

    ``steps[0]`` is the doctor's own all-int8 rebuild (same settings, the dataset's calibration
    samples); ratios compare the written artifact with the original int8 one (p50 latency timed
    interleaved, one thread). Candidates are chosen on ``chosen_on`` (the validation split, so the
    choice does not fit the test split) and ``within_drop`` is judged there; ``test`` holds the
    chosen model's figures on the test split, the ones to report.

    Methods are tried cheapest size first: calibration, equalization, then layers in float.
    ``method`` is the written artifact's; ``float_layers`` and ``float_ops`` are read back from
    the written file (its float compute ops, of ``compute_ops``), ``requested_float_layers`` what
    the quantizer was asked to keep in float."""

    max_drop: float
    within_drop: bool
    steps: tuple[RecoveryStep, ...] = ()
    float_layers: tuple[str, ...] = ()
    artifact: Artifact | None = None
    size_ratio: float | None = None
    p50_ratio: float | None = None
    p50_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""
    chosen_on: str = "test"
    test: RecoveryStep | None = None
    method: str | None = None
    requested_float_layers: tuple[str, ...] = ()
    float_ops: tuple[str, ...] = ()
    compute_ops: int | None = None


@dataclass(frozen=True)
class Diagnosis(Record):
    """One int8 artifact: its accuracy as it is (test split), its layers worst first, its agreement
    by float top-2 margin (classification), advice and recovery."""

    artifact: str
    path: str
    analysed_with: str
    samples: int
    accuracy: float | None
    reference_accuracy: float | None
    accuracy_delta_pts: float | None
    agreement: float | None
    sqnr_db: float
    layers: tuple[LayerError, ...] = ()
    advice: tuple[Advice, ...] = ()
    recovery: Recovery | None = None
    headline: Headline | None = None
    margins: Margins | None = None


@dataclass(frozen=True)
class DoctorReport(VersionedFile):
    """What ``edgeship doctor`` found (``doctor.json``)."""

    file_name: ClassVar[str] = "doctor.json"
    written_by: ClassVar[str] = "edgeship doctor"

    schema_version: int = SCHEMA_VERSION
    edgeship_version: str = ""
    created: str = ""
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    max_drop: float | None = None
    artifacts: tuple[Diagnosis, ...] = ()
    #: "<artifact>: why" for each artifact of the folder the doctor could not examine (a Core ML
    #: package with an op the numpy evaluator lacks, when every artifact was asked for)
    skipped: tuple[str, ...] = ()

    def diagnosis(self, name: str) -> Diagnosis:
        for item in self.artifacts:
            if item.artifact == name:
                return item
        raise BadInputError(f"no diagnosis for '{name}'; doctor.json holds {[d.artifact for d in self.artifacts]}")
