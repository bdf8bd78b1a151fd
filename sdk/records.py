"""The data model: frozen dataclasses with a JSON round trip that rejects unknown keys.

    TensorSpec ─┐
                ├─ Artifact ──── Manifest          (manifest.json)
    AccuracyDelta ─┐
    BenchmarkResult ┴─ ReportEntry ── Report        (report.json)

Every file written carries ``schema_version``; a newer version than this code knows is refused.
Nothing here imports more than the standard library.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from edgeship import _io
from edgeship.errors import BadArtifactError, BadInputError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"

__all__ = [
    "SCHEMA_VERSION",
    "TensorSpec",
    "Artifact",
    "Manifest",
    "AccuracyDelta",
    "BenchmarkResult",
    "ReportEntry",
    "Gate",
    "Report",
    "TrainingRecord",
]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any, where: str) -> Any:
    """Turn JSON ``value`` into the annotated type ``tp``, or raise BadInputError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for arg in inner:
            try:
                return _decode(arg, value, where)
            except BadInputError as exc:
                errors.append(str(exc))
        raise BadInputError(errors[0] if errors else f"{where}: received {value!r}")
    if isinstance(tp, type) and issubclass(tp, Record):
        if not isinstance(value, dict):
            raise BadInputError(f"{where}: expected an object, received {type(value).__name__}")
        return tp.from_dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BadInputError(f"{where}: expected a list, received {type(value).__name__}")
        args = typing.get_args(tp)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise BadInputError(f"{where}: expected an object, received {type(value).__name__}")
        _, item = typing.get_args(tp)
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise BadInputError(f"{where}: expected a list, received {type(value).__name__}")
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - a new annotation needs a branch above
        raise TypeError(f"records cannot decode {tp!r}")
    raise BadInputError(f"{where}: expected {tp.__name__}, received {value!r}")


class Record:
    """Mixin for the frozen dataclasses below: ``to_dict`` / ``from_dict`` with strict keys."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise BadInputError(f"{cls.__name__}: expected an object, received {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BadInputError(
                f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(names)}"
            )
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadInputError(f"{cls.__name__}: the key '{f.name}' is missing")
        return cls(**kwargs)


class _VersionedFile(Record):
    """A record stored as its own JSON file, with ``schema_version`` checked on read."""

    file_name: ClassVar[str]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise BadInputError(f"{cls.__name__}: 'schema_version' must be an integer, received {version!r}")
        if version > SCHEMA_VERSION:
            raise BadInputError(
                f"{cls.__name__}: schema_version {version} is newer than this edgeship understands "
                f"({SCHEMA_VERSION}); upgrade edgeship"
            )
        return super().from_dict(data)

    def save(self, folder: str | Path) -> Path:
        """Write the record as ``folder/<file_name>``, atomically."""
        return _io.write_json(Path(folder) / self.file_name, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a record from a file or from the folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / cls.file_name
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(data)
        except FileNotFoundError as exc:
            raise BadArtifactError(f"no {cls.file_name} at {path}: run the step that writes it first") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadArtifactError(f"{path} is not valid JSON ({exc}); regenerate it") from exc
        except BadInputError as exc:
            raise BadArtifactError(f"{path} is malformed: {exc}") from exc


@dataclass(frozen=True)
class TensorSpec(Record):
    """One input or output tensor. ``shape`` uses -1 for a dynamic dimension.

    ``scale`` and ``zero_point`` are set when the tensor itself is quantized (int8/uint8 I/O):
    ``real = scale * (q - zero_point)``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale > 0


@dataclass(frozen=True)
class Artifact(Record):
    """A model file (or .mlpackage folder) written by a converter, relative to its manifest's folder."""

    name: str
    path: str
    format: str
    precision: str
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest(_VersionedFile):
    """The artifacts of one output folder (``manifest.json``)."""

    file_name: ClassVar[str] = MANIFEST_NAME

    schema_version: int = SCHEMA_VERSION
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    reference: Artifact | None = None
    artifacts: tuple[Artifact, ...] = ()

    def with_artifact(self, artifact: Artifact) -> Manifest:
        """A copy with ``artifact`` added, replacing one of the same name."""
        kept = tuple(a for a in self.artifacts if a.name != artifact.name)
        return dataclasses.replace(self, artifacts=kept + (artifact,))

    def get(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        known = [a.name for a in self.artifacts]
        raise BadInputError(f"no artifact named '{name}' in the manifest; it holds {known}")


def verified_path(folder: str | Path, artifact: Artifact) -> Path:
    """The path of ``artifact`` in ``folder``, once it is known to stay inside the folder and to
    match the sha256 its manifest records; a BadArtifactError names what is wrong."""
    folder = Path(folder)
    path = folder / artifact.path
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BadArtifactError(f"manifest entry {artifact.name} points outside {folder}: {artifact.path}")
    if not path.exists():
        raise BadArtifactError(f"{artifact.name}: {path} is missing; convert again")
    digest = _io.sha256_path(path)
    if digest != artifact.sha256:
        raise BadArtifactError(
            f"{artifact.name}: {path.name} has sha256 {digest[:12]}…, but the manifest records "
            f"{artifact.sha256[:12]}…; the file changed after conversion. Convert again"
        )
    return path


@dataclass(frozen=True)
class AccuracyDelta(Record):
    """An artifact measured against its float reference on the same held-out split."""

    samples: int
    accuracy: float
    reference_accuracy: float
    accuracy_delta_pts: float
    agreement: float
    max_abs_error: float
    mean_abs_error: float
    sqnr_db: float
    cosine_similarity: float
    per_class: dict[str, tuple[float, ...]] = field(default_factory=dict)
    confusion_matrix: tuple[tuple[int, ...], ...] = ()
    roc_auc: float | None = None
    passed: bool | None = None
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class BenchmarkResult(Record):
    """Latency statistics the way TFLite's benchmark_model reports them (times in milliseconds)."""

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
        measured = flat.get("accuracy") is not None
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
    """The accuracy gate: an artifact fails when it drops more than ``max_drop`` points below the
    float reference, or agrees with the reference's predictions on less than ``min_agreement``."""

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
        """The reasons ``delta`` fails this gate (empty when it passes)."""
        failures = []
        if self.max_drop is not None and -delta.accuracy_delta_pts > self.max_drop:
            failures.append(
                f"accuracy dropped {-delta.accuracy_delta_pts:.2f} points (max {self.max_drop:g})"
            )
        if self.min_agreement is not None and delta.agreement < self.min_agreement:
            failures.append(f"agreement {delta.agreement:.4f} is below {self.min_agreement:g}")
        return tuple(failures)


@dataclass(frozen=True)
class Report(_VersionedFile):
    """Everything one run measured (``report.json``); the HTML page is rendered from it."""

    file_name: ClassVar[str] = REPORT_NAME

    schema_version: int = SCHEMA_VERSION
    edgeship_version: str = ""
    created: str = ""
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    split: str = "test"
    reference_accuracy: float | None = None
    reference_per_class: dict[str, tuple[float, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    gate: Gate = field(default_factory=Gate)
    passed: bool | None = None
    host: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    artifacts: tuple[ReportEntry, ...] = ()

    def entry(self, name: str) -> ReportEntry:
        for entry in self.artifacts:
            if entry.name == name:
                return entry
        raise BadInputError(f"no artifact named '{name}' in the report; it holds {[e.name for e in self.artifacts]}")

    @property
    def failed(self) -> tuple[ReportEntry, ...]:
        return tuple(e for e in self.artifacts if e.passed is False)


@dataclass(frozen=True)
class TrainingRecord(_VersionedFile):
    """What a training run did and measured (``training.json`` beside the saved model).

    ``files`` maps a role to a path relative to the record's folder: ``model`` (the trained
    model, QAT-wrapped when ``recipe`` includes qat), ``float`` (the float reference it started
    from) and ``saved_model``.
    """

    file_name: ClassVar[str] = "training.json"

    schema_version: int = SCHEMA_VERSION
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    recipe: str = "float"
    seed: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    history: dict[str, tuple[float, ...]] = field(default_factory=dict)
    test_accuracy: float = 0.0
    float_test_accuracy: float | None = None
    params: int = 0
    macs: int = 0
    sparsity: dict[str, float] = field(default_factory=dict)
    strategy: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    # test accuracy after each stage (float, prune, cluster, qat), distinct values per clustered kernel,
    # replicas that trained in sync, the float stage's dtype policy, and whether a checkpoint was resumed
    stage_accuracy: dict[str, float] = field(default_factory=dict)
    clusters: dict[str, int] = field(default_factory=dict)
    replicas: int = 1
    precision: str = "float32"
    resumed: bool = False
