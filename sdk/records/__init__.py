"""The data model: frozen dataclasses with a JSON round trip that rejects unknown keys.

    TensorSpec ─┐
                ├─ Artifact ──── Manifest          (manifest.json)       artifacts.py
    AccuracyDelta ─┐
    BenchmarkResult ┴─ ReportEntry ── Report        (report.json)         results.py
    TrainingRecord                                  (training.json)       artifacts.py

``_base.py`` holds the machinery: ``Record`` (``to_dict`` / ``from_dict`` with strict keys) and the
versioned file. Every file written carries ``schema_version``; a newer version than this code
knows is refused. Nothing here imports more than the standard library.
"""

from __future__ import annotations

from edgeship.records._base import MANIFEST_NAME, REPORT_NAME, SCHEMA_VERSION, Record, VersionedFile
from edgeship.records.artifacts import Artifact, Manifest, TensorSpec, TrainingRecord, verified_path, vouched
from edgeship.records.results import AccuracyDelta, BenchmarkResult, Gate, Headline, Report, ReportEntry

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "REPORT_NAME",
    "Record",
    "VersionedFile",
    "TensorSpec",
    "Artifact",
    "Manifest",
    "AccuracyDelta",
    "Headline",
    "BenchmarkResult",
    "ReportEntry",
    "Gate",
    "Report",
    "TrainingRecord",
    "verified_path",
    "vouched",
]
