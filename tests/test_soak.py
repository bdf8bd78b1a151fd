"""A short soak in the suite (benchmarks/soak.py runs the 100,000-inference one): RSS stays flat."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import soak  # noqa: E402


@pytest.mark.parametrize("model", ["tiny_cnn.int8.tflite", "tiny_cnn.int8.onnx"])
def test_rss_is_flat_over_20000_inferences(quickstart_dir, model):
    row = soak.soak(quickstart_dir / model, inferences=20_000, samples=40, warmup=2000)
    assert row["inferences"] == 20_000
    # a leak of even one small tensor per call would be > 1 KiB per 1,000 calls
    assert row["growth_bytes_per_1000"] < 1024, row
