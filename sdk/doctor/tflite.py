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

import dataclasses
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeship._deps import tensorflow as _tf
from edgeship.converters import calibration as _calibration
from edgeship.converters import tflite as _tflite
from edgeship.converters import tflite_mixed
from edgeship.doctor.layers import LayerTrace, Probe, layer_name, leaf_names, unique_names
from edgeship.doctor.tflite_tensors import FLOAT, MOVES, VERIFY, Verified, input_range, inputs_said, quiet, tflite_ops
from edgeship.errors import UnsupportedModelError
from edgeship.records import Artifact

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset

#: the precisions the doctor examines: full integer ones
DOCTORED = frozenset({"int8", "int8-float-io"})
#: examining a whole folder, an artifact TFLite cannot rebuild (its float reference is an ONNX
#: model) is skipped and said, and the other artifacts are examined
BEST_EFFORT = True


def _traces(local: Verified, known: Collection[str]) -> dict[int, LayerTrace]:
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
            if q in op["inputs"] and op["op_name"] not in (VERIFY, "DEQUANTIZE")
            for o in op["outputs"]
            if o in traces
        ]
        trace.readers = tuple(dict.fromkeys(traces[o].name for o in readers))
    return traces


def _accumulated(
    float_model: bytes, quantized: bytes, x: Sequence[np.ndarray], traces: dict[int, LayerTrace], local: Verified
) -> None:
    """Each traced tensor of the int8 ``quantized`` model (dequantized) against the same tensor of
    ``float_model``, both run on ``x``, matched by name (the float op's, else the quantized one's)."""
    ref, got = Verified(float_model), Verified(quantized)
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


def probe(source: SourceModel, artifact: Artifact, path: Path, x: Sequence[np.ndarray], dataset: Dataset) -> Probe:
    """Per-layer figures of ``artifact``'s rebuild on ``x`` (one array per model input, in the
    model's order and dtypes) and a builder of denylisted variants."""
    if source.kind == "torch":  # made by litert-torch and ai-edge-quantizer: compared on their own tensors
        from edgeship.doctor import tflite_torch

        return tflite_torch.probe(source, artifact, path, x, dataset)
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
    with quiet():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([a[i : i + 1] for a in graph_order] for i in range(len(x[0])))
        )
    local = Verified(debugger.quant_model)
    traces = _traces(local, leaf_names(source.float_keras()))
    for _ in local.batches(x):
        for q, f in local.pairs:
            traces[q].add(*local.values(q, f))
    # the artifact's converter and settings, on the float reference (a QAT artifact is re-quantized post-training)
    ptq = dataclasses.replace(source, keras=source.float_keras(), qat=False) if source.qat else source
    with quiet():
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
            f"'{dataset.name}', NumericVerify pairs on {len(x[0])} test samples{inputs_said(x)}; models "
            f"with layers in float by ai-edge-quantizer.{qat}"
        ),
        input_range=input_range(path, x),
    )


def _float_model(source: SourceModel) -> bytes:
    """The float ``.tflite`` ai-edge-quantizer starts from, as TFLiteConverter makes it."""
    with quiet():
        return _tflite.tf_converter(source, use_float=True).convert()


def _count(samples: np.ndarray | list[np.ndarray]) -> int:
    return len(samples[0] if isinstance(samples, list) else samples)


def compute_ops(
    path: Path, known: Collection[str] | None = None
) -> tuple[list[tuple[str, str, bool]], Callable[..., str]]:
    """The compute ops of a ``.tflite`` file: (op, output tensor, whether float), and the layer namer."""
    found = []
    for op in tflite_ops(path.read_bytes()):
        if op["op_name"] in MOVES or not op["outputs"]:
            continue
        dtype = op["output_types"][0]
        if dtype in ("INT32", "INT64", "BOOL"):  # arg max and other index ops: neither
            continue
        found.append((op["op_name"], op["output_names"][0], dtype in FLOAT))
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
