"""TFLite per-layer error of a file made from a PyTorch model: litert-torch's float file against
ai-edge-quantizer's int8 one, tensor by tensor; mixed models by the same quantizer's recipes.

TensorFlow's QuantizationDebugger instruments TensorFlow models only, so a ``.tflite`` made from
PyTorch is compared on both files' own tensors: the doctor converts the float reference again
with litert-torch (the artifact's layout), quantizes it as the converter did (ai-edge-quantizer,
the artifact's calibration samples: ``converters._torch_tflite``), and runs the float file and that
rebuild on the test samples with every tensor kept. Each quantized op's output is matched to the
float file's tensor of the same name (ai-edge-quantizer keeps litert-torch's names; the artifact's
own names may differ, when it was made from the module and the doctor's files from the ``.pt2``). A layer's own
error is its float output quantized with the artifact's scale and zero point (rounding, and
clipping to the calibrated range, on clean inputs); its accumulated error is the artifact's
dequantized value against the float one. Weight rounding shows in the accumulated error only.
Layers are named by PyTorch module path (``layer2.0.conv1``), read from litert-torch's tensor names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.converters import _torch_tflite, tflite_mixed
from edgeship.doctor import tflite_tensors as _tensors
from edgeship.doctor.layers import LayerTrace, Probe, unique_names
from edgeship.records import Artifact
from edgeship.runtimes._session import in_layout

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset

__all__ = ["probe"]

_QUANTIZED = {"INT8", "INT16"}


def probe(source: SourceModel, artifact: Artifact, path: Path, x: Sequence[np.ndarray], dataset: Dataset) -> Probe:
    """Per-layer figures of ``artifact`` (a .tflite made from ``source``, a PyTorch model) on ``x``
    (one array per model input, in the model's order and layout) and a builder of variants with
    layers in float."""
    from edgeship.converters import calibration as _calibration

    layout = artifact.settings.get("layout")
    float_model, _ = _torch_tflite.float_file(source, layout)
    n = int(artifact.settings.get("calibration_samples", _calibration.DEFAULT_SAMPLES))
    samples = _torch_tflite.calibration_arrays(source, dataset, artifact.precision, n, layout)
    fed = list(in_layout(x, layout))
    mixed = tflite_mixed.Mixed(float_model, artifact.precision, samples, None)
    quantized, _ = mixed.quantize()  # the artifact's rebuild: its tensors are named as the float file's
    ref, got = _tensors.Verified(float_model), _tensors.Verified(quantized)
    traces = _traces(ref, got, _torch_tflite.module_classes(source))
    in_ref = {d["name"]: i for i, d in ref.details.items()}
    pairs = [(in_ref[t.tensor], index, t) for index, t in traces.items()]
    for _ in zip(ref.batches(fed), got.batches(fed)):
        for f, g, trace in pairs:
            value = ref.interp.get_tensor(f)
            trace.add(value, _tensors.dequantize(_tensors.quantize(value, got.details[g]), got.details[g]))
            trace.add_model(value, got.dequantized(g))
    tensors = {t.name: t.tensor for t in traces.values()}

    def build(float_layers: Sequence[str]) -> bytes:
        if not float_layers:
            return quantized
        blob, _ = mixed.quantize(floats=[tensors[name] for name in float_layers])
        return blob

    return Probe(
        layers=[t.result() for t in traces.values()],
        build=build,
        suffix=".tflite",
        analysed_with=(
            f"LiteRT tensors of {artifact.name} as the doctor rebuilt it (ai-edge-quantizer, {len(samples[0])} "
            f"calibration samples from '{dataset.name}') against litert-torch's float file "
            f"({_torch_tflite.exporter('litert-torch')}, converted again from the float reference) on "
            f"{len(x[0])} test samples{_tensors.inputs_said(x)}; "
            "a layer's own error is its float output quantized with the file's scale and zero point (weight "
            "rounding shows in the accumulated error); models with layers in float by the same quantizer"
        ),
        input_range=_tensors.input_range(path, fed),
        layout=layout,
    )


def _traces(ref: _tensors.Verified, got: _tensors.Verified, classes: dict[str, str]) -> dict[int, LayerTrace]:
    """One LayerTrace per quantized compute op of ``got`` (the int8 file) whose output the float
    file ``ref`` has too, keyed by the quantized tensor's index, named by module path, with its readers."""
    in_float = {n for op in ref.ops for n in op["output_names"]}
    ops, details = got.ops, got.details
    traces: dict[int, LayerTrace] = {}
    for op in ops:
        if op["op_name"] in _tensors.MOVES or not op["outputs"]:
            continue
        index, tensor, dtype = op["outputs"][0], op["output_names"][0], op["output_types"][0]
        params = details[index]["quantization_parameters"]
        if dtype not in _QUANTIZED or tensor not in in_float or not len(params["scales"]):
            continue
        name = _torch_tflite.module_path(tensor, classes) or op["op_name"].lower()
        traces[index] = LayerTrace(
            name, op["op_name"], tensor, scale=float(params["scales"][0]), zero_point=int(params["zero_points"][0])
        )
    unique_names(list(traces.values()))
    for index, trace in traces.items():
        trace.readers = tuple(dict.fromkeys(traces[o].name for o in _readers(index, ops, traces)))
    return traces


def _readers(index: int, ops: list[dict[str, Any]], traces: dict[int, LayerTrace]) -> list[int]:
    """The traced tensors computed from tensor ``index``, past data-movement ops (PAD, RESHAPE, …)."""
    found, todo, seen = [], [index], {index}
    while todo:
        tensor = todo.pop()
        for op in ops:
            if tensor not in op["inputs"]:
                continue
            for out in op["outputs"]:
                if out in traces:
                    found.append(out)
                elif op["op_name"] in _tensors.MOVES and out not in seen:
                    seen.add(out)
                    todo.append(out)
    return found
