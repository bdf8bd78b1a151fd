"""Core ML: ML Program .mlpackage at fp16/fp32, plus coremltools weight compression.

Compression works on the float program (QAT Keras models yield fake-quant ops in fp16, not int8
weights: docs/stack-notes.md fact 10), and lowers ``weight_threshold`` so small tensors are compressed too.
Saving works on Linux; running needs macOS (or edgeship's reference evaluator).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship import _io
from edgeship._deps import progress_bars_off, require
from edgeship.converters import _artifact
from edgeship.errors import BadInputError, UnsupportedModelError
from edgeship.records import Artifact, TensorSpec
from edgeship.runtimes import mil
from edgeship.runtimes.mil import FEATURE_DTYPES

log = logging.getLogger(__name__)

SUFFIX = ".mlpackage"

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
DEPLOYMENT_TARGET = "iOS16"  # the first target with ML Program weight compression ops
#: precisions whose compression needs a newer target: per-block scales and grouped palettes are iOS18 ops
DEPLOYMENT_TARGETS = {"w8-block": "iOS18", "w4-block": "iOS18", "pal4-grouped": "iOS18"}
BLOCK_SIZE = 32  # input channels per quantization block
GROUP_SIZE = 16  # output channels per palette
MAX_BATCH = 1024
#: how far each float precision's outputs may be from the float model's before convert records the file,
#: as a fraction of their magnitude (converters/_check.py); quantized precisions are judged by validate
CHECK_TOLERANCE = {"fp32": 2e-2, "fp16": 2e-2}
PRECISIONS = {
    "fp16": "ML Program, float16 compute and weights",
    "fp32": "ML Program, float32 compute and weights",
    "w8": "int8 linear (symmetric) weights, a scale per output channel, fp16 compute",
    "w8-block": "int8 linear weights, a scale per block of 32 input channels (iOS18, macOS15 and later)",
    "w4-block": "int4 linear weights, a scale per block of 32 input channels (iOS18, macOS15 and later)",
    "pal2": "2-bit k-means palettized weights",
    "pal4": "4-bit k-means palettized weights",
    "pal6": "6-bit k-means palettized weights",
    "pal8": "8-bit k-means palettized weights",
    "pal4-grouped": "4-bit k-means palettes, one per group of 16 output channels (iOS18, macOS15 and later)",
    "pruned": "sparse weights: threshold pruning for sparse models, else 50% magnitude pruning",
}


def _coremltools() -> Any:
    from edgeship._deps import tensorflow

    tensorflow()  # coremltools' TF frontend needs Keras 2 selected before TensorFlow loads
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools draws progress bars on every pass
    ct = require("coremltools", "convert to Core ML")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return ct


def program(source: SourceModel, precision: str) -> Any:
    """The uncompressed ML Program (an in-memory MLModel) an artifact of ``precision`` compresses:
    fp16 compute (fp32 for ``fp32``), written for ``target(precision)``."""
    return _program(source, _coremltools(), precision)


def _program(source: SourceModel, ct: Any, precision: str) -> Any:
    if source.kind == "onnx":
        raise UnsupportedModelError(
            f"{source.origin} is an ONNX model; coremltools 9 has no ONNX frontend. Convert the original Keras "
            "or SavedModel model to Core ML"
        )
    batch = ct.RangeDim(lower_bound=1, upper_bound=MAX_BATCH, default=1)
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    if source.kind == "torch":
        from edgeship.converters import _torch

        return _torch.coreml_model(source, ct, compute, getattr(ct.target, target(precision)), batch)
    keras = source.float_keras()
    model = str(source.saved_model) if source.kind == "saved_model" else keras
    inputs = None  # a SavedModel keeps its own input name and shape
    if source.kind == "keras":
        inputs = [
            ct.TensorType(name=tensor.name.split(":")[0], shape=(batch,) + tuple(shape), dtype=getattr(np, dtype))
            for tensor, (shape, dtype) in zip(keras.inputs, source.input_specs)
        ]
    try:
        with progress_bars_off():
            return ct.convert(
                model,
                convert_to="mlprogram",
                inputs=inputs,
                compute_precision=compute,
                minimum_deployment_target=getattr(ct.target, target(precision)),
                skip_model_load=True,
            )
    except NotImplementedError as exc:
        ops = re.findall(r"TF op '(\w+)'", str(exc))
        what = f"the TensorFlow op(s) {', '.join(ops)}" if ops else f"part of the model ({exc})"
        raise UnsupportedModelError(f"coremltools cannot convert {what} to Core ML") from exc
    except (ValueError, TypeError, AssertionError, KeyError) as exc:  # its frontend fails on graphs it cannot map
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"coremltools {ct.__version__} cannot convert this model to Core ML ({type(exc).__name__}: {first[:200]})"
        ) from exc


def target(precision: str) -> str:
    """The minimum deployment target an ML Program of ``precision`` is written for."""
    return DEPLOYMENT_TARGETS.get(precision, DEPLOYMENT_TARGET)


def compress(mlmodel: Any, precision: str, source: SourceModel, options: dict[str, Any]) -> dict[str, Any]:
    """``mlmodel`` (left as it is) compressed as ``precision`` with ``options``; returns the
    settings to record with the compressed MLModel under ``"model"``. ``options["keep"]`` names
    ops (conv, linear, …) whose weights stay uncompressed fp16 (``op_name_configs`` set to None;
    recorded as ``kept_ops``; ``held`` reads what the saved package holds);
    ``options["eight_bit"]`` ops compressed with 8 bits in the precision's own family (8-bit
    palettes, int8 blocks: ``EIGHT_BIT``)."""
    ct = _coremltools()
    opt = ct.optimize.coreml
    threshold = int(options.get("weight_threshold", 64))  # default 2048 would skip a compact model's tensors
    config, record = _config(opt, precision, source, options, threshold)
    names: dict[str, Any] = {name: None for name in options.get("keep") or ()}
    eight = sorted(options.get("eight_bit") or ())
    if eight:
        if precision not in EIGHT_BIT:
            raise UnsupportedModelError(
                f"coreml:{precision} has no 8-bit form of its own; keep ops uncompressed "
                f"instead (precisions with one: {sorted(EIGHT_BIT)})"
            )
        finer, _ = _config(opt, EIGHT_BIT[precision], source, options, threshold)
        names.update({name: finer for name in eight})
    compressor = (
        opt.linear_quantize_weights
        if isinstance(config, opt.OpLinearQuantizerConfig)
        else opt.palettize_weights
        if isinstance(config, opt.OpPalettizerConfig)
        else opt.prune_weights
    )
    with _root_warnings_from_coremltools_off(), progress_bars_off():
        model = compressor(mlmodel, opt.OptimizationConfig(global_config=config, op_name_configs=names))
    keep = sorted(options.get("keep") or ())
    return {
        "model": model,
        **record,
        **({"kept_ops": keep} if keep else {}),
        **({"eight_bit_ops": eight} if eight else {}),
    }


@contextlib.contextmanager
def _root_warnings_from_coremltools_off() -> Iterator[None]:
    """coremltools' compressors warn on the root logger for each weight they skip (channels not
    divisible into blocks, too small): ``held`` records those ops in the artifact's settings instead."""

    def outside(record: logging.LogRecord) -> bool:
        return "coremltools" not in record.pathname

    root = logging.getLogger()
    root.addFilter(outside)
    try:
        yield
    finally:
        root.removeFilter(outside)


#: precision -> the same compression at 8 bits, for the ops it hurts most (``compress``'s ``eight_bit``)
EIGHT_BIT = {"pal2": "pal8", "pal4": "pal8", "pal6": "pal8", "pal4-grouped": "pal8-grouped", "w4-block": "w8-block"}
#: precision -> the next finer uniform precision a user would convert to instead
FINER = {
    "pal2": "pal4",
    "pal4": "pal6",
    "pal6": "pal8",
    "pal8": "w8",
    "pal4-grouped": "pal6",
    "w4-block": "w8-block",
    "w8": "fp16",
    "w8-block": "fp16",
}


def _config(
    opt: Any, precision: str, source: SourceModel, options: dict[str, Any], threshold: int
) -> tuple[Any, dict[str, Any]]:
    """The coremltools OpCompressorConfig of ``precision`` and the settings that record it."""
    if precision == "w8":
        return (
            opt.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel", weight_threshold=threshold),
            {"compression": "int8 linear symmetric", "granularity": "per_channel", "weight_threshold": threshold},
        )
    if precision in ("w8-block", "w4-block"):
        block = int(options.get("block_size", BLOCK_SIZE))
        dtype = "int8" if precision == "w8-block" else "int4"
        config = opt.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype=dtype, granularity="per_block", block_size=block, weight_threshold=threshold
        )
        return config, {
            "compression": f"{dtype} linear symmetric",
            "granularity": "per_block",
            "block_size": block,
            "weight_threshold": threshold,
        }
    if precision.startswith("pal") and precision.endswith("-grouped"):
        bits, group = int(precision[3:].split("-")[0]), int(options.get("group_size", GROUP_SIZE))
        config = opt.OpPalettizerConfig(
            mode="kmeans", nbits=bits, granularity="per_grouped_channel", group_size=group, weight_threshold=threshold
        )
        return config, {
            "compression": f"{bits}-bit k-means palettization",
            "granularity": "per_grouped_channel",
            "group_size": group,
            "weight_threshold": threshold,
        }
    if precision.startswith("pal"):
        bits = int(precision[3:])
        return (
            opt.OpPalettizerConfig(mode="kmeans", nbits=bits, weight_threshold=threshold),
            {"compression": f"{bits}-bit k-means palettization", "weight_threshold": threshold},
        )
    sparsity = source.record.sparsity if source.record is not None else {}
    if sparsity and min(sparsity.values()) > 0.3:
        config = opt.OpThresholdPrunerConfig(
            threshold=1e-12, minimum_sparsity_percentile=0.3, weight_threshold=threshold
        )
        how = "threshold pruning (the model is already sparse)"
    else:
        target = float(options.get("target_sparsity", 0.5))
        config = opt.OpMagnitudePrunerConfig(target_sparsity=target, weight_threshold=threshold)
        how = f"magnitude pruning to {target:.0%} (no fine-tuning: validate the accuracy)"
    return config, {"compression": how, "weight_threshold": threshold}


def specs(mlmodel_spec: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output TensorSpecs from a Core ML model spec (-1 for a flexible dimension)."""

    def one(feature: Any) -> TensorSpec:
        array = feature.type.multiArrayType
        shape = [int(d) for d in array.shape]
        ranges = array.shapeRange.sizeRanges
        if ranges:
            shape = [int(r.lowerBound) if r.lowerBound == r.upperBound else -1 for r in ranges]
        return TensorSpec(name=feature.name, shape=tuple(shape), dtype=FEATURE_DTYPES.get(array.dataType, "float32"))

    desc = mlmodel_spec.description
    return tuple(one(f) for f in desc.input), tuple(one(f) for f in desc.output)


def made(source: SourceModel, precision: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The MLModel of ``precision`` (converted, then compressed) and the settings that record it."""
    ct = _coremltools()
    if precision not in PRECISIONS:
        raise BadInputError(f"coreml has no precision '{precision}'; choose one of {sorted(PRECISIONS)}")
    mlmodel = _program(source, ct, precision)
    settings: dict[str, Any] = {
        "converter": f"coremltools {ct.__version__}",
        "model_type": "mlprogram",
        "compute_precision": "fp32" if precision == "fp32" else "fp16",
        "minimum_deployment_target": target(precision),
        "max_batch": MAX_BATCH,
    }
    if source.kind == "torch":
        from edgeship.converters._torch import exporter

        settings["exporter"] = f"torch.jit.trace (torch {exporter('torch')}), then coremltools' PyTorch frontend"
    if precision not in ("fp16", "fp32"):
        result = compress(mlmodel, precision, source, options)
        mlmodel = result.pop("model")
        settings.update(result)
    return mlmodel, settings


def recorded_settings(package: Path) -> dict[str, Any]:
    """What a saved compressed package holds, read back: how many of its weighted compute ops
    (conv, linear, matmul) have compressed weights, and the names of those that do not (kept on
    request, or skipped by coremltools: too small for ``weight_threshold``, channels not divisible
    into blocks)."""
    ops = mil.weighted_ops(mil.read(package).program)
    return {
        "compute_ops": len(ops),
        "compressed_ops": sum(c for _, c in ops),
        "uncompressed_ops": [op.name for op, c in ops if not c],
    }


def convert(source: SourceModel, out: Path, *, precision: str, calibration: Any = None, **options: Any) -> Artifact:
    """Write ``out/<model>.<precision>.mlpackage`` and return its Artifact."""
    mlmodel, settings = made(source, precision, options)
    inputs, outputs = specs(mlmodel.get_spec())
    path = out / _artifact.file_name(source, precision, SUFFIX)
    with _io.staged(path, directory=True) as staged:
        mlmodel.save(str(staged))
        if precision not in ("fp16", "fp32"):
            settings.update(recorded_settings(staged))
        return _artifact.make(
            staged,
            out,
            final=path,
            fmt="coreml",
            precision=precision,
            source=source,
            settings=settings,
            inputs=inputs,
            outputs=outputs,
        )


def embed_metadata(path: Path, text: str) -> None:
    """``text`` under ``user_defined_metadata`` key ``edgeship``, the package replaced atomically."""
    import shutil

    ct = require("coremltools", "write Core ML metadata")
    model = ct.models.MLModel(str(path), skip_model_load=True)
    model.user_defined_metadata[_METADATA_KEY] = text
    with _io.staged(path, directory=True) as tmp:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(str(tmp))


def read_metadata(path: Path) -> str | None:
    ct = require("coremltools", "read Core ML metadata")
    return ct.models.MLModel(str(path), skip_model_load=True).user_defined_metadata.get(_METADATA_KEY) or None


def rebuild_options(settings: dict[str, Any]) -> dict[str, Any]:
    return {}


_METADATA_KEY = "edgeship"
