"""The device-side check of a validation bundle: what ``edgeship device run`` runs on a target.

For each artifact in the bundle: load it with the thin runtime, run the bundle's inputs (every one
of a model with several), compare the outputs with the expected ones within the bundle's tolerance,
measure accuracy on its labels, and benchmark it on the device. Needs numpy and one interpreter, nothing else:

    python -m edgeship.runtimes._device_check --bundle DIR [--runs 50] [--warmup 5] [--threads 1] [--out FILE]

prints (or writes) one JSON DeviceReport. ``device_tests/`` runs the same checks under pytest.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeship import _io, bundle, metrics
from edgeship._deps import QUIET_CHILD_ENV, quiet_native
from edgeship.errors import BadArtifactError, EdgeshipError, MissingDependencyError, UnsupportedModelError
from edgeship.records import BenchmarkResult, Record

__all__ = ["ArtifactCheck", "DeviceReport", "check_artifact", "check_bundle", "interpreters"]


@dataclass(frozen=True)
class ArtifactCheck(Record):
    """One bundle artifact checked on a device. ``status`` is "ok", "failed" or "not run: why".

    ``agreement`` is the share of samples whose top class is the host's (multi-class outputs),
    ``max_abs_error_vs_host`` the largest difference from the host's outputs; for a file that
    computes in int8, ``bit_exact`` is the share of output values identical to the host's and
    ``max_steps`` the largest difference in steps of the output's int8 grid.
    """

    name: str
    path: str
    status: str
    runtime: str = ""
    samples: int = 0
    max_abs_error_vs_host: float | None = None
    tolerance: float | None = None
    outputs_ok: bool | None = None
    agreement: float | None = None
    bit_exact: float | None = None
    max_steps: float | None = None
    #: why the check failed, when it failed before comparing outputs
    reason: str = ""
    #: in a browser (the browser target): p50/p90 of one call in the page, the page's cold start
    #: (page, runtime and model loaded) and first inference, and the same file's p50 natively here
    browser_p50_ms: float | None = None
    browser_p90_ms: float | None = None
    cold_start_ms: float | None = None
    first_inference_ms: float | None = None
    native_p50_ms: float | None = None
    accuracy: float | None = None
    min_accuracy: float | None = None
    host_accuracy: float | None = None
    accuracy_ok: bool | None = None
    benchmark: BenchmarkResult | None = None

    @property
    def passed(self) -> bool | None:
        """True/False once checked; None when the artifact could not run on this device."""
        return None if self.status.startswith("not run") else self.status == "ok"


@dataclass(frozen=True)
class DeviceReport(Record):
    """What a target brings back: per-artifact checks, the device's environment and what ran them."""

    target: str
    passed: bool | None
    error: str = ""
    seconds: float = 0.0
    #: ``platform.machine()`` where the check ran (``aarch64`` on an arm64 board)
    machine: str = ""
    #: how the device was emulated, when it was (its latency is then the emulator's)
    emulated: str = ""
    #: the preprocessing applied on the device to the bundle's raw inputs ("" when they came preprocessed)
    preprocessed_here: str = ""
    #: what computed where that is not said by each artifact's runtime (the browser's backend)
    backend: str = ""
    model: str = ""
    dataset: str = ""
    host: dict[str, Any] = field(default_factory=dict)
    installed: dict[str, str] = field(default_factory=dict)
    tensorflow_imported: bool = False
    #: the bundle's input files and the shape of each, in the model's input order
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    artifacts: tuple[ArtifactCheck, ...] = ()


def interpreters() -> dict[str, str]:
    """Versions of numpy, the interpreters and edgeship installed where this runs."""
    found = {}
    for dist in ("edgeship", "numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "tensorflow", "coremltools"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def check_artifact(
    folder: Path,
    entry: bundle.BundleEntry,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    manifest: bundle.BundleManifest | None = None,
) -> ArtifactCheck:
    """Load, run, compare and benchmark one bundle artifact on ``inputs`` (one array per model
    input, in the model's order; raw when ``manifest.raw_inputs``, and then preprocessed here as the
    file records); an artifact whose runtime this device lacks comes back "not run: …" rather than failed."""
    from edgeship.runtimes import can_run, load
    from edgeship.runtimes.benchmark import benchmark

    path = Path(folder) / entry.path
    check = blank(entry)
    runnable, why = can_run(path)
    if not runnable:
        return replace(check, status=why)
    try:
        session = load(path, threads=threads)
    except (MissingDependencyError, UnsupportedModelError) as exc:
        return replace(check, status=f"not run: {exc}")
    try:
        inputs = model_inputs(session, manifest, entry, inputs)
    except EdgeshipError as exc:
        return replace(check, status="failed", reason=str(exc), runtime=f"{session.runtime} {session.runtime_version}")
    outputs = session.predict(inputs)
    result = None
    if runs > 0 and not session.reference_only:
        result = benchmark(path, threads=threads, runs=runs, warmup=warmup, feeds=session.feeds_for(inputs, 1))
    scored = score(blank(entry), entry, outputs, bundle.array(folder, entry.expected), labels)
    return replace(scored, runtime=f"{session.runtime} {session.runtime_version}", benchmark=result)


def blank(entry: bundle.BundleEntry) -> ArtifactCheck:
    """The check of ``entry`` before anything ran: what the bundle asks of it."""
    return ArtifactCheck(
        name=entry.name,
        path=entry.path,
        status="ok",
        tolerance=entry.max_abs_error,
        min_accuracy=entry.min_accuracy,
        host_accuracy=entry.host_accuracy,
    )


def score(
    check: ArtifactCheck, entry: bundle.BundleEntry, outputs: np.ndarray, expected: np.ndarray, labels: np.ndarray
) -> ArtifactCheck:
    """``check`` with the device's first ``outputs`` measured against the host's ``expected`` ones
    (error, agreement, int8 bit-exactness) and the bundle's ``labels``, and its verdict."""
    same_shape = outputs.shape == expected.shape
    error = float(np.max(np.abs(outputs.astype(np.float64) - expected), initial=0.0)) if same_shape else float("inf")
    agreement = (
        metrics.accuracy(outputs.argmax(-1), expected.argmax(-1))
        if same_shape and outputs.ndim == 2 and outputs.shape[1] > 1
        else None
    )
    exact = steps = None
    if entry.step and same_shape:  # int8 arithmetic: count the difference in steps of its output grid
        exact = float(np.mean(outputs == expected)) if outputs.size else 1.0
        steps = round(error / entry.step, 2)
    checked = entry.min_accuracy is not None and len(labels) > 0  # multi-class bundles carry labels
    accuracy = metrics.accuracy(outputs.argmax(-1), labels) if checked else None
    outputs_ok = error <= entry.max_abs_error
    accuracy_ok = accuracy >= entry.min_accuracy if accuracy is not None and entry.min_accuracy is not None else None
    return replace(
        check,
        status="ok" if outputs_ok and accuracy_ok is not False else "failed",
        samples=int(len(outputs)),
        max_abs_error_vs_host=error if np.isfinite(error) else None,
        outputs_ok=outputs_ok,
        agreement=agreement,
        bit_exact=exact,
        max_steps=steps,
        accuracy=accuracy,
        accuracy_ok=accuracy_ok,
    )


def preprocessing_for(session: Any, manifest: bundle.BundleManifest | None, entry: bundle.BundleEntry) -> Any:
    """The Preprocess a device applies to the bundle's inputs for this artifact (None: they come
    preprocessed): the one the file records, or the bundle's for a file with no edgeship record. A
    file whose recorded preprocessing is not the one the bundle was made with is refused."""
    from edgeship.preprocess import Preprocess

    if manifest is None or not manifest.raw_inputs:
        return None
    made_with = Preprocess.parse(manifest.preprocess or "none")
    if "preprocess" not in session.metadata:  # a file with no edgeship record: the bundle's says it
        return made_with
    if session.preprocess.spec != made_with.spec:
        raise BadArtifactError(
            f"{entry.path} records the preprocessing {session.preprocess.spec!r}, but the bundle's raw "
            f"inputs were made for {made_with.spec!r}: the bundle was built for other artifacts; write it again "
            "with edgeship validate"
        )
    return session.preprocess


def model_inputs(
    session: Any, manifest: bundle.BundleManifest | None, entry: bundle.BundleEntry, inputs: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    """The bundle's inputs as this artifact takes them: raw inputs through ``preprocessing_for``
    (what an app on the device does), then into the file's layout."""
    from edgeship.runtimes._session import in_layout

    spec = preprocessing_for(session, manifest, entry)
    if spec is not None:
        inputs = tuple(spec.apply(a) for a in inputs)
    return in_layout(inputs, entry.layout)  # a file made channels-last from a channels-first model


def check_bundle(
    folder: str | Path, *, target: str = "local", runs: int = 50, warmup: int = 5, threads: int | None = None
) -> DeviceReport:
    """Check every artifact of the bundle at ``folder`` (checksums first) on this machine."""
    from edgeship.runtimes.benchmark import environment

    started = time.perf_counter()
    folder = Path(folder)
    manifest, inputs, labels = bundle.load(folder)
    checks = tuple(
        check_artifact(folder, e, inputs, labels, runs=runs, warmup=warmup, threads=threads, manifest=manifest)
        for e in manifest.artifacts
    )
    verdicts = [c.passed for c in checks if c.passed is not None]
    return DeviceReport(
        target=target,
        passed=all(verdicts) if verdicts else None,
        seconds=time.perf_counter() - started,
        machine=platform.machine(),
        preprocessed_here=applied(manifest),
        model=manifest.model,
        dataset=manifest.dataset,
        host=environment(),
        installed=interpreters(),
        tensorflow_imported="tensorflow" in sys.modules,
        artifacts=checks,
        inputs={name: tuple(int(d) for d in a.shape) for name, a in zip(manifest.input_files, inputs)},
    )


def applied(manifest: bundle.BundleManifest) -> str:
    """What the device applies to the bundle's raw inputs, for the report ("" for preprocessed inputs)."""
    if not manifest.raw_inputs:
        return ""
    from edgeship.preprocess import Preprocess

    spec = Preprocess.parse(manifest.preprocess or "none")
    return f"{spec.spec} ({spec.describe()})"


def main(argv: list[str] | None = None) -> int:
    """Command line of the device-side check; exit 0 when the bundle passed, 2 when it failed, 1 on error."""
    parser = argparse.ArgumentParser(
        prog="python -m edgeship.runtimes._device_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--bundle", required=True, help="validation bundle folder")
    parser.add_argument("--target", default="local", help="name recorded in the report")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    try:
        # a LocalTarget started this check as quiet as itself; elsewhere the variable is unset: not quiet
        with quiet_native(os.environ.get(QUIET_CHILD_ENV) == "1"):
            report = check_bundle(
                args.bundle, target=args.target, runs=args.runs, warmup=args.warmup, threads=args.threads
            )
    except EdgeshipError as exc:
        report = DeviceReport(target=args.target, passed=None, error=f"{type(exc).__name__}: {exc}")
    text = json.dumps(report.to_dict(), allow_nan=False, default=_io._json_default)
    if args.out:
        _io.write_bytes(args.out, text.encode())
    else:
        print(text)
    return 1 if report.error else 0 if report.passed is not False else 2


if __name__ == "__main__":
    sys.exit(main())
