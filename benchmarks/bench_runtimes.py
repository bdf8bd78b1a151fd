"""Runtime speed table: ResNet-8 (32x32x3, MLPerf Tiny's image model) on one core, every format.

    .venv/bin/python benchmarks/bench_runtimes.py [--rounds 100] [--out DIR] [--json FILE]

Builds resnet8 with random weights (latency does not depend on what the weights learned), converts
it to TFLite fp32/fp16/int8 and ONNX fp32/int8 (int8 calibrated on shapes32 images), then times
every entry interleaved, so that a busy machine slows them alike: each round runs Keras, then each
artifact, 1 + 10 calls apiece, and keeps the last 10 (the first call after a switch pays for the
previous model's cache). Reported:

- p50/p90 latency of each artifact through the thin runtime (``Session.run``, float in and out) and
  of the Keras model in TensorFlow (eager ``model(x, training=False)``), all on one thread;
- achieved GMAC/s, and its fraction of this machine's single-core fp32 matmul rate (numpy sgemm,
  BLAS pinned to one thread in a child process, measured in this same run);
- the wrapper's per-call cost against a raw interpreter loop on the same model (LiteRT
  set_tensor/invoke/get_tensor, ONNX Runtime InferenceSession.run), on ResNet-8 and on a tiny
  model where per-call cost dominates; the target is within max(5 %, 3 µs) of raw;
- the import time of ``edgeship.runtimes`` in a fresh interpreter (target < 0.3 s), and whether
  it imported TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import edgeship as es  # noqa: E402

ARTIFACTS = ("tflite:fp32", "tflite:fp16", "tflite:int8", "onnx:fp32", "onnx:int8")

MATMUL = """
import time, numpy as np
a = np.random.default_rng(0).random((512, 512), dtype=np.float32); b = a.T.copy(); best = 1e9
for _ in range(40):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(512 ** 3 / best / 1e9)
"""


def matmul_gmacs() -> float:
    """Single-core fp32 sgemm rate (GMAC/s), BLAS pinned to one thread in a child process."""
    env = {**os.environ, **{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, "-c", MATMUL], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout)


def import_time() -> tuple[float, bool]:
    """Best of 5 fresh interpreters: seconds to import edgeship.runtimes, and whether TF came along."""
    code = ("import time, sys; t = time.perf_counter(); import edgeship.runtimes; "
            "print(time.perf_counter() - t, 'tensorflow' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(5)]
    return min(float(r[0]) for r in runs), any(r[1] == "True" for r in runs)


def build(out: Path, model: str, data, seed: int = 0):
    """A zoo model with random weights, converted to every artifact; returns (keras model, manifest)."""
    import tensorflow as tf

    from edgeship.trainers.zoo import build_model

    tf.keras.utils.set_random_seed(seed)
    keras_model = build_model(model, data.input_shape, len(data.classes))
    manifest = es.convert(keras_model, ARTIFACTS, data=data, out=out, name=model)
    return keras_model, manifest


def raw_call(session, x: np.ndarray):
    """The runtime's own loop on an input already in the model's dtype, no edgeship in between."""
    interp = getattr(session, "interpreter")
    if session.runtime == "onnxruntime":
        name = session.inputs[0].name
        return lambda: interp.run(None, {name: x})
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def call():
        interp.set_tensor(i, x)
        interp.invoke()
        return interp.get_tensor(o)

    return call


def interleaved(calls: dict, rounds: int, block: int) -> dict[str, np.ndarray]:
    """Per-call seconds of each callable over ``rounds`` rounds; a round times ``block`` calls of each
    one in turn. The first call after a switch is dropped: it pays for the previous model's cache."""
    clock = time.perf_counter
    times: dict = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            call()
            for _ in range(block):
                t = clock()
                call()
                times[name].append(clock() - t)
    return {name: np.asarray(v) for name, v in times.items()}


def block_means(calls: dict, rounds: int, block: int) -> dict[str, np.ndarray]:
    """Mean seconds per call of each callable, one figure per round (for µs-sized differences); an
    untimed call before each block, as in ``interleaved``."""
    clock = time.perf_counter
    means: dict = {name: np.empty(rounds) for name in calls}
    for r in range(rounds):
        for name, call in calls.items():
            call()
            t = clock()
            for _ in range(block):
                call()
            means[name][r] = (clock() - t) / block
    return means


def model_dtype(session, x: np.ndarray) -> np.ndarray:
    """``x`` as the interpreter takes it: quantized for an int8-input model, else as it is."""
    spec = session.inputs[0]
    if not spec.quantized:
        return x.astype(spec.dtype)
    info = np.iinfo(spec.dtype)
    return np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max).astype(spec.dtype)


def entries(folder: Path, manifest, x: np.ndarray) -> dict[str, tuple]:
    """name -> (session, wrapper call on float input, wrapper call in raw mode, raw interpreter call)."""
    out = {}
    for artifact in manifest.artifacts:
        session = es.load(folder / artifact.path, threads=1)
        name = session.inputs[0].name
        xq = model_dtype(session, x)
        out[artifact.name] = (session, lambda s=session, f={name: x}: s.run(f),
                              lambda s=session, f={name: xq}: s.run(f, raw=True), raw_call(session, xq))
    return out


def overhead_rows(found: dict[str, tuple], rounds: int, block: int) -> list[dict]:
    """Wrapper cost per call: the median over rounds of (wrapped - raw), each pair timed side by side."""
    calls = {}
    for name, (_, wrapped, wrapped_raw, raw) in found.items():
        calls.update({(name, "raw"): raw, (name, "run(raw=True)"): wrapped_raw, (name, "run"): wrapped})
    t = block_means(calls, rounds, block)
    rows = []
    for name in found:
        raw = float(np.median(t[(name, "raw")]))
        for mode in ("run(raw=True)", "run"):
            extra = float(np.median(t[(name, mode)] - t[(name, "raw")]))
            # the target is the wrapper's own cost (raw mode); float mode adds float<->int8 conversion on
            # int8-I/O models, work the raw loop does not do
            target = mode == "run(raw=True)" or not found[name][0].inputs[0].quantized
            rows.append({"artifact": name, "mode": mode, "raw_us": raw * 1e6, "extra_us": extra * 1e6,
                         "extra_pct": 100 * extra / raw,
                         "within_target": (extra <= max(0.05 * raw, 3e-6)) if target else None})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="interleaved rounds (10 timed calls of each entry per round)")
    parser.add_argument("--out", default=None, help="keep the artifacts here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from edgeship.trainers.zoo import count_macs

    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="edgeship-bench-")
    root = Path(args.out or tmp.name)
    matmul_before = matmul_gmacs()
    # 1. the models: resnet8 on shapes32 (calibration data), and a tiny one for per-call cost
    shapes = es.load_dataset("shapes32", samples=600)
    keras_model, manifest = build(root / "resnet8", "resnet8", shapes)
    _, tiny_manifest = build(root / "tiny", "tiny_cnn", es.load_dataset("digits"))
    macs = count_macs(keras_model)
    x = shapes.x_test[:1].astype(np.float32)
    # 2. latency, interleaved: Keras, then every artifact through the thin runtime
    found = entries(root / "resnet8", manifest, x)
    keras_call = lambda: keras_model(x, training=False).numpy()  # noqa: E731
    for call in [keras_call, *(f[1] for f in found.values())]:
        for _ in range(10):
            call()
    latency = interleaved({"keras": keras_call, **{n: f[1] for n, f in found.items()}}, args.rounds, 10)
    # 3. wrapper cost against raw loops, on resnet8 and on the tiny model
    overhead = overhead_rows(found, rounds=2 * args.rounds, block=5)
    tiny_x = es.load_dataset("digits").x_test[:1].astype(np.float32)
    overhead += overhead_rows({f"tiny_cnn {k}": v for k, v in entries(root / "tiny", tiny_manifest, tiny_x).items()},
                              rounds=args.rounds, block=200)
    matmul = max(matmul_before, matmul_gmacs())
    seconds, tf_imported = import_time()
    figures = summarise(latency, found, macs, matmul, overhead, seconds, tf_imported)
    figures["seconds"] = time.perf_counter() - started
    print_tables(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    tmp.cleanup()
    return figures


def summarise(latency, found, macs, matmul, overhead, import_s, tf_imported) -> dict:
    keras_p50 = float(np.median(latency["keras"]))
    rows = []
    for name, t in latency.items():
        p50, p90 = float(np.median(t)), float(np.percentile(t, 90))
        session = found[name][0] if name in found else None
        rows.append({
            "artifact": "keras (TF eager)" if name == "keras" else name,
            "runtime": f"{session.runtime} {session.runtime_version}" if session else "tensorflow " + __import__("tensorflow").__version__,
            "size_kib": (session.path.stat().st_size / 1024) if session else None,
            "p50_ms": p50 * 1e3, "p90_ms": p90 * 1e3, "speedup_vs_keras": keras_p50 / p50,
            "gmacs": macs / p50 / 1e9, "matmul_fraction": macs / p50 / 1e9 / matmul,
        })
    from edgeship.runtimes.benchmark import environment

    return {"model": "resnet8 32x32x3", "macs": macs, "matmul_gmacs_1core": matmul, "rows": rows,
            "overhead": overhead, "import_s": import_s, "import_pulled_tensorflow": tf_imported,
            "env": environment(), "rounds": len(latency["keras"])}


def print_tables(f: dict) -> None:
    env = f["env"]
    print(f"\nresnet8 (32x32x3, {f['macs'] / 1e6:.2f} M MACs), batch 1, 1 thread, {f['rounds']} timed calls each, interleaved; "
          f"{env['cpu']} ({env['cores']} cores), numpy {env['numpy']}")
    print(f"single-core fp32 matmul (numpy sgemm 512^3, 1 BLAS thread): {f['matmul_gmacs_1core']:.2f} GMAC/s\n")
    print("vs Keras: Keras p50 / artifact p50. of matmul: achieved GMAC/s over the fp32 sgemm rate (int8 kernels can pass 100 %).")
    print(f"{'artifact':<18}{'runtime':<22}{'size KiB':>9}{'p50 ms':>9}{'p90 ms':>9}{'vs Keras':>10}{'GMAC/s':>8}{'of matmul':>11}")
    for r in f["rows"]:
        size = f"{r['size_kib']:.0f}" if r["size_kib"] else "—"
        print(f"{r['artifact']:<18}{r['runtime'][:21]:<22}{size:>9}{r['p50_ms']:>9.3f}{r['p90_ms']:>9.3f}"
              f"{r['speedup_vs_keras']:>9.1f}x{r['gmacs']:>8.2f}{100 * r['matmul_fraction']:>10.0f}%")
    print("\nwrapper cost per call vs a raw interpreter loop (median over rounds of wrapped - raw, timed side by side; "
          "target max(5 %, 3 µs)):")
    print(f"{'artifact':<22}{'mode':<15}{'raw µs':>10}{'extra µs':>10}{'extra %':>9}  within target")
    for r in f["overhead"]:
        print(f"{r['artifact']:<22}{r['mode']:<15}{r['raw_us']:>10.1f}{r['extra_us']:>10.2f}{r['extra_pct']:>8.1f}%  "
              f"{ {True: 'yes', False: 'NO', None: '(includes float<->int8 I/O)'}[r['within_target']] }")
    print(f"\nimport edgeship.runtimes: {f['import_s'] * 1e3:.0f} ms (best of 5 fresh interpreters; target < 300 ms); "
          f"TensorFlow imported: {f['import_pulled_tensorflow']}")
    print(f"total {f['seconds']:.0f} s")


if __name__ == "__main__":
    main()
