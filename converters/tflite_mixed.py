"""TFLite int8 with int16 activations on chosen tensors, by ai-edge-quantizer (Google's LiteRT quantizer).

TFLiteConverter takes int16 activations for a whole model only (16x8, with int16 input and
output). ai-edge-quantizer quantizes a float ``.tflite`` by recipe: int8 weights and activations
everywhere (``add_static_config(".*", ALL_SUPPORTED, 8, 8)``), int16 activations with int8 weights
for the ops whose output tensor is named (a later rule wins for the ops it matches), and the
model's input and output int8 (``int8``) or float (``int8-float-io``, ``NO_QUANTIZE`` on the
virtual INPUT/OUTPUT ops). LiteRT runs the result: QUANTIZE int8->int16 before such an op, back
after it.

Calibration keeps each tensor's min and max over every sample, as TFLiteConverter's does; the
quantizer's own default smooths them (a 0.95 moving average), which clipped a conv output to
1.41 of 1.98 seen and cost 8 points of agreement (docs/stack-notes.md fact 19).
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Sequence

import numpy as np

from edgeship._deps import quiet_native_stderr, require
from edgeship.errors import UnsupportedModelError

__all__ = ["quantize"]


def _min_max(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def _scope(tensor: str) -> str:
    """The regex that matches the op writing ``tensor``: the quantizer matches an op by its output
    tensor names joined with ';' and ended by ';'."""
    return "^" + re.escape(tensor) + ";$"


def quantize(float_model: bytes, precision: str, samples: Sequence[np.ndarray], names: Sequence[str] | None,
             tensors: Sequence[str]) -> tuple[bytes, dict[str, Any]]:
    """``float_model`` (a float .tflite) as ``precision`` (int8 or int8-float-io) with int16
    activations for the ops writing ``tensors``; ``samples`` one array per input, in the order of
    ``names`` (the model's input names). Returns (flatbuffer, settings)."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # the calibrator draws a progress bar
    aeq = require("ai_edge_quantizer", "give chosen TFLite tensors int16 activations")
    from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    q = quantizer.Quantizer(bytearray(float_model))
    q.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
    for tensor in tensors:
        q.add_static_config(_scope(tensor), ops.ALL_SUPPORTED, activation_num_bits=16, weight_num_bits=8)
    if precision == "int8-float-io":
        for end in (ops.INPUT, ops.OUTPUT):
            q.update_quantization_recipe(".*", end, algorithm_key=AlgorithmName.NO_QUANTIZE)
    elif precision != "int8":
        raise UnsupportedModelError(f"int16 tensors go into tflite:int8 or tflite:int8-float-io; received {precision}")
    recipe = recipe_manager.RecipeManager()
    recipe.load_quantization_recipe(q.get_quantization_recipe())
    feeds = _feeds(float_model, samples, names)
    try:
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")  # "experimental_preserve_all_tensors is for debugging": calibration needs it
            calib = calibrator.Calibrator(bytearray(float_model), num_threads=1, qsv_update_func=_min_max)
            calib.calibrate(feeds, recipe)
            result = q.quantize(calib.get_model_qsvs(), enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError, TypeError, NotImplementedError) as exc:  # ops its recipes cannot take
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UnsupportedModelError(f"ai-edge-quantizer could not give this model int16 tensors "
                                    f"({type(exc).__name__}: {first})") from exc
    blob = bytes(result.quantized_model)
    held = _int16_tensors(blob, tensors)
    if not held:
        raise UnsupportedModelError(f"none of the tensors {list(tensors)} is in the float model as ai-edge-quantizer "
                                    "names it, so no op got int16 activations")
    version = getattr(aeq, "__version__", "") or _version()
    return blob, {"quantizer": f"ai-edge-quantizer {version}", "calibration": "min/max over every sample",
                  "calibration_samples": len(samples[0]), "int16_tensors": held, "qat": False}


def _feeds(float_model: bytes, samples: Sequence[np.ndarray], names: Sequence[str] | None) -> dict[str, list]:
    """{signature: [{input name: one sample}, …]}: the samples keyed as the float model's signature
    names its inputs (the Keras input names)."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_stderr():
        signatures = Interpreter(model_content=float_model).get_signature_list()
    key, signature = next(iter(signatures.items()))
    inputs = signature["inputs"]
    if len(inputs) == 1 and len(samples) == 1:
        keyed = dict(zip(inputs, samples))
    elif names and sorted(names) == sorted(inputs):
        keyed = dict(zip(names, samples))
    else:
        raise UnsupportedModelError(f"the float model's inputs {inputs} do not match the model's input names "
                                    f"{list(names or [])}: the samples cannot be fed by name")
    count = len(samples[0])
    return {key: [{n: np.asarray(a[i : i + 1], np.float32) if a.dtype.kind == "f" else a[i : i + 1]
                   for n, a in keyed.items()} for i in range(count)]}


def _int16_tensors(blob: bytes, wanted: Sequence[str]) -> list[str]:
    """Which of ``wanted`` are int16 in the quantized model ``blob``, read back."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_stderr():
        details = Interpreter(model_content=blob).get_tensor_details()
    int16 = {d["name"] for d in details if np.dtype(d["dtype"]) == np.int16}
    return [t for t in wanted if t in int16]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-quantizer")
    except PackageNotFoundError:
        return "unknown"
