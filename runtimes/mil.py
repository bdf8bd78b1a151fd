"""Core ML's ML Program read from a saved .mlpackage without coremltools: what the reference
evaluator (``edgeship.runtimes.coreml``) runs on hosts without Apple's runtime.

The package is parsed here — the protobuf wire format of ``model.mlmodel`` and the MIL blob
format of ``weights/weight.bin`` — with numpy and the standard library alone: importing
coremltools imports TensorFlow wherever it is installed (about 10 s here), and a device may have
neither.
``tests/test_coreml_eval.py`` checks this reader against coremltools' own loader
(``coremltools.converters.mil.frontend.milproto.load``; docs/stack-notes.md fact 11).

    >>> package = read("model.pal4.mlpackage")                              # doctest: +SKIP
    >>> package.inputs, [op.type for op in package.program.ops][:3]         # doctest: +SKIP

Why this file is long (about 440 lines): it is one reader of one format, protobuf messages to MIL
values to a Program, and each step needs the one before; split, the steps would import each other.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeship import _io
from edgeship.errors import BadArtifactError, EdgeshipError, UnsupportedModelError
from edgeship.records import TensorSpec
from edgeship.runtimes._mil_ops import unpack_bits
from edgeship.runtimes._protobuf import _bytes, _fields, _map, _str, _varints

__all__ = ["read", "Package", "Program", "Op", "TensorType", "Literal", "weighted_ops", "COMPUTE"]

# MIL DataType code -> (numpy dtype the evaluator holds it in, bits when packed below a byte)
_DTYPES: dict[int, tuple[str, int]] = {
    1: ("bool", 0),
    2: ("str", 0),
    10: ("float16", 0),
    11: ("float32", 0),
    12: ("float64", 0),
    21: ("int8", 0),
    22: ("int16", 0),
    23: ("int32", 0),
    24: ("int64", 0),
    25: ("int8", 4),
    31: ("uint8", 0),
    32: ("uint16", 0),
    33: ("uint32", 0),
    34: ("uint64", 0),
    35: ("uint8", 4),
    36: ("uint8", 2),
    37: ("uint8", 1),
    38: ("uint8", 6),
    39: ("uint8", 3),
}
_UNSUPPORTED_DTYPES = {13: "bfloat16", 40: "float8e4m3fn", 41: "float8e5m2"}
# Core ML ArrayFeatureType.ArrayDataType -> numpy
FEATURE_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}
_BLOB_SENTINEL = 0xDEADBEEF
_MAX_ELEMENTS = 1 << 31  # a declared input or a tensor dimension beyond this is a corrupt or hostile file
_MAX_MANIFEST_BYTES = 1 << 20  # a real Manifest.json is under 1 KB


# -- types and values ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorType:
    """A MIL tensor type: numpy dtype, shape (None for a flexible dimension), bits if packed."""

    dtype: str
    shape: tuple[int | None, ...] | None  # None: not a tensor, or of unknown rank
    bits: int = 0


class Literal(NamedTuple):
    """A value written into the program (an op attribute or an inline argument)."""

    value: Any


def _tensor_type(buf: memoryview) -> TensorType:
    value_type = _fields(buf)
    if 1 not in value_type:  # list, tuple, dictionary or state
        return TensorType("object", None)
    fields = _fields(value_type[1][0])
    code = fields.get(1, [0])[0]
    if not isinstance(code, int) or code == 0:
        raise BadArtifactError(
            f"a tensor type in the program has no data type (received {code!r:.60}): the package is corrupt"
        )
    if code not in _DTYPES:
        name = _UNSUPPORTED_DTYPES.get(code, f"code {code}")
        raise UnsupportedModelError(
            f"the program uses data type {name}, which the reference evaluator does not support"
        )
    dims: list[int | None] = []
    for dim in fields.get(3, []):
        kind = _fields(dim)
        dims.append(int(_fields(kind[1][0]).get(1, [0])[0]) if 1 in kind else None)
    rank = _varints(fields.get(2, [0]))[0]
    dtype, bits = _DTYPES[code]
    return TensorType(dtype, tuple(dims) if len(dims) == rank else None, bits)


def _from_bytes(raw: Any, ttype: TensorType) -> np.ndarray:
    if ttype.shape is None or None in ttype.shape:
        raise BadArtifactError(f"a stored tensor has no fixed shape ({ttype})")
    shape = tuple(int(d) for d in ttype.shape if d is not None)
    count = math.prod(shape)
    if ttype.bits:
        values = unpack_bits(np.frombuffer(raw, np.uint8), ttype.bits, count, signed=ttype.dtype == "int8")
        return values.reshape(shape)
    dtype = np.dtype(ttype.dtype).newbyteorder("<")
    if len(raw) < count * dtype.itemsize:
        raise BadArtifactError(f"a stored {ttype.dtype} tensor of shape {ttype.shape} holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype, count).astype(ttype.dtype).reshape(shape)


def _immediate(buf: memoryview, ttype: TensorType) -> Any:
    tensor = _fields(buf)
    shape = tuple(int(d) for d in ttype.shape if d is not None) if ttype.shape is not None else ()
    if len(shape) != len(ttype.shape or ()):
        raise BadArtifactError(f"an immediate value has no fixed shape ({ttype})")
    for number in range(1, 8):  # floats, ints, bools, strings, longInts, doubles, bytes
        if number not in tensor:
            continue
        items = _fields(tensor[number][0]).get(1, [])
        if number == 4:
            strings = [_str(s) for s in items]
            return strings[0] if shape == () else np.array(strings).reshape(shape)
        if number == 7:
            return _from_bytes(_bytes(items[0]) if items else b"", ttype)
        if number in (1, 6):
            array = np.frombuffer(b"".join(_bytes(v) for v in items), "<f4" if number == 1 else "<f8")
        else:
            array = np.array(_varints(items), np.int64)
        return array.astype(ttype.dtype).reshape(shape)
    if math.prod(shape):
        raise BadArtifactError(f"an immediate value of shape {shape} holds no data")
    return np.zeros(shape, ttype.dtype)


class _Weights:
    """Reads tensors from the package's blob files: a 64-byte header per tensor, then its data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, memoryview] = {}

    def read(self, file_name: str, offset: int, ttype: TensorType) -> np.ndarray:
        data = self._file(file_name)
        if offset + 64 > len(data):
            raise BadArtifactError(f"{file_name}: a weight at offset {offset} lies past the end ({len(data)} bytes)")
        sentinel, _, size, start = struct.unpack_from("<IIQQ", data, offset)
        if sentinel != _BLOB_SENTINEL or start + size > len(data):
            raise BadArtifactError(f"{file_name}: no valid weight record at offset {offset}; the package is corrupt")
        return _from_bytes(data[start : start + size], ttype)

    def _file(self, name: str) -> memoryview:
        if name not in self._files:
            path = _inside(self.folder, name.removeprefix("@model_path/"), f"the program's weight file '{name:.200}'")
            self._files[name] = memoryview(path.read_bytes())
        return self._files[name]


def _inside(folder: Path, relative: Any, what: str, *, folder_ok: bool = False) -> Path:
    """``folder / relative`` resolved, if it is a file (or with ``folder_ok`` a folder) inside ``folder``:
    neither '..', an absolute path nor a symbolic link may lead out of it (or loop), and nothing
    outside is opened to find out."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise BadArtifactError(
            f"{what} has the path {relative!r:.200}, which is not a path inside the package; "
            "the package is corrupt: convert the model again"
        )
    try:
        path = (folder / relative).resolve()
        inside = path.is_relative_to(folder.resolve()) and (path.is_file() or folder_ok and path.is_dir())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (Python < 3.13)
        raise BadArtifactError(
            f"{what} cannot be found inside the package ({type(exc).__name__}: {exc!s:.200}); "
            "the package is corrupt: convert the model again"
        ) from exc
    if not inside:
        raise BadArtifactError(
            f"{what} is not a file inside {folder} (received '{relative:.200}'); paths and "
            "symbolic links that leave the package are refused. Is it a complete .mlpackage? "
            "Convert the model again or copy the whole package"
        )
    return path


def _value(buf: memoryview, weights: _Weights) -> Any:
    fields = _fields(buf)
    ttype = _tensor_type(fields[2][0]) if 2 in fields else TensorType("object", None)
    if ttype.dtype == "object":
        raise UnsupportedModelError(
            "the program holds a list, tuple or dictionary value; the reference evaluator takes tensors"
        )
    if 3 in fields:
        immediate = _fields(fields[3][0])
        if 1 not in immediate:
            raise UnsupportedModelError("the program holds a non-tensor immediate value")
        return _immediate(immediate[1][0], ttype)
    if 5 in fields:
        blob = _fields(fields[5][0])
        return weights.read(_str(blob[1][0]), blob.get(2, [0])[0], ttype)
    raise BadArtifactError("a value in the program has neither data nor a weight-file reference")


# -- the program ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One operation: parameters bound to names of earlier values or to literals."""

    type: str
    name: str
    inputs: Mapping[str, tuple[str | Literal, ...]]
    outputs: tuple[tuple[str, TensorType], ...]
    blocks: int = 0


@dataclass(frozen=True)
class Program:
    """The ``main`` function of an ML Program."""

    opset: str
    inputs: tuple[tuple[str, TensorType], ...]
    outputs: tuple[str, ...]
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Package:
    """A read .mlpackage: its feature specs (as the Core ML runtime shows them) and its program."""

    path: Path
    specification_version: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    program: Program
    #: the model description's user-defined metadata (``edgeship`` holds what convert recorded)
    user_metadata: dict[str, str] | None = None


def _named_type(buf: memoryview) -> tuple[str, TensorType]:
    fields = _fields(buf)
    return _str(fields[1][0]), _tensor_type(fields[2][0])


def _operation(buf: memoryview, weights: _Weights) -> Op:
    fields = _fields(buf)
    inputs: dict[str, tuple[str | Literal, ...]] = {}
    for key, argument in _map(fields.get(2, [])):
        bindings = [_fields(b) for b in _fields(argument).get(1, [])]
        if not bindings:
            raise BadArtifactError(f"argument '{key}' of an op binds no value: the program is corrupt")
        inputs[key] = tuple(_str(b[1][0]) if 1 in b else Literal(_value(b[2][0], weights)) for b in bindings)
    attributes = {key: _value(raw, weights) for key, raw in _map(fields.get(5, []))}
    op_type = _str(fields[1][0])
    name = str(attributes.pop("name", op_type))
    inputs.update({key: (Literal(value),) for key, value in attributes.items()})
    outputs = tuple(_named_type(b) for b in fields.get(3, []))
    return Op(op_type, name, inputs, outputs, blocks=len(fields.get(4, [])))


def _program(buf: memoryview, weights: _Weights) -> Program:
    functions = dict(_map(_fields(buf).get(2, [])))
    if "main" not in functions:
        raise BadArtifactError(f"the ML Program has no 'main' function (it has {sorted(functions)})")
    function = _fields(functions["main"])
    opset = _str(function[2][0]) if 2 in function else ""
    blocks = dict(_map(function.get(3, [])))
    if opset not in blocks:
        raise BadArtifactError(f"the 'main' function has no block for its opset '{opset}'")
    block = _fields(blocks[opset])
    return Program(
        opset=opset,
        inputs=tuple(_named_type(b) for b in function.get(1, [])),
        outputs=tuple(_str(b) for b in block.get(2, [])),
        ops=tuple(_operation(b, weights) for b in block.get(3, [])),
    )


def _feature(buf: memoryview, declared: TensorType | None) -> TensorSpec:
    fields = _fields(buf)
    name = _str(fields[1][0])
    kind = _fields(fields[3][0]) if 3 in fields else {}
    if 5 not in kind:
        raise UnsupportedModelError(
            f"feature '{name}' is not a multi-array (an image, string or dictionary); "
            "the reference evaluator takes multi-array inputs and outputs"
        )
    array = _fields(kind[5][0])
    shape = _bounded(name, _varints(array.get(1, [])))
    if 31 in array:  # shapeRange: a flexible dimension reads -1
        ranges = [_varints(_fields(r).get(1, [0]) + _fields(r).get(2, [0])) for r in _fields(array[31][0]).get(1, [])]
        if any(not 0 <= low <= _MAX_ELEMENTS or high < low and high != -1 for low, high in ranges):
            raise BadArtifactError(f"feature '{name}' declares the dimension ranges {ranges}; the package is corrupt")
        shape = _bounded(name, [low if low == high else -1 for low, high in ranges])
    if not shape and declared is not None and declared.shape is not None:
        shape = [-1 if d is None else d for d in declared.shape]
    dtype = FEATURE_DTYPES.get(array.get(2, [0])[0], declared.dtype if declared else "float32")
    return TensorSpec(name=name, shape=tuple(shape), dtype=dtype)


def _bounded(name: str, shape: list[int]) -> list[int]:
    """``shape`` if its dimensions are sizes (or -1, flexible) of at most 2^31 elements in all."""
    fixed = [d for d in shape if d != -1]
    if any(d < 0 for d in fixed) or math.prod(fixed) > _MAX_ELEMENTS:
        raise BadArtifactError(
            f"feature '{name}' declares the shape {shape}, which is not a tensor shape of at most "
            f"{_MAX_ELEMENTS} elements: the package is corrupt or hostile"
        )
    return shape


def _check_inputs(inputs: tuple[TensorSpec, ...], program: Program) -> None:
    """The model's described inputs are the program's: same names, and the program's fixed dimensions."""
    declared = dict(program.inputs)
    if {s.name for s in inputs} != set(declared):
        raise BadArtifactError(
            f"the model describes inputs {sorted(s.name for s in inputs)} but its program takes "
            f"{sorted(declared)}: the package is corrupt"
        )
    for spec in inputs:
        shape = declared[spec.name].shape
        if shape is not None and (
            len(shape) != len(spec.shape) or any(d is not None and d != s for d, s in zip(shape, spec.shape))
        ):
            raise BadArtifactError(
                f"input '{spec.name}' is described with shape {list(spec.shape)} but the program "
                f"declares {['?' if d is None else d for d in shape]}: the package is corrupt"
            )


def _model_file(package: Path) -> Path:
    """The model file a package's Manifest.json names, once the manifest and every item it lists
    are known to be there, inside the package."""
    if not os.path.lexists(package / "Manifest.json"):
        raise BadArtifactError(
            f"{package.name} has no Manifest.json: a .mlpackage names its items there; is it a "
            "complete package? Convert the model again"
        )
    manifest = _inside(package, "Manifest.json", f"{package.name}'s Manifest.json")
    size = manifest.stat().st_size
    if size > _MAX_MANIFEST_BYTES:
        raise BadArtifactError(
            f"{manifest} holds {size} bytes; a .mlpackage manifest holds a few hundred: the package is corrupt"
        )
    try:
        info = _io.loads(manifest.read_bytes(), max_depth=8)
        items = info["itemInfoEntries"]
        relative = items[info["rootModelIdentifier"]]["path"]
        paths = [entry["path"] for entry in items.values()]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise BadArtifactError(
            f"{manifest} is not a valid .mlpackage manifest ({type(exc).__name__}: "
            f"{exc!s:.200}); convert the model again"
        ) from exc
    if not isinstance(relative, str) or not all(isinstance(p, str) for p in paths):
        raise BadArtifactError(
            f"{package.name}'s Manifest.json gives the model's path as {relative!r:.200}, which "
            "is not a path; convert the model again"
        )
    path = _inside(package, f"Data/{relative}", f"the model file of {package.name}")
    for item in paths:  # every other item the manifest names is there too (the weights, say)
        if item != relative:
            _inside(package, f"Data/{item}", f"item {item!r:.200} of {package.name}", folder_ok=True)
    if path.stat().st_size == 0:
        raise BadArtifactError(f"{path} is empty; is it a complete .mlpackage? Convert the model again")
    return path


def read(path: str | Path) -> Package:
    """Read a saved .mlpackage (an ML Program) without coremltools or Apple's runtime."""
    path = Path(path)
    model_file = _model_file(path)
    try:
        model = _fields(memoryview(model_file.read_bytes()))
        if 502 not in model and 2 not in model:
            raise BadArtifactError(
                f"{model_file} holds no Core ML model (no model description, received fields "
                f"{sorted(model)[:10]}): the package is corrupt; convert the model again"
            )
        if 502 not in model:
            raise UnsupportedModelError(
                f"{path.name} is not an ML Program (a neural-network or pipeline model); the "
                "reference evaluator runs ML Programs: convert with convert_to='mlprogram'"
            )
        program = _program(model[502][0], _Weights(model_file.parent))
        declared = {name: ttype for op in program.ops for name, ttype in op.outputs}
        declared.update(program.inputs)
        description = _fields(model[2][0]) if 2 in model else {}
        inputs = tuple(_feature(f, None) for f in description.get(1, []))
        outputs = tuple(_feature(f, declared.get(_str(_fields(f)[1][0]))) for f in description.get(10, []))
        _check_inputs(inputs, program)
        metadata = _fields(description[100][0]) if 100 in description else {}
        user = {key: _str(value) for key, value in _map(metadata.get(100, []))}
    except EdgeshipError:
        raise
    except (IndexError, KeyError, ValueError, TypeError, struct.error, OSError) as exc:
        raise BadArtifactError(
            f"{path} could not be read as a Core ML ML Program ({type(exc).__name__}: {exc}); "
            "convert again or check the package was copied whole"
        ) from exc
    return Package(path, model.get(1, [0])[0], inputs, outputs, program, user)


# -- what compression did to a program ------------------------------------------------------------
#: ops whose constant weights coremltools compresses (and ``edgeship doctor`` can leave uncompressed)
COMPUTE = frozenset({"conv", "conv_transpose", "linear", "matmul", "einsum"})


def compressed_values(program: Program) -> tuple[set[str], set[str]]:
    """(constant value names, those made by decompression) of a MIL ``program``: a value is
    constant when every input of its op is, and compressed when a ``constexpr_*`` op is among them."""
    constant: set[str] = set()
    compressed: set[str] = set()
    for op in program.ops:
        names = [b for refs in op.inputs.values() for b in refs if isinstance(b, str)]
        if op.type == "const" or op.type.startswith("constexpr_") or (names and all(n in constant for n in names)):
            outputs = [name for name, _ in op.outputs]
            constant.update(outputs)
            if op.type.startswith("constexpr_") or any(n in compressed for n in names):
                compressed.update(outputs)
    return constant, compressed


def weighted_ops(program: Program) -> list[tuple[Op, bool]]:
    """(op, whether its weights are compressed) for each compute op of ``program`` that reads a
    constant weight, in program order."""
    constant, compressed = compressed_values(program)
    found = []
    for op in program.ops:
        if op.type not in COMPUTE:
            continue
        weights = [
            b
            for param, refs in op.inputs.items()
            if param != "bias"
            for b in refs
            if isinstance(b, str) and b in constant
        ]
        if weights:
            found.append((op, any(w in compressed for w in weights)))
    return found
