"""TFLite int8 with chosen ops in float or with int16 activations, by ai-edge-quantizer (Google's LiteRT quantizer).

TFLiteConverter takes int16 activations for a whole model only (16x8, with int16 input and
output), and leaves ops in float only through TensorFlow's internal ``mlir_quantize``
(docs/stack-notes.md facts 17 and 19).
ai-edge-quantizer quantizes a float ``.tflite`` by public recipes: int8 weights and activations
everywhere (``add_static_config(".*", ALL_SUPPORTED, 8, 8)``), then, for the ops whose output
tensor is named (a later rule wins for the ops it matches), int16 activations with int8 weights
or no quantization (``NO_QUANTIZE``: the op runs in float between DEQUANTIZE and QUANTIZE); the
model's input and output int8 (``int8``) or float (``int8-float-io``: ``NO_QUANTIZE`` on the
virtual INPUT/OUTPUT ops). LiteRT runs the results.

Calibration runs once per ``Mixed`` and keeps each tensor's min and max over every sample, as
TFLiteConverter's does; the quantizer's own default smooths them (a 0.95 moving average), which
clipped a conv output to 1.41 of 1.98 seen and cost 8 points of agreement (docs/stack-notes.md
fact 19).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edgeship._deps import progress_bars_off, quiet_native_stderr, require
from edgeship.errors import UnsupportedModelError

__all__ = ["Mixed", "fp16_weights"]

#: what ai-edge-quantizer raises on ops or models its recipes cannot take
_FAILURES = (ValueError, RuntimeError, KeyError, TypeError, NotImplementedError, IndexError, AttributeError)


def _min_max(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def _scope(tensor: str) -> str:
    """The regex that matches the op writing ``tensor``: the quantizer matches an op by its output
    tensor names joined with ';' and ended by ';'."""
    return "^" + re.escape(tensor) + ";$"


class Mixed:
    """One float ``.tflite`` calibrated once; ``quantize`` makes int8 variants of it.

    ``precision`` is int8 or int8-float-io; ``samples`` one array per input, in the order of
    ``names`` (the model's input names)."""

    def __init__(
        self, float_model: bytes, precision: str, samples: Sequence[np.ndarray], names: Sequence[str] | None
    ) -> None:
        if precision not in ("int8", "int8-float-io"):
            raise UnsupportedModelError(
                f"mixed TFLite models are made for tflite:int8 and tflite:int8-float-io; received tflite:{precision}"
            )
        os.environ.setdefault("TQDM_DISABLE", "1")  # the calibrator draws a progress bar
        require("ai_edge_quantizer", "keep chosen TFLite ops in float or give them int16 activations")
        from ai_edge_quantizer import calibrator, recipe_manager

        self.float_model, self.precision, self.samples = bytes(float_model), precision, len(samples[0])
        recipe = recipe_manager.RecipeManager()
        recipe.load_quantization_recipe(self._quantizer().get_quantization_recipe())
        feeds = _feeds(self.float_model, samples, names)
        # _quiet: "experimental_preserve_all_tensors is for debugging", which calibration needs, is warned
        with _failures("calibrate"), _quiet():
            calib = calibrator.Calibrator(bytearray(self.float_model), num_threads=1, qsv_update_func=_min_max)
            calib.calibrate(feeds, recipe)
            self.qsvs = calib.get_model_qsvs()

    def _quantizer(self, int16: Sequence[str] = (), floats: Sequence[str] = ()) -> Any:
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        ops = qtyping.TFLOperationName
        q = quantizer.Quantizer(bytearray(self.float_model))
        q.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
        for tensor in int16:
            q.add_static_config(_scope(tensor), ops.ALL_SUPPORTED, activation_num_bits=16, weight_num_bits=8)
        for tensor in floats:
            q.update_quantization_recipe(_scope(tensor), ops.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE)
        if self.precision == "int8-float-io":
            for end in (ops.INPUT, ops.OUTPUT):
                q.update_quantization_recipe(".*", end, algorithm_key=AlgorithmName.NO_QUANTIZE)
        return q

    def quantize(self, *, int16: Sequence[str] = (), floats: Sequence[str] = ()) -> tuple[bytes, dict[str, Any]]:
        """The model with int16 activations for the ops writing ``int16``, ``floats``' ops in float,
        int8 elsewhere; returns (flatbuffer, settings), the int16 tensors read back."""
        q = self._quantizer(int16, floats)
        with _failures("quantize"), _quiet():
            blob = bytes(q.quantize(self.qsvs, enable_progress_report=False).quantized_model)
        settings: dict[str, Any] = {
            "quantizer": f"ai-edge-quantizer {_version()}",
            "calibration": "min/max over every sample",
            "calibration_samples": self.samples,
            "qat": False,
        }
        if int16:
            held = _int16_tensors(blob, int16)
            if not held:
                raise UnsupportedModelError(
                    f"none of the tensors {list(int16)} is in the float model as "
                    "ai-edge-quantizer names it, so no op got int16 activations"
                )
            settings["int16_tensors"] = held
        return blob, settings


def fp16_weights(float_model: bytes) -> tuple[bytes, dict[str, Any]]:
    """``float_model`` with its conv, depthwise conv, transposed conv, fully connected and embedding
    weights stored as fp16 (ai-edge-quantizer's float casting; LiteRT dequantizes them to fp32 once,
    at load, and computes in fp32 as TFLiteConverter's fp16 does); other constants stay fp32."""
    require("ai_edge_quantizer", "store TFLite weights as fp16")
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    q = quantizer.Quantizer(bytearray(float_model))
    config = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
        compute_precision=qtyping.ComputePrecision.FLOAT,
        explicit_dequantize=False,
    )
    for op in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.CONV_2D_TRANSPOSE, ops.FULLY_CONNECTED, ops.EMBEDDING_LOOKUP):
        q.update_quantization_recipe(".*", op, algorithm_key=AlgorithmName.FLOAT_CASTING, op_config=config)
    with _failures("cast the weights of"), _quiet():
        blob = bytes(q.quantize(enable_progress_report=False).quantized_model)
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_stderr():  # what the file holds, read back
        held = sum(np.dtype(d["dtype"]) == np.float16 for d in Interpreter(model_content=blob).get_tensor_details())
    return blob, {
        "quantizer": f"ai-edge-quantizer {_version()}",
        "weights": f"fp16 ({held} conv, linear and embedding weight tensors, read back)",
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer's warnings, its native chatter, and the progress bar its calibrator draws."""
    with warnings.catch_warnings(), quiet_native_stderr(), progress_bars_off():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _failures(step: str) -> Iterator[None]:
    """ai-edge-quantizer's own exceptions on a model its recipes cannot take, as UnsupportedModelError."""
    try:
        yield
    except _FAILURES as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UnsupportedModelError(
            f"ai-edge-quantizer could not {step} this model ({type(exc).__name__}: {first})"
        ) from exc


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
        raise UnsupportedModelError(
            f"the float model's inputs {inputs} do not match the model's input names "
            f"{list(names or [])}: the samples cannot be fed by name"
        )
    return {
        key: [
            {n: np.asarray(a[i : i + 1], np.float32) if a.dtype.kind == "f" else a[i : i + 1] for n, a in keyed.items()}
            for i in range(len(samples[0]))
        ]
    }


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
