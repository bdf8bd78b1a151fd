"""One door for optional packages: a missing one becomes a MissingDependencyError that names the extra."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from types import ModuleType
from typing import Iterator

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
    "ai_edge_quantizer": ("ai-edge-quantizer", "convert"),
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


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what native libraries write to file descriptor 2 (TensorFlow's and LiteRT's C++
    start-up logs), when the CLI asked for it (EDGESHIP_QUIET_NATIVE=1); Python errors still raise."""
    if os.environ.get("EDGESHIP_QUIET_NATIVE") != "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensorflow() -> ModuleType:
    """TensorFlow with Keras 2 (tf_keras) selected: tfmot, tf2onnx and coremltools need Keras 2."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with quiet_native_stderr():
        return require("tensorflow", "train or convert models")


def keras() -> ModuleType:
    """The tf_keras module (Keras 2), imported after TensorFlow is configured."""
    tensorflow()
    return require("tf_keras", "build Keras 2 models")
