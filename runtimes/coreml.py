"""Core ML artifacts (.mlpackage): Apple's runtime through coremltools, which exists on macOS only."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgeship._deps import require
from edgeship.errors import BadArtifactError, RuntimeFailure, UnsupportedModelError
from edgeship.records import TensorSpec
from edgeship.runtimes._session import Session

NEEDS_MACOS = "not run: needs macOS"  # Core ML's runtime exists only on Apple platforms


def available() -> tuple[bool, str]:
    """Whether .mlpackage files can run here, and if not, why."""
    if platform.system() != "Darwin":
        return False, NEEDS_MACOS
    return True, ""


def _spec(feature: Any) -> TensorSpec:
    array = feature.type.multiArrayType
    dtypes = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}
    return TensorSpec(name=feature.name, shape=tuple(int(d) for d in array.shape), dtype=dtypes.get(array.dataType, "float32"))


class CoreMLSession(Session):
    runtime = "coreml"
    dynamic_batch = False

    def __init__(self, path: Path, **_: Any) -> None:
        ok, why = available()
        if not ok:
            raise UnsupportedModelError(f"cannot run {path.name} on {platform.system()}: {why}")
        ct = require("coremltools", "run Core ML models")
        self.runtime_version = ct.__version__
        try:
            self._model = ct.models.MLModel(str(path))
        except Exception as exc:
            raise BadArtifactError(f"{path} could not be loaded by Core ML: {exc}") from exc
        desc = self._model.get_spec().description
        super().__init__(path, [_spec(f) for f in desc.input], [_spec(f) for f in desc.output])

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            result = self._model.predict(dict(zip(self._input_names, arrays)))
        except Exception as exc:
            raise RuntimeFailure(f"Core ML failed to run {self.path.name}: {exc}") from exc
        return [np.asarray(result[name]) for name in self._output_names]


def load(path: Path, **options: Any) -> CoreMLSession:
    return CoreMLSession(path, **options)
