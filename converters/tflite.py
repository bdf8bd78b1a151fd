"""TFLite: fp32, fp16, dynamic-range, full int8 (int8 or float I/O), int16x8; QAT models to int8."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship import _io
from edgeship._deps import tensorflow as _tf
from edgeship.converters import _artifact
from edgeship.converters import calibration as _calibration
from edgeship.converters import equalize as _equalize
from edgeship.errors import ConversionError, UnsupportedModelError
from edgeship.records import Artifact

log = logging.getLogger(__name__)

SUFFIX = ".tflite"

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
#: how far each float precision's outputs may be from the float model's before convert records the file,
#: as a fraction of their magnitude (converters/_check.py); quantized precisions are judged by validate
CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
PRECISIONS = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights, float32 compute",
    "dynamic": "int8 weights, float activations quantized on the fly (no calibration)",
    "int8": "full integer with int8 input and output (QAT models need no calibration)",
    "int8-float-io": "full integer ops with float32 input and output",
    "int16x8": "int16 activations, int8 weights (calibrated)",
}
_CALIBRATED = {"int8", "int8-float-io", "int16x8"}


def tf_converter(source: SourceModel, *, use_float: bool) -> Any:
    """A ``tf.lite.TFLiteConverter`` for ``source``: its float model, or (``use_float=False``) the
    model itself, QAT wrappers included."""
    tf = _tf()
    if source.kind == "saved_model":
        return tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model))
    if source.kind == "onnx":
        raise UnsupportedModelError(
            f"{source.origin} is an ONNX model; edgeship converts ONNX to onnx:int8/onnx:dynamic only. "
            "Convert the original Keras or SavedModel model to TFLite (or convert the .onnx with onnx2tf in its "
            "own environment, keeping the NCHW input, and measure that file with edgeship validate --reference "
            "model.onnx: docs/stack-notes.md fact 15)"
        )
    model = source.float_keras() if use_float else source.keras
    return tf.lite.TFLiteConverter.from_keras_model(model)


def input_names(source: SourceModel, use_float: bool = True) -> list[str] | None:
    """The Keras model's input names in its order (None for other sources)."""
    if source.kind != "keras":
        return None
    model = source.float_keras() if use_float else source.keras
    return [t.name.split(":")[0] for t in model.inputs]


def configure(
    converter: Any,
    precision: str,
    samples: np.ndarray | list[np.ndarray] | None,
    *,
    qat: bool,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Set ``converter`` up for ``precision``; return the settings recorded in the artifact.

    ``names`` are the model's input names, in the order of ``samples``: the converted graph orders
    its inputs by name (``input_10`` before ``input_9``), so several inputs are fed by name."""
    tf = _tf()
    settings: dict[str, Any] = {"converter": f"tf.lite {tf.__version__}", "qat": qat}
    if precision == "fp32":
        return settings
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision in _CALIBRATED and samples is not None:
        arrays = samples if isinstance(samples, list) else [samples]  # one per input, in the model's order
        if names and len(names) == len(arrays) > 1:
            converter.representative_dataset = lambda: (
                {n: a[i : i + 1] for n, a in zip(names, arrays)} for i in range(len(arrays[0]))
            )
        else:
            converter.representative_dataset = lambda: ([a[i : i + 1] for a in arrays] for i in range(len(arrays[0])))
        settings["calibration_samples"] = len(arrays[0])
    if precision in ("int8", "int8-float-io"):
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if precision == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if precision == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    return settings


def to_bytes(
    source: SourceModel, precision: str, calibration: Any = None, **options: Any
) -> tuple[bytes, dict[str, Any]]:
    """Convert ``source`` to TFLite ``precision`` in memory; returns (flatbuffer, settings)."""
    layout = options.get("layout")
    if source.kind == "torch":  # litert-torch makes it (converters/_torch_tflite.py)
        from edgeship.converters import _torch_tflite

        if options.get("equalize"):  # refused, saying why: equalization rescales Keras weights
            _equalize.source(source, f"tflite:{precision}")
        samples_asked = options.get("calibration_samples") or _calibration.DEFAULT_SAMPLES
        return _torch_tflite.tflite_bytes(
            source, precision, calibration, samples_asked, layout=layout,
            int16_tensors=options.get("int16_tensors") or (),
        )  # fmt: skip
    if layout not in (None, "nhwc"):
        raise UnsupportedModelError(
            f"tflite:{precision}: {source.name} is a {source.kind} model, whose images are NHWC already; layout="
            f"{layout!r} applies to PyTorch models (NCHW), to make a .tflite that takes NHWC"
        )
    # QAT models carry their own ranges: int8 comes from them, float precisions from the float model.
    from_qat = source.qat and precision in ("int8", "int8-float-io")
    # TFLite asks for a representative dataset for full-integer targets even from QAT models;
    # there the fake-quant ranges win and the samples only cover ops QAT left without a range.
    samples = None
    if precision in _CALIBRATED and not (from_qat and calibration is None):
        samples = _calibration.prepare_all(
            calibration,
            source,
            target=f"tflite:{precision}",
            samples=options.get("calibration_samples", _calibration.DEFAULT_SAMPLES),
        )
    equalized: dict[str, Any] = {}
    if options.get("equalize") and not from_qat and precision not in ("fp32", "fp16"):
        source, equalized = _equalize.source(source, f"tflite:{precision}")
    tensors = options.get("int16_tensors")
    if tensors:  # int16 activations for these tensors' ops, int8 elsewhere: ai-edge-quantizer on the float model
        return _mixed(source, precision, samples, tensors, from_qat, equalized)
    converter = tf_converter(source, use_float=not from_qat)
    settings = configure(converter, precision, samples, qat=from_qat, names=input_names(source, not from_qat))
    settings.update(equalized)
    for key, value in options.get("converter_flags", {}).items():
        setattr(converter, key, value)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:
        raise _explain(exc, precision) from exc
    return flatbuffer, settings


def _mixed(
    source: SourceModel, precision: str, samples: Any, tensors: Sequence[str], from_qat: bool, equalized: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """``int16_tensors``: the float model converted plainly, then quantized by ``tflite_mixed.Mixed``."""
    from edgeship.converters import tflite_mixed

    if from_qat or precision not in ("int8", "int8-float-io") or samples is None:
        raise UnsupportedModelError(
            f"int16 tensors are for post-training tflite:int8 and tflite:int8-float-io of a "
            f"float model; received tflite:{precision}{' from a QAT model' if from_qat else ''}"
        )
    converter = tf_converter(source, use_float=True)
    try:
        float_model = converter.convert()
    except Exception as exc:
        raise _explain(exc, precision) from exc
    arrays = samples if isinstance(samples, list) else [samples]
    blob, settings = tflite_mixed.Mixed(float_model, precision, arrays, input_names(source)).quantize(int16=tensors)
    return blob, {
        "converter": f"tf.lite {_tf().__version__} (float), then {settings['quantizer']}",
        **settings,
        **equalized,
    }


def _explain(exc: Exception, precision: str) -> Exception:
    """An UnsupportedModelError naming the ops TFLite has no kernel for, else a ConversionError."""
    text = str(exc)
    if "TensorListReserve" in text or "Lowering tensor list ops is failed" in text:
        return UnsupportedModelError(
            f"TFLite cannot take this recurrent layer (LSTM/GRU/RNN) as built for tflite:{precision}: its loop keeps "
            "a tensor list of unknown shape. Rebuild the layer with unroll=True (or a fixed batch size), or convert "
            "to onnx:int8 / onnx:dynamic, which take it"
        )
    ops = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", text)))
    if ops:
        return UnsupportedModelError(
            f"TFLite has no builtin kernel for {', '.join(ops)}, so the model cannot become tflite:{precision}"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return ConversionError(f"TFLite conversion to {precision} failed: {first}")


def convert(source: SourceModel, out: Path, *, precision: str, calibration: Any = None, **options: Any) -> Artifact:
    """Write ``out/<model>.<precision>.tflite`` and return its Artifact."""
    flatbuffer, settings = to_bytes(source, precision, calibration, **options)
    path = out / _artifact.file_name(source, precision, SUFFIX)
    with _io.staged(path) as tmp:
        _io.write_bytes(tmp, flatbuffer)
        artifact = _artifact.make(
            tmp, out, final=path, fmt="tflite", precision=precision, source=source, settings=settings
        )
    return artifact


def embed_metadata(path: Path, text: str) -> None:
    """``text`` as a model metadata entry named ``edgeship`` (a buffer), the file rewritten atomically."""
    from edgeship._deps import require

    _tf()  # configured and quiet (a PyTorch source has not imported TensorFlow yet)
    utils = require("tensorflow.lite.tools.flatbuffer_utils", "write TFLite metadata")
    schema = require("tensorflow.lite.python.schema_py_generated", "write TFLite metadata")
    model = utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    buffer = schema.BufferT()
    buffer.data = list(text.encode())
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = _METADATA_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _entry_name(m) != _METADATA_KEY] + [entry]
    _io.write_bytes(path, utils.convert_object_to_bytearray(model))


def read_metadata(path: Path) -> str | None:
    from edgeship._deps import require

    _tf()
    utils = require("tensorflow.lite.tools.flatbuffer_utils", "read TFLite metadata")
    model = utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    for entry in model.metadata or []:
        if _entry_name(entry) == _METADATA_KEY:
            return bytes(model.buffers[entry.buffer].data).decode()
    return None


def rebuild_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The options a rebuild keeps beyond calibration samples (the doctor passes those): the
    layout of a .tflite made channels-last from a PyTorch model."""
    return {"layout": settings["layout"]} if settings.get("layout") else {}


_METADATA_KEY = "edgeship"


def _entry_name(entry: Any) -> str:
    name = entry.name
    return name.decode() if isinstance(name, bytes) else str(name)
