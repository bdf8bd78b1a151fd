"""The format contract: what edgeship needs to know of a model file format, in one record per format.

    >>> from edgeship.formats import FORMATS, for_path
    >>> for_path("model.int8.tflite").name, [r.name for r in FORMATS.get("tflite").runtimes]
    ('tflite', ['litert', 'litert-compiled'])

A :class:`Format` names its parts by import path, so reading the record imports nothing heavy (the
runtime side reads it on a device with only numpy): the **converter** module makes and describes
files (:class:`Converter`), its **runtimes** load them (``edgeship.runtimes``), and an optional
**doctor** module probes an int8 file layer by layer (:class:`DoctorProbe`). Everything else that
differs between formats — which precisions compute in integers, how far a device may drift, the
convert options that apply, the report's colour — is a field of the record, so no code outside a
format's own modules asks which format it holds.

Adding a format (``docs/architecture.md`` has the recipe): write its converter and runtime
modules, describe them in a ``Format``, and add one line: to ``BUILTIN`` below for a format in this
package, or an entry point for a plugin distribution::

    [project.entry-points."edgeship.formats"]
    npz = "my_plugin:FORMAT"
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from edgeship._plugins import Registry

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset
    from edgeship.doctor.layers import Probe
    from edgeship.records import Artifact
    from edgeship.runtimes._session import Session

__all__ = [
    "Format",
    "Runtime",
    "Option",
    "FLOAT_DRIFT",
    "Converter",
    "RuntimeBackend",
    "DoctorProbe",
    "FORMATS",
    "for_path",
    "for_suffix",
]


#: float precisions on another device: fp32 on another CPU architecture sums in another order (NEON vs
#: AVX, FMA or not: a few hundred float ulps of the magnitude); fp16 may run in fp16 on a GPU delegate.
#: Core ML runs on a GPU or the Neural Engine in fp16 whatever the precision asked for (its own entry;
#: macOS's Core ML against edgeship's evaluator is checked to 2e-2 on softmax outputs).
FLOAT_DRIFT = {"fp32": (1e-4, "another CPU architecture's summation order"), "fp16": (2e-2, "fp16 on a GPU delegate")}


@dataclass(frozen=True)
class Runtime:
    """A backend that loads files of a format into a :class:`~edgeship.runtimes.Session`.

    ``module`` implements :class:`RuntimeBackend`; ``distribution`` is the pip package a device
    installs for it (None where there is none to install, e.g. a numpy-only evaluator); ``browser``
    names the build of the same runtime for web pages (the browser target's ``runner.js`` kinds:
    ``litert.js``, ``onnxruntime-web``), None where there is none."""

    name: str
    module: str
    distribution: str | None = None
    browser: str | None = None


@dataclass(frozen=True)
class Option:
    """A convert option a format takes: the keyword its converter accepts and the CLI flag for it.

    ``kind`` is ``"int"``, ``"flag"`` (off unless given), ``"switch"`` (``--x/--no-x``, unset
    unless given) or a tuple of the values allowed."""

    name: str
    kind: str | tuple[str, ...]
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Format:
    """One model file format and the modules that own it (see the module docstring).

    ``suffix`` is the file's (``folder``: the artifact is a directory, e.g. ``.mlpackage``).
    ``runtimes`` run it, the default first. ``doctor`` names the module that probes its int8
    artifacts, or None. ``weights_only``: its compressed precisions change weights only and
    compute in float (no calibration, ranges or QAT to try). ``calibration_methods``: the methods
    its converter's ``calibrate_method`` option takes, the default first. ``device_drift``: per
    precision (``"*"``: every precision), how far a device's outputs may stray from this host's, as
    a fraction of their magnitude, and why; a precision not listed computes in integers and is held
    to one int8 step. ``options``: the convert options that apply (the CLI offers their flags).
    """

    name: str
    suffix: str
    label: str
    converter: str
    runtimes: tuple[Runtime, ...]
    doctor: str | None = None
    folder: bool = False
    weights_only: bool = False
    calibration_methods: tuple[str, ...] = ()
    device_drift: dict[str, tuple[float, str]] = field(default_factory=lambda: dict(FLOAT_DRIFT))
    options: tuple[Option, ...] = ()
    color: str = "#6b7280"

    def converter_module(self) -> Converter:
        return cast("Converter", importlib.import_module(self.converter))

    def doctor_module(self) -> DoctorProbe | None:
        return cast("DoctorProbe", importlib.import_module(self.doctor)) if self.doctor else None

    def drift(self, precision: str) -> tuple[float, str] | None:
        """(fraction, why) for a float-computing ``precision``; None for one computing in integers."""
        return self.device_drift.get("*") or self.device_drift.get(precision)


class Converter(Protocol):
    """What a format's converter module provides (``edgeship.converters.tflite`` is one)."""

    #: precision -> one-line description; the first is the default
    PRECISIONS: dict[str, str]
    #: float precision -> how far its outputs may be from the float model's before convert records the file
    CHECK_TOLERANCE: dict[str, float]

    def convert(
        self, source: SourceModel, out: Path, *, precision: str, calibration: Any = None, **options: Any
    ) -> Artifact:
        """Write ``source`` at ``precision`` under ``out`` (staged, then renamed) and describe it."""

    def to_bytes(
        self, source: SourceModel, precision: str, calibration: Any = None, **options: Any
    ) -> tuple[bytes | Path, dict[str, Any]]:
        """The converted model without writing it (the doctor's rebuilds), with its settings."""

    def embed_metadata(self, path: Path, text: str) -> None:
        """Store ``text`` (JSON) in the file at ``path``, rewritten atomically."""

    def read_metadata(self, path: Path) -> str | None:
        """The text ``embed_metadata`` stored, or None."""

    def rebuild_options(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The converter options an artifact's recorded ``settings`` were made with (to rebuild it)."""


class RuntimeBackend(Protocol):
    """What a runtime module provides (``edgeship.runtimes.litert`` is one); ``available`` and
    ``import_runtime`` are optional."""

    def load(self, path: Path, *, threads: int | None = None) -> Session:
        """Load ``path``; backend-specific keyword options follow ``threads``."""


class DoctorProbe(Protocol):
    """What a format's doctor module provides (``edgeship.doctor.tflite`` is one)."""

    #: the precisions the doctor examines
    DOCTORED: frozenset[str]

    def probe(self, source: SourceModel, artifact: Artifact, path: Path, x: Sequence[Any], dataset: Dataset) -> Probe:
        """Run the float and the quantized model side by side and score every layer."""

    def compute_ops(self, path: Path, known: Any) -> tuple[list[tuple[str, str, bool]], Callable[[str, Any], str]]:
        """The compute ops of a file ((type, name, runs in float)) and the function naming their layer."""


_CONVERT = Option(
    "calibration_samples",
    "int",
    "Samples for full-integer calibration, from the training split (default 200; more is slower).",
)
_EQUALIZE = Option(
    "equalize",
    "flag",
    "int8/dynamic: cross-layer equalization first (rescales channel ranges "
    "between consecutive conv/dense layers; the float function is unchanged). Keras models only.",
)

BUILTIN: dict[str, Format] = {
    "tflite": Format(
        name="tflite",
        suffix=".tflite",
        label="TFLite",
        converter="edgeship.converters.tflite",
        runtimes=(
            Runtime("litert", "edgeship.runtimes.litert", "ai-edge-litert", browser="litert.js"),
            Runtime("litert-compiled", "edgeship.runtimes.litert_compiled", "ai-edge-litert"),
        ),
        doctor="edgeship.doctor.tflite",
        options=(
            _CONVERT,
            _EQUALIZE,
            Option(
                "layout",
                ("nchw", "nhwc"),
                "PyTorch models: the image input layout of the .tflite (nhwc: a phone app feeds camera frames "
                "without a transpose; the transpose is built into the file). Default: the model's own (NCHW).",
            ),
        ),
        color="#f59e0b",
    ),
    "onnx": Format(
        name="onnx",
        suffix=".onnx",
        label="ONNX",
        converter="edgeship.converters.onnx",
        runtimes=(Runtime("onnxruntime", "edgeship.runtimes.onnxruntime", "onnxruntime", browser="onnxruntime-web"),),
        doctor="edgeship.doctor.onnx",
        calibration_methods=("minmax", "entropy", "percentile"),
        options=(
            _CONVERT,
            Option(
                "calibrate_method",
                ("minmax", "entropy", "percentile"),
                "ONNX Runtime static quantization calibration (default minmax).",
            ),
            Option(
                "reduce_range", "switch", "ONNX int8: 7-bit weights (default: decided from this CPU's VNNI support)."
            ),
            Option("opset", "int", "ONNX opset (<= 18; default 17)."),
            _EQUALIZE,
        ),
        color="#2563eb",
    ),
    "coreml": Format(
        name="coreml",
        suffix=".mlpackage",
        label="Core ML",
        converter="edgeship.converters.coreml",
        runtimes=(Runtime("coreml", "edgeship.runtimes.coreml"),),
        doctor="edgeship.doctor.coreml",
        folder=True,
        weights_only=True,
        device_drift={"*": (2e-2, "fp16 on a GPU or the Neural Engine")},
        color="#10b981",
    ),
}

FORMATS: Registry[Format] = Registry("edgeship.formats", dict(BUILTIN))


def for_suffix(suffix: str) -> Format | None:
    """The format whose files end in ``suffix`` (any case), or None."""
    suffix = suffix.lower()
    return next((f for f in FORMATS.all() if f.suffix == suffix), None)


def for_path(path: str | os.PathLike) -> Format | None:
    """The format of the file or folder at ``path``, by its suffix, or None."""
    return for_suffix(Path(path).suffix)
