"""Validation at dataset scale: ``validate`` of a converted folder against the raw batch-1 loops.

    .venv/bin/python benchmarks/validate_scale.py [--samples 10000] [--train 2000] [--data npz|npy]
                                                  [--out DIR] [--json FILE]

1. build (a child process, TensorFlow): a ResNet-8 at 32x32x3 with random weights (speed and memory
   do not depend on what the weights learned) and CIFAR-sized data, uint8 pixels with class ids,
   ``--samples`` test and ``--train`` train samples, as an uncompressed .npz or a folder of .npy
   files; then ``edgeship.convert`` to ``tflite:int8`` and ``onnx:int8`` with that data (which
   stores the float outputs beside the reference).
2. validate (a fresh child process): ``edgeship.validate(out)`` as a user runs it, bundle and
   report page included; its wall time, the whole process's, its peak RSS and whether TensorFlow
   was imported.
3. raw (a fresh child process): the two batch-1 loops a user would write over the same test
   samples, on inputs already in each model's dtypes: LiteRT ``set_tensor / invoke / get_tensor``
   and ONNX Runtime ``InferenceSession.run``, default threads, as ``validate`` uses them.

Targets: validate at most 2x the raw loops' time, at most 800 MiB peak RSS, no TensorFlow.
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

MIB = 1024 * 1024


def build(root: Path, samples: int, train: int, layout: str) -> dict:
    """Data, model and the converted folder; returns what was made."""
    import numpy as np
    import tensorflow as tf

    import edgeship as es
    from edgeship.trainers.zoo import build_model

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": rng.integers(0, 256, (train, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 10, train).astype(np.int64),
              "x_test": rng.integers(0, 256, (samples, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 10, samples).astype(np.int64)}
    if layout == "npy":
        data = root / "cifar_npy"
        data.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            np.save(data / f"{name}.npy", array)
    else:
        data = root / "cifar.npz"
        np.savez(data, **arrays)
    tf.keras.utils.set_random_seed(0)
    model = build_model("resnet8", (32, 32, 3), 10)
    started = time.perf_counter()
    manifest = es.convert(model, "tflite:int8,onnx:int8", data=str(data), out=root / "out", name="resnet8")
    return {"convert_s": time.perf_counter() - started, "data": str(data),
            "artifacts": [a.path for a in manifest.artifacts]}


def validate(root: Path) -> dict:
    started, at_start = time.perf_counter(), _peak_rss_mib()
    import edgeship as es

    imported = time.perf_counter()
    steps: list[tuple[str, float]] = []

    def progress(stage: str, message: str, *_: object) -> None:  # the peak so far at each step
        steps.append((message[:40], round(_peak_rss_mib())))

    report = es.validate(root / "out", progress=progress)
    done = time.perf_counter()
    return {"validate_s": done - imported, "import_s": imported - started, "peak_rss_mib": _peak_rss_mib(),
            "start_rss_mib": at_start, "rss_by_step": steps,
            "tensorflow": "tensorflow" in sys.modules,
            "accuracy": {e.name: e.accuracy for e in report.artifacts}}


def raw(root: Path) -> dict:
    """The two batch-1 loops over the test samples, timed without their set-up."""
    import numpy as np
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    data = root / "cifar.npz"
    x = (np.load(data)["x_test"] if data.exists() else np.load(root / "cifar_npy" / "x_test.npy"))
    x = x.astype(np.float32) / np.float32(255.0)
    out = root / "out"
    times = {}
    interp = Interpreter(model_path=str(next(out.glob("*.int8.tflite"))))
    interp.allocate_tensors()
    (inp,), (outp,) = interp.get_input_details(), interp.get_output_details()
    scale, zero = inp["quantization"]
    q = x if inp["dtype"] == np.float32 else np.clip(np.rint(x / scale) + zero, -128, 127).astype(inp["dtype"])
    started = time.perf_counter()
    for i in range(len(q)):
        interp.set_tensor(inp["index"], q[i : i + 1])
        interp.invoke()
        interp.get_tensor(outp["index"])
    times["tflite:int8"] = time.perf_counter() - started
    session = ort.InferenceSession(str(next(out.glob("*.int8.onnx"))), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    for i in range(len(x)):
        session.run(None, {name: x[i : i + 1]})
    times["onnx:int8"] = time.perf_counter() - started
    return {"loops_s": times, "peak_rss_mib": _peak_rss_mib()}


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(stage: str, root: Path, args: argparse.Namespace) -> tuple[dict, float]:
    """Run one stage in a fresh interpreter (so nothing imported earlier counts); (result, wall s).
    The result gains ``child_peak_rss_mib``: the child's peak as the kernel reports it to its parent
    (``wait4``), what ``/usr/bin/time`` shows."""
    command = [sys.executable, __file__, "--stage", stage, "--root", str(root), "--samples", str(args.samples),
               "--train", str(args.train), "--data", args.data]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise SystemExit(f"{stage} failed:\n{err.read().decode()[-4000:]}")
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    return {**result, "child_peak_rss_mib": usage.ru_maxrss / 1024}, wall


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--train", type=int, default=2_000)
    parser.add_argument("--data", choices=("npz", "npy"), default="npz")
    parser.add_argument("--out", type=Path, default=None, help="keep the folder here (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--stage", choices=("build", "validate", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # a child: one stage, one JSON line
        stages = {"build": lambda: build(args.root, args.samples, args.train, args.data),
                  "validate": lambda: validate(args.root), "raw": lambda: raw(args.root)}
        print(json.dumps(stages[args.stage]()))
        return {}
    root = args.out or Path(tempfile.mkdtemp(prefix="edgeship-validate-scale-"))
    built = (json.loads((root / "build.json").read_text()) if (root / "build.json").exists()
             else _child("build", root, args)[0])  # a kept --out folder is measured again as it is
    (root / "build.json").write_text(json.dumps(built))
    checked, process_s = _child("validate", root, args)
    loops, _ = _child("raw", root, args)
    result = {"samples": args.samples, "train": args.train, "data": args.data, "convert_s": built["convert_s"],
              **checked, "validate_process_s": process_s, "loops_s": loops["loops_s"],
              "raw_peak_rss_mib": loops["child_peak_rss_mib"]}
    _table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


def _table(r: dict) -> None:
    loops = sum(r["loops_s"].values())
    rows = [("test samples", f"{r['samples']:,} ({r['data']}, train {r['train']:,})"),
            ("convert (stores float outputs)", f"{r['convert_s']:.1f} s"),
            ("raw batch-1 loops, tflite + onnx", " + ".join(f"{v:.2f}" for v in r["loops_s"].values()) +
             f" = {loops:.2f} s"),
            ("validate() call", f"{r['validate_s']:.2f} s ({r['validate_s'] / loops:.2f}x the loops; target <= 2x)"),
            ("validate process (python + imports)", f"{r['validate_process_s']:.2f} s "
             f"({r['validate_process_s'] / loops:.2f}x)"),
            ("validate peak RSS", f"{r['child_peak_rss_mib']:.0f} MiB (target <= 800; raw loops: "
             f"{r['raw_peak_rss_mib']:.0f} MiB)"),
            ("tensorflow imported by validate", "yes" if r["tensorflow"] else "no")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    from edgeship._deps import quiet_native

    with quiet_native():  # TensorFlow's and LiteRT's C++ start-up logs stay off the tables
        main()
