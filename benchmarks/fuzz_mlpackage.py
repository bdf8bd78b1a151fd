"""The whole hostile .mlpackage corpus (tests/fuzzing_mlpackage.py): 1,000+ packages, outside the CI suite.

    .venv/bin/python benchmarks/fuzz_mlpackage.py PACKAGE [PACKAGE ...] [--workers 2] [--timeout 30]

PACKAGE is a valid .mlpackage (e.g. the quickstart's tiny_cnn.fp16.mlpackage; the fp32, pal4 and w8
packages of one converted model give about 1,100). Every mutation is loaded and run in a child
process; the table counts outcomes per mutation class, then reads outside the package, crashes and
hangs. It exits 1 if any package ended other than "ok" or an EdgeshipError, or opened a file outside.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzzing_mlpackage as fuzz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", type=Path)
    parser.add_argument("--workers", type=int, default=2, help="child processes at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a package may take before a hang")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeship-mlpackage-fuzz-") as tmp:
        corpus = fuzz.write_corpus(args.packages, Path(tmp))
        results = fuzz.run_packages(list(corpus), workers=args.workers, timeout=args.timeout)
    seconds = time.perf_counter() - start
    outcomes = [r["outcome"] for r in results.values()]
    bad = sum(not fuzz.acceptable(r) for r in results.values())
    print(f"{len(results)} hostile packages from {len(args.packages)} seeds in {seconds:.1f} s "
          f"({args.workers} workers)\n")
    print(fuzz.table(corpus, results))
    print(f"\nreads outside the package: {sum(bool(r['outside']) for r in results.values())}, crashes: "
          f"{outcomes.count('crash')}, hangs: {outcomes.count('hang')}, unacceptable outcomes: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
