"""Measured error of every format and precision beside its bound in tests/tolerances.yaml.

    .venv/bin/python benchmarks/tolerance_table.py                 # the suite's two digits models
    .venv/bin/python benchmarks/tolerance_table.py --resnet8       # and a ResNet-8 at 32x32x3 on shapes32

Trains the models exactly as tests/conftest.py does (tiny_cnn 12 epochs, mlp 15, on digits; seeded,
so the figures are the suite's own), converts each to every target, validates on the test split and
prints, per artifact: max abs error, agreement and accuracy delta, each with its bound and the bound's
ratio to the figure (the bound should sit 2-3x away, near enough to fail when a converter breaks).
``--resnet8`` adds a ResNet-8 trained briefly on the generated 32x32x3 shapes (the ``resnet8`` rows,
which the suite does not run: too slow for it). Rows marked ``breaks`` are precisions that are
expected to lose accuracy; their bounds state the break (a drop of at least ``min_drop``).
Exits 1 when a figure is outside its bound.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

import edgeship as es
from edgeship.converters import FORMATS, precisions

ROOT = Path(__file__).resolve().parents[1]
#: model -> (dataset, training keywords), as tests/conftest.py trains them
MODELS = {"tiny_cnn": ("digits", {"epochs": 12}), "mlp": ("digits", {"epochs": 15}),
          "resnet8": ("shapes32", {"epochs": 4})}


def _violations(figures: dict[str, float], bound: dict[str, float]) -> list[str]:
    bad = []
    if figures["max_abs"] > bound.get("max_abs", float("inf")):
        bad.append("max_abs")
    if figures["agreement"] < bound.get("min_agreement", 0.0):
        bad.append("agreement")
    if -figures["delta"] > bound.get("max_drop", float("inf")):
        bad.append("drop")
    if "min_drop" in bound and -figures["delta"] < bound["min_drop"]:
        bad.append("no break")
    return bad


def _cell(f: dict[str, float], bound: dict[str, float]) -> str:
    """The three figures, each with its bound and (for error and agreement) how far the bound sits."""
    ratio = bound.get("max_abs", 0) / f["max_abs"] if f["max_abs"] else float("inf")
    slack = (1 - bound.get("min_agreement", 0)) / max(1 - f["agreement"], 1e-9)
    error = f"{f['max_abs']:.3g} ({bound.get('max_abs', 0):.3g}, x{ratio:.1f})"
    agreement = f"{f['agreement']:.4f} ({bound.get('min_agreement', 0):.3f}, x{slack:.1f})"
    limit = f"at most {-bound['min_drop']:+.2f}" if "min_drop" in bound else f"{-bound.get('max_drop', 0):+.2f}"
    delta = f"{f['delta']:+.2f} ({limit})"
    return f"{error:>22}{agreement:>22}{delta:>22}"


def measure(model: str, out: Path) -> dict[str, dict[str, float]]:
    dataset, settings = MODELS[model]
    data = es.load_dataset(dataset)
    targets = [f"{fmt}:{p}" for fmt in FORMATS for p in precisions(fmt)]
    es.train(model, data, out=out / "model", **settings)
    es.convert(out / "model", targets, data=data, out=out)
    report = es.validate(out, data=data, write_bundle=False)
    return {e.name: {"max_abs": e.validation.max_abs_error, "agreement": e.validation.agreement,
                     "delta": e.validation.accuracy_delta_pts} for e in report.artifacts if e.validation}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resnet8", action="store_true", help="also measure a ResNet-8 on shapes32")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    bounds = yaml.safe_load((ROOT / "tests" / "tolerances.yaml").read_text())
    out = args.out or Path(tempfile.mkdtemp(prefix="edgeship-tolerances-"))
    failed = 0
    for model in ("tiny_cnn", "mlp") + (("resnet8",) if args.resnet8 else ()):
        figures = measure(model, out / model)
        print(f"\n{model}: figure (bound, bound/figure)")
        print(f"{'artifact':<22}{'max abs':>22}{'agreement':>22}{'delta pts':>22}  outside")
        for name, f in figures.items():
            bound = bounds.get(model, {}).get(name)
            if bound is None:
                print(f"{name:<22}{f['max_abs']:>22.3g}{f['agreement']:>22.4f}{f['delta']:>+22.2f}  (no bound)")
                continue
            bad = _violations(f, bound)
            failed += bool(bad)
            print(f"{name:<22}{_cell(f, bound)}  {', '.join(bad)}")
    print(f"\n{failed} figure(s) outside their bounds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
