"""What a written int8 artifact holds, read from the file: which compute ops run in float.

The doctor reports a recovered artifact's float layers from here, not from what it asked the
quantizer for: a float layer can pull its neighbours into float (a reader of a float tensor that
the quantizer leaves unquantized), and a name that matches nothing keeps nothing float.
Each format's doctor module reads its own files (``compute_ops``): ``.tflite`` files with LiteRT's
flatbuffer schema, ``.onnx`` files with ``onnx``, ``.mlpackage`` folders with edgeship's own ML
Program reader (a Core ML op counts as float when its constant weights are not decompressed from
compressed ones). Ops that only move data (reshape, transpose, concatenation, …) and the
quantize/dequantize ops themselves are not compute ops and are not counted.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from edgeship.errors import UnsupportedModelError
from edgeship.formats import for_path

__all__ = ["Precisions", "read"]


@dataclass(frozen=True)
class Precisions:
    """Compute ops of one artifact file: how many, which run in float, and their Keras layers."""

    compute_ops: int
    float_ops: tuple[str, ...]  # "OP_TYPE output-tensor" of each float compute op, in graph order
    float_layers: tuple[str, ...]  # the Keras layers those ops belong to, sorted


def read(path: Path, known: Collection[str] | None = None) -> Precisions:
    """The compute ops of the artifact at ``path`` and which run in float (for a format whose
    compression is of weights only: which keep uncompressed weights), read by its format's doctor
    module (``compute_ops``)."""
    fmt = for_path(path)
    probe = fmt.doctor_module() if fmt is not None else None
    if probe is None:
        raise UnsupportedModelError(f"the doctor reads no '{path.suffix}' files; received {path.name}")
    ops, namer = probe.compute_ops(path, known)
    floats = [(op, name) for op, name, is_float in ops if is_float]
    return Precisions(
        compute_ops=len(ops),
        float_ops=tuple(f"{op} {name}" for op, name in floats),
        float_layers=tuple(sorted({namer(name, known) for _, name in floats})),
    )
