"""Plant one bug at a time in edgeship and check that the test suite turns red on each.

    .venv/bin/python benchmarks/mutants.py              # every mutant, each against its stage's tests
    .venv/bin/python benchmarks/mutants.py --full       # every mutant against the whole suite (hours)
    .venv/bin/python benchmarks/mutants.py --only gate-drop-sign --only dequant-scale

Each mutant replaces one exact snippet of one source file (the file is restored afterwards, also
on Ctrl-C), then runs pytest with ``-x`` on the test files that cover that stage, listed first in
the order most likely to fail early. A mutant is *killed* when pytest exits red, and the first
failing test is named; one the tests do not notice *survived*, and the script exits 1. A snippet
that is no longer in its file is reported as *stale*: the code moved, so the mutant needs updating.

The working tree is edited in place (the CLI tests run ``python -m edgeship.cli`` in child
processes, which import the installed, editable package): run it on a clean checkout, with
nothing else editing the files.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    stage: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("metric-agreement", "metrics: top-1 agreement compares with the labels, not the reference",
           "sdk/metrics.py", "agreement=float(np.mean(pred == ref_pred)),", "agreement=float(np.mean(pred == labels)),",
           ("tests/test_metrics.py", "tests/test_validation.py")),
    Mutant("metric-recall", "metrics: recall divides by the predicted count",
           "sdk/metrics.py", "recall = np.where(actual > 0, tp / actual, 0.0)",
           "recall = np.where(predicted > 0, tp / predicted, 0.0)", ("tests/test_metrics.py",)),
    Mutant("gate-drop-sign", "gate: a drop is compared without its sign",
           "sdk/records/results.py", "head is not None and -head.delta > self.max_drop:",
           "head is not None and head.delta > self.max_drop:",
           ("tests/test_records.py", "tests/test_validation.py", "tests/test_converters.py")),
    Mutant("gate-agreement", "gate: agreement at the bound fails",
           "sdk/records/results.py", "one.agreement < self.min_agreement:", "one.agreement <= self.min_agreement + 0.01:",
           ("tests/test_records.py", "tests/test_validation.py", "tests/test_converters.py")),
    Mutant("quant-rounding", "int8 input quantization truncates instead of rounding",
           "runtimes/_session.py", "        np.rint(f, out=f)\n", "        np.trunc(f, out=f)\n",
           ("tests/test_runtimes.py",)),
    Mutant("dequant-scale", "int8 output dequantization forgets the zero point",
           "runtimes/_session.py", "        np.subtract(out, self.zero_point, out=out)\n", "",
           ("tests/test_runtimes.py",)),
    Mutant("coreml-relu", "Core ML evaluator: relu lets negatives through at a tenth",
           "runtimes/_mil_ops.py", '"relu": lambda x: np.maximum(x, 0),', '"relu": lambda x: np.maximum(x, 0.1 * x),',
           ("tests/test_coreml_eval.py",)),
    Mutant("calibration-test-split", "calibration samples are drawn from the test split",
           "sdk/data/dataset.py", 'inputs, labels = self.inputs("train"), self.labels("train")',
           'inputs, labels = self.inputs("test"), self.labels("test")',
           ("tests/test_datasets.py", "tests/test_converters.py")),
    Mutant("manifest-checksum", "the manifest's sha256 is not compared",
           "sdk/records/artifacts.py", "    if digest != artifact.sha256:", "    if digest != artifact.sha256 and False:",
           ("tests/test_records.py", "tests/test_hostile_models.py", "tests/test_validation.py")),
    Mutant("report-delta", "report: an entry's accuracy delta is read from the wrong field",
           "sdk/records/results.py",
           "return None if self.validation is None else self.validation.accuracy_delta_pts",
           "return None if self.validation is None else self.validation.agreement",
           ("tests/test_records.py", "tests/test_quickstart.py", "tests/test_converters.py")),
    Mutant("bench-percentiles", "benchmark: p50 is taken at the 90th percentile",
           "runtimes/benchmark.py", "np.percentile(ms, [5, 50, 90, 95, 99])", "np.percentile(ms, [5, 90, 90, 95, 99])",
           ("tests/test_benchmark.py",)),
    Mutant("split-overlap", "dataset split: the validation split is also in the training split",
           "sdk/data/_split.py", "        kept.append(idx[k:])\n", "        kept.append(idx)\n",
           ("tests/test_datasets.py",)),
    Mutant("preprocess-unit", "preprocessing: 'unit' divides by 256",
           "sdk/data/preprocess.py", '"unit": "scale=0.00392156862745098",', '"unit": "scale=0.00390625",',
           ("tests/test_preprocess_tasks.py",)),
    Mutant("bundle-tolerance", "bundle: the int8 tolerance is ten steps",
           "sdk/bundle.py", "INT8_STEPS = 1.0", "INT8_STEPS = 10.0",
           ("tests/test_quickstart.py", "tests/test_targets.py")),
)


def _first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    if match:
        return match.group(1)
    match = re.search(r"^_{3,} (\S.*?) _{3,}$", output, re.M)
    return match.group(1) if match else "(red, no test named: collection or fixture error)"


def run(mutant: Mutant, full: bool, timeout: float) -> tuple[str, str, float]:
    path = ROOT / mutant.file
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return "stale", f"snippet found {original.count(mutant.old)} times in {mutant.file}", 0.0
    started = time.monotonic()
    path.write_text(original.replace(mutant.old, mutant.new))
    try:
        tests = ["tests"] if full else list(mutant.tests)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return "SURVIVED", re.findall(r"\d+ passed", output)[-1] if "passed" in output else "", time.monotonic() - started
        return "killed", _first_failure(output), time.monotonic() - started
    except subprocess.TimeoutExpired:
        return "timeout", f"over {timeout:.0f} s", time.monotonic() - started
    finally:
        path.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run the whole suite for each mutant")
    parser.add_argument("--only", action="append", default=[], help="run this mutant (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per mutant")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *{m.file for m in chosen}], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print(f"refusing: files a mutant edits have uncommitted changes:\n{dirty}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rows = []
    print(f"{'mutant':<24} {'outcome':<9} {'s':>6}  first failing test / note")
    for mutant in chosen:
        outcome, detail, seconds = run(mutant, args.full, args.timeout)
        rows.append((mutant, outcome))
        print(f"{mutant.name:<24} {outcome:<9} {seconds:>6.0f}  {detail}", flush=True)
    survivors = [m for m, outcome in rows if outcome != "killed"]
    print(f"\n{len(rows) - len(survivors)} of {len(rows)} planted bugs turned the tests red"
          + (f"; not killed: {', '.join(m.name for m in survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
