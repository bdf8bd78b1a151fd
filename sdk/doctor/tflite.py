"""TFLite per-layer error through tf.lite's QuantizationDebugger; mixed models by denylisted nodes.

The debugger calibrates the float reference once (the artifact's settings, the dataset's
calibration samples) and instruments the int8 model with NumericVerify ops: each pairs a
quantized op's output with the same op run in float on the same (dequantized) inputs, so the
error it shows is that layer's own. The debugger's built-in metrics are scalars per layer; the
doctor reads the pairs itself to score every channel. A second instrumented model
(``enable_whole_model_verify``) runs the float path end to end for the accumulated error, and
``mlir_quantize(..., denylisted_nodes=...)`` on the one calibration makes each mixed model in
milliseconds. Ops are read from the flatbuffer with LiteRT's schema (``readback.tflite_ops``).

``mlir_quantize`` is TensorFlow's internal entry point, and the one call left here that is not
public API: the debugger's public route (``QuantizationDebugger.options =
QuantizationDebugOptions(denylisted_nodes=...)``, then ``get_nondebug_quantized_model()``) reuses
the calibration too, but always makes float32 input and output, so a ``tflite:int8`` artifact's
int8 interface could not be kept; the debugger itself calls ``mlir_quantize`` the same way.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

import numpy as np

from edgeship._deps import quiet_native_stderr
from edgeship._deps import tensorflow as _tf
from edgeship.converters import calibration as _calibration
from edgeship.converters import tflite as _tflite
from edgeship.doctor.layers import LayerTrace, Probe, layer_name, leaf_names, unique_names
from edgeship.doctor.readback import tflite_ops
from edgeship.errors import UnsupportedModelError
from edgeship.records import Artifact
from edgeship.runtimes._session import in_order

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
        return tf.lite.Interpreter(model_content=model, model_path=str(path) if path else None,
                                   experimental_preserve_all_tensors=preserve)


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
            chunks = [np.ascontiguousarray(a[i : i + _BATCH], dtype=None if a.dtype.kind in "iu" else np.float32)
                      for a in arrays]
            for detail, chunk in zip(details, chunks):
                self.interp.resize_tensor_input(detail["index"], chunk.shape)
            self.interp.allocate_tensors()
            for detail, chunk in zip(details, chunks):
                self.interp.set_tensor(detail["index"], chunk)
            self.interp.invoke()
            yield

    def quant(self, q: int) -> tuple[float, int]:
        params = self.details[q]["quantization_parameters"]
        return float(params["scales"][0]), int(params["zero_points"][0])

    def values(self, q: int, f: int) -> tuple[np.ndarray, np.ndarray]:
        scale, zero_point = self.quant(q)
        quantized = (self.interp.get_tensor(q).astype(np.float64) - zero_point) * scale
        return self.interp.get_tensor(f), quantized

    def name(self, index: int) -> str:
        return self.details[index]["name"]


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
        readers = [o for op in local.ops if q in op["inputs"] and op["op_name"] not in (_VERIFY, "DEQUANTIZE")
                   for o in op["outputs"] if o in traces]
        trace.readers = tuple(dict.fromkeys(traces[o].name for o in readers))
    return traces


def _accumulated(model: bytes, x: Sequence[np.ndarray], traces: dict[int, LayerTrace], local: _Verified) -> None:
    """Pair the whole-model-verify tensors with the local ones by the quantized tensor's name."""
    whole = _Verified(model)
    by_name = {local.name(q): trace for q, trace in traces.items()}
    matched = [(q, f, by_name[whole.name(q)]) for q, f in whole.pairs if whole.name(q) in by_name]
    for _ in whole.batches(x):
        for q, f, trace in matched:
            trace.add_model(*whole.values(q, f))


def _input_range(path: Path, x: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The float range the artifact quantizes the model's first input (``x[0]``) to: its int8
    input, or the first QUANTIZE of a float input."""
    interp = _interpreter(path=path)
    details = interp.get_input_details()
    ordered = in_order([_batchless(d) for d in details], x)
    first = next((i for i, a in enumerate(ordered) if a is x[0]), 0)
    ops = tflite_ops(path.read_bytes())
    params = [_quantization(interp, ops, d) for d in details]
    if params[first] is None or params.count(params[first]) > 1:
        # inputs that share one scale took the range of the op that joins them (CONCATENATION
        # requires one scale): that range says nothing about how this input was calibrated
        return None
    scale, zero_point, dtype = params[first]
    info = np.iinfo(dtype)
    return scale * (info.min - zero_point), scale * (info.max - zero_point)


def _quantization(interp: Any, ops: list[dict[str, Any]], detail: dict[str, Any]) -> tuple[float, int, np.dtype] | None:
    """(scale, zero point, dtype) an input is quantized with: its own, or its QUANTIZE op's output's."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        quantize = next((op for op in ops
                         if op["op_name"] == "QUANTIZE" and op["inputs"][0] == detail["index"]), None)
        if quantize is None:
            return None
        detail = next(d for d in interp.get_tensor_details() if d["index"] == quantize["outputs"][0])
    params = detail["quantization_parameters"]
    if not len(params["scales"]):
        return None
    return float(params["scales"][0]), int(params["zero_points"][0]), np.dtype(detail["dtype"])


def probe(source: Any, artifact: Artifact, path: Path, x: Sequence[np.ndarray], dataset: Any) -> Probe:
    """Per-layer figures of ``artifact``'s rebuild on ``x`` (one array per model input, in the
    model's order and dtypes) and a builder of denylisted variants."""
    tf = _tf()
    from tensorflow.lite.python import convert as _convert  # mlir_quantize: what the debugger calls

    if source.kind == "onnx":
        raise UnsupportedModelError(f"{artifact.name} cannot be rebuilt from an ONNX reference; TFLite "
                                    "converts Keras and SavedModel models")
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
            converter=converter,
            debug_dataset=lambda: ([a[i : i + 1] for a in graph_order] for i in range(len(x[0]))))
    local = _Verified(debugger.quant_model)
    traces = _traces(local, leaf_names(source.float_keras()) if source.kind == "keras" else frozenset())
    for _ in local.batches(x):
        for q, f in local.pairs:
            traces[q].add(*local.values(q, f))
    calibrated = debugger.calibrated_model
    with _quiet():
        whole = _convert.mlir_quantize(calibrated, enable_numeric_verify=True, enable_whole_model_verify=True)
    _accumulated(whole, x, traces, local)
    tensors = {t.name: t.tensor for t in traces.values()}
    io = tf.int8 if precision == "int8" else tf.float32
    # integer ids stay as they are; mlir_quantize takes one input type for every input
    io_in = io if all(np.dtype(d).kind == "f" for _, d in source.input_specs) else tf.float32
    per_tensor = bool(getattr(converter, "_experimental_disable_per_channel", False))

    def build(float_layers: Sequence[str]) -> bytes:
        denylist = [tensors[name] for name in float_layers]
        with _quiet():
            return _convert.mlir_quantize(calibrated, disable_per_channel=per_tensor, input_data_type=io_in,
                                          output_data_type=io, denylisted_nodes=denylist or None)

    qat = " The artifact came from a QAT model; this is post-training quantization of its float reference." \
        if artifact.settings.get("qat") else ""
    return Probe(
        layers=[t.result() for t in traces.values()], build=build, suffix=_tflite.SUFFIX,
        analysed_with=(f"tf.lite QuantizationDebugger (TensorFlow {tf.__version__}): the float reference "
                       f"re-quantized as {artifact.name} with {_count(samples)} calibration samples from "
                       f"'{dataset.name}', NumericVerify pairs on {len(x[0])} test samples{_inputs(x)}.{qat}"),
        input_range=_input_range(path, x),
    )


def _count(samples: np.ndarray | list[np.ndarray]) -> int:
    return len(samples[0] if isinstance(samples, list) else samples)


def _inputs(x: Sequence[np.ndarray]) -> str:
    """How many inputs fed the comparison, said only where there are several."""
    return f" (each of the {len(x)} inputs fed)" if len(x) > 1 else ""
