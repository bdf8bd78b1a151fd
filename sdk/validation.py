"""The validate stage: every artifact of a folder against its float reference, on held-out data.

    train ──► convert ──► [validate] ──► benchmark ──► report

``validate`` runs the float reference and each artifact on the same test split, scores each with
the task's figures (``edgeship.tasks``), applies the gate, writes report.json, report.html and the validation
bundle, and raises AccuracyGateError (carrying the report) when an artifact fails the gate.

Why this file is long (about 430 lines): ``validate`` (a converted folder) and ``validate_files``
(files made elsewhere) share the evaluation of one artifact, the gate and the report; apart, each
would import the other's half back.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship import bundle
from edgeship.errors import AccuracyGateError, BadArtifactError, BadInputError, UnsupportedModelError
from edgeship.formats import for_path
from edgeship.progress import Progress, log_progress
from edgeship.records import (
    AccuracyDelta,
    Artifact,
    BenchmarkResult,
    Gate,
    Manifest,
    Report,
    ReportEntry,
    TrainingRecord,
    verified_path,
)
from edgeship.runtimes._session import in_layout
from edgeship.tasks import Scorer, change_text, parse_task

if TYPE_CHECKING:
    from edgeship.data import Dataset

log = logging.getLogger(__name__)

BUNDLE_SAMPLES = 64


def dataset_for(
    folder: Path,
    manifest: Manifest,
    data: Dataset | str | os.PathLike | None,
    *,
    preprocess: str | None = None,
    lazy: bool = False,
) -> Dataset:
    """The Dataset to measure ``folder`` on: ``data`` (a Dataset, a name or a path) as given, else
    the data the conversion used, found through the manifest. ``lazy`` leaves a file's inputs on
    disk, read when sliced (``load_dataset``).

    Given data whose fingerprint differs from the conversion's is used with a warning: the caller
    asked for it. The conversion's own file, found through the manifest and changed since, is
    refused: the figures would describe other data than the artifacts were made with.
    """
    dataset = _dataset_for(folder, manifest, data, preprocess=preprocess, lazy=lazy)
    _check_fits(dataset, manifest)
    return dataset


def float_outputs(
    folder: Path,
    manifest: Manifest,
    dataset: Dataset,
    split: str,
    progress: Progress,
    stage: str,
    *,
    trust_code: bool = False,
) -> list[np.ndarray]:
    """The float reference's outputs on ``split``: those convert stored when they are for this data
    and model file, else computed now; ``progress`` says which (validate and doctor alike)."""
    from edgeship.converters import reference as _reference

    n = len(dataset.inputs(split)[0])
    stored = _reference.stored_outputs(folder, manifest, dataset, split)
    if stored is not None:
        progress(
            stage,
            f"float reference's outputs on {n} {split} samples: read from {_reference.FOLDER}/"
            f"{_reference.OUTPUTS} (stored by convert)",
        )
        return stored
    progress(stage, f"float reference on {n} {split} samples: running it (none stored for this data and model file)")
    return _reference.outputs(folder, manifest, dataset, split=split, trust_code=trust_code)


def _check_fits(dataset: Dataset, manifest: Manifest) -> None:
    """Refuse data whose samples cannot be the artifacts' inputs (another element count per
    sample), before any model runs on them."""
    record = manifest.reference or (manifest.artifacts[0] if manifest.artifacts else None)
    shapes = getattr(dataset, "input_shapes", None)
    if record is None or not record.inputs or not shapes or len(shapes) != len(record.inputs):
        return
    for spec, shape in zip(record.inputs, shapes):
        want = tuple(spec.shape[1:])
        if all(d > 0 for d in want) and int(np.prod(want)) != int(np.prod(shape)):
            raise BadInputError(
                f"dataset '{dataset.name}' has samples of shape {tuple(shape)}, but {manifest.model}'s "
                f"artifacts take input '{spec.name}' of shape {want}: measure it on the data it was "
                "converted for (--data), or convert again with this data"
            )


def _dataset_for(
    folder: Path, manifest: Manifest, data: Dataset | str | os.PathLike | None, *, preprocess: str | None, lazy: bool
) -> Dataset:
    from edgeship.data import Dataset

    options = dict(manifest.data_options)
    if isinstance(data, Dataset):
        return _warn_if_other(data, manifest)
    if data:
        return _warn_if_other(_load(data, options, preprocess, lazy), manifest)
    if manifest.data_path:
        path = Path(manifest.data_path)
        path = path if path.is_absolute() else folder / path
        if not path.exists():
            raise BadArtifactError(
                f"the data the artifacts were converted with, {path}, is gone; pass --data "
                "(and --preprocess) to validate on other data"
            )
        dataset = _load(path, options, preprocess, lazy)
        if manifest.dataset_fingerprint and dataset.fingerprint != manifest.dataset_fingerprint:
            raise BadArtifactError(
                f"{path} changed since the artifacts were converted with it (fingerprint {dataset.fingerprint[:12]}… "
                f"against {manifest.dataset_fingerprint[:12]}… in manifest.json); pass --data {path} to validate "
                "on it as it is now, or convert again"
            )
        return dataset
    if manifest.dataset:
        return _warn_if_other(_load(manifest.dataset, options, preprocess, lazy), manifest)
    raise BadInputError(f"{folder}/manifest.json names no dataset; pass data= (e.g. 'digits' or a .npz file)")


def _load(data: str | os.PathLike, options: dict[str, Any], preprocess: str | None, lazy: bool = False) -> Dataset:
    """Load ``data`` with the loader options the conversion recorded (a spec given now wins)."""
    from edgeship.data import load_dataset

    keys = ("seed", "val_fraction", "test_fraction", "label_column", "samples")
    kwargs = {k: options[k] for k in keys if k in options}
    spec = preprocess if preprocess is not None else options.get("preprocess")
    dataset = load_dataset(data, preprocess=spec, lazy=lazy, **kwargs)
    return dataset.with_channel_axis() if options.get("channel_axis") else dataset


def _warn_if_other(dataset: Dataset, manifest: Manifest) -> Dataset:
    if manifest.dataset_fingerprint and dataset.fingerprint != manifest.dataset_fingerprint:
        log.warning("using %s, whose fingerprint differs from the one the artifacts were converted with", dataset.name)
    return dataset


def _host() -> dict[str, Any]:
    from edgeship.runtimes.benchmark import environment

    return environment()


def _evaluate(
    path: Path, entry: ReportEntry, x: tuple[np.ndarray, ...], scorer: Scorer, gate: Gate, bench: dict[str, Any] | None
) -> tuple[ReportEntry, list[np.ndarray] | None]:
    from edgeship.runtimes import can_run, load
    from edgeship.runtimes.benchmark import benchmark

    runnable, why = can_run(path)
    if not runnable:
        return dataclasses.replace(entry, status=why, evaluated_with="not evaluated"), None
    try:
        session = load(path)
        outputs = session.predict_outputs(x)
    except UnsupportedModelError as exc:  # e.g. an op the Core ML evaluator lacks: the other artifacts go on
        log.warning("%s not evaluated: %s", entry.name, exc)
        return dataclasses.replace(entry, status=f"not evaluated: {exc}", evaluated_with="not evaluated"), None
    delta = scorer(outputs)
    failures = gate.check(delta)
    delta = dataclasses.replace(delta, passed=not failures if gate.active else None, failures=failures)
    result: BenchmarkResult | None = None
    # A reference evaluator (numpy standing in for a runtime this host lacks) is never timed:
    # its latency says nothing about the device's.
    if bench is not None and not session.reference_only:
        result = benchmark(path, feeds=session.feeds_for(x, 1), **bench)
    entry = dataclasses.replace(
        entry, evaluated_with=f"{session.runtime} {session.runtime_version}", validation=delta, benchmark=result
    )
    return entry, outputs


def validate(
    folder: str | Path,
    *,
    data: Dataset | str | os.PathLike | None = None,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    artifacts: Iterable[str] | None = None,
    benchmark: dict[str, Any] | None = None,
    write_bundle: bool = True,
    trust_code: bool = False,
    preprocess: str | None = None,
    task: str | None = None,
    progress: Progress = log_progress,
) -> Report:
    """Run the float reference and every artifact of ``folder`` on the same held-out test split.

        >>> report = validate("out", data="digits", max_drop=1.0)          # doctest: +SKIP
        >>> [(e.name, e.accuracy_delta_pts) for e in report.artifacts]       # doctest: +SKIP

    Without ``data`` the conversion's own data is used (found through the manifest, with the
    preprocessing it recorded; ``preprocess`` replaces that spec). ``task`` fixes what the outputs
    mean (default: the one recorded at conversion, else detected: ``edgeship.tasks``).

    The test split is read in pieces where it comes from a file (``load_dataset(lazy=True)``), and
    the float reference's outputs are those ``convert`` stored for this data and model file
    (``edgeship.converters.reference``): then no TensorFlow is imported. Other data, or a changed
    model, runs the reference (and stores its outputs for the next time).

    Writes ``folder/report.json`` (and ``folder/bundle``) and returns the Report. With a gate
    (``max_drop`` in the task's headline unit: accuracy points for classification, AUC points for
    anomaly detection, percent error growth for regression; ``min_agreement`` a fraction) a
    failing artifact raises AccuracyGateError,
    which carries the report; so does a gate with no artifact evaluated at all. ``benchmark``
    (keyword options of ``edgeship.benchmark``) adds latency. An artifact that cannot run here, or
    holds an op the runtime lacks, is listed with the reason and not evaluated.
    """
    from edgeship import _io

    folder = Path(folder)
    gate = Gate(max_drop=max_drop, min_agreement=min_agreement)
    if folder.is_dir():  # what an interrupted convert or doctor left behind goes before anything is read
        for name in _io.recover_unless_busy(folder, lambda: Manifest.recorded_names(folder)):
            log.info("removed %s, left by an interrupted run", name)
    manifest = Manifest.load(folder)
    dataset = dataset_for(folder, manifest, data, preprocess=preprocess, lazy=True)
    chosen = _select(manifest, artifacts)
    x = dataset.inputs("test")
    reference = float_outputs(folder, manifest, dataset, "test", progress, "validate", trust_code=trust_code)
    scorer = Scorer.for_split(dataset, reference, task=parse_task(task) or parse_task(manifest.task))
    entries, outputs = [], {}
    for i, artifact in enumerate(chosen):
        progress("validate", artifact.name + (" and benchmark" if benchmark else ""), i, len(chosen))
        row = ReportEntry(
            name=artifact.name,
            format=artifact.format,
            precision=artifact.precision,
            path=artifact.path,
            size_bytes=artifact.size_bytes,
        )
        fed = in_layout(x, artifact.settings.get("layout"))  # each file in its own layout, from the same data
        entry, out = _evaluate(verified_path(folder, artifact), row, fed, scorer, gate, benchmark)
        entries.append(entry)
        if out is not None:
            outputs[artifact.name] = (artifact, out[0], entry.accuracy)
        progress("validate", f"{artifact.name}: {_summary(entry)}", i + 1, len(chosen))
    report = _report(manifest, dataset, gate, entries, scorer, folder)
    report.save(folder)
    _write_page(folder, report)
    if write_bundle and outputs:
        n = min(BUNDLE_SAMPLES, len(x[0]))
        labels = dataset.labels("test")
        bundle.write(
            folder / bundle.FOLDER,
            model=manifest.model,
            dataset=dataset.name,
            fingerprint=dataset.fingerprint,
            inputs=[a[:n] for a in x],
            raw=_raw_for_device(dataset, [a for a, _, _ in outputs.values()], n),
            labels=labels[0][:n] if labels else None,
            results=[(a, o[:n], acc) for a, o, acc in outputs.values()],
            source=folder,
            task=scorer.task,
            preprocess=dataset.options.get("preprocess", ""),
        )
    _raise_if_failed(report, entries)
    return report


def _raw_for_device(dataset: Dataset, artifacts: Sequence[Artifact], n: int) -> list[Any] | None:
    """The first ``n`` test inputs as stored, for a bundle whose device applies the preprocessing
    itself: only when there is a spec and every artifact records that same one (data validated with
    another spec than convert recorded goes to the bundle preprocessed, as the host fed it)."""
    from edgeship.preprocess import Preprocess

    if dataset.x_test_stored is None:
        return None
    spec = Preprocess.parse(dataset.options.get("preprocess") or "none").spec
    recorded = {Preprocess.parse(a.settings.get("metadata", {}).get("preprocess") or "none").spec for a in artifacts}
    if recorded != {spec}:
        log.info("the bundle holds preprocessed inputs: the artifacts record %s, the data was fed %s", recorded, spec)
        return None
    return [a[:n] for a in dataset.stored_inputs()]


def validate_files(
    reference: str | Path,
    artifacts: Sequence[str | Path],
    *,
    data: Dataset | str | Path | None,
    preprocess: str | None = None,
    task: str | None = None,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    benchmark: dict[str, Any] | None = None,
    progress: Progress = log_progress,
) -> Report:
    """Measure model files made elsewhere against their float model, without a manifest.

        >>> report = validate_files("model.tflite", ["vendor.int8.tflite"], data="images.npz")  # doctest: +SKIP

    ``reference`` is the float ``.tflite`` or ``.onnx`` file the others were made from; each file
    runs in the thin runtime on the test split of ``data`` (loaded with ``preprocess``). Nothing is
    written; the Report carries every figure, and a failed gate raises AccuracyGateError.
    ``benchmark`` (keyword options of ``edgeship.benchmark``) adds latency, as in ``validate``.
    """
    from edgeship import _io
    from edgeship.data import load_dataset
    from edgeship.runtimes import load

    gate = Gate(max_drop=max_drop, min_agreement=min_agreement)
    if data is None:
        raise BadInputError("validating files against a reference needs data (--data): the test split they run on")
    dataset = load_dataset(data, preprocess=preprocess, lazy=True) if isinstance(data, (str, Path)) else data
    x = dataset.inputs("test")
    progress("validate", f"float reference {Path(reference).name} on {len(x[0])} test samples")
    with load(reference) as session:
        scorer = Scorer.for_split(dataset, session.predict_outputs(x), task=parse_task(task))
    entries = []
    for i, file in enumerate(Path(a) for a in artifacts):
        if not file.exists():
            raise BadInputError(f"no model file at {file}")
        fmt = for_path(file)
        row = ReportEntry(
            name=file.name,
            format=fmt.name if fmt else file.suffix.lstrip("."),
            precision="",
            path=str(file),
            size_bytes=_io.size_bytes(file),
        )
        entry, _ = _evaluate(file, row, x, scorer, gate, benchmark)
        entries.append(entry)
        progress("validate", f"{file.name}: {_summary(entry)}", i + 1, len(artifacts))
    manifest = Manifest(model=Path(reference).stem, dataset=dataset.name)
    report = _report(manifest, dataset, gate, entries, scorer, Path(reference).parent)
    _raise_if_failed(report, entries)
    return report


def _raise_if_failed(report: Report, entries: list[ReportEntry]) -> None:
    if report.passed is False and not report.failed:
        raise AccuracyGateError(
            f"accuracy gate failed: none of the {len(entries)} artifact(s) could be evaluated here "
            f"({'; '.join(f'{e.name}: {e.status}' for e in entries) or 'the folder holds none'})",
            report,
        )
    if report.passed is False:
        failed = "; ".join(
            f"{e.name}: {', '.join(e.validation.failures if e.validation else ())}" for e in report.failed
        )
        raise AccuracyGateError(f"accuracy gate failed for {len(report.failed)} artifact(s): {failed}", report)


def _summary(entry: ReportEntry) -> str:
    if entry.validation is None:
        return entry.status
    head = entry.validation.headline
    text = (
        f"{head.name} {head.value:.4g} ({change_text(head)} {head.unit})"
        if head is not None
        else f"SQNR {entry.validation.sqnr_db:.1f} dB"
    )
    return text + (f", p50 {entry.benchmark.p50_ms * 1000:.0f} µs" if entry.benchmark else "")


def _write_page(folder: Path, report: Report) -> None:
    from edgeship import report as page
    from edgeship.errors import MissingDependencyError

    try:
        page.write(folder, report)
    except MissingDependencyError as exc:  # report.json is the record; the page is a view of it
        log.warning("report.html not written: %s", exc)


def _select(manifest: Manifest, names: Iterable[str] | None) -> tuple[Artifact, ...]:
    if names is None:
        return manifest.artifacts
    return tuple(manifest.get(n) for n in names)


def _report(
    manifest: Manifest, dataset: Dataset, gate: Gate, entries: list[ReportEntry], scorer: Scorer, folder: Path
) -> Report:
    from edgeship._version import __version__

    training = None
    record_path = folder / "model" / TrainingRecord.file_name
    if record_path.exists():
        training = TrainingRecord.load(record_path).to_dict()
    verdicts = [e.passed for e in entries if e.passed is not None]
    own = scorer(scorer.reference)  # the float model scored against itself: its own figures on the split
    reference_figures = own.outputs[0] if own.outputs else own
    return Report(
        edgeship_version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        model=manifest.model,
        dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        reference_accuracy=own.reference_accuracy,
        task=scorer.task,
        preprocess=dataset.options.get("preprocess", "") or dataset.preprocessing.get("preprocess", ""),
        reference_per_class=reference_figures.per_class if scorer.task in ("multiclass", "binary") else {},
        classes=tuple(dataset.classes) if scorer.task in ("multiclass", "binary", "multilabel") else (),
        gate=gate,
        # an active gate with nothing evaluated has vouched for nothing: it fails
        passed=(all(verdicts) and bool(verdicts)) if gate.active else None,
        host=_host(),
        training=training,
        artifacts=tuple(entries),
        notes=_suspects(dataset, scorer, own),
    )


def _suspects(dataset: Dataset, scorer: Scorer, own: AccuracyDelta) -> tuple[str, ...]:
    """What the figures suggest is wrong before any artifact is to blame: a float reference that
    scores about what always answering the most common class would points at the preprocessing."""
    figures = own.outputs[0] if own.outputs else own
    labels = dataset.labels("test")
    if scorer.task not in ("multiclass", "binary") or figures.reference_accuracy is None or not labels:
        return ()
    counts = np.bincount(np.asarray(labels[0]).reshape(-1).astype(np.int64))
    majority = float(counts.max() / counts.sum())
    if figures.reference_accuracy > majority + 0.05:
        return ()
    spec = dataset.options.get("preprocess") or dataset.preprocessing.get("preprocess") or "the dataset's own"
    steps = dataset.preprocessing.get("preprocess_steps", "")
    return (
        f"the float reference scores {figures.reference_accuracy * 100:.1f}% on '{dataset.name}', about what "
        f"always answering its most common class scores ({majority * 100:.1f}%): check the preprocessing first. "
        f"Applied: {spec}{f' ({steps})' if steps else ''}. A model trained on x/255 needs --preprocess unit, "
        "one that takes 0..255 pixels (e.g. behind a Rescaling layer) needs --preprocess none, a channels-first "
        "model layout=nchw",
    )
