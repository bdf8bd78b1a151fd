"""TFLite per-layer error through tf.lite's QuantizationDebugger; mixed models by ai-edge-quantizer.

The debugger calibrates the float reference once (the artifact's settings, the dataset's
calibration samples) and instruments the int8 model with NumericVerify ops: each pairs a
quantized op's output with the same op run in float on the same (dequantized) inputs, so the
error it shows is that layer's own. The debugger's built-in metrics are scalars per layer; the
doctor reads the pairs itself to score every channel. The accumulated error is the artifact's
rebuild (TFLiteConverter, the artifact's settings) against the float model, tensor by tensor.
Models with layers in float come from ai-edge-quantizer (``converters.tflite_mixed``: int8
recipes with ``NO_QUANTIZE`` on the chosen ops' output tensors, the artifact's interface kept,
calibrated once). Ops are read from the flatbuffer with LiteRT's schema (``tflite_ops``).
Every call here is public API; TensorFlow's internal ``mlir_quantize`` (which the debugger uses
itself, and whose public route through ``QuantizationDebugOptions(denylisted_nodes=...)`` makes
float input and output only: docs/stack-notes.md fact 17) is not called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship._deps import quiet_native_stderr, require
from edgeship._deps import tensorflow as _tf
from edgeship.converters import calibration as _calibration
from edgeship.converters import tflite as _tflite
from edgeship.converters import tflite_mixed
from edgeship.doctor.layers import LayerTrace, Probe, layer_name, leaf_names, unique_names
from edgeship.errors import UnsupportedModelError
from edgeship.records import Artifact
from edgeship.runtimes._session import in_order

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset

_TFLITE_MOVES = {
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
_TFLITE_FLOAT = {"FLOAT32", "FLOAT16", "FLOAT64"}
#: the precisions the doctor examines: full integer ones
DOCTORED = frozenset({"int8", "int8-float-io"})
#: examining a whole folder, an artifact TFLite cannot rebuild (its float reference is an ONNX or a
#: PyTorch model) is skipped and said, and the other artifacts are examined
BEST_EFFORT = True
_VERIFY = "NumericVerify"
_BATCH = 50


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Python warnings (tf.lite.Interpreter is deprecated, but NumericVerify needs it) and the
    converter's native chatter off."""
    with warnings.catch_warnings(), quiet_native_stderr():
        warnings.simplefilter("ignore")
        yield


def _interpreter(model: bytes | None = None, path: Path | None = None, preserve: bool = False) -> Any:
    tf = _tf()
    with _quiet():
        return tf.lite.Interpreter(
            model_content=model, model_path=str(path) if path else None, experimental_preserve_all_tensors=preserve
        )


class _Verified:
    """An instrumented model: its NumericVerify (quantized, float) tensor pairs, run on batches."""

    def __init__(self, model: bytes) -> None:
        self.interp = _interpreter(model, preserve=True)
        self.ops = tflite_ops(model)  # read from the flatbuffer with LiteRT's schema
        self.details = {d["index"]: d for d in self.interp.get_tensor_details()}
        self.pairs = [tuple(op["inputs"][:2]) for op in self.ops if op["op_name"] == _VERIFY]
        self.producer = {t: op for op in self.ops for t in op["outputs"]}

    def batches(self, x: Sequence[np.ndarray]) -> Iterator[None]:
        """Run ``x`` (one array per input, in the source model's order) a batch at a time."""
        details = self.interp.get_input_details()
        arrays = in_order([_batchless(d) for d in details], x)  # TFLite orders inputs by name
        for i in range(0, len(arrays[0]), _BATCH):
            chunks = [
                np.ascontiguousarray(a[i : i + _BATCH], dtype=None if a.dtype.kind in "iu" else np.float32)
                for a in arrays
            ]
            for detail, chunk in zip(details, chunks):
                self.interp.resize_tensor_input(detail["index"], chunk.shape)
            with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate on the first allocation
                self.interp.allocate_tensors()
                for detail, chunk in zip(details, chunks):
                    self.interp.set_tensor(detail["index"], _as_input(chunk, detail))
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
        value = self.interp.get_tensor(index)
        params = self.details[index]["quantization_parameters"]
        if value.dtype.kind not in "iu" or not len(params["scales"]):
            return value
        return (value.astype(np.float64) - int(params["zero_points"][0])) * float(params["scales"][0])


def _as_input(chunk: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float samples quantized for an int8 (or int16) input by its scale and zero point."""
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


def _traces(local: _Verified, known: Collection[str]) -> dict[int, LayerTrace]:
    """One LayerTrace per verified tensor, keyed by the quantized tensor's index, with readers."""
    traces: dict[int, LayerTrace] = {}
    for q, f in local.pairs:
        op = local.producer[q]["op_name"]
        tensor = local.name(f)  # the float op's output keeps the converter's name: denylists use it
        name = layer_name(tensor, known)
        scale, zero_point = local.quant(q)
        traces[q] = LayerTrace(op.lower() if name == tensor else name, op, tensor, scale=scale, zero_point=zero_point)
    unique_names(list(traces.values()))
    for q, trace in traces.items():
        readers = [
            o
            for op in local.ops
            if q in op["inputs"] and op["op_name"] not in (_VERIFY, "DEQUANTIZE")
            for o in op["outputs"]
            if o in traces
        ]
        trace.readers = tuple(dict.fromkeys(traces[o].name for o in readers))
    return traces


def _accumulated(
    float_model: bytes, quantized: bytes, x: Sequence[np.ndarray], traces: dict[int, LayerTrace], local: _Verified
) -> None:
    """Each traced tensor of the int8 ``quantized`` model (dequantized) against the same tensor of
    ``float_model``, both run on ``x``, matched by name (the float op's, else the quantized one's)."""
    ref, got = _Verified(float_model), _Verified(quantized)
    in_ref = {d["name"]: i for i, d in ref.details.items()}
    in_got = {d["name"]: i for i, d in got.details.items()}
    matched = []
    for q, trace in traces.items():
        names = (trace.tensor, local.name(q))
        f = next((in_ref[n] for n in names if n in in_ref), None)
        g = next((in_got[n] for n in names if n in in_got), None)
        if f is not None and g is not None:
            matched.append((f, g, trace))
    for _ in zip(ref.batches(x), got.batches(x)):
        for f, g, trace in matched:
            trace.add_model(ref.interp.get_tensor(f), got.dequantized(g))


def _input_range(path: Path, x: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The float range the artifact quantizes the model's first input (``x[0]``) to: its int8
    input, or the first QUANTIZE of a float input."""
    interp = _interpreter(path=path)
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


def probe(source: SourceModel, artifact: Artifact, path: Path, x: Sequence[np.ndarray], dataset: Dataset) -> Probe:
    """Per-layer figures of ``artifact``'s rebuild on ``x`` (one array per model input, in the
    model's order and dtypes) and a builder of denylisted variants."""
    if source.kind == "torch":
        raise UnsupportedModelError(
            f"the doctor compares a .tflite layer by layer through TensorFlow's QuantizationDebugger, which takes "
            f"TensorFlow models only; {artifact.name} was made from a PyTorch model. Diagnose its onnx:int8 instead"
        )
    tf = _tf()
    if source.kind == "onnx":
        raise UnsupportedModelError(
            f"{artifact.name} cannot be rebuilt from an ONNX reference; TFLite converts Keras and SavedModel models"
        )
    precision = artifact.precision
    n = int(artifact.settings.get("calibration_samples", _calibration.DEFAULT_SAMPLES))
    samples = _calibration.prepare_all(dataset, source, target=f"tflite:{precision}", samples=n)
    converter = _tflite.tf_converter(source, use_float=True)
    names = _tflite.input_names(source)
    _tflite.configure(converter, precision, samples, qat=False, names=names)
    # the debugger feeds a sample's inputs as a list in the graph's order, which sorts them by name
    graph_order = [x[i] for i in sorted(range(len(x)), key=lambda i: names[i])] if names else list(x)
    with _quiet():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([a[i : i + 1] for a in graph_order] for i in range(len(x[0])))
        )
    local = _Verified(debugger.quant_model)
    traces = _traces(local, leaf_names(source.float_keras()))
    for _ in local.batches(x):
        for q, f in local.pairs:
            traces[q].add(*local.values(q, f))
    # the artifact's converter and settings, on the float reference (a QAT artifact is re-quantized post-training)
    ptq = dataclasses.replace(source, keras=source.float_keras(), qat=False) if source.qat else source
    with _quiet():
        rebuilt, _ = _tflite.to_bytes(ptq, precision, dataset, calibration_samples=n)
    float_model = _float_model(source)
    _accumulated(float_model, rebuilt, x, traces, local)
    tensors = {t.name: t.tensor for t in traces.values()}
    mixed: list[tflite_mixed.Mixed] = []  # calibrated on first use: the search may never keep a layer in float

    def build(float_layers: Sequence[str]) -> bytes:
        if not float_layers:
            return rebuilt
        if not mixed:
            mixed.append(
                tflite_mixed.Mixed(float_model, precision, samples if isinstance(samples, list) else [samples], names)
            )
        blob, _ = mixed[0].quantize(floats=[tensors[name] for name in float_layers])
        return blob

    qat = (
        " The artifact came from a QAT model; this is post-training quantization of its float reference."
        if artifact.settings.get("qat")
        else ""
    )
    return Probe(
        layers=[t.result() for t in traces.values()],
        build=build,
        suffix=_tflite.SUFFIX,
        analysed_with=(
            f"tf.lite QuantizationDebugger (TensorFlow {tf.__version__}): the float reference "
            f"re-quantized as {artifact.name} with {_count(samples)} calibration samples from "
            f"'{dataset.name}', NumericVerify pairs on {len(x[0])} test samples{_inputs(x)}; models "
            f"with layers in float by ai-edge-quantizer.{qat}"
        ),
        input_range=_input_range(path, x),
    )


def _float_model(source: SourceModel) -> bytes:
    """The float ``.tflite`` ai-edge-quantizer starts from, as TFLiteConverter makes it."""
    with _quiet():
        return _tflite.tf_converter(source, use_float=True).convert()


def _count(samples: np.ndarray | list[np.ndarray]) -> int:
    return len(samples[0] if isinstance(samples, list) else samples)


def _inputs(x: Sequence[np.ndarray]) -> str:
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


def compute_ops(
    path: Path, known: Collection[str] | None = None
) -> tuple[list[tuple[str, str, bool]], Callable[..., str]]:
    """The compute ops of a ``.tflite`` file: (op, output tensor, whether float), and the layer namer."""
    found = []
    for op in tflite_ops(path.read_bytes()):
        if op["op_name"] in _TFLITE_MOVES or not op["outputs"]:
            continue
        dtype = op["output_types"][0]
        if dtype in ("INT32", "INT64", "BOOL"):  # arg max and other index ops: neither
            continue
        found.append((op["op_name"], op["output_names"][0], dtype in _TFLITE_FLOAT))
    return found, layer_name


def whole_model_int16(artifact: Artifact, exc: Exception) -> str:
    """The precision to rebuild with when ai-edge-quantizer (int16 on chosen tensors) is missing:
    TFLite's 16x8 for the whole model, which has int16 input and output, so only an artifact with
    float I/O keeps its interface."""
    if artifact.precision != "int8-float-io":
        raise UnsupportedModelError(
            f"{exc}; without it TFLite takes int16 activations for a whole model only "
            f"(16x8), with int16 input and output: {artifact.name}'s int8 interface "
            "would change"
        ) from exc
    return "int16x8"
