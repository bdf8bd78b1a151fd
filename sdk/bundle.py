"""Validation bundles: what a device needs to check artifacts without the training stack.

    bundle/
      bundle.json           BundleManifest: files with sha256, tolerances, the dataset fingerprint
      inputs.npy            sample inputs: as stored (raw_inputs: 0..255 pixels, channels last) when the
                            model has a preprocessing spec, else as the model takes them
      inputs_1.npy, …       a model with several inputs: one file per further input, in the model's order
      labels.npy            their labels
      expected/<name>.npy   each artifact's outputs on the host that wrote the bundle
      <artifact files>      copies of the artifacts

A device loads each artifact with the thin runtime, applies the preprocessing the artifact records
to raw inputs (as an app on the device would), runs them and checks its outputs against
``expected`` within the tolerances, and its accuracy on ``labels.npy``.

A single-input bundle is written as schema_version 1, as ever (``inputs`` names one file). A
bundle of several inputs lists their files in ``inputs`` and is schema_version 2, so an edgeship
that reads one input only says which version to install instead of running half the model. A
bundle of raw inputs (``raw_inputs``: the preprocessing is the device's to apply) is
schema_version 3, so an edgeship that would feed them unprocessed refuses it instead.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np

from edgeship import _io, metrics
from edgeship._version import __version__
from edgeship.errors import BadArtifactError, BadInputError
from edgeship.formats import FLOAT_DRIFT, FORMATS
from edgeship.records import SCHEMA_VERSION, Artifact, Record, VersionedFile

FOLDER = "bundle"
#: the schema_version of a bundle of several inputs (``inputs`` a list of files)
MULTI_INPUT_SCHEMA = 2
#: the schema_version of a bundle whose inputs are raw (``raw_inputs``): the device preprocesses them
RAW_INPUT_SCHEMA = 3
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
    tolerance_basis: str = ""
    #: "nhwc": the file takes channels-last inputs though the bundle's inputs are channels-first
    layout: str = ""
    #: for a file that computes in int8: one step of its output's int8 grid, the unit a device's
    #: difference from the host is counted in (and whose outputs are compared bit for bit)
    step: float | None = None


@dataclass(frozen=True)
class BundleManifest(VersionedFile):
    file_name: ClassVar[str] = "bundle.json"
    written_by: ClassVar[str] = "edgeship validate"
    newest_schema: ClassVar[int] = RAW_INPUT_SCHEMA

    schema_version: int = SCHEMA_VERSION
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    #: the input file, or one file per model input in the model's order
    inputs: str | tuple[str, ...] = "inputs.npy"
    labels: str = "labels.npy"
    files: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[BundleEntry, ...] = ()
    task: str = "multiclass"
    preprocess: str = ""
    #: True: the inputs are stored raw and ``preprocess`` (the spec each artifact records) is applied
    #: on the device; False: they were preprocessed on the host
    raw_inputs: bool = False
    #: the edgeship that wrote the bundle: a device whose edgeship cannot read it is told which to install
    edgeship_version: str = ""

    @property
    def input_files(self) -> tuple[str, ...]:
        """The input files, one per model input in the model's order."""
        return (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)


#: How far a device's outputs may stray from this host's, for artifacts whose outputs are float, is each
#: format's ``device_drift`` (edgeship.formats): a fraction of the outputs' largest magnitude and why.
#: int8 arithmetic on ARM and x86 kernels can round an intermediate differently: one step of the output's
#: int8 grid (its scale where the output is int8; else the observed output range over 255 steps)
INT8_STEPS = 1.0


def tolerance(artifact: Artifact, outputs: np.ndarray) -> tuple[float, str, float | None]:
    """How far a device's outputs may stray from this host's, why that much, and for a file that
    computes in int8 its output's grid step (None for float arithmetic)."""
    out = artifact.outputs[0] if artifact.outputs else None
    if out is not None and out.quantized and out.scale:
        step = float(out.scale)
        return step * INT8_STEPS * 1.01, f"one int8 step of the output (scale {out.scale:.4g})", step
    magnitude = float(np.max(np.abs(outputs))) if outputs.size else 1.0
    drift = (
        FORMATS.get(artifact.format).drift(artifact.precision)
        if artifact.format in FORMATS
        else FLOAT_DRIFT.get(artifact.precision)
    )  # a plugin's format this process does not have
    if drift is None:  # integer arithmetic inside
        span = float(np.ptp(outputs)) if outputs.size else 1.0
        step = span / 255
        return max(step * INT8_STEPS * 1.01, 1e-5), f"one int8 step of the output range ({step:.3g})", step or None
    fraction, why = drift
    return max(1e-5, fraction * magnitude), f"{fraction:g} of the output magnitude {magnitude:.3g} ({why})", None


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
    inputs: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | None,
    results: list[tuple[Artifact, np.ndarray, float | None]],
    source: Path,
    task: str = "multiclass",
    preprocess: str = "",
    raw: np.ndarray | Sequence[np.ndarray] | None = None,
) -> BundleManifest:
    """Write ``folder`` (replacing an older bundle) from (artifact, first output on ``inputs``,
    test-split accuracy) triples; each artifact is copied from ``source``. ``inputs`` (one array,
    or one per model input in the model's order) are what the model took, ``preprocess`` the spec
    that made them; with ``raw`` (the same samples as stored) the bundle stores those instead, and a
    device applies the spec each artifact records, as an app would."""
    if raw is not None:
        inputs = raw
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    if not arrays or len({len(a) for a in arrays}) != 1:
        raise BadInputError(
            f"a bundle needs one array per model input, each with as many samples; "
            f"received {[len(a) for a in arrays]} samples"
        )
    labels = labels if labels is not None and task == "multiclass" else np.zeros(0, np.int64)
    names = ["inputs.npy"] + [f"inputs_{i}.npy" for i in range(1, len(arrays))]
    with _io.staged(folder, directory=True) as tmp:
        (tmp / "expected").mkdir()
        files = {
            name: _save_npy(tmp / name, a if a.dtype.kind in "iub" else a.astype(np.float32))
            for name, a in zip(names, arrays)
        }
        files["labels.npy"] = _save_npy(tmp / "labels.npy", np.asarray(labels).astype(np.int64))
        entries = [
            _entry(artifact, outputs, accuracy, labels, source, tmp, files) for artifact, outputs, accuracy in results
        ]
        several = len(names) > 1  # the single-input layout stays what every edgeship reads
        manifest = BundleManifest(
            schema_version=RAW_INPUT_SCHEMA if raw is not None else MULTI_INPUT_SCHEMA if several else SCHEMA_VERSION,
            model=model,
            dataset=dataset,
            dataset_fingerprint=fingerprint,
            inputs=tuple(names) if several else names[0],
            files=files,
            artifacts=tuple(entries),
            task=task,
            preprocess=preprocess,
            raw_inputs=raw is not None,
            edgeship_version=__version__,
        )
        manifest.save(tmp)
    return manifest


def _entry(
    artifact: Artifact,
    outputs: np.ndarray,
    accuracy: float | None,
    labels: np.ndarray,
    source: Path,
    tmp: Path,
    files: dict[str, str],
) -> BundleEntry:
    """Copy one artifact into the bundle being staged at ``tmp`` and store its expected outputs."""
    name = artifact.path
    src = source / name
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / name)
    expected = f"expected/{artifact.format}-{artifact.precision}.npy"
    files[expected] = _save_npy(tmp / expected, outputs)
    # accuracy on these very samples: a device that matches the outputs matches it too
    here = metrics.accuracy(outputs.argmax(-1), labels) if len(labels) else None
    limit, basis, step = tolerance(artifact, outputs)
    return BundleEntry(
        name=artifact.name,
        path=name,
        sha256=artifact.sha256,
        expected=expected,
        max_abs_error=limit,
        tolerance_basis=basis,
        layout=str(artifact.settings.get("layout", "")),
        step=step,
        min_accuracy=None if here is None else max(0.0, here - ACCURACY_SLACK),
        host_accuracy=here,
        test_accuracy=accuracy,
    )


def load(folder: str | Path) -> tuple[BundleManifest, tuple[np.ndarray, ...], np.ndarray]:
    """Read a bundle, checking every file's sha256 first; returns (manifest, inputs, labels), with
    ``inputs`` one array per model input in the model's order (what ``Session.predict`` takes).

        >>> manifest, inputs, labels = load("out/bundle")                 # doctest: +SKIP
        >>> edgeship.load("out/bundle/model.int8.tflite").predict(inputs)   # doctest: +SKIP

    A bundle is a closed world: every name in bundle.json is a plain relative path inside the
    folder, every file read has its sha256 recorded, and every file present is one bundle.json
    lists. Anything else is refused in one line before any file but bundle.json is read.
    """
    folder = Path(folder)
    links = [p for p in folder.rglob("*") if p.is_symlink()]
    if links:  # a bundle travels to devices as an archive: a link could point anywhere there
        raise BadArtifactError(
            f"bundle {folder} holds symbolic links ({links[0].relative_to(folder)} …); "
            "a bundle may hold plain files only. Write it again with edgeship validate"
        )
    manifest = BundleManifest.load(folder)
    _check_closed(folder, manifest)
    for name, digest in manifest.files.items():
        _check_file(folder, name, digest)
    for entry in manifest.artifacts:
        _check_file(folder, entry.path, entry.sha256)
    inputs = tuple(array(folder, name) for name in manifest.input_files)
    labels = array(folder, manifest.labels)
    if len({len(a) for a in inputs}) != 1:
        raise BadArtifactError(
            f"bundle {folder}'s input files hold {[len(a) for a in inputs]} samples; each "
            "must hold as many. Write the bundle again with edgeship validate"
        )
    return manifest, inputs, labels


def array(folder: str | Path, name: str) -> np.ndarray:
    """One of the bundle's .npy files as a numeric array (never a pickle), or a BadArtifactError."""
    try:
        data = np.load(Path(folder) / name, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # an object array, a truncated or non-.npy file
        raise BadArtifactError(
            f"bundle file {name} is not a numeric .npy array ({exc}); write the bundle again with edgeship validate"
        ) from exc
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf":
        raise BadArtifactError(
            f"bundle file {name} holds {getattr(data, 'dtype', type(data).__name__)} values; a "
            "bundle holds numbers only: write it again with edgeship validate"
        )
    return data


def _check_closed(folder: Path, manifest: BundleManifest) -> None:
    """Every name bundle.json holds stays inside ``folder`` and is hashed; every file there is listed."""
    again = "write the bundle again with edgeship validate"
    named = [*manifest.files, *(e.path for e in manifest.artifacts)]
    read = [*manifest.input_files, manifest.labels, *(e.expected for e in manifest.artifacts)]
    for name in (*named, *read):
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if (
            not parts
            or "\\" in name
            or name.startswith("/")
            or ".." in parts
            or not (folder / name).resolve().is_relative_to(folder.resolve())
        ):
            raise BadArtifactError(
                f"bundle.json names {name!r}, which is not a plain path inside the bundle "
                f"folder {folder}; refusing the bundle before reading it: {again}"
            )
    unhashed = [name for name in read if name not in manifest.files]
    if unhashed:  # every file read must have its sha256 checked first
        raise BadArtifactError(
            f"bundle.json names {unhashed[0]!r} as an input, label or expected-output file but "
            f"records no sha256 for it in 'files'; {again}"
        )
    listed = {PurePosixPath(n) for n in manifest.files}
    artifacts = [PurePosixPath(e.path) for e in manifest.artifacts]
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        rel = PurePosixPath(path.relative_to(folder).as_posix())
        if (
            rel.as_posix() == BundleManifest.file_name
            or rel in listed
            or any(rel == a or a in rel.parents for a in artifacts)
        ):
            continue
        raise BadArtifactError(
            f"bundle {folder} holds {rel.as_posix()!r}, which bundle.json does not list; a "
            f"bundle holds only the files it lists: remove it, or {again}"
        )


def _check_file(folder: Path, name: str, digest: str) -> None:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise BadArtifactError(f"bundle entry '{name}' points outside the bundle folder {folder}; refusing it")
    if not path.exists():
        raise BadArtifactError(f"bundle file {name} is missing from {folder}")
    actual = _io.sha256_path(path)
    if actual != digest:
        raise BadArtifactError(
            f"bundle file {name} has sha256 {actual[:12]}…, but bundle.json records "
            f"{digest[:12]}…; copy the bundle again"
        )
