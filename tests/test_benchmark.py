"""Benchmarks: statistics, interleaved comparison, isolation, per-op profiles and the bench command."""

from __future__ import annotations

import json
import stat
import tempfile

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.errors import BadArtifactError, BadInputError, RuntimeFailure
from edgeship.records import BenchmarkResult
from edgeship.runtimes import load
from edgeship.runtimes._profile import OpProfile, parse_benchmark_model, profile
from edgeship.runtimes.benchmark import benchmark, compare, isolated

# the --json field names the issue fixes
FIELDS = ("init_ms", "first_ms", "warmup_mean_ms", "count", "mean_ms", "std_ms", "min_ms", "max_ms", "p5_ms",
          "p50_ms", "p90_ms", "p95_ms", "p99_ms", "throughput", "peak_rss_bytes", "rss_growth_bytes",
          "model_size_bytes", "runtime", "runtime_version", "threads", "env")


def _assert_consistent(r: BenchmarkResult, runs: int) -> None:
    assert r.count >= runs
    assert 0 < r.min_ms <= r.p5_ms <= r.p50_ms <= r.p90_ms <= r.p95_ms <= r.p99_ms <= r.max_ms
    assert r.min_ms <= r.mean_ms <= r.max_ms and r.std_ms >= 0
    assert r.throughput == pytest.approx(r.batch * 1e3 / r.mean_ms)
    assert r.peak_rss_bytes > 10 * 2**20 and r.model_size_bytes > 1000
    for key in ("cpu", "cores", "runtime", "runtime_version", "threads", "python"):
        assert key in r.env, key


def test_benchmark_reports_benchmark_model_statistics(quickstart_dir):
    path = quickstart_dir / "tiny_cnn.int8.tflite"
    r = benchmark(path, threads=1, warmup=5, runs=50)
    _assert_consistent(r, 50)
    assert (r.runtime, r.threads, r.env["threads"], r.batch) == ("litert", 1, 1, 1)
    assert r.model_size_bytes == path.stat().st_size and r.init_ms > 0 and r.first_ms > 0
    assert BenchmarkResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_min_seconds_keeps_timing_and_batch_counts_in_throughput(quickstart_dir):
    r = benchmark(quickstart_dir / "tiny_cnn.fp32.onnx", warmup=0, runs=1, min_seconds=0.2, batch=4)
    assert r.count > 1 and r.count * r.mean_ms >= 150  # timed calls fill most of the 0.2 s
    assert r.batch == 4 and r.throughput == pytest.approx(4e3 / r.mean_ms)


def test_a_loaded_session_benchmarks_without_init(quickstart_dir):
    session = load(quickstart_dir / "tiny_cnn.fp32.tflite")
    r = benchmark(session, runs=10, warmup=0)
    assert r.init_ms == 0.0 and r.count == 10


def test_compare_interleaves_models_and_keeps_each_runtime(quickstart_dir):
    paths = [quickstart_dir / n for n in ("tiny_cnn.int8.tflite", "tiny_cnn.fp32.onnx", "tiny_cnn.fp32.tflite")]
    results = compare(paths, threads=1, warmup=2, runs=40)
    assert [r.runtime for r in results] == ["litert", "onnxruntime", "litert"]
    assert len({r.count for r in results}) == 1  # one call of each per round
    assert [r.model_size_bytes for r in results] == [p.stat().st_size for p in paths]
    for r in results:
        _assert_consistent(r, 40)


def test_statistics_of_known_timings():
    from edgeship.runtimes.benchmark import statistics

    figures = statistics(np.arange(1, 101, dtype=np.float64)[::-1])  # 100 runs of 1..100 ms, in any order
    assert (figures["count"], figures["min_ms"], figures["max_ms"], figures["mean_ms"]) == (100, 1.0, 100.0, 50.5)
    assert [figures[f"p{p}_ms"] for p in (5, 50, 90, 95, 99)] == pytest.approx([5.95, 50.5, 90.1, 95.05, 99.01])
    assert figures["std_ms"] == pytest.approx(28.866, abs=1e-3)


@pytest.mark.parametrize("settings, message", [
    ({"runs": 0}, "runs must be an integer >= 1; received 0"),
    ({"warmup": -1}, "warmup must be an integer >= 0; received -1"),
    ({"batch": 1.5}, "batch must be an integer >= 1; received 1.5"),
    ({"min_seconds": float("nan")}, "min_seconds must be >= 0; received nan"),
])
def test_bad_settings_are_refused(quickstart_dir, settings, message):
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        benchmark(quickstart_dir / "tiny_cnn.fp32.tflite", **settings)


def test_isolated_runs_in_a_child_and_reraises_its_errors(quickstart_dir, tmp_path):
    r = isolated("benchmark", str(quickstart_dir / "tiny_cnn.int8.onnx"), threads=1, warmup=2, runs=30)
    assert isinstance(r, BenchmarkResult) and r.runtime == "onnxruntime"
    _assert_consistent(r, 30)
    assert r.env["threads"] == 1
    with pytest.raises(BadArtifactError, match="no model file"):
        isolated("benchmark", str(tmp_path / "gone.tflite"))
    with pytest.raises(BadInputError, match="isolated\\(\\) runs one of"):
        isolated("shell", "rm -rf /")


def test_a_crashing_child_ends_as_an_error_not_a_dead_caller(quickstart_dir, tmp_path, monkeypatch):
    # a "Python" that dies of SIGSEGV the way a crashing interpreter would
    crasher = tmp_path / "python"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(crasher.stat().st_mode | stat.S_IXUSR)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = quickstart_dir / "tiny_cnn.fp32.tflite"
    with pytest.raises(RuntimeFailure, match="crashed.*SIGSEGV.*this process is unharmed"):
        isolated("benchmark", str(model), python=str(crasher))
    assert list(scratch.iterdir()) == []  # the request and answer files went with the child
    assert benchmark(model, runs=5, warmup=0).count == 5  # and the caller benchmarks on


def test_onnxruntime_profile_lists_the_models_ops(quickstart_dir, tmp_path, monkeypatch):
    import onnx

    monkeypatch.chdir(tmp_path)  # where ONNX Runtime would drop its trace by default
    path = quickstart_dir / "tiny_cnn.fp32.onnx"
    graph_ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    summary = profile(path, threads=1, runs=20, warmup=2, top=10)
    assert isinstance(summary, OpProfile) and summary.runs == 20 and summary.source == "onnxruntime profiler"
    assert summary.total_ms_per_run > 0 and summary.nodes
    ms = [op.ms_per_run for op in summary.ops]
    assert ms == sorted(ms, reverse=True) and 0 < sum(op.percent for op in summary.ops) <= 100.0001
    # ops of the graph (ONNX Runtime fuses MatMul+Add into Gemm, Relu into Conv)
    assert {"Conv", "MaxPool", "Softmax"} <= {op.op for op in summary.ops} and {"Conv", "MaxPool"} <= graph_ops
    assert not list(tmp_path.iterdir())  # the trace went to a temporary folder, since removed


def test_tflite_profile_needs_benchmark_model_and_says_so(quickstart_dir, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("EDGESHIP_BENCHMARK_MODEL", raising=False)
    from edgeship.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError,
                       match=r"\(Interpreter and CompiledModel\) times no single op.*benchmark_model tool is not on PATH"):
        profile(quickstart_dir / "tiny_cnn.int8.tflite")


BENCHMARK_MODEL_OUTPUT = """\
Inference timings in us: Init: 2711, First inference: 1931, Warmup (avg): 1512.7, Inference (avg): 1488.2
count=50 first=1512 curr=1470 min=1441 max=1669 avg=1488.2 std=42
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t        9\t     1.123\t    78.920%\t    78.920%\t     0.000\t        9
\t                     ADD\t        3\t     0.150\t    10.541%\t    89.461%\t     0.000\t        3
\t         FULLY_CONNECTED\t        1\t     0.050\t     3.514%\t    92.975%\t     0.000\t        1

Timings (microseconds): count=50 first=1420 curr=1400 min=1380 max=1600 avg=1423 std=40
"""


def test_benchmark_model_op_table_is_parsed():
    summary = parse_benchmark_model(BENCHMARK_MODEL_OUTPUT, top=2)
    assert [(o.op, o.calls_per_run, o.ms_per_run, o.percent) for o in summary.ops] == [
        ("CONV_2D", 9.0, 1.123, 78.92), ("ADD", 3.0, 0.15, 10.541)]
    assert summary.runs == 50 and summary.total_ms_per_run == pytest.approx(1.323)
    with pytest.raises(RuntimeFailure, match="no 'Summary by node type'"):
        parse_benchmark_model("Inference timings in us: Init: 1")


# ------------------------------------------------------------------------------------------ CLI

def _bench(*args: str) -> tuple[int, str]:
    from edgeship.cli import cli

    result = CliRunner().invoke(cli, ["bench", *args, "--warmup", "2", "--min-seconds", "0"])
    return result.exit_code, result.output


def test_bench_json_has_every_statistic(quickstart_dir):
    code, out = _bench(str(quickstart_dir / "tiny_cnn.int8.tflite"), "--runs", "30", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert set(FIELDS) <= set(doc) and doc["count"] >= 30 and doc["model"].endswith("tiny_cnn.int8.tflite")
    assert {"cpu", "cores", "runtime", "runtime_version", "threads"} <= set(doc["env"])


def test_bench_sweeps_threads_and_compares_models_interleaved(quickstart_dir):
    a, b = str(quickstart_dir / "tiny_cnn.int8.tflite"), str(quickstart_dir / "tiny_cnn.int8.onnx")
    code, out = _bench(a, b, "--threads", "1,2", "--runs", "20", "--json", "--isolate")
    assert code == 0, out
    docs = json.loads(out)
    assert [(d["model"], d["threads"]) for d in docs] == [(a, 1), (b, 1), (a, 2), (b, 2)]
    assert [d["p50_ratio"] for d in docs[::2]] == [1.0, 1.0]
    assert docs[1]["p50_ratio"] == pytest.approx(docs[1]["p50_ms"] / docs[0]["p50_ms"])


def test_bench_prints_the_statistics_and_a_profile(quickstart_dir):
    code, out = _bench(str(quickstart_dir / "tiny_cnn.fp32.onnx"), "--runs", "20", "--profile", "--top", "3")
    assert code == 0, out
    for label in ("init ms", "first ms", "warm-up mean ms", "std ms", "p5 ms", "p50 ms", "p95 ms", "p99 ms",
                  "throughput /s", "peak RSS", "RSS growth", "model size", "onnxruntime", "top ops by time"):
        assert label in out, label


def test_bench_errors_are_one_line(quickstart_dir):
    code, out = _bench(str(quickstart_dir / "tiny_cnn.fp32.onnx"), "--threads", "0")
    assert code == 1 and "--threads takes positive integers; received '0'" in out
    code, out = _bench(str(quickstart_dir / "tiny_cnn.fp32.onnx"), "--providers", "NoSuchExecutionProvider")
    assert code == 1 and "providers ['NoSuchExecutionProvider'] are not available here" in out


def test_bench_passes_onnxruntime_options(quickstart_dir):
    code, out = _bench(str(quickstart_dir / "tiny_cnn.fp32.onnx"), "--optimization", "disable",
                       "--providers", "CPUExecutionProvider", "--runs", "10", "--json")
    assert code == 0 and json.loads(out)["runtime"] == "onnxruntime"
    code, out = _bench(str(quickstart_dir / "tiny_cnn.fp32.onnx"), "--optimization", "max")
    assert code != 0 and "'max' is not one of 'disable', 'basic', 'extended', 'all'" in out


# ---------------------------------------------------------------------------------- what is timed

def _spied(path):
    """A loaded session that records, for every interpreter call, the dtype it got and whether the
    float wrapper (Session.run without raw) was around it."""
    session = load(path, threads=1)
    calls, run, invoke = [], session.run, session._invoke
    wrapped = []

    def run_spy(feeds, *, raw=False):
        wrapped.append(not raw)
        try:
            return run(feeds, raw=raw)
        finally:
            wrapped.pop()

    def invoke_spy(arrays):
        calls.append((arrays[0].dtype, not any(wrapped)))
        return invoke(arrays)

    session.run, session._invoke = run_spy, invoke_spy
    return session, calls


def test_the_default_times_the_model_on_int8_inputs_and_the_conversion_apart(quickstart_dir):
    session, calls = _spied(quickstart_dir / "tiny_cnn.int8.tflite")
    r = benchmark(session, warmup=3, runs=30)
    assert set(calls) == {(np.dtype(np.int8), True)}  # first, warm-up and timed calls alike
    assert r.timed == "model (raw int8 I/O)" and r.io_ms > 0
    session, calls = _spied(quickstart_dir / "tiny_cnn.int8.tflite")
    r = benchmark(session, warmup=3, runs=30, float_io=True)
    timed = calls.count((np.dtype(np.int8), False))  # int8 reached the interpreter inside the float call
    assert timed >= 1 + 3 + 30 and len(calls) - timed <= 1  # one raw call gives io_ms its int8 outputs
    assert r.timed == "float I/O wrapper" and r.io_ms > 0


def test_a_float_model_has_nothing_to_convert_and_given_float_feeds_are_quantized_once(quickstart_dir):
    r = benchmark(quickstart_dir / "tiny_cnn.fp32.tflite", warmup=2, runs=20)
    assert (r.timed, r.io_ms, r.env["accelerator"]) == ("model (raw float32 I/O)", 0.0, "cpu")
    session, calls = _spied(quickstart_dir / "tiny_cnn.int8.tflite")
    x = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)  # what validate --bench passes
    benchmark(session, feeds={session.inputs[0].name: x}, warmup=0, runs=5)
    assert set(calls) == {(np.dtype(np.int8), True)}


def test_older_benchmark_records_still_load():
    r = benchmark_result_without(("timed", "io_ms"))
    assert (r.timed, r.io_ms) == ("", None)


def benchmark_result_without(keys):
    data = {f: 1.0 for f in FIELDS if f.endswith("_ms") or f == "throughput"}
    data.update(runtime="litert", runtime_version="2.3.0", threads=1, batch=1, count=10, peak_rss_bytes=1,
                rss_growth_bytes=0, model_size_bytes=1, env={})
    assert not set(keys) & set(data)
    return BenchmarkResult.from_dict(data)


def test_compiled_model_benchmarks_and_reports_its_accelerator(quickstart_dir):
    r = benchmark(quickstart_dir / "tiny_cnn.int8.tflite", runtime="litert-compiled", accelerator="cpu",
                  threads=1, warmup=2, runs=20)
    assert (r.runtime, r.env["accelerator"], r.timed) == ("litert-compiled", "cpu", "model (raw int8 I/O)")


def test_bench_float_io_batches_and_json_shapes(quickstart_dir):
    path = str(quickstart_dir / "tiny_cnn.int8.tflite")
    code, out = _bench(path, "--runs", "10", "--json", "--no-isolate")
    doc = json.loads(out)
    assert code == 0 and isinstance(doc, dict) and doc["timed"] == "model (raw int8 I/O)" and doc["io_ms"] > 0
    code, out = _bench(path, "--runs", "10", "--json", "--float-io", "--no-isolate")
    assert code == 0 and json.loads(out)["timed"] == "float I/O wrapper"
    code, out = _bench(path, "--runs", "10", "--json", "--batch", "1,8", "--no-isolate")
    docs = json.loads(out)
    assert code == 0 and [d["batch"] for d in docs] == [1, 8] and all("p50_ms" in d and "throughput" in d for d in docs)
    code, out = _bench(path, "--runs", "10", "--batch", "1,8", "--no-isolate")
    rows = [line for line in out.splitlines() if "batch 1 " in line + " " or "batch 8 " in line + " "]
    assert code == 0 and len(rows) == 2 and all("model (raw int8 I/O)" in r for r in rows), out
    for column in ("setting", "p50 ms", "p90 ms", "per s", "io ms", "timed"):
        assert column in out, column


def test_bench_compiled_model_and_an_absent_accelerator(quickstart_dir, monkeypatch):
    from edgeship.runtimes import litert_compiled

    path = str(quickstart_dir / "tiny_cnn.int8.tflite")
    code, out = _bench(path, "--runtime", "litert-compiled", "--accelerator", "cpu", "--runs", "10", "--no-isolate")
    assert code == 0 and "litert-compiled" in out and "on cpu" in out, out
    monkeypatch.setattr(litert_compiled, "_compile", _cpu_only(litert_compiled._compile))
    code, out = _bench(path, "--runtime", "litert-compiled", "--accelerator", "gpu", "--no-isolate")
    assert code == 1 and len(out.strip().splitlines()) == 1 and "received accelerator='gpu'" in out, out
    code, out = _bench(path, "--runtime", "nosuch")
    assert code == 1 and "runtime 'nosuch' does not run '.tflite' files" in out


def _cpu_only(real):
    def compile_(path, accelerator, threads):
        if accelerator != "cpu":
            raise RuntimeError("no such accelerator")
        return real(path, accelerator, threads)

    return compile_
