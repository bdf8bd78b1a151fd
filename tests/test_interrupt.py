"""An interrupted conversion leaves nothing that looks complete, and the next one recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeship import _io
from edgeship.records import Manifest
from edgeship.runtimes import load

TARGETS = "tflite:fp32,tflite:int8,onnx:int8,coreml:w8"


def _start(model: Path, out: Path) -> subprocess.Popen:
    code = ("import edgeship; edgeship.convert(%r, %r, data='digits', out=%r)" % (str(model), TARGETS, str(out)))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(out: Path, proc: subprocess.Popen, ready) -> bool:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if ready(out):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return False


def _check_nothing_looks_complete_but_is_not(out: Path) -> None:
    manifest = Manifest.load(out) if (out / "manifest.json").exists() else Manifest()
    for artifact in manifest.artifacts:  # everything recorded is whole
        assert _io.sha256_path(out / artifact.path) == artifact.sha256, artifact.name
    for path in out.iterdir():  # every file under a final name loads; partial ones are hidden and say so
        if path.name.startswith("."):
            assert ".partial-" in path.name or path.name in (_io.JOURNAL, _io.LOCK), path.name
        elif path.suffix in (".tflite", ".onnx"):
            load(path)


@pytest.mark.slow
def test_killed_conversions_leave_nothing_half_written(float_model_dir, tmp_path):
    """One folder, killed twice at two moments, then converted to the end."""
    out = tmp_path / "out"
    moments = {
        "first partial file": lambda o: any(".partial-" in p.name for p in o.glob(".*")) if o.exists() else False,
        # the Core ML package is being converted and staged
        "manifest with three artifacts": lambda o: (o / "manifest.json").exists() and len(_artifacts(o)) >= 3,
    }
    for moment, ready in moments.items():
        assert _kill_when(out, _start(float_model_dir, out), ready), f"the conversion ended before '{moment}'"
        _check_nothing_looks_complete_but_is_not(out)
    # the next conversion clears the leftovers and completes
    result = _start(float_model_dir, out)
    assert result.wait(timeout=300) == 0
    assert not list(out.glob(".*.partial-*")) and not (out / _io.JOURNAL).exists()
    assert len(Manifest.load(out).artifacts) == len(TARGETS.split(","))
    _check_nothing_looks_complete_but_is_not(out)


def _artifacts(out: Path) -> tuple:
    try:
        return Manifest.load(out).artifacts
    except Exception:  # being rewritten: a rename is atomic, but a read can race the first write
        return ()


# ------------------------------------------------------------- kills at random points, seeded

EDGESHIP = [str(Path(sys.executable).with_name("edgeship"))]  # the console script a user runs


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".*")
                  if _io.is_temporary(p.name) or p.name == _io.JOURNAL)


def _consistent(folder: Path) -> None:
    """The manifest parses and lists only complete files, with their recorded size and hash."""
    if not (folder / "manifest.json").exists():
        return
    manifest = Manifest.load(folder)
    for artifact in manifest.artifacts:
        path = folder / artifact.path
        assert path.exists(), f"{artifact.name} is listed but {artifact.path} is missing"
        assert _io.size_bytes(path) == artifact.size_bytes, f"{artifact.name}: size differs from its record"
        assert _io.sha256_path(path) == artifact.sha256, f"{artifact.name}: sha256 differs from its record"


def _unlisted_artifacts(folder: Path) -> list[str]:
    listed = {Path(a.path).parts[0] for a in Manifest.load(folder).artifacts}
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".tflite", ".onnx", ".mlpackage")
                  and p.name not in listed)


def _interrupted(args: list[str], folder: Path, delay: float, sig: int) -> subprocess.CompletedProcess | float:
    """Run ``edgeship ARGS``; once its transaction has begun (the journal appears), wait ``delay``
    seconds and send ``sig``. When it finished first: the seconds it wrote for."""
    journal = folder / _io.JOURNAL
    start = time.time()
    proc = subprocess.Popen(EDGESHIP + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not (
            journal.exists() and journal.stat().st_mtime >= start):  # this run's journal, not a killed one's
        time.sleep(0.01)
    began = time.monotonic()
    while proc.poll() is None and time.monotonic() - began < delay:
        time.sleep(0.005)
    if proc.poll() is not None:
        proc.communicate()
        return time.monotonic() - began  # it finished first: how long its writing took
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.slow
def test_commands_killed_at_random_points_leave_a_folder_that_agrees_with_itself(float_model_dir, tmp_path):
    """convert, doctor and validate, each killed (kill -9, and Ctrl-C) at seeded random moments
    of their writing: after every kill the manifest lists only whole files with their recorded
    size and hash; the next run removes every temporary and every file nobody recorded."""
    import random

    rng = random.Random(20261207)
    out = tmp_path / "out"
    convert = ["convert", str(float_model_dir), "--to", "tflite:fp32,tflite:int8,onnx:int8", "--data", "digits",
               "--calibration-samples", "64", "--out", str(out)]
    doctor = ["doctor", str(out), "--max-drop", "0", "--samples", "60", "--runs", "5", "--max-layers", "1",
              "--no-int16", "--no-equalize", "--calibration-samples", "64"]
    validate = ["validate", str(out)]
    plan = [convert] * 12 + [None] + [doctor] * 6 + [validate] * 6
    spans = {id(convert): 4.0, id(doctor): 3.0, id(validate): 1.5}  # shrunk to what a finished run took
    kills = sigints = 0
    for i, args in enumerate(plan):
        if args is None:  # a whole conversion, which doctor and validate then work on
            assert subprocess.run(EDGESHIP + convert, capture_output=True, timeout=600).returncode == 0
            continue
        sig = signal.SIGINT if i % 4 == 3 else signal.SIGKILL
        result = _interrupted(args, out, rng.uniform(0.0, spans[id(args)]), sig)
        if isinstance(result, float):
            spans[id(args)] = 0.7 * result
            continue
        kills += sig == signal.SIGKILL
        sigints += sig == signal.SIGINT
        if sig == signal.SIGINT:  # Ctrl-C: one line, no traceback (or, arriving as it exits, a finished run)
            assert "Traceback" not in result.stderr, result.stderr
            assert result.returncode == 0 or (
                result.returncode == 130 and "interrupted" in result.stderr.splitlines()[-1]), result.stderr
        _consistent(out)
        if (out / "manifest.json").exists() and args is not convert:
            assert len(Manifest.load(out).artifacts) >= 3  # what convert recorded is never lost
    assert kills + sigints >= 16 and sigints >= 3, (kills, sigints)  # of 24 runs; the rest finished first
    # a whole run of each: every leftover is gone and the folder holds what its manifest says
    for args in (convert, doctor, validate):
        done = subprocess.run(EDGESHIP + args, capture_output=True, text=True, timeout=600)
        assert done.returncode in (0, 2), done.stderr
        assert _temporaries(out) == [], _temporaries(out)
        _consistent(out)
    assert _unlisted_artifacts(out) == []
    assert {"tflite:fp32", "tflite:int8", "onnx:int8"} <= {a.name for a in Manifest.load(out).artifacts}


def test_a_second_writer_is_refused_naming_the_first(float_model_dir, tmp_path):
    """Two edgeship processes writing one folder: the second is refused with the first's pid, and
    the lock dies with its holder (kill -9 included)."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "from edgeship import _io; import sys, time\n"
                               f"with _io.locked({str(out)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    second = subprocess.run(EDGESHIP + ["convert", str(float_model_dir), "--to", "tflite:fp32", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 1 and f"being written by edgeship process {holder.pid}" in second.stderr, second.stderr
    holder.kill()
    holder.wait()
    with _io.locked(out):  # free again once the holder is gone
        pass
    assert not (out / "manifest.json").exists()  # the refused run wrote nothing


def test_readers_write_nothing_into_a_folder_nothing_interrupted(tmp_path):
    """validate and doctor on a folder convert never wrote: refused, and the folder is as it was
    (no lock, no journal: only a folder with an interrupted step is cleaned up, under the lock)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("a user's file")
    for command in (["validate", str(folder)], ["doctor", str(folder)]):
        result = subprocess.run(EDGESHIP + command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "no manifest.json" in result.stderr, result.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
