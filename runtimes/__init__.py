"""The thin runtime: load any artifact with numpy and one interpreter, and benchmark it.

    >>> from edgeship.runtimes import load
    >>> session = load("model.int8.tflite", threads=1)                  # doctest: +SKIP
    >>> session.inputs[0].shape, session.runtime                         # doctest: +SKIP

This package imports no TensorFlow: a device install is ``pip install edgeship[litert]`` (or
``[onnx]``). Each backend is one module, imported on first use. Beside the backends:
``benchmark`` (benchmark_model-style statistics, interleaved comparison, child-process isolation),
``targets`` (run a validation bundle here, over ssh or over adb) and ``_device_check`` (what a
target runs).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from edgeship.errors import BadArtifactError, BadInputError
from edgeship.runtimes._session import Session

__all__ = ["load", "Session", "RUNTIMES", "runtime_for", "can_run", "preload"]

# suffix -> backend module (edgeship.runtimes.<name>); adding a runtime is one module and one line.
RUNTIMES: dict[str, str] = {
    ".tflite": "litert",
    ".onnx": "onnxruntime",
    ".mlpackage": "coreml",
}


def runtime_for(path: str | os.PathLike) -> str:
    """The backend module name that runs ``path``, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in RUNTIMES:
        raise BadInputError(
            f"no runtime for '{Path(path).name}': edgeship runs {sorted(RUNTIMES)} files; received suffix {suffix!r}"
        )
    return RUNTIMES[suffix]


def _backend(path: str | os.PathLike) -> Any:
    return importlib.import_module(f"edgeship.runtimes.{runtime_for(path)}")


def can_run(path: str | os.PathLike) -> tuple[bool, str]:
    """Whether this host can run ``path``'s format, and if not, a short reason for reports."""
    backend = _backend(path)
    check = getattr(backend, "available", None)
    return check() if check else (True, "")


def preload(path: str | os.PathLike) -> None:
    """Import the interpreter library that runs ``path`` now, so a later ``load`` times only the
    model (benchmarks call this before timing ``init_ms``)."""
    importer = getattr(_backend(path), "import_runtime", None)
    if importer is not None:
        importer()


def load(path: str | os.PathLike, *, threads: int | None = None, **options: Any) -> Session:
    """Load an artifact into a Session.

    ``threads`` sets the interpreter's intra-op threads; backend options (ONNX Runtime's
    ``providers``, ``optimization``, ``profile``) pass through.
    """
    path = Path(path)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise BadInputError(f"threads must be a positive integer; received {threads!r}")
    backend = _backend(path)  # an unknown suffix is refused first: it says what edgeship runs
    if not path.exists():
        raise BadArtifactError(f"no model file at {path}")
    if path.is_dir() != (path.suffix.lower() == ".mlpackage"):
        kind = "a folder" if path.is_dir() else "a file"
        raise BadArtifactError(f"{path} is {kind}, which is not what a '{path.suffix}' model is")
    return backend.load(path, threads=threads, **options)
