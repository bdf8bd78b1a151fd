"""What a conversion writes: tensors, artifacts, the folder's manifest, and the training record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeship import _io
from edgeship.errors import BadArtifactError, BadInputError
from edgeship.records._base import MANIFEST_NAME, SCHEMA_VERSION, Record, VersionedFile

__all__ = ["TensorSpec", "Artifact", "Manifest", "TrainingRecord", "verified_path", "vouched"]


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
    """A model file (or .mlpackage folder) written by a converter, relative to its manifest's folder.

    ``settings`` are what it was made with; ``notes`` what the converter warned about while
    writing it (an op left in float, a pre-processing step skipped).
    """

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
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest(VersionedFile):
    """The artifacts of one output folder (``manifest.json``).

    ``dataset`` names the data the artifacts were converted with: a built-in name, or with
    ``data_path`` (relative to the folder when inside it) a user's file, which ``data_options``
    (seed, split fractions, the preprocess spec) load again exactly; ``dataset_fingerprint``
    says whether it is still the same. ``task`` is the task the caller fixed, if any.
    """

    file_name: ClassVar[str] = MANIFEST_NAME
    written_by: ClassVar[str] = "edgeship convert"

    schema_version: int = SCHEMA_VERSION
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    reference: Artifact | None = None
    artifacts: tuple[Artifact, ...] = ()
    data_path: str = ""
    data_options: dict[str, Any] = field(default_factory=dict)
    task: str = ""

    @classmethod
    def recorded_names(cls, folder: str | Path) -> set[str]:
        """The top-level names in ``folder`` that its manifest accounts for (itself, the reference
        and every artifact); what a transaction keeps when it rolls back (``edgeship._io``). An
        unreadable manifest accounts for every name: nothing is removed on a guess."""
        folder = Path(folder)
        if not (folder / cls.file_name).is_file():
            return set()
        try:
            manifest = cls.load(folder)
        except Exception:  # noqa: BLE001 - any damage: keep everything
            return {p.name for p in folder.iterdir()}
        paths = [a.path for a in manifest.artifacts] + ([manifest.reference.path] if manifest.reference else [])
        return {cls.file_name} | {Path(p).parts[0] for p in paths if Path(p).parts}

    def without(self, name: str) -> Manifest:
        """A copy without the artifact called ``name`` (recorded again once its new file is written)."""
        return dataclasses.replace(self, artifacts=tuple(a for a in self.artifacts if a.name != name))

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
    size = _io.size_bytes(path)
    if size != artifact.size_bytes:
        raise BadArtifactError(
            f"{artifact.name}: {path.name} holds {size} bytes, but the manifest records "
            f"{artifact.size_bytes}; the file changed after conversion. Convert again"
        )
    digest = _io.sha256_path(path)
    if digest != artifact.sha256:
        raise BadArtifactError(
            f"{artifact.name}: {path.name} has sha256 {digest[:12]}…, but the manifest records "
            f"{artifact.sha256[:12]}…; the file changed after conversion. Convert again"
        )
    return path


def vouched(path: str | Path) -> bool:
    """Whether a manifest.json beside ``path`` records it with a matching sha256."""
    path = Path(path)
    try:
        manifest = Manifest.load(path.parent)
    except BadArtifactError:
        return False
    entry = next((a for a in manifest.artifacts if (path.parent / a.path).resolve() == path.resolve()), None)
    return entry is not None and _io.sha256_path(path) == entry.sha256


@dataclass(frozen=True)
class TrainingRecord(VersionedFile):
    """What a training run did and measured (``training.json`` beside the saved model).

    ``files`` maps a role to a path relative to the record's folder: ``model`` (the trained
    model, QAT-wrapped when ``recipe`` includes qat), ``float`` (the float reference it started
    from) and ``saved_model``.
    """

    file_name: ClassVar[str] = "training.json"
    written_by: ClassVar[str] = "edgeship train"

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
