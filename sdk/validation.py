"""The validate stage: every artifact of a folder against its float reference, on held-out data.

    train ──► convert ──► [validate] ──► benchmark ──► report

``validate`` runs the float reference and each artifact on the same test split, scores each with
``edgeship.metrics.compare``, applies the gate, writes report.json, report.html and the validation
bundle, and raises AccuracyGateError (carrying the report) when an artifact fails the gate.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgeship import bundle, metrics
from edgeship.errors import AccuracyGateError, BadInputError, UnsupportedModelError
from edgeship.progress import Progress, log_progress
from edgeship.records import (Artifact, BenchmarkResult, Gate, Manifest, Report, ReportEntry, TrainingRecord,
                              verified_path)

log = logging.getLogger(__name__)

BUNDLE_SAMPLES = 64


def dataset_for(folder: Path, manifest: Manifest, data: Any) -> Any:
    """The Dataset to measure ``folder`` on: ``data`` (a Dataset or a name/path) or the manifest's own.

    Data whose fingerprint differs from the one the artifacts were converted with is used, with a
    warning: the caller asked for it.
    """
    from edgeship.datasets import Dataset, load_dataset

    if isinstance(data, Dataset):
        dataset = data
    elif data or manifest.dataset:
        dataset = load_dataset(data or manifest.dataset)
    else:
        raise BadInputError(f"{folder}/manifest.json names no dataset; pass data= (e.g. 'digits' or a .npz file)")
    if manifest.dataset_fingerprint and dataset.fingerprint != manifest.dataset_fingerprint:
        log.warning("using %s, whose fingerprint differs from the one the artifacts were converted with",
                    dataset.name)
    return dataset


def _host() -> dict[str, Any]:
    from edgeship.runtimes.benchmark import environment

    return environment()


def _evaluate(folder: Path, artifact: Artifact, x: np.ndarray, reference: np.ndarray, labels: np.ndarray,
              gate: Gate, bench: dict[str, Any] | None) -> tuple[ReportEntry, np.ndarray | None]:
    from edgeship.runtimes import can_run, load
    from edgeship.runtimes.benchmark import benchmark

    path = verified_path(folder, artifact)
    entry = ReportEntry(name=artifact.name, format=artifact.format, precision=artifact.precision,
                        path=artifact.path, size_bytes=artifact.size_bytes)
    runnable, why = can_run(path)
    if not runnable:
        return dataclasses.replace(entry, status=why, evaluated_with="not evaluated"), None
    try:
        session = load(path)
        outputs = session.predict(x)
    except UnsupportedModelError as exc:  # e.g. an op the Core ML evaluator lacks: the other artifacts go on
        log.warning("%s not evaluated: %s", artifact.name, exc)
        return dataclasses.replace(entry, status=f"not evaluated: {exc}", evaluated_with="not evaluated"), None
    delta = metrics.compare(reference, outputs, labels)
    failures = gate.check(delta)
    delta = dataclasses.replace(delta, passed=not failures if gate.active else None, failures=failures)
    result: BenchmarkResult | None = None
    # A reference evaluator (numpy standing in for a runtime this host lacks) is never timed:
    # its latency says nothing about the device's.
    if bench is not None and not session.reference_only:
        result = benchmark(path, feeds={session.inputs[0].name: x[:1]}, **bench)
    entry = dataclasses.replace(entry, evaluated_with=f"{session.runtime} {session.runtime_version}",
                                validation=delta, benchmark=result)
    return entry, outputs


def validate(
    folder: str | Path,
    *,
    data: Any = None,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    artifacts: Iterable[str] | None = None,
    benchmark: dict[str, Any] | None = None,
    write_bundle: bool = True,
    trust_code: bool = False,
    progress: Progress = log_progress,
) -> Report:
    """Run the float reference and every artifact of ``folder`` on the same held-out test split.

        >>> report = validate("out", data="digits", max_drop=1.0)          # doctest: +SKIP
        >>> [(e.name, e.accuracy_delta_pts) for e in report.artifacts]       # doctest: +SKIP

    Writes ``folder/report.json`` (and ``folder/bundle``) and returns the Report. With a gate
    (``max_drop`` points, ``min_agreement`` fraction) a failing artifact raises AccuracyGateError,
    which carries the report; so does a gate with no artifact evaluated at all. ``benchmark``
    (keyword options of ``edgeship.benchmark``) adds latency. An artifact that cannot run here, or
    holds an op the runtime lacks, is listed with the reason and not evaluated.
    """
    from edgeship.converters import reference as _reference

    folder = Path(folder)
    gate = Gate(max_drop=max_drop, min_agreement=min_agreement)
    manifest = Manifest.load(folder)
    dataset = dataset_for(folder, manifest, data)
    chosen = _select(manifest, artifacts)
    x, labels = dataset.x_test, dataset.y_test
    progress("validate", f"float reference on {len(x)} test samples")
    reference = _reference.predictor(folder, manifest, trust_code=trust_code)(x)
    entries, outputs = [], {}
    for i, artifact in enumerate(chosen):
        progress("validate", artifact.name + (" and benchmark" if benchmark else ""), i, len(chosen))
        entry, out = _evaluate(folder, artifact, x, reference, labels, gate, benchmark)
        entries.append(entry)
        if out is not None:
            outputs[artifact.name] = (artifact, out, entry.accuracy)
        progress("validate", f"{artifact.name}: {_summary(entry)}", i + 1, len(chosen))
    report = _report(manifest, dataset, gate, entries, reference, labels, folder)
    report.save(folder)
    _write_page(folder, report)
    if write_bundle and outputs:
        n = min(BUNDLE_SAMPLES, len(x))
        bundle.write(folder / bundle.FOLDER, model=manifest.model, dataset=dataset.name,
                     fingerprint=dataset.fingerprint, inputs=x[:n], labels=labels[:n],
                     results=[(a, o[:n], acc) for a, o, acc in outputs.values()], source=folder)
    if report.passed is False and not report.failed:
        raise AccuracyGateError(
            f"accuracy gate failed: none of the {len(entries)} artifact(s) could be evaluated here "
            f"({'; '.join(f'{e.name}: {e.status}' for e in entries) or 'the folder holds none'})", report)
    if report.passed is False:
        failed = "; ".join(f"{e.name}: {', '.join(e.validation.failures)}" for e in report.failed)
        raise AccuracyGateError(f"accuracy gate failed for {len(report.failed)} artifact(s): {failed}", report)
    return report


def _summary(entry: ReportEntry) -> str:
    if entry.validation is None:
        return entry.status
    text = f"accuracy {entry.accuracy * 100:.2f}% ({entry.accuracy_delta_pts:+.2f} pts)"
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


def _report(manifest: Manifest, dataset: Any, gate: Gate, entries: list[ReportEntry], reference: np.ndarray,
            labels: np.ndarray, folder: Path) -> Report:
    from edgeship import __version__

    training = None
    record_path = folder / "model" / TrainingRecord.file_name
    if record_path.exists():
        training = TrainingRecord.load(record_path).to_dict()
    verdicts = [e.passed for e in entries if e.passed is not None]
    return Report(
        edgeship_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        model=manifest.model,
        dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        reference_accuracy=float(np.mean(reference.argmax(1) == labels)),
        reference_per_class=metrics.per_class(metrics.confusion_matrix(labels, reference.argmax(1), reference.shape[1])),
        classes=tuple(dataset.classes),
        gate=gate,
        # an active gate with nothing evaluated has vouched for nothing: it fails
        passed=(all(verdicts) and bool(verdicts)) if gate.active else None,
        host=_host(),
        training=training,
        artifacts=tuple(entries),
    )
