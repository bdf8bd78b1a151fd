"""How long each built-in dataset takes to load, cold (a fresh process) and warm (the same process again).

    .venv/bin/python benchmarks/bench_datasets.py [--rounds 3]

The generated ones (``shapes32``) are built from a fixed seed on every load; the scikit-learn ones are
read from the files that ship inside scikit-learn. Each cold figure is the median over rounds of a child
process's wall time for ``load_dataset(name)`` alone (imports excluded).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from edgeship.data import load_dataset

#: the datasets that load without a download (the Keras ones need their files cached first)
NAMES = ("digits", "iris", "wine", "breast_cancer", "shapes32")

_CHILD = ("import time; from edgeship.data import load_dataset; t = time.perf_counter(); "
          "load_dataset({name!r}); print(time.perf_counter() - t)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'dataset':<14} {'samples':>8} {'cold s':>8} {'warm s':>8}")
    for name in NAMES:
        cold = statistics.median(
            float(subprocess.run([sys.executable, "-c", _CHILD.format(name=name)], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]) for _ in range(args.rounds))
        warm = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            data = load_dataset(name)
            warm.append(time.perf_counter() - started)
        total = len(data.y_train) + len(data.y_val) + len(data.y_test)
        print(f"{name:<14} {total:>8} {cold:>8.3f} {statistics.median(warm):>8.3f}")


if __name__ == "__main__":
    main()
