"""The thin runtime: load any artifact with numpy and one interpreter, and benchmark it.

    >>> from edgeship.runtimes import load
    >>> session = load("model.int8.tflite", threads=1)                  # doctest: +SKIP
    >>> session.inputs[0].shape, session.runtime                         # doctest: +SKIP
    >>> load("model.int8.tflite", runtime="litert-compiled", accelerator="cpu")  # doctest: +SKIP

This package imports no TensorFlow: a device install is ``pip install edgeship[litert]`` (or
``[onnx]``). Each backend is one module (the ``RuntimeBackend`` contract), imported on first use;
a file's format (``edgeship.formats``, by suffix) names the backends that run it, its default
first. Beside the backends: ``benchmark`` (benchmark_model-style statistics, interleaved
comparison, child-process isolation), ``targets`` (the ``Target`` contract and ``TARGETS``: run a
validation bundle here, over ssh or over adb) and ``_device_check`` (what a target runs).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeship.errors import BadArtifactError, BadInputError
from edgeship.formats import FORMATS, Runtime, for_path
from edgeship.runtimes._session import Session

__all__ = ["load", "Session", "runtime_for", "runtimes_for", "can_run", "timing", "preload"]


def _runtimes_of(path: str | os.PathLike) -> tuple[Runtime, ...]:
    """The runtimes of ``path``'s format (``edgeship.formats``), its default first."""
    fmt = for_path(path)
    if fmt is None:
        known = sorted(f.suffix for f in FORMATS.all())
        raise BadInputError(
            f"no runtime for '{Path(path).name}': edgeship runs {known} files; received suffix "
            f"{Path(path).suffix.lower()!r}"
        )
    return fmt.runtimes


def runtimes_for(path: str | os.PathLike) -> list[str]:
    """The backends that can run ``path``, its default first (``['litert', 'litert-compiled']``)."""
    return [r.name for r in _runtimes_of(path)]


def _runtime(path: str | os.PathLike, runtime: str | None = None) -> Runtime:
    found = _runtimes_of(path)
    chosen = next((r for r in found if r.name == runtime), None) if runtime else found[0]
    if chosen is None:
        raise BadInputError(
            f"runtime {runtime!r} does not run '{Path(path).suffix.lower()}' files; {Path(path).name} "
            f"runs with {runtimes_for(path)}; received runtime={runtime!r}"
        )
    return chosen


def runtime_for(path: str | os.PathLike) -> str:
    """The name of the backend that runs ``path`` by default (litert, onnxruntime, coreml), chosen by its suffix."""
    return runtimes_for(path)[0]


def _backend(path: str | os.PathLike, runtime: str | None = None) -> Any:
    return importlib.import_module(_runtime(path, runtime).module)


def can_run(path: str | os.PathLike) -> tuple[bool, str]:
    """Whether this host can run ``path``'s format, and if not, a short reason for reports: a file no
    runtime takes is a no with its reason, not an error (a folder may hold one beside the others)."""
    if for_path(path) is None:
        known = ", ".join(sorted(f.suffix for f in FORMATS.all()))
        return False, f"no runtime runs '{Path(path).suffix}' files (edgeship runs {known})"
    backend = _backend(path)
    check = getattr(backend, "available", None)
    return check() if check else (True, "")


def timing(path: str | os.PathLike) -> tuple[bool, str]:
    """Whether a latency measured here for ``path``'s format is its runtime's, and if not, why (a
    backend that only evaluates the model here says so with ``timing()``)."""
    check = getattr(_backend(path), "timing", None)
    return check() if check else (True, "")


def preload(path: str | os.PathLike, runtime: str | None = None) -> None:
    """Import the interpreter library that runs ``path`` (with backend ``runtime``) now, so a later
    ``load`` times only the model (benchmarks call this before timing ``init_ms``)."""
    importer = getattr(_backend(path, runtime), "import_runtime", None)
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
    runtime: str | None = None,
    accelerator: str | None = None,
) -> Session:
    """Load an artifact into a Session; ``with load(path) as session:`` releases it on exit.

        >>> with load("model.int8.tflite", threads=1) as session:          # doctest: +SKIP
        ...     probs = session.predict(x)

    ``threads`` sets the interpreter's intra-op threads. ``runtime`` chooses a backend other than
    the suffix's default (``runtimes_for(path)`` lists them): ``"litert-compiled"`` runs a
    ``.tflite`` through LiteRT's CompiledModel, on the ``accelerator`` given (cpu, gpu, npu; the one
    used is ``session.accelerator``). ``.onnx`` only: ``providers`` (ONNX Runtime execution
    providers, default CPU), ``optimization`` (graph optimization level: disable, basic, extended,
    all) and ``profile`` (ONNX Runtime's JSON trace). ``.mlpackage`` only: ``reference`` runs
    edgeship's numpy evaluator even where Apple's Core ML runtime exists. An option that does not
    apply to the chosen backend is refused.
    """
    path = Path(path)
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise BadInputError(f"threads must be a positive integer; received {threads!r}")
    backend = _backend(path, runtime)  # an unknown suffix or runtime is refused first: it says what runs
    if not path.exists():
        raise BadArtifactError(f"no model file at {path}")
    if path.is_dir() != bool(getattr(for_path(path), "folder", False)):
        kind = "a folder" if path.is_dir() else "a file"
        raise BadArtifactError(f"{path} is {kind}, which is not what a '{path.suffix}' model is")
    given = {
        "providers": list(providers) if providers else None,
        "optimization": optimization,
        "profile": profile or None,
        "reference": reference or None,
        "accelerator": accelerator,
    }
    options = {name: value for name, value in given.items() if value is not None}
    accepted = inspect.signature(backend.load).parameters
    wrong = sorted(name for name in options if name not in accepted)
    if wrong:
        name = runtime or runtime_for(path)
        raise BadInputError(
            f"{', '.join(wrong)} do(es) not apply to '{path.suffix}' models run by {name}; "
            f"received {wrong} for {path.name}" + _who_takes(path, wrong)
        )
    return backend.load(path, threads=threads, **options)


def _who_takes(path: Path, wrong: list[str]) -> str:
    """Which other runtime of the file takes an option refused (``; accelerators need runtime='litert-compiled'``)."""
    said = []
    for name in wrong:
        takers = [
            r.name
            for r in _runtimes_of(path)
            if name in inspect.signature(importlib.import_module(r.module).load).parameters
        ]
        if takers:
            said.append(
                f"; {name}s need runtime={takers[0]!r}"
                if name == "accelerator"
                else f"; {name} needs runtime={takers[0]!r}"
            )
    return "".join(said)
