"""An MLP on a tabular dataset (breast cancer: binary, so the report has ROC AUC), to int8.

    .venv/bin/python examples/tabular.py [--data breast_cancer] [--epochs 40]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import edgeship as es


def main(data: str = "breast_cancer", out: str | Path | None = None, epochs: int = 40) -> es.Report:
    out = Path(out or tempfile.mkdtemp(prefix="edgeship-tabular-"))
    dataset = es.load_dataset(data)
    es.train("mlp", dataset, out=out / "model", epochs=epochs)
    es.convert(out / "model", ["tflite:int8-float-io", "onnx:dynamic", "onnx:int8"], data=dataset, out=out)
    report = es.validate(out, data=dataset)
    print(f"{data}: float accuracy {report.reference_accuracy:.2%}")
    for entry in report.artifacts:
        v = entry.validation
        auc = f"  ROC AUC {v.roc_auc:.3f}" if v.roc_auc is not None else ""
        print(f"{entry.name:<22} accuracy {v.accuracy:.2%} ({v.accuracy_delta_pts:+.2f} pts), "
              f"agreement {v.agreement:.2%}{auc}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breast_cancer")
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    main(args.data, args.out, args.epochs)
