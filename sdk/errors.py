"""Every error edgeship raises on purpose.

    EdgeshipError
     ├── MissingDependencyError     an optional package is not installed
     ├── DatasetError               a dataset is unknown, missing or malformed
     ├── BadInputError              a value, shape, dtype or setting the caller passed is wrong
     ├── ConversionError            a converter failed; nothing was written
     │    └── UnsupportedModelError a layer or op a backend (converter or evaluator) cannot take
     ├── BadArtifactError           a model or artifact file is corrupt, hostile or mismatched
     ├── RuntimeFailure             an interpreter failed to run a loaded model
     └── AccuracyGateError          a validated artifact fell below the gate (carries the report)

A message says what happened, what was received and what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the records import these errors
    from edgeship.records import Report

__all__ = [
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


class EdgeshipError(Exception):
    """Root of every error edgeship raises on purpose; the CLI prints it as one line (exit code 1)."""


class MissingDependencyError(EdgeshipError, ImportError):
    """An optional package is missing; the message names the extra to install."""


class DatasetError(EdgeshipError, ValueError):
    """A dataset name is unknown, a file is missing, or its content is malformed."""


class BadInputError(EdgeshipError, ValueError):
    """The caller passed a wrong value: shape, dtype, name, range or an unknown option."""


class ConversionError(EdgeshipError):
    """A converter failed; no artifact was written."""


class UnsupportedModelError(ConversionError):
    """A model holds a layer or op that a backend cannot take: a converter, or the Core ML evaluator."""


class BadArtifactError(EdgeshipError):
    """A model or artifact file is corrupt, truncated, hostile or does not match its manifest."""


class RuntimeFailure(EdgeshipError, RuntimeError):
    """An interpreter loaded a model but failed to run it."""


class AccuracyGateError(EdgeshipError):
    """One or more artifacts failed the accuracy gate; ``report`` holds every figure (CLI exit code 2)."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report
