"""The float reference every artifact is validated against, kept in ``out/reference/``, and its
outputs on the data, kept beside it.

    out/reference/model.keras                      (or saved_model/, model.onnx)
    out/reference/outputs/<data>-<model>.npz       the float outputs per split, one file per data
                                                   fingerprint and model checksum

Running a Keras or SavedModel reference imports TensorFlow (seconds, and half a gigabyte);
``convert`` already holds it and the data, so it stores the float outputs on the validation and
test splits, and ``validate`` on the same data reads them instead. Outputs of other data or of
another model file are never used: the file name and the record inside it carry both checksums.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship import _io
from edgeship.errors import BadArtifactError
from edgeship.records import Artifact, Manifest, TensorSpec, verified_path

log = logging.getLogger(__name__)

FOLDER = "reference"

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset
OUTPUTS = "outputs"
#: the version of the stored outputs' record (``__record__`` in each .npz)
OUTPUTS_SCHEMA = 1
#: samples the reference runs at a time when its outputs are computed: bounds the inputs held
CHUNK = 2048


def write(source: SourceModel, out: Path) -> Artifact:
    """Write ``source``'s float model into ``out/reference`` (its Source does) and describe it."""
    from edgeship.converters._source import SOURCES

    folder = out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = SOURCES.get(source.kind).write_reference(source, folder)
    specs = tuple(
        TensorSpec(name="input" if i == 0 else f"input_{i}", shape=(-1,) + tuple(shape), dtype=dtype)
        for i, (shape, dtype) in enumerate(source.input_specs)
    )
    return Artifact(
        name="reference",
        path=path.relative_to(out).as_posix(),
        format=source.kind,
        precision="fp32",
        sha256=_io.sha256_path(path),
        size_bytes=_io.size_bytes(path),
        inputs=specs,
        outputs=(),
        source=source.origin,
        settings={"role": "float reference"},
    )


def predictor(folder: Path, manifest: Manifest, *, trust_code: bool = False) -> Callable[[Any], list[np.ndarray]]:
    """A function mapping a batch of inputs (one array, or one per input) to the reference
    model's outputs, one array per output in the model's order (run by the Source that wrote it)."""
    from edgeship.converters._source import SOURCES

    ref = manifest.reference
    if ref is None:
        raise BadArtifactError(f"{folder}/manifest.json names no float reference; convert again to write one")
    path = verified_path(folder, ref)
    if ref.format not in SOURCES:
        raise BadArtifactError(
            f"{folder}/manifest.json names a float reference of kind {ref.format!r}, which no "
            f"source runs (known: {SOURCES.names()})"
        )
    return SOURCES.get(ref.format).predictor(path, trust_code=trust_code)


def outputs(
    folder: Path, manifest: Manifest, dataset: Dataset, *, split: str = "test", trust_code: bool = False
) -> list[np.ndarray]:
    """The float reference's outputs on ``split`` of ``dataset``: stored ones when the data and the
    model file are those they were computed on, else computed now (and stored for the next time)."""
    found = stored_outputs(folder, manifest, dataset, split)
    if found is not None:
        return found
    log.info(
        "no stored float outputs for %s on the %s split of '%s' (fingerprint %s…): running the float reference",
        manifest.model,
        split,
        dataset.name,
        dataset.fingerprint[:12],
    )
    computed = compute_outputs(folder, manifest, dataset, split, trust_code=trust_code)
    store_outputs(folder, manifest, dataset, {split: computed})
    return computed


def compute_outputs(
    folder: Path, manifest: Manifest, dataset: Dataset, split: str, *, trust_code: bool = False
) -> list[np.ndarray]:
    """Run the reference on ``split`` of ``dataset`` in pieces of CHUNK samples (inputs may be lazy)."""
    run = predictor(folder, manifest, trust_code=trust_code)
    x = dataset.inputs(split)
    parts = []
    for i in range(0, len(x[0]), CHUNK):
        piece = tuple(np.asarray(a[i : i + CHUNK]) for a in x)
        parts.append(run(piece[0] if len(piece) == 1 else piece))
    if not parts:
        return []
    return [np.concatenate(p) for p in zip(*parts)]


def store_outputs(folder: Path, manifest: Manifest, dataset: Dataset, splits: dict[str, list[np.ndarray]]) -> Path:
    """Write the outputs per split for ``dataset`` and the manifest's reference model; outputs of
    other reference models are removed, those of other data kept."""
    ref = _reference_of(folder, manifest)
    path = _outputs_path(folder, dataset.fingerprint, ref.sha256)
    record = {
        "schema_version": OUTPUTS_SCHEMA,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "reference_sha256": ref.sha256,
        "splits": {s: len(o[0]) if o else 0 for s, o in splits.items()},
    }
    arrays = {f"{s}_{i}": np.asarray(o) for s, outs in splits.items() for i, o in enumerate(outs)}
    buffer = io.BytesIO()
    named: dict[str, Any] = {"__record__": np.array(json.dumps(record)), **arrays}
    np.savez(buffer, **named)
    path.parent.mkdir(parents=True, exist_ok=True)
    _io.write_bytes(path, buffer.getvalue())
    for stale in path.parent.glob("*.npz"):
        if not stale.name.endswith(f"-{ref.sha256[:16]}.npz"):
            stale.unlink(missing_ok=True)
    return path


def stored_outputs(folder: Path, manifest: Manifest, dataset: Dataset, split: str) -> list[np.ndarray] | None:
    """The stored outputs on ``split``, or None when none were stored for this data and model file."""
    ref = _reference_of(folder, manifest)
    path = _outputs_path(folder, dataset.fingerprint, ref.sha256)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            record = json.loads(str(archive["__record__"]))
            keys = sorted(
                (k for k in archive.files if k.startswith(split + "_")), key=lambda k: int(k.rsplit("_", 1)[1])
            )
            found = [archive[k] for k in keys]
    except Exception as exc:  # a damaged cache is no reason to fail: the reference can run again
        log.warning("ignoring %s, unreadable (%s: %s)", path, type(exc).__name__, exc)
        return None
    if any(o.dtype.kind not in "biuf" or (o.dtype.kind == "f" and not np.all(np.isfinite(o))) for o in found):
        log.warning(
            "ignoring %s: its outputs are not all finite numbers (damaged?); running the float model again",
            path.relative_to(folder),
        )
        return None
    expected = len(dataset.inputs(split)[0])
    if (
        record.get("dataset_fingerprint") != dataset.fingerprint
        or record.get("reference_sha256") != ref.sha256
        or not found
        or any(len(o) != expected for o in found)
    ):
        return None
    log.info("float outputs on the %s split read from %s", split, path.relative_to(folder))
    return found


def splits_of(dataset: Dataset) -> Iterable[str]:
    """The splits worth storing outputs for: validation and test, where they hold samples."""
    return [s for s in ("val", "test") if len(dataset.inputs(s)[0])]


def _reference_of(folder: Path, manifest: Manifest) -> Artifact:
    """The manifest's reference, once the file on disk is known to be the one it records."""
    ref = manifest.reference
    if ref is None:
        raise BadArtifactError(f"{folder}/manifest.json names no float reference; convert again to write one")
    verified_path(folder, ref)
    return ref


def _outputs_path(folder: Path, fingerprint: str, sha256: str) -> Path:
    return Path(folder) / FOLDER / OUTPUTS / f"{fingerprint[:16]}-{sha256[:16]}.npz"
