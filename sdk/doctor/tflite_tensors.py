"""The tensors of ``.tflite`` files as the doctor reads them: ops from the flatbuffer (LiteRT's
schema), interpreters that keep every tensor and run batches of samples, the float range an input
is quantized to. Shared by the TensorFlow (``doctor.tflite``) and PyTorch (``doctor.tflite_torch``)
comparisons.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeship._deps import quiet_native_stderr, require
from edgeship._deps import tensorflow as _tf
from edgeship.runtimes._session import in_order

__all__ = [
    "MOVES",
    "FLOAT",
    "VERIFY",
    "Verified",
    "interpreter",
    "quiet",
    "input_range",
    "inputs_said",
    "tflite_ops",
    "quantize",
    "dequantize",
]

MOVES = {
    "QUANTIZE",
    "DEQUANTIZE",
    "RESHAPE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "TRANSPOSE",
    "CONCATENATION",
    "PACK",
    "UNPACK",
    "SHAPE",
    "STRIDED_SLICE",
    "SLICE",
    "GATHER",
    "SPLIT",
    "SPLIT_V",
    "PAD",
    "PADV2",
    "CAST",
}
FLOAT = {"FLOAT32", "FLOAT16", "FLOAT64"}
VERIFY = "NumericVerify"
_BATCH = 50


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Python warnings (tf.lite.Interpreter is deprecated, but NumericVerify needs it) and the
    converter's native chatter off."""
    with warnings.catch_warnings(), quiet_native_stderr():
        warnings.simplefilter("ignore")
        yield


def interpreter(model: bytes | None = None, path: Path | None = None, preserve: bool = False) -> Any:
    tf = _tf()
    with quiet():
        return tf.lite.Interpreter(
            model_content=model, model_path=str(path) if path else None, experimental_preserve_all_tensors=preserve
        )


class Verified:
    """An instrumented model: its NumericVerify (quantized, float) tensor pairs, run on batches."""

    def __init__(self, model: bytes) -> None:
        self.interp = interpreter(model, preserve=True)
        self.ops = tflite_ops(model)  # read from the flatbuffer with LiteRT's schema
        self.details = {d["index"]: d for d in self.interp.get_tensor_details()}
        self.pairs = [tuple(op["inputs"][:2]) for op in self.ops if op["op_name"] == VERIFY]
        self.producer = {t: op for op in self.ops for t in op["outputs"]}

    def batches(self, x: Sequence[np.ndarray]) -> Iterator[None]:
        """Run ``x`` (one array per input, in the source model's order) a batch at a time."""
        details = self.interp.get_input_details()
        arrays = in_order([_batchless(d) for d in details], x)  # TFLite orders inputs by name
        fixed = any(int(d["shape_signature"][0]) > 0 for d in details if len(d["shape_signature"]))
        step = int(details[0]["shape"][0]) if fixed else _BATCH  # a file of fixed batch runs in its own
        for i in range(0, len(arrays[0]), step):
            chunks = [
                np.ascontiguousarray(a[i : i + step], dtype=None if a.dtype.kind in "iu" else np.float32)
                for a in arrays
            ]
            for detail, chunk in zip(details, chunks):
                self.interp.resize_tensor_input(detail["index"], chunk.shape)
            with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate on the first allocation
                self.interp.allocate_tensors()
                for detail, chunk in zip(details, chunks):
                    self.interp.set_tensor(detail["index"], quantize(chunk, detail))
                self.interp.invoke()
            yield

    def quant(self, q: int) -> tuple[float, int]:
        params = self.details[q]["quantization_parameters"]
        return float(params["scales"][0]), int(params["zero_points"][0])

    def values(self, q: int, f: int) -> tuple[np.ndarray, np.ndarray]:
        return self.interp.get_tensor(f), self.dequantized(q)

    def name(self, index: int) -> str:
        return self.details[index]["name"]

    def dequantized(self, index: int) -> np.ndarray:
        """A tensor's values after the last batch, as floats (an int8/int16 tensor by its scale)."""
        return dequantize(self.interp.get_tensor(index), self.details[index])


def dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Integer values of a quantized tensor (``detail``: its interpreter details) as floats, by its scale."""
    params = detail["quantization_parameters"]
    if value.dtype.kind not in "iu" or not len(params["scales"]):
        return value
    return (value.astype(np.float64) - int(params["zero_points"][0])) * float(params["scales"][0])


def quantize(chunk: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float values quantized for an int8 (or int16) tensor by its scale and zero point, clipped to its range."""
    dtype = np.dtype(detail["dtype"])
    scales = detail["quantization_parameters"]["scales"]
    if dtype.kind not in "iu" or chunk.dtype.kind != "f" or not len(scales):
        return chunk
    zero_point = int(detail["quantization_parameters"]["zero_points"][0])
    info = np.iinfo(dtype)
    return np.clip(np.rint(chunk / float(scales[0])) + zero_point, info.min, info.max).astype(dtype)


def _batchless(detail: dict[str, Any]) -> tuple[int, ...]:
    """An input's shape with the batch dimension open, as ``in_order`` matches shapes."""
    return (-1, *(int(d) for d in detail["shape"][1:]))


def input_range(path: Path, x: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The float range the artifact quantizes the model's first input (``x[0]``) to: its int8
    input, or the first QUANTIZE of a float input."""
    interp = interpreter(path=path)
    details = interp.get_input_details()
    ordered = in_order([_batchless(d) for d in details], x)
    first = next((i for i, a in enumerate(ordered) if a is x[0]), 0)
    ops = tflite_ops(path.read_bytes())
    params = [_quantization(interp, ops, d) for d in details]
    own = params[first]
    if own is None or params.count(own) > 1:
        # inputs that share one scale took the range of the op that joins them (CONCATENATION
        # requires one scale): that range says nothing about how this input was calibrated
        return None
    scale, zero_point, dtype = own
    info = np.iinfo(dtype)
    return scale * (info.min - zero_point), scale * (info.max - zero_point)


def _quantization(interp: Any, ops: list[dict[str, Any]], detail: dict[str, Any]) -> tuple[float, int, np.dtype] | None:
    """(scale, zero point, dtype) an input is quantized with: its own, or its QUANTIZE op's output's."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        quantize = next((op for op in ops if op["op_name"] == "QUANTIZE" and op["inputs"][0] == detail["index"]), None)
        if quantize is None:
            return None
        detail = next(d for d in interp.get_tensor_details() if d["index"] == quantize["outputs"][0])
    params = detail["quantization_parameters"]
    if not len(params["scales"]):
        return None
    return float(params["scales"][0]), int(params["zero_points"][0]), np.dtype(detail["dtype"])


def inputs_said(x: Sequence[np.ndarray]) -> str:
    """How many inputs fed the comparison, said only where there are several."""
    return f" (each of the {len(x)} inputs fed)" if len(x) > 1 else ""


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
        ops.append(
            {
                "index": i,
                "op_name": name,
                "inputs": [op.Inputs(j) for j in range(op.InputsLength())],
                "outputs": outputs,
                "output_types": [types.get(graph.Tensors(t).Type(), "") for t in outputs],
                "output_names": [graph.Tensors(t).Name().decode(errors="replace") for t in outputs],
            }
        )
    return ops
