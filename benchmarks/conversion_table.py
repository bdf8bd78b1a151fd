"""The conversion table on digits: every format and precision against its float reference.

    .venv/bin/python benchmarks/conversion_table.py [--out DIR] [--epochs 30]

Trains tiny_cnn (float, and float + QAT) and mlp on digits, converts each to every target,
validates on the held-out test split and prints: artifact, size, accuracy, delta in points,
agreement and SQNR. QAT rows come from the QAT model (tflite:int8, and onnx:int8 through the
int8 TFLite route); the others from the float model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import edgeship as es
from edgeship.converters import FORMATS, precisions

QAT_TARGETS = ["tflite:int8", "onnx:int8"]


def _table(title: str, report: es.Report) -> None:
    print(f"\n{title}: float reference {report.reference_accuracy * 100:.2f}%")
    print(f"{'artifact':<22}{'size KiB':>9}{'accuracy':>10}{'delta pts':>11}{'agree':>8}{'SQNR dB':>9}  evaluated with")
    for e in report.artifacts:
        v = e.validation
        print(f"{e.name:<22}{e.size_bytes / 1024:>9.1f}{v.accuracy * 100:>9.2f}%{v.accuracy_delta_pts:>+11.2f}"
              f"{v.agreement * 100:>7.1f}%{v.sqnr_db:>9.1f}  {e.evaluated_with}")


def main(out: Path | None = None, epochs: int = 30) -> dict[str, es.Report]:
    out = Path(out or tempfile.mkdtemp(prefix="edgeship-table-"))
    data = es.load_dataset("digits")
    everything = [f"{fmt}:{p}" for fmt in FORMATS for p in precisions(fmt)]
    reports = {}
    for model in ("tiny_cnn", "mlp"):
        es.train(model, data, out=out / model / "model", epochs=epochs)
        es.convert(out / model / "model", everything, data=data, out=out / model)
        reports[model] = es.validate(out / model, data=data, write_bundle=False)
        _table(f"{model} (post-training)", reports[model])
    es.train("tiny_cnn", data, out=out / "qat" / "model", epochs=epochs, qat=True)
    es.convert(out / "qat" / "model", QAT_TARGETS, data=data, out=out / "qat")
    reports["qat"] = es.validate(out / "qat", data=data, write_bundle=False)
    _table("tiny_cnn (quantization-aware training)", reports["qat"])
    return reports


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    main(args.out, args.epochs)
