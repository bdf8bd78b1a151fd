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
            assert ".partial-" in path.name, path.name
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
    assert not list(out.glob(".*.partial-*"))
    assert len(Manifest.load(out).artifacts) == len(TARGETS.split(","))
    _check_nothing_looks_complete_but_is_not(out)


def _artifacts(out: Path) -> tuple:
    try:
        return Manifest.load(out).artifacts
    except Exception:  # being rewritten: a rename is atomic, but a read can race the first write
        return ()
