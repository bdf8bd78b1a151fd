"""Checks one validation bundle on the machine pytest runs on: checksums, outputs, accuracy, latency."""

from __future__ import annotations

import numpy as np
import pytest

from edgeship.runtimes._device_check import model_inputs
from edgeship.runtimes.benchmark import benchmark


def test_manifest_lists_artifacts(bundle):
    folder, manifest, inputs, labels = bundle  # loading checked every sha256
    assert manifest.artifacts, f"{folder} lists no artifacts"
    assert len(inputs) == len(manifest.input_files) and all(len(x) == len(inputs[0]) > 0 for x in inputs)
    assert len(labels) in (0, len(inputs[0])), f"{len(labels)} labels for {len(inputs[0])} samples"


def test_outputs_within_tolerance(bundle, entry, session):
    folder, manifest, inputs, _ = bundle
    outputs = session.predict(model_inputs(session, manifest, entry, inputs))  # raw inputs: preprocessed as recorded
    expected = np.load(folder / entry.expected, allow_pickle=False)
    assert outputs.shape == expected.shape
    error = float(np.max(np.abs(outputs.astype(np.float64) - expected)))
    assert error <= entry.max_abs_error, (
        f"{entry.name}: outputs differ from the host's by {error:.3g}, over the tolerance {entry.max_abs_error:.3g}"
    )


def test_accuracy(bundle, entry, session):
    _, manifest, inputs, labels = bundle
    if entry.min_accuracy is None or not len(labels):
        pytest.skip(f"{entry.name}: the bundle's task is judged by its outputs alone (no class labels)")
    accuracy = float(np.mean(session.predict(model_inputs(session, manifest, entry, inputs)).argmax(-1) == labels))
    assert accuracy >= entry.min_accuracy, (
        f"{entry.name}: accuracy {accuracy:.4f} on the bundle's {len(labels)} samples is below {entry.min_accuracy:.4f} "
        f"(host: {entry.host_accuracy:.4f})"
    )


def test_latency(bundle, entry, session, latency_log, pytestconfig):
    if session.reference_only:
        pytest.skip(f"{session.runtime} is a reference evaluator: its latency is not the device's")
    _, manifest, inputs, _ = bundle
    inputs = model_inputs(session, manifest, entry, inputs)
    runs, budget = pytestconfig.getoption("--runs"), pytestconfig.getoption("--max-p50-ms")
    result = benchmark(session, feeds=session.feeds_for(inputs, 1), runs=runs, warmup=5)
    latency_log[entry.name] = result.to_dict()
    assert result.count == runs, f"{entry.name}: {result.count} timed runs, asked for {runs}"
    assert 0 < result.min_ms <= result.p50_ms <= result.p90_ms <= result.max_ms, result.to_dict()
    if budget is not None:
        assert result.p50_ms <= budget, (
            f"{entry.name}: p50 {result.p50_ms:.3f} ms on this device is over the budget --max-p50-ms {budget}")
