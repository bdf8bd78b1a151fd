"""edgeship: compact networks from training to validated, benchmarked artifacts on edge devices.

    >>> import edgeship as es
    >>> data = es.load_dataset("digits")
    >>> result = es.train("tiny_cnn", data, out="out/model", epochs=5)       # doctest: +SKIP
    >>> manifest = es.convert("out/model", ["tflite:int8", "onnx:fp32"], data=data, out="out")  # doctest: +SKIP
    >>> report = es.validate("out", data=data, max_drop=1.0)                 # doctest: +SKIP
    >>> session = es.load("out/tiny_cnn.int8.tflite")                        # doctest: +SKIP

Importing edgeship imports numpy and the standard library only. The pipeline's functions are the
real ones of each stage (``es.convert is edgeship.converters.convert``), imported on first use, so
TensorFlow and the converters load only when a function that needs them is called.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
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
    TrainingRecord,
)

if _TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on first use
    from edgeship.converters import convert
    from edgeship.data import Dataset, load_dataset
    from edgeship.doctor import DoctorReport, diagnose
    from edgeship.pipeline import quickstart
    from edgeship.runtimes import Session, load
    from edgeship.runtimes.benchmark import benchmark
    from edgeship.trainers.recipes import train
    from edgeship.validation import validate

from edgeship._version import __version__

__all__ = [
    "__version__",
    # pipeline: train -> convert -> validate (-> diagnose) -> load / benchmark; quickstart runs them all
    "load_dataset",
    "train",
    "convert",
    "validate",
    "diagnose",
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
    # what the stages return: a training run's record, the data, the doctor's report, a loaded model
    "TrainingRecord",
    "Dataset",
    "DoctorReport",
    "Session",
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

#: public name -> the module that defines it (the stage it belongs to), imported on first use
_STAGES = {
    "Dataset": "edgeship.data",
    "DoctorReport": "edgeship.doctor.records",
    "Session": "edgeship.runtimes._session",
    "load_dataset": "edgeship.data",
    "train": "edgeship.trainers.recipes",
    "convert": "edgeship.converters",
    "validate": "edgeship.validation",
    "diagnose": "edgeship.doctor",
    "load": "edgeship.runtimes",
    "benchmark": "edgeship.runtimes.benchmark",
    "quickstart": "edgeship.pipeline",
}


def __getattr__(name: str) -> _Any:
    if name in _STAGES:
        function = getattr(_importlib.import_module(_STAGES[name]), name)
        globals()[name] = function  # later lookups skip this hook
        return function
    raise AttributeError(f"module 'edgeship' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
