"""Validation bundles: what a device needs to check artifacts without the training stack.

    bundle/
      bundle.json           BundleManifest: files with sha256, tolerances, the dataset fingerprint
      inputs.npy            sample inputs (float32)
      labels.npy            their labels
      expected/<name>.npy   each artifact's outputs on the host that wrote the bundle
      <artifact files>      copies of the artifacts

A device loads each artifact with the thin runtime, runs ``inputs.npy`` and checks its outputs
against ``expected`` within the tolerances, and its accuracy on ``labels.npy``.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgeship import _io
from edgeship.errors import BadArtifactError
from edgeship.records import Artifact, Record, VersionedFile, SCHEMA_VERSION

FOLDER = "bundle"
#: accuracy (as a fraction) a device may lose on the bundle's samples: outputs within tolerance can
#: still flip a near-tie sample or two
ACCURACY_SLACK = 0.02


@dataclass(frozen=True)
class BundleEntry(Record):
    """One artifact in a bundle, with what its outputs on a device must satisfy.

    ``host_accuracy`` is the artifact's accuracy on the bundle's own samples on the host that wrote
    the bundle (``test_accuracy`` on the whole test split); a device must reach ``min_accuracy``
    on the same samples and stay within ``max_abs_error`` of ``expected``. Accuracy is checked
    for multi-class models (argmax against the labels); for other tasks the outputs alone are.
    """

    name: str
    path: str
    sha256: str
    expected: str
    max_abs_error: float
    min_accuracy: float | None
    host_accuracy: float | None
    test_accuracy: float | None = None


@dataclass(frozen=True)
class BundleManifest(VersionedFile):
    file_name: ClassVar[str] = "bundle.json"

    schema_version: int = SCHEMA_VERSION
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    inputs: str = "inputs.npy"
    labels: str = "labels.npy"
    files: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[BundleEntry, ...] = ()
    task: str = "multiclass"
    preprocess: str = ""


def tolerance(artifact: Artifact, outputs: np.ndarray) -> float:
    """How far a device's outputs may stray from this host's: a few float ulps, or one
    quantization step of an int8 output."""
    scale = artifact.outputs[0].scale if artifact.outputs and artifact.outputs[0].quantized else None
    if scale:
        return float(scale) * 1.01
    magnitude = float(np.max(np.abs(outputs))) if outputs.size else 1.0
    return max(1e-5, 1e-3 * magnitude) if artifact.precision in ("fp16",) or artifact.format == "coreml" else max(1e-5, 1e-4 * magnitude)


def _save_npy(path: Path, array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    _io.write_bytes(path, buffer.getvalue())
    return _io.sha256_path(path)


def write(
    folder: Path,
    *,
    model: str,
    dataset: str,
    fingerprint: str,
    inputs: np.ndarray,
    labels: np.ndarray | None,
    results: list[tuple[Artifact, np.ndarray, float | None]],
    source: Path,
    task: str = "multiclass",
    preprocess: str = "",
) -> BundleManifest:
    """Write ``folder`` (replacing an older bundle) from (artifact, first output on ``inputs``,
    test-split accuracy) triples; each artifact is copied from ``source``. ``inputs`` are stored
    already preprocessed (``preprocess`` records the spec), in the model's dtype."""
    labels = labels if labels is not None and task == "multiclass" else np.zeros(0, np.int64)
    with _io.staged(folder, directory=True) as tmp:
        (tmp / "expected").mkdir()
        stored = inputs if inputs.dtype.kind in "iub" else inputs.astype(np.float32)
        files = {"inputs.npy": _save_npy(tmp / "inputs.npy", stored),
                 "labels.npy": _save_npy(tmp / "labels.npy", np.asarray(labels).astype(np.int64))}
        entries = []
        for artifact, outputs, accuracy in results:
            name = artifact.path
            src = source / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / name)
            expected = f"expected/{artifact.format}-{artifact.precision}.npy"
            files[expected] = _save_npy(tmp / expected, outputs)
            # accuracy on these very samples: a device that matches the outputs matches it too
            here = float(np.mean(outputs.argmax(-1) == labels)) if len(labels) else None
            entries.append(BundleEntry(
                name=artifact.name, path=name, sha256=artifact.sha256, expected=expected,
                max_abs_error=tolerance(artifact, outputs),
                min_accuracy=None if here is None else max(0.0, here - ACCURACY_SLACK),
                host_accuracy=here, test_accuracy=accuracy,
            ))
        manifest = BundleManifest(model=model, dataset=dataset, dataset_fingerprint=fingerprint,
                                  files=files, artifacts=tuple(entries), task=task, preprocess=preprocess)
        manifest.save(tmp)
    return manifest


def load(folder: str | Path) -> tuple[BundleManifest, np.ndarray, np.ndarray]:
    """Read a bundle, checking every file's sha256 first; returns (manifest, inputs, labels)."""
    folder = Path(folder)
    links = [p for p in folder.rglob("*") if p.is_symlink()]
    if links:  # a bundle travels to devices as an archive: a link could point anywhere there
        raise BadArtifactError(f"bundle {folder} holds symbolic links ({links[0].relative_to(folder)} …); "
                               "a bundle may hold plain files only. Write it again with edgeship validate")
    manifest = BundleManifest.load(folder)
    for name, digest in manifest.files.items():
        _check_file(folder, name, digest)
    for entry in manifest.artifacts:
        _check_file(folder, entry.path, entry.sha256)
    inputs = np.load(folder / manifest.inputs, allow_pickle=False)
    labels = np.load(folder / manifest.labels, allow_pickle=False)
    return manifest, inputs, labels


def _check_file(folder: Path, name: str, digest: str) -> None:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise BadArtifactError(f"bundle entry '{name}' points outside the bundle folder {folder}; refusing it")
    if not path.exists():
        raise BadArtifactError(f"bundle file {name} is missing from {folder}")
    actual = _io.sha256_path(path)
    if actual != digest:
        raise BadArtifactError(f"bundle file {name} has sha256 {actual[:12]}…, but bundle.json records {digest[:12]}…; copy the bundle again")
