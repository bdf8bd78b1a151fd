"""A fixed corpus of hostile model files, and a runner that loads each one in a child process.

    .venv/bin/python tests/fuzzing.py MODEL [MODEL ...]     # prints outcomes per mutation class

Each mutation is seeded, so the corpus is the same on every run. The runner records, per file,
"ok" (it loaded and ran: a flipped weight bit can still be a valid model), the EdgeshipError
subclass it raised, or "other:<type>" — and if the interpreter crashes the child, the file that
was being tried is named.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def _truncations(data: bytes) -> dict[str, bytes]:
    return {f"truncated-{f:g}": data[: int(len(data) * f)] for f in (0.005, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999)}


def _bit_flips(data: bytes, seed: int) -> dict[str, bytes]:
    out = {}
    for flips in (1, 8, 64):
        rng = np.random.default_rng(seed * 100 + flips)
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), flips):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        out[f"bitflip-{flips}-s{seed}"] = bytes(buf)
    return out


def _absurd_sizes(data: bytes, seed: int, suffix: str) -> dict[str, bytes]:
    """Offsets and lengths pointing far outside the file."""
    rng = np.random.default_rng(1000 + seed)
    buf = bytearray(data)
    if suffix == ".tflite":  # flatbuffer: root table offset, then random aligned words
        buf[0:4] = (0x7FFFFFF0).to_bytes(4, "little") if seed == 0 else buf[0:4]
        for pos in rng.integers(1, len(buf) // 4 - 1, 4):
            buf[pos * 4 : pos * 4 + 4] = (0x7FFFFFFF).to_bytes(4, "little")
    else:  # protobuf: a length-delimited field whose declared length is 2^35
        tags = [i for i in range(len(buf) - 1) if buf[i] & 0x7 == 2 and buf[i] >> 3 in (2, 7, 8)]
        pos = tags[seed % len(tags)] if tags else 0
        buf[pos + 1 : pos + 2] = b"\xff\xff\xff\xff\x7f"
    return {f"absurd-size-s{seed}": bytes(buf)}


def mutations(data: bytes, suffix: str) -> dict[str, bytes]:
    """Every mutation of one valid model file, by name."""
    rng = np.random.default_rng(7)
    corpus = {"empty": b"", "zeros": bytes(len(data)), "random": rng.bytes(len(data)),
              "random-small": rng.bytes(64), "wrong-magic": (b"XXXX" * 3 + data[12:]) if suffix == ".tflite"
              else b"\x08\x99\xff\xff\xff\xff\xff\xff\xff\xff\xff" + data}
    corpus.update(_truncations(data))
    for seed in range(5):
        corpus.update(_bit_flips(data, seed))
    for seed in range(4):
        corpus.update(_absurd_sizes(data, seed, suffix))
    return corpus


def write_corpus(models: list[Path], folder: Path) -> list[Path]:
    files = []
    for model in models:
        for name, content in mutations(model.read_bytes(), model.suffix).items():
            path = folder / f"{model.stem}.{name}{model.suffix}"
            path.write_bytes(content)
            files.append(path)
    return files


_CHILD = r"""
import json, sys, numpy as np
from pathlib import Path
import edgeship.runtimes as rt
from edgeship.errors import EdgeshipError
files, progress, results = json.loads(sys.argv[1]), Path(sys.argv[2]), {}
for f in files:
    progress.write_text(f)
    try:
        s = rt.load(f)
        s.run(s.sample_feeds(1))
        results[f] = "ok"
    except EdgeshipError as exc:
        results[f] = type(exc).__name__
    except Exception as exc:
        results[f] = "other:" + type(exc).__name__ + ": " + str(exc)[:200]
progress.write_text("")
print(json.dumps(results))
"""


def run_corpus(files: list[Path]) -> tuple[dict[str, str], str | None]:
    """Load and run every file in one child; returns ({file: outcome}, file that crashed it)."""
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress"
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([str(f) for f in files]), str(progress)],
                              capture_output=True, text=True, timeout=600)
        crashed = progress.read_text() if progress.exists() and progress.read_text() else None
        if proc.returncode != 0:
            return {}, crashed or f"child exited {proc.returncode}: {proc.stderr[-500:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1]), None


def summary(results: dict[str, str]) -> dict[str, Counter]:
    """{file type: Counter of outcome per mutation class}."""
    table: dict[str, Counter] = {}
    for file, outcome in results.items():
        path = Path(file)
        kind = path.stem.split(".", 1)[1].split("-")[0]
        table.setdefault(path.suffix, Counter())[f"{kind} -> {outcome.split(':')[0]}"] += 1
    return table


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        results, crashed = run_corpus(write_corpus([Path(p) for p in sys.argv[1:]], Path(tmp)))
    print(f"crashed on: {crashed}" if crashed else f"{len(results)} hostile files, no crash")
    for suffix, counts in summary(results).items():
        print(suffix, sum(counts.values()))
        for key, n in sorted(counts.items()):
            print(f"  {key:<40} {n}")
