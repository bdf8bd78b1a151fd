"""The hostile-input sweep of tests/hostile_cases.py, each case as its own ``edgeship`` process (as a
user runs it), with counts: cases, clear errors, right answers, tracebacks, unexpected errors.

    .venv/bin/python benchmarks/hostile_sweep.py [--work DIR]

Trains a tiny_cnn on digits for a few epochs, converts it to tflite:fp32 and tflite:int8 and
validates it, then runs every case against copies of that folder. Exits 1 when any case is wrong.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import hostile_cases  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="folder for the model and the hostile files (default: a temp one)")
    args = parser.parse_args(argv)
    import edgeship as es

    work = Path(args.work or tempfile.mkdtemp(prefix="edgeship-hostile-"))
    es.train("tiny_cnn", "digits", out=work / "model", epochs=4)
    es.convert(work / "model", ["tflite:fp32", "tflite:int8"], data="digits", out=work / "out")
    es.validate(work / "out")
    cases = hostile_cases.cases(work / "cases", work / "out")
    edgeship = str(Path(sys.executable).with_name("edgeship"))
    counts = {"clear errors": 0, "right answers": 0, "tracebacks": 0, "unexpected errors": 0, "other": 0}
    start = time.perf_counter()
    for case in cases:
        proc = subprocess.run([edgeship, *case.argv], capture_output=True, text=True, timeout=600, env=hostile_cases.env())
        wrong = hostile_cases.check(case, proc.returncode, proc.stdout, proc.stderr)
        if wrong is None:
            counts["clear errors" if case.code else "right answers"] += 1
        else:
            counts["tracebacks" if wrong == "traceback" else "unexpected errors" if wrong == "unexpected error"
                   else "other"] += 1
            print(f"WRONG {case.name}: {wrong}")
    print(f"{len(cases)} cases in {time.perf_counter() - start:.0f} s: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0 if counts["clear errors"] + counts["right answers"] == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
