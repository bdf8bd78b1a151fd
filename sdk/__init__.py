"""edgeship: compact networks from training to validated, benchmarked artifacts on edge devices.

    >>> import edgeship as es
    >>> data = es.load_dataset("digits")
    >>> result = es.train("tiny_cnn", data, out="out/model", epochs=5)       # doctest: +SKIP
    >>> manifest = es.convert("out/model", ["tflite:int8", "onnx:fp32"], data=data, out="out")  # doctest: +SKIP
    >>> report = es.validate("out", data=data, max_drop=1.0)                 # doctest: +SKIP
    >>> session = es.load("out/tiny_cnn.int8.tflite")                        # doctest: +SKIP

Importing edgeship imports numpy and the standard library only; TensorFlow and the converters are
imported by the functions that need them.
"""

from __future__ import annotations

from typing import Any as _Any

from edgeship.errors import (
    AccuracyGateError,
    BadArtifactError,
    BadInputError,
    ConversionError,
    DatasetError,
    EdgeshipError,
    MissingDependencyError,
    RuntimeFailure,
    UnsupportedModelError,
)
from edgeship.records import (
    AccuracyDelta,
    Artifact,
    BenchmarkResult,
    Gate,
    Manifest,
    Report,
    ReportEntry,
    TensorSpec,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # pipeline
    "load_dataset",
    "train",
    "convert",
    "validate",
    "load",
    "benchmark",
    "quickstart",
    # data model
    "TensorSpec",
    "Artifact",
    "Manifest",
    "AccuracyDelta",
    "BenchmarkResult",
    "ReportEntry",
    "Gate",
    "Report",
    # errors
    "EdgeshipError",
    "MissingDependencyError",
    "DatasetError",
    "BadInputError",
    "UnsupportedModelError",
    "ConversionError",
    "BadArtifactError",
    "RuntimeFailure",
    "AccuracyGateError",
]


def load_dataset(name_or_path: str, **options: _Any):
    """Load a built-in dataset (digits, iris, wine, breast_cancer, shapes32, …) or a user file."""
    from edgeship.datasets import load_dataset as _load

    return _load(name_or_path, **options)


def train(model: str, data: _Any, **options: _Any):
    """Train a zoo model (see ``edgeship.trainers.train``) and save it with its training record."""
    from edgeship.trainers import train as _train

    return _train(model, data, **options)


def convert(model: _Any, targets: _Any, **options: _Any) -> Manifest:
    """Convert a model to artifacts such as ``"tflite:int8"`` (see ``edgeship.converters.convert``)."""
    from edgeship.converters import convert as _convert

    return _convert(model, targets, **options)


def validate(folder: _Any, **options: _Any) -> Report:
    """Measure every artifact of a folder against its float reference (see ``edgeship.pipeline.validate``)."""
    from edgeship.pipeline import validate as _validate

    return _validate(folder, **options)


def load(path: _Any, **options: _Any):
    """Load an artifact into a thin runtime Session (see ``edgeship.runtimes.load``)."""
    from edgeship.runtimes import load as _load

    return _load(path, **options)


def benchmark(path: _Any, **options: _Any) -> BenchmarkResult:
    """Benchmark an artifact the way TFLite's benchmark_model does (see ``edgeship.runtimes.benchmark``)."""
    from edgeship.runtimes.benchmark import benchmark as _benchmark

    return _benchmark(path, **options)


def quickstart(out: _Any = "edgeship-out", **options: _Any) -> Report:
    """Train, convert, validate, benchmark and report on built-in data in one call."""
    from edgeship.pipeline import quickstart as _quickstart

    return _quickstart(out, **options)
