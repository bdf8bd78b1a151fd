"""ONNX: fp32 through tf2onnx; int8 through ONNX Runtime static (QDQ) or dynamic quantization.

QAT models reach int8 through their int8 TFLite flatbuffer (tf2onnx.from_tflite): tf2onnx on the
Keras QAT model keeps float weights (docs/stack-notes.md fact 8).
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship import _io
from edgeship._deps import require
from edgeship._deps import tensorflow as _tf
from edgeship.converters import _artifact
from edgeship.converters import calibration as _calibration
from edgeship.converters import equalize as _equalize
from edgeship.errors import BadInputError, ConversionError, UnsupportedModelError
from edgeship.records import Artifact

log = logging.getLogger(__name__)

SUFFIX = ".onnx"

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
DEFAULT_OPSET = 17
MAX_OPSET = 18  # tf2onnx's ceiling
#: how far each float precision's outputs may be from the float model's before convert records the file,
#: as a fraction of their magnitude (converters/_check.py); quantized precisions are judged by validate
CHECK_TOLERANCE = {"fp32": 1e-3}
PRECISIONS = {
    "fp32": "float32 through tf2onnx",
    "int8": "int8 QDQ, ONNX Runtime static quantization (calibrated, per-channel)",
    "dynamic": "int8 weights, activations quantized at run time (ONNX Runtime dynamic quantization)",
}
CALIBRATE_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI int8 dot products (then ONNX Runtime needs no reduce_range)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quant_defaults() -> dict[str, Any]:
    """ONNX Runtime's CPU guidance: x86 with VNNI -> U8S8 as is; x86 without -> reduce_range; ARM -> S8S8."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return {"activation_type": "int8", "reduce_range": False, "why": f"{machine}: symmetric int8 activations"}
    vnni = cpu_has_vnni()
    return {
        "activation_type": "uint8",
        "reduce_range": not vnni,
        "why": "x86 with VNNI: full 8-bit range" if vnni else "x86 without VNNI: 7-bit weights avoid int16 overflow",
    }


def float_model(source: SourceModel, opset: int) -> Any:
    """The float model as an onnx ModelProto with input 'input' (dynamic batch; a PyTorch model's
    inputs keep the names torch.onnx gives them)."""
    if source.kind == "torch":
        from edgeship.converters import _torch

        with tempfile.TemporaryDirectory(prefix="edgeship-torch-onnx-") as tmp:
            exported, _ = _torch.onnx_file(source, Path(tmp), opset)
            return require("onnx").load(str(exported))
    tf = _tf()
    tf2onnx = require("tf2onnx", "convert to ONNX")
    spec = tuple(
        tf.TensorSpec((None,) + tuple(shape), tf.as_dtype(dtype), name="input" if i == 0 else f"input_{i}")
        for i, (shape, dtype) in enumerate(source.input_specs)
    )
    if source.kind == "onnx":
        return require("onnx").load(str(source.onnx))
    if source.kind == "saved_model":
        loaded = tf.saved_model.load(str(source.saved_model))
        fn = loaded.signatures["serving_default"]
        arg = next(iter(fn.structured_input_signature[1]))
        out_key = sorted(fn.structured_outputs)[0]
        # tf2onnx takes a tf.function: wrap the signature so its input is named 'input'
        # (the lambda holds `loaded`, whose variables the signature needs alive)
        wrapped = tf.function(lambda x: loaded.signatures["serving_default"](**{arg: x})[out_key])
        model_proto, _ = tf2onnx.convert.from_function(wrapped, input_signature=spec, opset=opset)
    else:
        model_proto, _ = tf2onnx.convert.from_keras(source.float_keras(), input_signature=spec, opset=opset)
    return model_proto


def _from_qat_tflite(source: SourceModel, opset: int, calibration: Any) -> tuple[Any, dict[str, Any]]:
    from edgeship.converters import tflite

    tf2onnx = require("tf2onnx", "convert to ONNX")
    flatbuffer, _ = tflite.to_bytes(source, "int8-float-io", calibration)
    with tempfile.TemporaryDirectory(prefix="edgeship-qat-") as tmp:
        path = Path(tmp) / "qat.tflite"
        path.write_bytes(flatbuffer)
        model_proto, _ = tf2onnx.convert.from_tflite(str(path), opset=opset)
    return model_proto, {"route": "QAT model -> int8 TFLite -> tf2onnx (int8 weights and activations)"}


class _Reader:
    """ONNX Runtime's CalibrationDataReader over samples: one array, or one per input (``names``' order)."""

    def __init__(self, names: list[str], samples: np.ndarray | list[np.ndarray]) -> None:
        arrays = samples if isinstance(samples, list) else [samples]
        self._items = iter([{n: a[i : i + 1] for n, a in zip(names, arrays)} for i in range(len(arrays[0]))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def options_of(settings: dict[str, Any]) -> dict[str, Any]:
    """The options that make an artifact again, from the settings it recorded (``quantize``'s and
    ``convert``'s keywords)."""
    methods = {v: k for k, v in CALIBRATE_METHODS.items()}
    return {
        "reduce_range": bool(settings.get("reduce_range", False)),
        "per_channel": bool(settings.get("per_channel", True)),
        "calibrate_method": methods.get(settings.get("calibrate_method", "MinMax"), "minmax"),
        "activation_type": settings.get("activation_type", "uint8"),
        "opset": settings.get("opset", DEFAULT_OPSET),
    }


def quantize(
    model_path: Path,
    out_path: Path,
    precision: str,
    samples: np.ndarray | list[np.ndarray] | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    q = require("onnxruntime.quantization", "quantize ONNX models")
    defaults = quant_defaults()
    reduce_range = options.get("reduce_range", defaults["reduce_range"])
    settings: dict[str, Any] = {
        "reduce_range": bool(reduce_range),
        "reduce_range_reason": "set by the caller" if "reduce_range" in options else defaults["why"],
        "per_channel": bool(options.get("per_channel", True)),
        "quantizer": f"onnxruntime {require('onnxruntime').__version__}",
    }
    if precision == "dynamic":
        q.quantize_dynamic(
            str(model_path),
            str(out_path),
            weight_type=q.QuantType.QInt8,
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            op_types_to_quantize=options.get("op_types", ["MatMul", "Gemm"]),
        )
        settings["op_types"] = list(options.get("op_types", ["MatMul", "Gemm"]))
        return settings
    method = str(options.get("calibrate_method", "minmax")).lower()
    if method not in CALIBRATE_METHODS:
        raise BadInputError(f"calibrate_method must be one of {sorted(CALIBRATE_METHODS)}; received {method!r}")
    activation = options.get("activation_type", defaults["activation_type"])
    graph = require("onnx").load(str(model_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    int16 = list(options.get("int16_tensors") or [])
    extra = (
        {"TensorQuantOverrides": {t: [{"quant_type": q.QuantType.QInt16}] for t in int16}, "UseQDQContribOps": True}
        if int16
        else None
    )  # int16 Q/DQ: com.microsoft ops below opset 21
    if samples is None:
        raise BadInputError(f"onnx:{precision} is calibrated: pass data or calibration samples")
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
        q.quantize_static(
            str(model_path),
            str(out_path),
            _Reader(names, samples),
            quant_format=q.QuantFormat.QDQ,
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            activation_type=q.QuantType.QUInt8 if activation == "uint8" else q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=getattr(q.CalibrationMethod, CALIBRATE_METHODS[method]),
            nodes_to_exclude=options.get("nodes_to_exclude"),
            extra_options=extra,
        )
    if int16:
        settings["int16_tensors"] = int16
    settings.update(
        format="QDQ",
        calibrate_method=CALIBRATE_METHODS[method],
        activation_type=activation,
        weight_type="int8",
        calibration_samples=len(samples[0] if isinstance(samples, list) else samples),
    )
    return settings


def convert(source: SourceModel, out: Path, *, precision: str, calibration: Any = None, **options: Any) -> Artifact:
    """Write ``out/<model>.<precision>.onnx`` and return its Artifact."""
    onnx = require("onnx", "write ONNX models")
    path = out / _artifact.file_name(source, precision, SUFFIX)
    with tempfile.TemporaryDirectory(prefix="edgeship-onnx-") as tmp, _io.staged(path) as staged:
        settings = _write(source, staged, Path(tmp), precision, calibration, options)
        _check(staged, path, onnx)
        artifact = _artifact.make(
            staged, out, final=path, fmt="onnx", precision=precision, source=source, settings=settings
        )
    return artifact


def to_bytes(
    source: SourceModel, precision: str, calibration: Any = None, **options: Any
) -> tuple[bytes, dict[str, Any]]:
    """Convert ``source`` to ONNX ``precision`` in memory; returns (model bytes, settings)."""
    with tempfile.TemporaryDirectory(prefix="edgeship-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        settings = _write(source, path, Path(tmp), precision, calibration, options)
        return path.read_bytes(), settings


def _write(
    source: SourceModel, path: Path, tmp: Path, precision: str, calibration: Any, options: dict[str, Any]
) -> dict[str, Any]:
    onnx = require("onnx", "write ONNX models")
    opset = int(options.get("opset", DEFAULT_OPSET))
    if not 9 <= opset <= MAX_OPSET:
        raise BadInputError(f"opset must be between 9 and {MAX_OPSET} (tf2onnx's range); received {opset}")
    settings: dict[str, Any] = {"opset": opset}
    if source.kind == "torch":  # exported by torch.onnx (converters/_torch.py), then as any ONNX model
        from edgeship.converters import _torch

        exported, made = _torch.onnx_file(source, tmp, opset)
        settings.update(made)
        torch_proto = onnx.load(str(exported))
        settings["opset"] = next((o.version for o in torch_proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        if precision == "fp32":
            onnx.save(torch_proto, str(path))
        else:
            settings.update(_quantize_proto(torch_proto, tmp, path, precision, source, calibration, options))
        return settings
    if precision == "int8" and source.qat:
        model_proto, route = _from_qat_tflite(source, opset, calibration)
        settings.update(route)
        onnx.save(model_proto, str(path))
        return settings
    if precision != "fp32" and options.get("equalize"):
        source, equalized = _equalize.source(source, f"onnx:{precision}")
        settings.update(equalized)
    model_proto = float_model(source, opset)
    if precision == "fp32":
        onnx.save(model_proto, str(path))
    else:
        settings.update(_quantize_proto(model_proto, tmp, path, precision, source, calibration, options))
    return settings


def prepare_for_quantization(model_proto: Any, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The float model as ONNX Runtime's quantizer gets it: ``quant_pre_process`` (shape inference
    and graph optimisation make quantization ranges tighter), or the raw graph when that step
    fails. Returns the model's path and settings that record which it was."""
    onnx = require("onnx")
    q = require("onnxruntime.quantization", "quantize ONNX models")
    fp32_path, prepared = tmp / "fp32.onnx", tmp / "prepared.onnx"
    onnx.save(model_proto, str(fp32_path))
    try:
        q.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # onnxruntime raises whatever its graph passes raise
        why = f"{type(exc).__name__}: {exc}"
        log.warning("ONNX pre-processing (quant_pre_process) skipped, the raw graph is quantized: %s", why)
        return fp32_path, {"pre_processed": False, "pre_process_error": why[:300]}
    return prepared, {"pre_processed": True}


def _quantize_proto(
    model_proto: Any,
    tmp: Path,
    staged: Path,
    precision: str,
    source: SourceModel,
    calibration: Any,
    options: dict[str, Any],
) -> dict[str, Any]:
    prepared, settings = prepare_for_quantization(model_proto, tmp)
    samples = None
    if precision == "int8":
        samples = _calibration.prepare_all(
            calibration,
            source,
            target="onnx:int8",
            samples=options.get("calibration_samples", _calibration.DEFAULT_SAMPLES),
        )
    return {**settings, **quantize(prepared, staged, precision, samples, options)}


def _check(path: Path, final: Path, onnx: Any) -> None:
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        ops = sorted(set(re.findall(r"No Op registered for (\w+)", str(exc))))
        if ops:  # tf2onnx leaves TF ops it cannot map as they are; the checker finds them
            raise UnsupportedModelError(
                f"ONNX has no operator for the TensorFlow op(s) {', '.join(ops)} (tf2onnx cannot map them), "
                f"so the model cannot become {final.name}"
            ) from exc
        raise ConversionError(f"the ONNX model written for {final.name} does not pass onnx.checker: {exc}") from exc


def embed_metadata(path: Path, text: str) -> None:
    """``text`` under ``metadata_props`` key ``edgeship``, the file rewritten atomically."""
    onnx = require("onnx", "write ONNX metadata")
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != _METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=_METADATA_KEY, value=text)
    _io.write_bytes(path, model.SerializeToString())


def read_metadata(path: Path) -> str | None:
    onnx = require("onnx", "read ONNX metadata")
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}.get(_METADATA_KEY)


def rebuild_options(settings: dict[str, Any]) -> dict[str, Any]:
    return options_of(settings)


_METADATA_KEY = "edgeship"
