"""One door for optional packages: a missing one becomes a MissingDependencyError that names the extra."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from edgeship.errors import MissingDependencyError

# module name -> (pip distribution, edgeship extra that brings it)
_EXTRAS = {
    "tensorflow": ("tensorflow", "train"),
    "tf_keras": ("tf-keras", "train"),
    "tensorflow_model_optimization": ("tensorflow-model-optimization", "train"),
    "sklearn": ("scikit-learn", "train"),
    "onnx": ("onnx", "convert"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "tf2onnx": ("tf2onnx", "convert"),
    "coremltools": ("coremltools", "convert"),
    "ai_edge_litert": ("ai-edge-litert", "litert"),
    "click": ("click", "cli"),
    "rich": ("rich", "cli"),
    "matplotlib": ("matplotlib", "report"),
    "PIL": ("pillow", "report"),
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        dist, extra = _EXTRAS.get(top, (top, "all"))
        why = f" to {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"edgeship needs the package '{dist}'{why}, and it is not installed "
            f"(import of '{module}' failed: {exc}). Install it with: pip install 'edgeship[{extra}]'"
        ) from exc


def tensorflow() -> ModuleType:
    """TensorFlow with Keras 2 (tf_keras) selected: tfmot, tf2onnx and coremltools need Keras 2."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "train or convert models")


def keras() -> ModuleType:
    """The tf_keras module (Keras 2), imported after TensorFlow is configured."""
    tensorflow()
    return require("tf_keras", "build Keras 2 models")
