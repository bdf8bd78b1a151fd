"""Does ``edgeship.benchmark`` time what benchmark_model times? And CompiledModel against the Interpreter.

    .venv/bin/python benchmarks/bench_cli_vs_raw.py [--rounds 12] [--runs 300] [--models tiny_cnn,mlp,...]
                                                    [--no-onnx] [--out DIR] [--json FILE]

Builds every zoo model at its reference input (tiny_cnn, mlp 8x8x1; ds_cnn 49x10x1; resnet8 32x32x3;
mobilenet_v1 96x96x3) with random weights (latency does not depend on what the weights learned),
and converts each to:

- ``tflite:fp32`` and ``tflite:int8`` with edgeship (int8 calibrated on random samples);
- ``tflite:int8 (tf)``: int8 the way third parties build it, plain ``tf.lite.TFLiteConverter`` with
  ``Optimize.DEFAULT``, a representative dataset and int8 input and output types;
- ``onnx:fp32`` and ``onnx:int8`` with edgeship (unless ``--no-onnx``).

Table 1, edgeship against the raw runtime: per round, ``edgeship.benchmark(path, threads=1)`` then
a raw loop on a separate interpreter of the same file (LiteRT ``set_tensor / invoke /
get_tensor``; ONNX Runtime ``InferenceSession.run``), one thread, on zeros in the model's own
dtypes, which is what TFLite's benchmark_model does. Each figure is the median over rounds of that
round's p50, so both sides meet the same machine; the target is edgeship within max(5 %, 3 µs) of raw.
The last columns interleave call by call: the callable ``edgeship bench`` times (``Session.raw_call``,
what ``edgeship.benchmark`` runs in its loop) and the raw loop's call, alternately, on two
interpreters of the same file: a tiny model's p50 of 5-40 µs moves by a few µs between rounds on a
shared machine, and call-by-call alternation puts both sides under the same moment's load.

Table 2, CompiledModel against the Interpreter: ``edgeship.runtimes.benchmark.compare`` on the
two sessions of each ``.tflite`` (interleaved A B A B …), one thread, CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import edgeship as es  # noqa: E402
from edgeship.runtimes import load  # noqa: E402
from edgeship.runtimes.benchmark import compare, environment  # noqa: E402

MODELS = ("tiny_cnn", "mlp", "ds_cnn", "resnet8", "mobilenet_v1")


def build(root: Path, model: str, onnx: bool) -> dict[str, Path]:
    """artifact label -> file, for one zoo model with random weights."""
    import tensorflow as tf

    from edgeship.trainers.zoo import REFERENCE_INPUTS, build_model

    shape, classes = REFERENCE_INPUTS[model]
    tf.keras.utils.set_random_seed(0)
    keras_model = build_model(model, shape, classes)
    calibration = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
    targets = ["tflite:fp32", "tflite:int8"] + (["onnx:fp32", "onnx:int8"] if onnx else [])
    manifest = es.convert(keras_model, targets, calibration=calibration, out=root / model, name=model)
    found = {a.name: root / model / a.path for a in manifest.artifacts}
    found["tflite:int8 (tf)"] = third_party_int8(keras_model, calibration, root / model / f"{model}.tf-int8.tflite")
    return found


def third_party_int8(keras_model, calibration: np.ndarray, out: Path) -> Path:
    """Full-integer int8 with int8 I/O, as TensorFlow's post-training quantization guide builds it."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    out.write_bytes(converter.convert())
    return out


def raw_loop(path: Path):
    """A callable that times ``n`` raw calls on zeros in the model dtype; returns per-call ns."""
    clock = time.perf_counter_ns
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.zeros([1 if not isinstance(d, int) else d for d in i.shape], _ort_dtype(i.type))
                 for i in session.get_inputs()}

        def call():
            session.run(None, feeds)
    else:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        detail = interp.get_input_details()[0]
        index, out = detail["index"], interp.get_output_details()[0]["index"]
        x = np.zeros(detail["shape"], detail["dtype"])

        def call():
            interp.set_tensor(index, x)
            interp.invoke()
            interp.get_tensor(out)

    def timed(n: int, warmup: int = 20) -> np.ndarray:
        for _ in range(warmup):
            call()
        times = np.empty(n, np.int64)
        for i in range(n):
            t0 = clock()
            call()
            times[i] = clock() - t0
        return times

    timed.call = call
    return timed


def paired(path: Path, n: int) -> tuple[float, float]:
    """p50 µs of (edgeship's timed call, the raw call), alternated call by call."""
    session = load(path, threads=1)
    ours, arrays = session.raw_call(session.sample_feeds(1))
    raw = raw_loop(path)
    raw(1)  # warm the raw interpreter
    call = raw.call
    clock = time.perf_counter_ns
    for _ in range(50):
        ours(arrays)
        call()
    a, b = np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(n):
        t0 = clock()
        ours(arrays)
        t1 = clock()
        call()
        t2 = clock()
        a[i], b[i] = t1 - t0, t2 - t1
    session.close()
    return float(np.median(a)) / 1e3, float(np.median(b)) / 1e3


def _ort_dtype(type_name: str) -> np.dtype:
    return np.dtype({"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}[type_name])


def edgeship_vs_raw(found: dict[str, dict[str, Path]], rounds: int, runs: int) -> list[dict]:
    rows = []
    for model, artifacts in found.items():
        for label, path in artifacts.items():
            raw = raw_loop(path)
            ours, theirs, timed = [], [], ""
            for _ in range(rounds):
                result = es.benchmark(path, threads=1, warmup=20, runs=runs)
                ours.append(result.p50_ms * 1e3)
                timed = result.timed
                theirs.append(float(np.median(raw(runs))) / 1e3)
            raw_us, ours_us = float(np.median(theirs)), float(np.median(ours))
            diff = ours_us - raw_us
            paired_ours, paired_raw = paired(path, rounds * runs)
            paired_diff = paired_ours - paired_raw
            rows.append({"model": model, "artifact": label, "raw_p50_us": raw_us, "edgeship_p50_us": ours_us,
                         "diff_us": diff, "diff_pct": 100 * diff / raw_us, "timed": timed,
                         "within_target": diff <= max(0.05 * raw_us, 3.0),
                         "paired_raw_p50_us": paired_raw, "paired_edgeship_p50_us": paired_ours,
                         "paired_diff_us": paired_diff,
                         "paired_within_target": paired_diff <= max(0.05 * paired_raw, 3.0)})
            print(f"  {model:<13}{label:<18}raw {raw_us:9.1f}  edgeship {ours_us:9.1f} µs; call by call "
                  f"{paired_raw:9.1f} / {paired_ours:9.1f} µs", flush=True)
    return rows


def compiled_vs_interpreter(found: dict[str, dict[str, Path]], runs: int) -> list[dict]:
    rows = []
    for model, artifacts in found.items():
        for label, path in artifacts.items():
            if path.suffix != ".tflite":
                continue
            sessions = [load(path, threads=1), load(path, threads=1, runtime="litert-compiled", accelerator="cpu")]
            a, b = compare(sessions, warmup=50, runs=runs, min_seconds=1.0)
            rows.append({"model": model, "artifact": label, "interpreter_p50_us": a.p50_ms * 1e3,
                         "compiled_p50_us": b.p50_ms * 1e3, "ratio": b.p50_ms / a.p50_ms,
                         "accelerator": b.env["accelerator"]})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="alternations of edgeship and the raw loop")
    parser.add_argument("--runs", type=int, default=300, help="timed calls per round on each side")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--out", default=None, help="keep the artifacts here (default: a temporary folder)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="edgeship-bench-")
    root = Path(args.out or tmp.name)
    found = {m: build(root, m, onnx=not args.no_onnx) for m in args.models.split(",")}
    print(f"built in {time.perf_counter() - started:.0f} s; timing", flush=True)
    figures = {"raw": edgeship_vs_raw(found, args.rounds, args.runs),
               "compiled": compiled_vs_interpreter(found, 4 * args.runs),
               "env": environment(),
               "rounds": args.rounds, "runs": args.runs}
    figures["seconds"] = time.perf_counter() - started
    print_tables(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    tmp.cleanup()
    return figures


def print_tables(f: dict) -> None:
    env = f["env"]
    print(f"\nedgeship.benchmark(path, threads=1) p50 against a raw loop on zeros in the model dtype, 1 thread; "
          f"median over {f['rounds']} alternating rounds of {f['runs']} calls; {env['cpu']} ({env['cores']} cores)")
    print(f"{'model':<14}{'artifact':<18}{'raw µs':>9}{'edgeship µs':>13}{'diff µs':>9}{'diff %':>8}  within"
          f"{'| call by call: raw':>20}{'edgeship':>10}{'diff':>7}  within  timed")
    for r in f["raw"]:
        print(f"{r['model']:<14}{r['artifact']:<18}{r['raw_p50_us']:>9.1f}{r['edgeship_p50_us']:>13.1f}"
              f"{r['diff_us']:>9.1f}{r['diff_pct']:>7.1f}%  {'yes' if r['within_target'] else 'NO':<7}"
              f"{r['paired_raw_p50_us']:>19.1f}{r['paired_edgeship_p50_us']:>10.1f}{r['paired_diff_us']:>7.1f}  "
              f"{'yes' if r['paired_within_target'] else 'NO':<7} {r['timed']}")
    print("\nLiteRT CompiledModel (cpu) against the Interpreter, interleaved, 1 thread (edgeship.runtimes.benchmark.compare)")
    print(f"{'model':<14}{'artifact':<18}{'Interpreter µs':>15}{'CompiledModel µs':>18}{'ratio':>8}")
    for r in f["compiled"]:
        print(f"{r['model']:<14}{r['artifact']:<18}{r['interpreter_p50_us']:>15.1f}{r['compiled_p50_us']:>18.1f}"
              f"{r['ratio']:>8.2f}")
    print(f"\ntotal {f['seconds']:.0f} s")


if __name__ == "__main__":
    from edgeship._deps import quiet_native

    with quiet_native():  # TensorFlow's and LiteRT's C++ start-up logs stay off the tables
        main()
