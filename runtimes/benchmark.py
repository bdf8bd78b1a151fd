"""Benchmark artifacts the way TFLite's benchmark_model and ONNX Runtime's perf test do.

Steps: load (``init_ms``: the model, not the one-time import of the interpreter library), inputs
converted once to the model's dtypes, first inference (``first_ms``), warm-up runs, then timed runs
until both ``runs`` and ``min_seconds`` are reached; percentiles over the timed runs, peak RSS and
its growth across the timed runs, and the environment the figures were taken in.

What is timed is the model, as benchmark_model times it: the runtime call on inputs already in the
model's dtypes (``Session.run(feeds, raw=True)``; an int8 model gets int8 inputs). The float <->
int8 conversion a float caller pays on top is timed apart, as ``io_ms``; ``float_io=True`` times
the float call itself instead. ``BenchmarkResult.timed`` says which.

    >>> result = benchmark("model.int8.tflite", threads=1, runs=500)        # doctest: +SKIP
    >>> a, b = compare(["m.fp32.tflite", "m.int8.tflite"], runs=500)         # doctest: +SKIP
    >>> b.p50_ms / a.p50_ms                                                  # doctest: +SKIP

``compare`` times several artifacts interleaved (A B A B …), so a noisy machine slows all of them
alike and their ratios hold. ``isolated`` runs any of these in a child process, so a model that
crashes the interpreter ends as a RuntimeFailure instead of taking the caller down.

Why this file is long (about 470 lines): one timing discipline (prepare once, first inference,
warm-up, timed runs, statistics) serves ``benchmark``, the interleaved ``compare``, ``sweep`` and
the child process that isolates them; split, each would repeat the preparation or import it back.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeship import _io, errors
from edgeship._deps import native_is_quiet, quiet_native
from edgeship.errors import BadInputError, RuntimeFailure
from edgeship.records import BenchmarkResult
from edgeship.runtimes import Session, load, preload

__all__ = ["benchmark", "compare", "sweep", "isolated", "environment", "cpu_model", "peak_rss_bytes", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "Hardware", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(session: Session | None = None, threads: int | None = None) -> dict[str, object]:
    """Where figures were taken: CPU, cores, OS, Python, numpy, and the runtime and threads used."""
    env: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if session is not None:
        env.update(
            runtime=session.runtime,
            runtime_version=session.runtime_version,
            threads=threads if threads is not None else "runtime default",
            accelerator=session.accelerator,
        )
    return env


def _check_settings(warmup: int, runs: int, min_seconds: float, batch: int) -> None:
    for name, value, low in (("warmup", warmup, 0), ("runs", runs, 1), ("batch", batch, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise BadInputError(f"{name} must be an integer >= {low}; received {value!r}")
    if not min_seconds >= 0:
        raise BadInputError(f"min_seconds must be >= 0; received {min_seconds!r}")


FLOAT_IO = "float I/O wrapper"


@dataclass
class _Prepared:
    """A loaded session past its first inference and warm-up, ready to be timed."""

    session: Session
    run: Callable[[Any], Any]  # the timed call
    feeds: Any  # what the timed call gets
    float_feeds: dict[str, np.ndarray]  # the caller's (or sample) inputs, for timing the conversion
    timed: str
    batch: int
    init_ms: float
    first_ms: float
    warmup_mean_ms: float


@dataclass(frozen=True)
class LoadOptions:
    """How ``_prepare`` loads a model given by path, and what it times."""

    threads: int | None = None
    providers: Sequence[str] | None = None
    optimization: str | None = None
    runtime: str | None = None
    accelerator: str | None = None
    float_io: bool = False


def _prepare(
    model: str | os.PathLike | Session,
    options: LoadOptions,
    warmup: int,
    batch: int,
    feeds: Mapping[str, np.ndarray] | None,
) -> _Prepared:
    # 1. load; the interpreter library is imported first, as benchmark_model has it linked in
    if not isinstance(model, Session):
        preload(model, runtime=options.runtime)
    start = time.perf_counter()
    session = (
        model
        if isinstance(model, Session)
        else load(
            model,
            threads=options.threads,
            providers=options.providers,
            optimization=options.optimization,
            runtime=options.runtime,
            accelerator=options.accelerator,
        )
    )
    init_ms = 0.0 if isinstance(model, Session) else (time.perf_counter() - start) * 1e3
    # 2. the inputs, converted once to the model's dtypes unless the float call is what is timed
    float_feeds = dict(feeds) if feeds is not None else session.sample_feeds(batch)
    first = next(iter(float_feeds.values()), None)
    batch = int(first.shape[0]) if first is not None and first.ndim else batch
    run: Callable[[Any], Any]
    timed_feeds: Any
    if options.float_io:
        run, timed_feeds, timed = session.run, float_feeds, FLOAT_IO
    else:  # the interpreter call on arrays checked once: no per-call checks, like benchmark_model
        (run, timed_feeds), timed = session.raw_call(float_feeds), f"model (raw {session.model_dtypes()} I/O)"
    # 3. first inference (allocations, lazy kernels)
    start = time.perf_counter()
    run(timed_feeds)
    first_ms = (time.perf_counter() - start) * 1e3
    # 4. warm-up
    start = time.perf_counter()
    for _ in range(warmup):
        run(timed_feeds)
    warmup_mean_ms = (time.perf_counter() - start) * 1e3 / warmup if warmup else 0.0
    return _Prepared(session, run, timed_feeds, float_feeds, timed, batch, init_ms, first_ms, warmup_mean_ms)


def _io_ms(prep: _Prepared, runs: int) -> float:
    """p50 of the float <-> model-dtype conversion ``Session.run`` does around one call, timed alone."""
    session = prep.session
    model_feeds = session.model_inputs(prep.float_feeds)
    converts = any(prep.float_feeds[name].dtype != model_feeds[name].dtype for name in model_feeds)
    if not converts and not any(spec.quantized for spec in session.outputs):
        return 0.0
    outputs = list(session.run(model_feeds, raw=True).values())
    clock = time.perf_counter_ns
    times = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = clock()
        session._float_io(prep.float_feeds, outputs)
        times[i] = clock() - t0
    return float(np.median(times)) / 1e6


def statistics(ms: np.ndarray) -> dict[str, Any]:
    """The figures of timed runs (milliseconds): count, mean, std, min, max and the percentiles
    benchmark_model reports (linear interpolation between the two nearest runs)."""
    p5, p50, p90, p95, p99 = np.percentile(ms, [5, 50, 90, 95, 99])
    return {
        "count": int(ms.size),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "p5_ms": float(p5),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
    }


def _result(prep: _Prepared, times_ns: Sequence[int], rss_growth: int, threads: int | None) -> BenchmarkResult:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    session = prep.session
    return BenchmarkResult(
        runtime=session.runtime,
        runtime_version=session.runtime_version,
        threads=threads,
        batch=prep.batch,
        init_ms=prep.init_ms,
        first_ms=prep.first_ms,
        warmup_mean_ms=prep.warmup_mean_ms,
        **statistics(ms),
        throughput=float(prep.batch * 1e3 / ms.mean()),
        peak_rss_bytes=peak_rss_bytes(),
        rss_growth_bytes=int(rss_growth),
        model_size_bytes=_io.size_bytes(session.path) if Path(session.path).exists() else 0,
        env=environment(session, threads),
        timed=prep.timed,
        io_ms=_io_ms(prep, min(int(ms.size), 500)),
    )


def benchmark(
    model: str | os.PathLike | Session,
    *,
    threads: int | None = None,
    warmup: int = 20,
    runs: int = 200,
    min_seconds: float = 0.0,
    batch: int = 1,
    feeds: Mapping[str, np.ndarray] | None = None,
    max_seconds: float = 60.0,
    providers: Sequence[str] | None = None,
    optimization: str | None = None,
    float_io: bool = False,
    runtime: str | None = None,
    accelerator: str | None = None,
) -> BenchmarkResult:
    """Benchmark ``model`` (a path, or a loaded Session whose ``init_ms`` is then 0).

        >>> result = benchmark("model.int8.tflite", threads=1, runs=500)    # doctest: +SKIP
        >>> result.p50_ms, result.p99_ms                                    # doctest: +SKIP

    The timed call is the model on inputs in its own dtypes (int8 for an int8 model), as TFLite's
    benchmark_model times it; ``result.io_ms`` is the float <-> int8 conversion a float caller adds
    per call, and ``float_io=True`` times ``Session.run`` on float inputs instead (``result.timed``
    says which). ``feeds`` are the inputs (default: seeded random inputs of batch ``batch``; float
    feeds are converted once, before timing); ``max_seconds`` stops the timed runs early on a very
    slow model (``count`` says how many ran). ``providers`` and ``optimization`` are ONNX Runtime's,
    ``runtime`` and ``accelerator`` choose a backend (see ``edgeship.runtimes.load``).
    """
    return compare(
        [model],
        threads=threads,
        warmup=warmup,
        runs=runs,
        min_seconds=min_seconds,
        batch=batch,
        feeds=feeds,
        max_seconds=max_seconds,
        providers=providers,
        optimization=optimization,
        float_io=float_io,
        runtime=runtime,
        accelerator=accelerator,
    )[0]


def compare(
    models: Sequence[str | os.PathLike | Session],
    *,
    threads: int | None = None,
    warmup: int = 20,
    runs: int = 200,
    min_seconds: float = 0.0,
    batch: int = 1,
    feeds: Mapping[str, np.ndarray] | None = None,
    max_seconds: float = 60.0,
    providers: Sequence[str] | None = None,
    optimization: str | None = None,
    float_io: bool = False,
    runtime: str | None = None,
    accelerator: str | None = None,
) -> list[BenchmarkResult]:
    """Benchmark several artifacts interleaved: one timed call of each in turn (A B A B …).

    Each result counts only its own calls, so ratios between them hold on a noisy machine. Peak
    RSS and RSS growth are the process's across the whole interleaved loop. ``feeds`` (when given)
    must suit every model.
    """
    _check_settings(warmup, runs, min_seconds, batch)
    if not models:
        raise BadInputError("compare() needs at least one model; received none")
    load_options = LoadOptions(
        threads=threads,
        providers=providers,
        optimization=optimization,
        runtime=runtime,
        accelerator=accelerator,
        float_io=bool(float_io),
    )
    prepared = [_prepare(m, load_options, warmup, batch, feeds) for m in models]
    rss_before = rss_bytes()
    times = _interleaved([(p.run, p.feeds) for p in prepared], runs, min_seconds, max_seconds)
    growth = rss_bytes() - rss_before
    return [_result(p, t, growth, threads) for p, t in zip(prepared, times)]


def _interleaved(
    calls: list[tuple[Callable[..., Any], dict]], runs: int, min_seconds: float, max_seconds: float
) -> list[list[int]]:
    clock = time.perf_counter_ns
    times: list[list[int]] = [[] for _ in calls]
    began = clock()
    min_ns, max_ns = min_seconds * 1e9, max_seconds * 1e9
    done = 0
    while True:
        for (run, feeds), out in zip(calls, times):
            t0 = clock()
            run(feeds)
            out.append(clock() - t0)
        done += 1
        elapsed = clock() - began
        if (done >= runs and elapsed >= min_ns) or elapsed >= max_ns:
            return times


def sweep(
    models: Sequence[str | os.PathLike],
    thread_counts: Sequence[int | None] = (None,),
    *,
    batches: Sequence[int] = (1,),
    isolate: bool = False,
    warmup: int = 20,
    runs: int = 200,
    min_seconds: float = 0.0,
    max_seconds: float = 60.0,
    providers: Sequence[str] | None = None,
    optimization: str | None = None,
    float_io: bool = False,
    runtime: str | None = None,
    accelerator: str | None = None,
) -> list[tuple[str, BenchmarkResult]]:
    """``compare`` (interleaved when several models) at each thread count and batch size, in a child
    process per setting when ``isolate``; returns (model, result) pairs, threads outermost."""
    settings: dict[str, Any] = dict(
        warmup=warmup,
        runs=runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        providers=list(providers) if providers else None,
        optimization=optimization,
        float_io=float_io,
        runtime=runtime,
        accelerator=accelerator,
    )
    rows: list[tuple[str, BenchmarkResult]] = []
    names = [str(m) for m in models]
    for threads in thread_counts:
        for batch in batches:
            if isolate:
                results = isolated("compare", names, threads=threads, batch=batch, **settings)
            else:
                results = compare(names, threads=threads, batch=batch, **settings)
            rows += list(zip(names, results))
    return rows


# ------------------------------------------------------------------------------ child process

#: what ``isolated`` may run in the child, and how its JSON comes back as objects
_JOBS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "benchmark": ("edgeship.runtimes.benchmark:benchmark", BenchmarkResult.from_dict),
    "compare": ("edgeship.runtimes.benchmark:compare", lambda data: [BenchmarkResult.from_dict(d) for d in data]),
    "profile": ("edgeship.runtimes._profile:profile", lambda data: _profile_record().from_dict(data)),
}


def _profile_record() -> Any:
    from edgeship.runtimes._profile import OpProfile

    return OpProfile


def isolated(job: str, *args: Any, timeout: float | None = 600.0, python: str | None = None, **kwargs: Any) -> Any:
    """Run ``benchmark``, ``compare`` or ``profile`` in a child Python and return its result.

        >>> result = isolated("benchmark", "model.tflite", runs=100)        # doctest: +SKIP

    A child killed by a signal (a crashing interpreter) raises RuntimeFailure naming the signal;
    an EdgeshipError in the child is raised again here with its message. Arguments must be JSON
    values (paths as strings). ``python`` is the interpreter for the child (default: this one).
    """
    if job not in _JOBS:
        raise BadInputError(f"isolated() runs one of {sorted(_JOBS)}; received {job!r}")
    with tempfile.TemporaryDirectory(prefix="edgeship-bench-") as tmp:
        request, answer = Path(tmp) / "request.json", Path(tmp) / "answer.json"
        # the child is as quiet as this process: told in the request, not through an inherited variable
        request.write_text(
            json.dumps(
                {
                    "job": job,
                    "args": [str(a) if isinstance(a, os.PathLike) else a for a in args],
                    "kwargs": kwargs,
                    "answer": str(answer),
                    "quiet_native": native_is_quiet(),
                }
            )
        )
        try:
            proc = subprocess.run(
                [python or sys.executable, "-m", "edgeship.runtimes.benchmark", str(request)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailure(f"the isolated {job} did not finish within {timeout} s; it was stopped") from exc
        data = json.loads(answer.read_text()) if answer.exists() else None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise RuntimeFailure(
            f"the interpreter crashed in the isolated {job} of {args[0] if args else ''} "
            f"(child killed by {name}); this process is unharmed. stderr: {_tail(proc.stderr)}"
        )
    if isinstance(data, dict) and "error" in data:
        cls = getattr(errors, data["error"], errors.EdgeshipError)
        raise cls(data["message"])
    if proc.returncode != 0 or data is None:
        raise RuntimeFailure(f"the isolated {job} failed (exit status {proc.returncode}): {_tail(proc.stderr)}")
    return _JOBS[job][1](data["result"])


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(nothing on stderr)"


def _child(request_path: str) -> int:
    """The child side of ``isolated``: run one job, write its JSON answer."""
    import importlib

    request = json.loads(Path(request_path).read_text())
    module_name, _, fn_name = _JOBS[request["job"]][0].partition(":")
    try:
        with quiet_native(request.get("quiet_native", False)):
            fn = getattr(importlib.import_module(module_name), fn_name)
            result = fn(*request["args"], **request["kwargs"])
        payload = {"result": [r.to_dict() for r in result] if isinstance(result, list) else result.to_dict()}
        code = 0
    except errors.EdgeshipError as exc:
        payload, code = {"error": type(exc).__name__, "message": str(exc)}, 1
    _io.write_json(request["answer"], payload)
    return code


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
