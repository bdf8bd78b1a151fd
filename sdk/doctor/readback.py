"""What a written int8 artifact holds, read from the file: which compute ops run in float.

The doctor reports a recovered artifact's float layers from here, not from what it asked the
quantizer for: a float layer can pull its neighbours into float (a reader of a float tensor that
the quantizer leaves unquantized), and a name that matches nothing keeps nothing float.
``.tflite`` files are read with LiteRT's flatbuffer schema (``ai_edge_litert.schema_py_generated``),
``.onnx`` files with ``onnx``, ``.mlpackage`` folders with edgeship's own ML Program reader (a
Core ML op counts as float when its constant weights are not decompressed from compressed ones).
Ops that only move data (reshape, transpose, concatenation, …) and the quantize/dequantize ops
themselves are not compute ops and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from edgeship._deps import require
from edgeship.doctor.layers import layer_name

__all__ = ["Precisions", "read", "tflite_ops"]

_TFLITE_MOVES = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION", "PACK",
                 "UNPACK", "SHAPE", "STRIDED_SLICE", "SLICE", "GATHER", "SPLIT", "SPLIT_V", "PAD", "PADV2",
                 "CAST"}
_ONNX_MOVES = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten",
               "Concat", "Shape", "Gather", "Slice", "Split", "Identity", "Cast", "Pad", "Constant"}
_TFLITE_FLOAT = {"FLOAT32", "FLOAT16", "FLOAT64"}


@dataclass(frozen=True)
class Precisions:
    """Compute ops of one artifact file: how many, which run in float, and their Keras layers."""

    compute_ops: int
    float_ops: tuple[str, ...]  # "OP_TYPE output-tensor" of each float compute op, in graph order
    float_layers: tuple[str, ...]  # the Keras layers those ops belong to, sorted


def read(path: Path, known: Collection[str] | None = None) -> Precisions:
    """The compute ops of the ``.tflite``, ``.onnx`` or ``.mlpackage`` at ``path`` and which run
    in float (for Core ML, whose compression is of weights only: which keep uncompressed weights)."""
    if path.suffix == ".mlpackage":
        ops, layers = _coreml(path, known)
        namer = lambda name, _: layers[name]  # noqa: E731
    else:
        ops, namer = (_tflite(path) if path.suffix == ".tflite" else _onnx(path)), layer_name
    floats = [(op, name) for op, name, is_float in ops if is_float]
    return Precisions(compute_ops=len(ops), float_ops=tuple(f"{op} {name}" for op, name in floats),
                      float_layers=tuple(sorted({namer(name, known) for _, name in floats})))


def tflite_ops(model: bytes) -> list[dict[str, Any]]:
    """The ops of a ``.tflite`` flatbuffer's main graph in execution order: ``op_name`` (the
    builtin's name, or a custom op's own: ``NumericVerify``), ``inputs`` and ``outputs`` (tensor
    indices, as the interpreter numbers them) and the output tensors' ``output_types``."""
    schema = require("ai_edge_litert.schema_py_generated", "read .tflite files")
    root = schema.Model.GetRootAs(model, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = [root.OperatorCodes(i) for i in range(root.OperatorCodesLength())]
    graph = root.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = codes[op.OpcodeIndex()]
        name = builtin.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        if name == "CUSTOM" and code.CustomCode():
            name = code.CustomCode().decode(errors="replace")
        outputs = [op.Outputs(j) for j in range(op.OutputsLength())]
        ops.append({"index": i, "op_name": name, "inputs": [op.Inputs(j) for j in range(op.InputsLength())],
                    "outputs": outputs, "output_types": [types.get(graph.Tensors(t).Type(), "") for t in outputs],
                    "output_names": [graph.Tensors(t).Name().decode(errors="replace") for t in outputs]})
    return ops


def _tflite(path: Path) -> list[tuple[str, str, bool]]:
    found = []
    for op in tflite_ops(path.read_bytes()):
        if op["op_name"] in _TFLITE_MOVES or not op["outputs"]:
            continue
        dtype = op["output_types"][0]
        if dtype in ("INT32", "INT64", "BOOL"):  # arg max and other index ops: neither
            continue
        found.append((op["op_name"], op["output_names"][0], dtype in _TFLITE_FLOAT))
    return found


def _onnx(path: Path) -> list[tuple[str, str, bool]]:
    onnx = require("onnx", "read ONNX models")
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type in _ONNX_MOVES:
            continue
        if node.op_type.startswith("QLinear") or node.op_type.endswith("Integer"):
            found.append((node.op_type, node.output[0], False))
            continue
        data = [i for i in node.input if i and i not in initializers]
        quantized = bool(data) and all(_dequantized(i, producer) for i in data)
        found.append((node.op_type, node.output[0] if node.output else node.name, not quantized))
    return found


def _dequantized(tensor: str, producer: dict) -> bool:
    """Whether ``tensor`` comes out of a DequantizeLinear, past data-movement nodes."""
    node = producer.get(tensor)
    while node is not None and node.op_type in _ONNX_MOVES - {"DequantizeLinear", "QuantizeLinear"}:
        node = producer.get(node.input[0]) if node.input else None
    return node is not None and node.op_type == "DequantizeLinear"


def _coreml(path: Path, known: Collection[str] | None) -> tuple[list[tuple[str, str, bool]], dict[str, str]]:
    """The weighted compute ops of a package (type, name, whether float) and their Keras layers."""
    from edgeship.doctor.coreml import layer_names
    from edgeship.runtimes import mil

    program = mil.read(path).program
    ops = [(op.type, op.name, not compressed) for op, compressed in mil.weighted_ops(program)]
    return ops, layer_names(program, known or frozenset())
