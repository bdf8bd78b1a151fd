"""A tour of the Python API on digits: train with QAT, convert, validate behind a gate, run, benchmark.

    .venv/bin/python examples/tour.py [--out DIR] [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import edgeship as es


def main(out: str | Path | None = None, epochs: int = 30) -> es.Report:
    out = Path(out or tempfile.mkdtemp(prefix="edgeship-tour-"))
    data = es.load_dataset("digits")
    # 1. train: float, then a short quantization-aware fine-tune
    record = es.train("tiny_cnn", data, out=out / "model", epochs=epochs, qat=True)
    print(f"trained {record.model}: {record.params} parameters, {record.macs} MACs, "
          f"test accuracy {record.test_accuracy:.2%}")
    # 2. convert: an int8 TFLite for phones, an int8 ONNX, and a Core ML package with int8 weights
    es.convert(out / "model", ["tflite:int8", "onnx:int8", "coreml:w8"], data=data, out=out)
    # 3. validate against the float model; a drop of more than one point raises AccuracyGateError
    report = es.validate(out, data=data, max_drop=1.0)
    for entry in report.artifacts:
        print(f"{entry.name:<12} {entry.size_bytes / 1024:6.1f} KiB  accuracy {entry.accuracy:.2%}  "
              f"({entry.accuracy_delta_pts:+.2f} pts)  {entry.evaluated_with}")
    # 4. run the int8 model with the thin runtime: float in, float out
    session = es.load(out / "tiny_cnn.int8.tflite")
    predictions = session.predict(data.x_test).argmax(-1)
    print(f"thin runtime ({session.runtime}): {(predictions == data.y_test).mean():.2%} on the test split")
    # 5. benchmark it
    bench = es.benchmark(out / "tiny_cnn.int8.tflite", threads=1, runs=200)
    print(f"p50 {bench.p50_ms * 1000:.0f} µs, p99 {bench.p99_ms * 1000:.0f} µs")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    main(args.out, args.epochs)
