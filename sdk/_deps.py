"""One door for optional packages: a missing one becomes a MissingDependencyError that names the extra."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
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
    "ai_edge_quantizer": ("ai-edge-quantizer", "convert"),
    "torch": ("torch", "torch"),
    "torchao": ("torchao", "torch"),
    "litert_torch": ("litert-torch", "torch"),
    "onnxscript": ("onnxscript", "torch"),
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


#: what a child edgeship process reads to be as quiet as its parent (the local device check, which may
#: run another interpreter's edgeship): set in that child's own environment only, never in os.environ
QUIET_CHILD_ENV = "EDGESHIP_QUIET_NATIVE"
#: whether native output is silenced now; a module value rather than a ContextVar because fd 2
#: belongs to the whole process, and threads edgeship starts (``run_targets``) follow the caller
_quiet = False


@contextlib.contextmanager
def quiet_native(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``quiet_native_stderr`` silences native libraries; off by default.

        >>> with quiet_native():                          # doctest: +SKIP
        ...     edgeship.load("model.int8.tflite")          # no LiteRT start-up log on stderr

    The CLI turns it on for each command (not with ``--debug``); a library caller who never
    enters it sees everything native libraries print. Nothing outside this module changes."""
    global _quiet
    saved, _quiet = _quiet, bool(enabled)
    try:
        yield
    finally:
        _quiet = saved


def native_is_quiet() -> bool:
    """True inside ``quiet_native()``: what a child process edgeship starts is told to do too."""
    return _quiet


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what native libraries write to file descriptor 2 (TensorFlow's and LiteRT's C++
    start-up logs) for the block, inside ``quiet_native()``; Python errors still raise."""
    if not _quiet:
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


@contextlib.contextmanager
def progress_bars_off() -> Iterator[None]:
    """The progress bars third-party converters draw on ``sys.stderr`` (coremltools' passes,
    ai-edge-quantizer's calibration) kept off the caller's terminal for the block. TQDM_DISABLE,
    set before tqdm is imported, stops them at the source; where the caller imported torch (and
    tqdm with it) first, tqdm has read its environment already, and only this holds them."""
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        yield


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
