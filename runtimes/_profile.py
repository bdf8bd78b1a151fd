"""Per-op profiles: where an inference spends its time, summarised as the top ops.

ONNX Runtime records every node's kernel time when profiling is on; the summary is built from its
JSON trace. LiteRT's Python interpreter exposes no op profiler, so a ``.tflite`` profile comes from
TFLite's ``benchmark_model`` tool (``--enable_op_profiling``) when one is on PATH (or named by
``EDGESHIP_BENCHMARK_MODEL``); without it, ``profile`` says so rather than guessing.

    >>> summary = profile("model.int8.onnx", runs=50)                       # doctest: +SKIP
    >>> [(op.op, op.percent) for op in summary.ops[:3]]                     # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from edgeship.errors import BadInputError, RuntimeFailure, UnsupportedModelError
from edgeship.records import Record
from edgeship.runtimes import _backend, runtime_for

__all__ = ["OpTime", "OpProfile", "profile", "parse_ort_trace", "parse_benchmark_model"]

BENCHMARK_MODEL_ENV = "EDGESHIP_BENCHMARK_MODEL"


@dataclass(frozen=True)
class OpTime(Record):
    """Time spent in one op type (or one node) per inference."""

    op: str
    calls_per_run: float
    ms_per_run: float
    percent: float


@dataclass(frozen=True)
class OpProfile(Record):
    """Top ops by time of one artifact; ``ops`` by op type, ``nodes`` by graph node."""

    runtime: str
    source: str
    runs: int
    total_ms_per_run: float
    ops: tuple[OpTime, ...]
    nodes: tuple[OpTime, ...] = ()


def _summarise(durations: dict[str, list[float]], runs: int, top: int) -> tuple[OpTime, ...]:
    """``durations``: name -> per-call milliseconds over ``runs`` inferences."""
    total = sum(sum(v) for v in durations.values()) or 1.0
    rows = [
        OpTime(op=name, calls_per_run=len(v) / runs, ms_per_run=sum(v) / runs, percent=100 * sum(v) / total)
        for name, v in durations.items()
    ]
    return tuple(sorted(rows, key=lambda r: -r.ms_per_run)[:top])


def parse_ort_trace(events: list[dict], *, skip_runs: int = 0, top: int = 10) -> OpProfile:
    """Summarise an ONNX Runtime profiling trace, ignoring the first ``skip_runs`` model runs."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) <= skip_runs:
        raise RuntimeFailure(f"the ONNX Runtime trace holds {len(starts)} model runs; expected more than {skip_runs}")
    since = starts[skip_runs]
    by_op: dict[str, list[float]] = defaultdict(list)
    by_node: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= since:
            ms = e["dur"] / 1e3
            by_op[e.get("args", {}).get("op_name", "?")].append(ms)
            by_node[e["name"].removesuffix("_kernel_time")].append(ms)
    runs = len(starts) - skip_runs
    ops = _summarise(by_op, runs, top)
    return OpProfile(
        runtime="onnxruntime",
        source="onnxruntime profiler",
        runs=runs,
        total_ms_per_run=sum(sum(v) for v in by_op.values()) / runs,
        ops=ops,
        nodes=_summarise(by_node, runs, top),
    )


_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s+(\d+)\s*$")


def parse_benchmark_model(text: str, *, top: int = 10) -> OpProfile:
    """Summarise the "Summary by node type" table TFLite's benchmark_model prints with
    ``--enable_op_profiling=true`` (columns: node type, count, avg ms, avg %, cdf %, mem KB, times called)."""
    runs = re.search(r"count=(\d+)", text.split("Inference timings", 1)[-1])
    section = text.split("Summary by node type", 1)
    if len(section) < 2:
        raise RuntimeFailure("benchmark_model printed no 'Summary by node type' table; was --enable_op_profiling set?")
    rows = []
    for line in section[1].splitlines()[1:]:
        match = _ROW.match(line.replace("\t", " "))
        if match:
            rows.append(
                OpTime(op=match[1], calls_per_run=float(match[2]), ms_per_run=float(match[3]), percent=float(match[4]))
            )
        elif rows and line.strip().startswith(("Timings", "====")):
            break
    if not rows:
        raise RuntimeFailure("benchmark_model's 'Summary by node type' table has no rows edgeship can read")
    rows.sort(key=lambda r: -r.ms_per_run)
    return OpProfile(
        runtime="tflite benchmark_model",
        source="benchmark_model --enable_op_profiling",
        runs=int(runs[1]) if runs else 0,
        total_ms_per_run=sum(r.ms_per_run for r in rows),
        ops=tuple(rows[:top]),
    )


def profile(
    path: str | os.PathLike, *, threads: int | None = None, runs: int = 50, warmup: int = 5, top: int = 10
) -> OpProfile:
    """The top ``top`` ops of ``path`` by time per inference, over ``runs`` runs after ``warmup``."""
    path = Path(path)
    if runs < 1 or warmup < 0 or top < 1:
        raise BadInputError(f"profile needs runs >= 1, warmup >= 0 and top >= 1; received {runs}, {warmup}, {top}")
    backend = runtime_for(path)
    ops = getattr(_backend(path), "op_profile", None)  # a runtime that profiles ops names its way
    if ops is None:
        raise UnsupportedModelError(f"no per-op profile for {path.name}: the {backend} runtime offers none here")
    return ops(path, threads, runs, warmup, top)
