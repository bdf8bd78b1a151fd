"""Turning a written model file into its Artifact record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship import _io
from edgeship.records import Artifact, TensorSpec

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel


def file_name(source: SourceModel, precision: str, suffix: str) -> str:
    """``<model>.<precision><suffix>``, e.g. ``tiny_cnn.int8.tflite``."""
    return f"{source.name}.{precision}{suffix}"


def make(
    path: Path,
    out: Path,
    *,
    final: Path | None = None,
    fmt: str,
    precision: str,
    source: SourceModel,
    settings: dict[str, Any],
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
) -> Artifact:
    """The Artifact of the model written at ``path``, recorded under ``final`` (its name once the
    staged file is renamed), relative to ``out``. Specs are read back through the thin runtime
    unless the caller supplies them."""
    if inputs is None or outputs is None:
        from edgeship.runtimes import load

        session = load(path)
        inputs, outputs = session.inputs, session.outputs
    return Artifact(
        name=f"{fmt}:{precision}",
        path=(final or path).relative_to(out).as_posix(),
        format=fmt,
        precision=precision,
        sha256=_io.sha256_path(path),
        size_bytes=_io.size_bytes(path),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        source=source.origin,
        settings=settings,
    )
