"""Check a validation bundle on a target: this host, or a device over ssh or adb.

    .venv/bin/python examples/device_check.py OUT/bundle [--target local] [--target ssh://pi@board]

OUT is a folder written by `edgeship quickstart` or `edgeship validate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeship.runtimes.targets import run_targets


def main(bundle: str | Path, targets: tuple[str, ...] = ("local",), runs: int = 50) -> list:
    reports = run_targets(list(targets), bundle, runs=runs)
    for report in reports:
        print(f"{report.target}: {'passed' if report.passed else 'FAILED' if report.passed is False else report.error}")
        for check in report.artifacts:
            p50 = f"p50 {check.benchmark.p50_ms * 1000:.0f} µs" if check.benchmark else ""
            print(f"  {check.name:<14} {check.status:<8} outputs within {check.tolerance:.2g}: {check.outputs_ok}  "
                  f"accuracy {check.accuracy}  {p50}")
    return reports


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--target", action="append", default=None)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    main(args.bundle, tuple(args.target or ["local"]), args.runs)
