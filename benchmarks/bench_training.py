"""Training benchmarks: throughput of float, QAT and pruning steps, and accuracy of the zoo on shapes32.

    python benchmarks/bench_training.py throughput [--model resnet8] [--batch 32] [--steps 30] [--rounds 3]
    python benchmarks/bench_training.py accuracy [--models resnet8,ds_cnn] [--epochs 30] [--out DIR]

throughput: one model built once per recipe (QAT: tfmot's default 8-bit scheme with calibrated ranges;
prune: 75% polynomial schedule), warmed up (tracing), then each recipe timed for ``--steps`` training
steps (after 3 untimed ones), the recipes interleaved for ``--rounds`` rounds; the median step time per
recipe, samples/s and the ratio to float are printed side by side, with the spread across rounds.
QAT's step time should stay within 1.6x float's.

accuracy: trains each model on shapes32 (float, then QAT), converts the QAT model and the float model
(post-training) to int8 TFLite, and prints float and int8 test accuracy: the bar for later work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

QAT_TARGET = 1.6


def _recipe_model(recipe: str, name: str, data, batch: int):
    from edgeship.trainers import compress, fitting, zoo

    net = zoo.build_model(name, data.input_shape, data.num_classes)
    steps = fitting.steps_per_epoch(data, batch)
    extra = []
    if recipe == "qat":
        net = compress.quantize_aware(net)
        compress.init_quantizer_ranges(net, data.calibration(128))
    elif recipe == "prune":
        net, extra = compress.prune(net, 0.75, steps_per_epoch=steps, epochs=4)
    fitting.compile_model(net, fitting.optimizer(1e-3, "constant", steps))
    return net, extra


def throughput(args: argparse.Namespace) -> list[dict]:
    """Median samples/s per recipe, measured interleaved; returns the rows printed."""
    from edgeship.data import load_dataset
    from edgeship.trainers import fitting

    data = load_dataset("shapes32")
    recipes = ("float", "qat", "prune")
    nets = {r: _recipe_model(r, args.model, data, args.batch) for r in recipes}
    ds = fitting.train_dataset(data, batch_size=args.batch, seed=0)
    for recipe, (net, extra) in nets.items():  # warm-up: tracing and the first steps
        net.fit(ds, steps_per_epoch=3, epochs=1, verbose=0, callbacks=extra)
    times: dict[str, list[float]] = {r: [] for r in recipes}
    for _ in range(args.rounds):
        for recipe, (net, extra) in nets.items():
            timer = _step_timer(skip=3)
            net.fit(ds, steps_per_epoch=args.steps + 3, epochs=1, verbose=0, callbacks=[*extra, timer])
            times[recipe].append(timer.seconds_per_step)
    base = statistics.median(times["float"])
    rows = []
    for recipe in recipes:
        step = statistics.median(times[recipe])
        rows.append({"recipe": recipe, "samples_per_s": round(args.batch / step, 1), "step_ms": round(1000 * step, 2),
                     "step_time_vs_float": round(step / base, 3), "spread_ms": round(1000 * (max(times[recipe])
                                                                                             - min(times[recipe])), 2)})
    return rows


def _step_timer(skip: int):
    """A callback timing the training steps after the first ``skip`` of a fit (iterator start-up excluded)."""
    from edgeship._deps import keras

    class StepTimer(keras().callbacks.Callback):
        seconds_per_step = float("nan")

        def on_train_batch_begin(self, batch, logs=None):
            if batch == skip:
                self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch >= skip:
                self.seconds_per_step = (time.perf_counter() - self.started) / (batch - skip + 1)

    return StepTimer()


def _int8_accuracy(source, data) -> float:
    from edgeship.converters import _source, tflite
    from edgeship.runtimes import load

    flatbuffer, _ = tflite.to_bytes(_source.resolve(source), "int8", data.calibration(200))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"edgeship-bench-{os.getpid()}.tflite"
    path.write_bytes(flatbuffer)
    try:
        session = load(path)
        probs = session.run({session.inputs[0].name: data.x_test})
    finally:
        path.unlink(missing_ok=True)
    return float(np.mean(next(iter(probs.values())).argmax(-1) == data.y_test))


def accuracy(args: argparse.Namespace) -> list[dict]:
    """Float, QAT int8 and post-training int8 test accuracy of each model on shapes32."""
    from edgeship.data import load_dataset
    from edgeship.trainers import train

    data = load_dataset("shapes32")
    rows = []
    for name in args.models.split(","):
        out = Path(args.out) / name
        record = train(name, data, out=out, epochs=args.epochs, qat=True, qat_epochs=args.qat_epochs)
        rows.append({
            "model": name, "params": record.params, "macs": record.macs, "epochs_run": record.epochs_run,
            "seconds": record.seconds, "float": record.stage_accuracy["float"],
            "qat_keras": record.stage_accuracy["qat"], "qat_int8_tflite": _int8_accuracy(out, data),
            "ptq_int8_tflite": _int8_accuracy(out / record.files["float"], data),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _print(rows: list[dict]) -> None:
    columns = list(rows[0])
    print(" | ".join(f"{c:>16}" for c in columns))
    for row in rows:
        print(" | ".join(f"{row[c]:>16.4f}" if isinstance(row[c], float) else f"{row[c]!s:>16}" for c in columns))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("accuracy")
    p.add_argument("--models", default="resnet8,ds_cnn")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--qat-epochs", type=int, default=3)
    p.add_argument("--out", default="bench-out/shapes32")
    args = parser.parse_args(argv)
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, devices {[d.name for d in tf.config.list_logical_devices()]}, "
          f"{os.cpu_count()} CPUs; command: python benchmarks/bench_training.py {' '.join(argv or sys.argv[1:])}")
    rows = throughput(args) if args.command == "throughput" else accuracy(args)
    _print(rows)
    if args.command == "throughput":
        qat = next(r for r in rows if r["recipe"] == "qat")["step_time_vs_float"]
        print(f"QAT step time {qat:.2f}x float (target <= {QAT_TARGET}x): {'met' if qat <= QAT_TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
