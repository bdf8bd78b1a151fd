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
import inspect
import os
from pathlib import Path
from typing import Any, Sequence

from edgeship.errors import BadArtifactError, BadInputError
from edgeship.runtimes._session import Session

__all__ = ["load", "Session", "RUNTIMES", "runtime_for", "can_run", "preload"]

# suffix -> backend module; adding a runtime is one module and one line.
RUNTIMES: dict[str, str] = {
    ".tflite": "edgeship.runtimes.litert",
    ".onnx": "edgeship.runtimes.onnxruntime",
    ".mlpackage": "edgeship.runtimes.coreml",
}


def _module_for(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in RUNTIMES:
        raise BadInputError(
            f"no runtime for '{Path(path).name}': edgeship runs {sorted(RUNTIMES)} files; received suffix {suffix!r}"
        )
    return RUNTIMES[suffix]


def runtime_for(path: str | os.PathLike) -> str:
    """The name of the backend that runs ``path`` (litert, onnxruntime, coreml), chosen by its suffix."""
    return _module_for(path).rpartition(".")[2]


def _backend(path: str | os.PathLike) -> Any:
    return importlib.import_module(_module_for(path))


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


def load(
    path: str | os.PathLike,
    *,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    optimization: str | None = None,
    profile: bool = False,
    reference: bool = False,
) -> Session:
    """Load an artifact into a Session; ``with load(path) as session:`` releases it on exit.

        >>> with load("model.int8.tflite", threads=1) as session:          # doctest: +SKIP
        ...     probs = session.predict(x)

    ``threads`` sets the interpreter's intra-op threads. ``.onnx`` only: ``providers`` (ONNX
    Runtime execution providers, default CPU), ``optimization`` (graph optimization level:
    disable, basic, extended, all) and ``profile`` (ONNX Runtime's JSON trace). ``.mlpackage`` only:
    ``reference`` runs edgeship's numpy evaluator even where Apple's Core ML runtime exists. An
    option that does not apply to the file's format is refused.
    """
    path = Path(path)
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise BadInputError(f"threads must be a positive integer; received {threads!r}")
    backend = _backend(path)  # an unknown suffix is refused first: it says what edgeship runs
    if not path.exists():
        raise BadArtifactError(f"no model file at {path}")
    if path.is_dir() != (path.suffix.lower() == ".mlpackage"):
        kind = "a folder" if path.is_dir() else "a file"
        raise BadArtifactError(f"{path} is {kind}, which is not what a '{path.suffix}' model is")
    given = {"providers": list(providers) if providers else None, "optimization": optimization,
             "profile": profile or None, "reference": reference or None}
    options = {name: value for name, value in given.items() if value is not None}
    accepted = inspect.signature(backend.load).parameters
    wrong = sorted(name for name in options if name not in accepted)
    if wrong:
        raise BadInputError(f"{', '.join(wrong)} do(es) not apply to '{path.suffix}' models; received {wrong} "
                            f"for {path.name}")
    return backend.load(path, threads=threads, **options)
