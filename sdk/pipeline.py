"""The pipeline: validate a folder of artifacts, and the quickstart that runs all five stages.

    train ──► convert ──► validate ──► benchmark ──► report
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgeship import _io, bundle, metrics
from edgeship.errors import AccuracyGateError, BadArtifactError, BadInputError
from edgeship.records import (Artifact, BenchmarkResult, Gate, Manifest, Report, ReportEntry, TrainingRecord,
                              verified_path)

log = logging.getLogger(__name__)

QUICKSTART_TARGETS = ("tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8", "coreml:fp16")
BUNDLE_SAMPLES = 64

#: progress callback: (stage, detail, steps done, steps in the stage) — the counts when known
Progress = Callable[..., None]


def _noop(stage: str, detail: str, done: int | None = None, total: int | None = None) -> None:
    log.info("%s: %s", stage, detail)


def vouched(path: str | Path) -> bool:
    """Whether a manifest.json beside ``path`` records it with a matching sha256."""
    path = Path(path)
    try:
        manifest = Manifest.load(path.parent)
    except BadArtifactError:
        return False
    entry = next((a for a in manifest.artifacts if (path.parent / a.path).resolve() == path.resolve()), None)
    return entry is not None and _io.sha256_path(path) == entry.sha256


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
    session = load(path)
    outputs = session.predict(x)
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
    progress: Progress = _noop,
) -> Report:
    """Run the float reference and every artifact of ``folder`` on the same held-out test split.

        >>> report = validate("out", data="digits", max_drop=1.0)          # doctest: +SKIP
        >>> [(e.name, e.accuracy_delta_pts) for e in report.artifacts]       # doctest: +SKIP

    Writes ``folder/report.json`` (and ``folder/bundle``) and returns the Report. With a gate
    (``max_drop`` points, ``min_agreement`` fraction) a failing artifact raises AccuracyGateError,
    which carries the report. ``benchmark`` (keyword options of ``edgeship.benchmark``) adds latency.
    """
    from edgeship.converters import reference as _reference
    from edgeship.datasets import Dataset, load_dataset

    folder = Path(folder)
    gate = Gate(max_drop=max_drop, min_agreement=min_agreement)
    manifest = Manifest.load(folder)
    dataset = data if isinstance(data, Dataset) else load_dataset(data or manifest.dataset or _no_dataset(folder))
    if manifest.dataset_fingerprint and dataset.fingerprint != manifest.dataset_fingerprint:
        log.warning("validating on %s, whose fingerprint differs from the one the artifacts were converted with",
                    dataset.name)
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
    from edgeship import html
    from edgeship.errors import MissingDependencyError

    try:
        html.write(folder, report)
    except MissingDependencyError as exc:  # report.json is the record; the page is a view of it
        log.warning("report.html not written: %s", exc)


def _no_dataset(folder: Path) -> str:
    raise BadInputError(f"{folder}/manifest.json names no dataset; pass data= (e.g. 'digits' or a .npz file)")


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
        passed=all(verdicts) if gate.active and verdicts else None,
        host=_host(),
        training=training,
        artifacts=tuple(entries),
    )


def quickstart(
    out: str | Path = "edgeship-out",
    *,
    epochs: int = 40,
    qat_epochs: int = 3,
    runs: int = 200,
    seed: int = 0,
    max_drop: float | None = 1.0,
    progress: Progress = _noop,
) -> Report:
    """The main job on built-in data: train a small CNN on digits (float, then a short QAT
    fine-tune), convert it to TFLite, ONNX and Core ML, validate each artifact against the float
    model, benchmark the runnable ones, and write manifest.json, report.json and bundle/.

        >>> report = quickstart("edgeship-out")                             # doctest: +SKIP
    """
    from edgeship.converters import convert
    from edgeship.datasets import load_dataset
    from edgeship.trainers import train

    out = Path(out)
    started = time.perf_counter()
    progress("data", "digits (scikit-learn's 8x8 handwritten digits)")
    data = load_dataset("digits", seed=seed)
    progress("train", f"tiny_cnn: float up to {epochs} epochs, then {qat_epochs} QAT epochs")
    from edgeship.trainers.fitting import progress_callback

    train("tiny_cnn", data, out=out / "model", epochs=epochs, qat=True, qat_epochs=qat_epochs, seed=seed,
          callbacks=[progress_callback(progress)])
    done = []

    def converted(artifact: Any) -> None:
        done.append(artifact)
        progress("convert", f"{artifact.name} -> {artifact.path} ({artifact.size_bytes} bytes)", len(done),
                 len(QUICKSTART_TARGETS))

    progress("convert", ", ".join(QUICKSTART_TARGETS), 0, len(QUICKSTART_TARGETS))
    convert(out / "model", QUICKSTART_TARGETS, data=data, out=out, on_artifact=converted)
    report = validate(out, data=data, max_drop=max_drop,
                      benchmark={"threads": 1, "warmup": 20, "runs": runs}, progress=progress)
    progress("done", f"{time.perf_counter() - started:.1f} s; report at {out / Report.file_name}")
    return report
