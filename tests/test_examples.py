"""Every example's main() runs, with small settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == {"tour", "tabular", "device_check"}


@pytest.mark.slow
def test_tour(tmp_path, capsys):
    report = _example("tour").main(tmp_path, epochs=10)
    assert {e.name for e in report.artifacts} == {"tflite:int8", "onnx:int8", "coreml:w8"}
    assert report.passed is True
    assert "thin runtime (litert)" in capsys.readouterr().out


def test_tabular_reports_roc_auc(tmp_path):
    report = _example("tabular").main("breast_cancer", tmp_path, epochs=15)
    for entry in report.artifacts:
        assert entry.validation.roc_auc is not None and entry.validation.roc_auc > 0.9
        assert entry.accuracy_delta_pts > -3


def test_device_check_on_this_host(quickstart_dir, capsys):
    reports = _example("device_check").main(quickstart_dir / "bundle", runs=10)
    assert len(reports) == 1 and reports[0].passed is True
    assert "local: passed" in capsys.readouterr().out
