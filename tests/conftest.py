"""Shared fixtures: one small seeded model trained once per session, and its artifacts.

Tests that only need artifacts use ``quickstart_dir`` (the quickstart's output folder: a QAT
tiny_cnn on digits converted to TFLite fp32/int8, ONNX fp32/int8 and Core ML fp16, validated and
benchmarked). Nothing here downloads anything.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    from edgeship.data import load_dataset

    return load_dataset("digits")


TOLERANCES = yaml.safe_load((Path(__file__).parent / "tolerances.yaml").read_text())
MATRIX_MODELS = ("tiny_cnn", "mlp")
MATRIX_TARGETS = list(TOLERANCES["tiny_cnn"])


@pytest.fixture(scope="session")
def conversion_matrix(request, tmp_path_factory, digits) -> dict[str, tuple[Path, Any]]:
    """tiny_cnn and mlp converted to every target in tolerances.yaml, then validated:
    {model: (folder, Report)}; read-only."""
    import edgeship

    results = {}
    for model in MATRIX_MODELS:
        source = request.getfixturevalue("float_model_dir" if model == "tiny_cnn" else "mlp_model_dir")
        out = tmp_path_factory.mktemp(f"matrix-{model}")
        edgeship.convert(source, MATRIX_TARGETS, data=digits, out=out)
        results[model] = (out, edgeship.validate(out, data=digits, write_bundle=False))
    return results


@pytest.fixture(scope="session")
def quickstart_dir(tmp_path_factory) -> Path:
    """The quickstart run once through the CLI (small settings) and shared; treat it as read-only.
    What the command printed is kept beside the folder (``quickstart_output``)."""
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run([sys.executable, "-m", "edgeship.cli", "quickstart", "--out", str(work / "out"),
                           "--epochs", "25", "--runs", "50"], capture_output=True, text=True, timeout=900)
    (work / "stdout.txt").write_text(proc.stdout)
    if proc.returncode != 0:
        pytest.fail(f"edgeship quickstart exited {proc.returncode}: {proc.stderr[-2000:]}")
    return work / "out"


@pytest.fixture(scope="session")
def quickstart_output(quickstart_dir) -> str:
    """What ``edgeship quickstart`` printed when it made ``quickstart_dir``."""
    return (quickstart_dir.parent / "stdout.txt").read_text()


@pytest.fixture(scope="session")
def float_model_dir(tmp_path_factory, digits) -> Path:
    """A float tiny_cnn trained briefly (no QAT); read-only."""
    from edgeship.trainers import train

    out = tmp_path_factory.mktemp("float-model")
    train("tiny_cnn", digits, out=out, epochs=12)
    return out


@pytest.fixture(scope="session")
def damaged_dir(tmp_path_factory, float_model_dir, digits) -> Path:
    """int8 artifacts calibrated on inputs scaled by 0.02 (the wrong normalisation): accuracy
    collapses (about 18% on digits). Not yet validated; copy it before writing into it."""
    from edgeship.converters import convert

    out = tmp_path_factory.mktemp("damaged")
    convert(float_model_dir, ["tflite:fp32", "tflite:int8-float-io", "onnx:int8"], data=digits,
            calibration=digits.calibration(200) * 0.02, out=out)
    return out


@pytest.fixture(scope="session")
def mlp_model_dir(tmp_path_factory, digits) -> Path:
    """A float mlp (flattened digits) trained briefly; read-only."""
    from edgeship.trainers import train

    out = tmp_path_factory.mktemp("mlp-model")
    train("mlp", digits, out=out, epochs=15)
    return out


# ---- trainers (tests/test_trainers.py): the digits accuracy bars, trained once per session ----


@pytest.fixture(scope="session")
def digits_float_dir(tmp_path_factory, digits) -> Path:
    """tiny_cnn trained in float on digits to convergence (batch 16, up to 30 epochs); read-only."""
    from edgeship.trainers import train

    out = tmp_path_factory.mktemp("digits-float")
    train("tiny_cnn", digits, out=out, epochs=30, batch_size=16)
    return out


@pytest.fixture(scope="session")
def digits_qat_dir(tmp_path_factory, digits, digits_float_dir) -> Path:
    """digits_float_dir fine-tuned with QAT (3 epochs); read-only."""
    from edgeship.trainers import train

    out = tmp_path_factory.mktemp("digits-qat")
    train("tiny_cnn", digits, out=out, start_from=digits_float_dir, batch_size=16, qat=True)
    return out


@pytest.fixture(scope="session")
def digits_pqat_dir(tmp_path_factory, digits, digits_float_dir) -> Path:
    """digits_float_dir pruned to 75% sparsity (6 epochs), then prune-preserving QAT; read-only."""
    from edgeship.trainers import train

    out = tmp_path_factory.mktemp("digits-pqat")
    train("tiny_cnn", digits, out=out, start_from=digits_float_dir, batch_size=16, prune=0.75, qat=True)
    return out
