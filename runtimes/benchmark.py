"""Benchmark an artifact the way TFLite's benchmark_model does.

Steps: load (``init_ms``), first inference (``first_ms``), warm-up runs, then timed runs until both
``runs`` and ``min_seconds`` are reached; percentiles over the timed runs, peak RSS and its growth
across the timed runs, and the environment the figures were taken in.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from edgeship import _io
from edgeship.errors import BadInputError
from edgeship.records import BenchmarkResult
from edgeship.runtimes import Session, load

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(session: Session | None = None) -> dict[str, object]:
    env: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if session is not None:
        env.update(runtime=session.runtime, runtime_version=session.runtime_version)
    return env


def _check_settings(warmup: int, runs: int, min_seconds: float, batch: int) -> None:
    for name, value, low in (("warmup", warmup, 0), ("runs", runs, 1), ("batch", batch, 1)):
        if not isinstance(value, int) or value < low:
            raise BadInputError(f"{name} must be an integer >= {low}; received {value!r}")
    if not min_seconds >= 0:
        raise BadInputError(f"min_seconds must be >= 0; received {min_seconds!r}")


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
    **load_options: object,
) -> BenchmarkResult:
    """Benchmark ``model`` (a path, or a loaded Session whose ``init_ms`` is then 0).

        >>> result = benchmark("model.int8.tflite", threads=1, runs=500)    # doctest: +SKIP
        >>> result.p50_ms, result.p99_ms                                    # doctest: +SKIP

    ``feeds`` are the inputs to time (default: seeded random inputs of batch ``batch``);
    ``max_seconds`` stops the timed runs early on a very slow model (``count`` says how many ran).
    """
    _check_settings(warmup, runs, min_seconds, batch)
    # 1. load
    start = time.perf_counter()
    session = model if isinstance(model, Session) else load(model, threads=threads, **load_options)
    init_ms = 0.0 if isinstance(model, Session) else (time.perf_counter() - start) * 1e3
    feeds = dict(feeds) if feeds is not None else session.sample_feeds(batch)
    arrays_batch = next(iter(feeds.values())).shape[0] if feeds else batch
    run = session.run
    # 2. first inference (allocations, lazy kernels)
    start = time.perf_counter()
    run(feeds)
    first_ms = (time.perf_counter() - start) * 1e3
    # 3. warm-up
    start = time.perf_counter()
    for _ in range(warmup):
        run(feeds)
    warmup_mean_ms = (time.perf_counter() - start) * 1e3 / warmup if warmup else 0.0
    # 4. timed runs
    times = _timed_runs(run, feeds, runs, min_seconds, max_seconds)
    rss_before, times_ns = times
    rss_growth = rss_bytes() - rss_before
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p5, p50, p90, p95, p99 = np.percentile(ms, [5, 50, 90, 95, 99])
    return BenchmarkResult(
        runtime=session.runtime,
        runtime_version=session.runtime_version,
        threads=threads,
        batch=int(arrays_batch),
        init_ms=init_ms,
        first_ms=first_ms,
        warmup_mean_ms=warmup_mean_ms,
        count=int(ms.size),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        p5_ms=float(p5),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        throughput=float(arrays_batch * 1e3 / ms.mean()),
        peak_rss_bytes=peak_rss_bytes(),
        rss_growth_bytes=int(rss_growth),
        model_size_bytes=_io.size_bytes(session.path) if Path(session.path).exists() else 0,
        env=environment(session),
    )


def _timed_runs(run, feeds, runs: int, min_seconds: float, max_seconds: float) -> tuple[int, list[int]]:
    clock = time.perf_counter_ns
    times: list[int] = []
    rss_before = rss_bytes()
    began = clock()
    min_ns, max_ns = min_seconds * 1e9, max_seconds * 1e9
    while True:
        t0 = clock()
        run(feeds)
        t1 = clock()
        times.append(t1 - t0)
        elapsed = t1 - began
        if (len(times) >= runs and elapsed >= min_ns) or elapsed >= max_ns:
            return rss_before, times
