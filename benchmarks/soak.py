"""Soak: many inferences in one session, RSS sampled along the way; growth must be flat.

    .venv/bin/python benchmarks/soak.py MODEL [MODEL ...] [--inferences 100000]

Prints, per model, RSS after warm-up and at the end, and growth per 1,000 inferences: a
least-squares slope over the second half of the run (steady state; allocator arenas settle in the
first tens of thousands of calls) and over the whole run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edgeship.runtimes import load
from edgeship.runtimes.benchmark import rss_bytes


def soak(model: str | Path, inferences: int = 100_000, samples: int = 50, warmup: int = 1000) -> dict[str, float]:
    """Run ``model`` ``inferences`` times; returns RSS figures and the growth slope per 1,000."""
    session = load(model, threads=1)
    feeds = session.sample_feeds(1)
    for _ in range(warmup):
        session.run(feeds)
    every = max(1, inferences // samples)
    counts, rss = [], []
    started = time.perf_counter()
    for i in range(1, inferences + 1):
        session.run(feeds)
        if i % every == 0:
            counts.append(i)
            rss.append(rss_bytes())
    seconds = time.perf_counter() - started
    half = len(counts) // 2
    return {"inferences": inferences, "seconds": seconds, "rss_start_mib": rss[0] / 2**20,
            "rss_end_mib": rss[-1] / 2**20, "growth_bytes_per_1000": _slope(counts[half:], rss[half:]) * 1000,
            "growth_bytes_per_1000_whole_run": _slope(counts, rss) * 1000}


def _slope(x: list[int], y: list[int]) -> float:
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0]) if len(x) > 1 else 0.0


def main(models: list[str], inferences: int = 100_000) -> list[dict[str, float]]:
    rows = []
    print(f"{'model':<34}{'inferences':>11}{'seconds':>9}{'RSS start MiB':>15}{'RSS end MiB':>13}"
          f"{'steady B/1k':>13}{'whole-run B/1k':>16}")
    for model in models:
        row = soak(model, inferences)
        rows.append(row)
        print(f"{Path(model).name:<34}{row['inferences']:>11}{row['seconds']:>9.1f}{row['rss_start_mib']:>15.2f}"
              f"{row['rss_end_mib']:>13.2f}{row['growth_bytes_per_1000']:>13.1f}"
              f"{row['growth_bytes_per_1000_whole_run']:>16.1f}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--inferences", type=int, default=100_000)
    args = parser.parse_args()
    main(args.models, args.inferences)
