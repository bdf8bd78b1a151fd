"""Bundles replayed on the emulated arm64 board against this x86 host: board build, replay time,
and the ARM-vs-host agreement and bit-exact rates per artifact.

    .venv/bin/python benchmarks/board_replay.py [--board DIR] [--work DIR] [--epochs 3]

Builds the board (or reuses it), runs the quickstart and trains a ResNet-8 on shapes32 (32x32x3, the
project's generated data), converts it to tflite:fp32/int8 and onnx:fp32/int8, validates, and replays
both bundles on the board with the ARM builds of LiteRT and ONNX Runtime. Needs root, debootstrap and
qemu-user-static. Latency under emulation is not reported: it is the emulator's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


def _run(*args: str) -> None:
    subprocess.run([*EDGESHIP, "--quiet", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--board", default=str(Path.home() / ".cache/edgeship/boards/arm64"))
    parser.add_argument("--work", default="/tmp/edgeship-board-replay")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    from edgeship.runtimes._board import make_board
    from edgeship.runtimes.targets import run_targets

    started = time.perf_counter()
    board = make_board(args.board)
    print(
        f"board {board.folder}: {'built' if board.built else 'reused'}; build took {board.seconds:.0f} s, "
        f"{board.size_bytes / 1e6:.0f} MB; this call {time.perf_counter() - started:.1f} s"
    )
    work = Path(args.work)
    bundles = {}
    if not (work / "quickstart" / "bundle").is_dir():
        _run("quickstart", "--out", str(work / "quickstart"), "--runs", "20")
    bundles["quickstart (digits CNN)"] = work / "quickstart" / "bundle"
    r8 = work / "resnet8"
    if not (r8 / "bundle").is_dir():
        _run(
            "train",
            "--model",
            "resnet8",
            "--data",
            "shapes32",
            "--epochs",
            str(args.epochs),
            "--out",
            str(r8 / "model"),
        )
        _run(
            "convert",
            str(r8 / "model"),
            "--to",
            "tflite:fp32,tflite:int8,onnx:fp32,onnx:int8",
            "--data",
            "shapes32",
            "--out",
            str(r8),
        )
        _run("validate", str(r8))
    bundles["ResNet-8 32x32x3 (shapes32)"] = r8 / "bundle"
    for title, folder in bundles.items():
        # one untimed replay so the board's venv exists: the timed one is the replay alone
        run_targets([f"qemu-arm64:{board.folder}"], folder, runs=0)
        started = time.perf_counter()
        (report,) = run_targets([f"qemu-arm64:{board.folder}"], folder, runs=0)
        seconds = time.perf_counter() - started
        if report.error:
            print(f"{title}: {report.error}")
            continue
        print(
            f"\n{title}: replay {seconds:.1f} s on {report.machine} ({report.artifacts[0].samples} samples), "
            f"passed={report.passed}"
        )
        print(f"  {'artifact':<13} {'agreement':>9} {'max err':>9} {'tolerance':>9} {'bit-exact':>9} {'steps':>5}")
        for a in report.artifacts:
            exact = "—" if a.bit_exact is None else f"{a.bit_exact * 100:.2f}%"
            steps = "—" if a.max_steps is None else f"{a.max_steps:g}"
            print(
                f"  {a.name:<13} {a.agreement * 100 if a.agreement is not None else float('nan'):8.2f}% "
                f"{a.max_abs_error_vs_host or 0:9.2g} {a.tolerance or 0:9.2g} {exact:>9} {steps:>5}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
