"""PyTorch to TFLite: litert-torch's float file, then ai-edge-quantizer for fp16 weights and int8.

litert-torch (``litert_torch.convert``) lowers the module to a float ``.tflite``; every other
precision is ai-edge-quantizer's work on that file (``converters.tflite_mixed``): fp16 weights by
its float casting, int8 and int8-float-io by its static recipes, calibrated on the data with
min/max over every sample, int16 activations or float for chosen tensors where the doctor asks.

litert-torch's own PT2E quantizer was measured beside it (torch ResNet-8 and MobileNetV2-style
nets on digits): the same agreement with float (100 % / 99.7 %), the same latency, but float32
outputs where tflite:int8 promises int8 ones, a larger error on MobileNetV2 (0.108 against 0.090)
and 11-13 s against under 1 s; ai-edge-quantizer also makes int8-float-io, and is the quantizer
the doctor's mixed TFLite models come from.

litert-torch names a tensor after the modules it ran in: one ``<class>_<attribute>`` per level
below the root module's class, joined by ``/`` (``…Net/torch.nn.modules.container.Sequential_layer2/
…BasicBlock_0/torch.nn.modules.conv.Conv2d_conv1``), the names of fused ops joined by ``;``.
``module_path`` reads the PyTorch module path back (``layer2.0.conv1``), so the doctor names layers
as a PyTorch user does. A program's module (from a ``.pt2``) is unflattened
(``torch.export.unflatten``) before litert-torch wraps it for ``layout=nhwc``: wrapped flat, its
tensors would lose their modules' names.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship._deps import quiet_native_stderr, require, tensorflow
from edgeship.converters._torch import _torch, exporter, model_of, quiet_torch
from edgeship.errors import BadInputError, ConversionError, UnsupportedModelError

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel

__all__ = ["PRECISIONS", "float_file", "calibration_arrays", "tflite_bytes", "module_path", "module_classes"]

#: the TFLite precisions made from a PyTorch model (the others are refused, said so)
PRECISIONS = ("fp32", "fp16", "int8", "int8-float-io")


def float_file(source: SourceModel, layout: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """litert-torch's float ``.tflite`` of ``source`` and the settings that say how it was made;
    ``layout="nhwc"`` builds the transposes of its 4-D inputs into the file (``to_channel_last_io``)."""
    tensorflow()  # litert-torch imports it: configured and quiet first, as every TensorFlow import here
    with quiet_native_stderr():
        litert_torch = require("litert_torch", "convert PyTorch models to TFLite")
    model = model_of(source)
    settings: dict[str, Any] = {"exporter": f"litert-torch {exporter('litert-torch')}", "torch": exporter("torch")}
    module, example = model.module, model.example
    if layout not in (None, "nchw", "nhwc"):
        raise BadInputError(f"layout is nchw or nhwc; received {layout!r}")
    images = [i for i, e in enumerate(example) if e.ndim == 4]
    if layout == "nhwc" and images:  # litert-torch wraps the module: the transposes go into the file
        if isinstance(module, _torch().fx.GraphModule):  # a program's: wrapped flat, its tensors lose their modules
            module = _torch().export.unflatten(model.program)
        module = litert_torch.to_channel_last_io(module, args=images)
        example = tuple(e.permute(0, 2, 3, 1).contiguous() if i in images else e for i, e in enumerate(example))
        settings["layout"] = "nhwc"
    elif layout == "nhwc":
        raise UnsupportedModelError(f"layout=nhwc applies to image inputs (4-D); {source.name} has none")
    with tempfile.TemporaryDirectory(prefix="edgeship-torch-") as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            with quiet_torch():
                litert_torch.convert(module, example).export(str(path))
        except Exception as exc:  # litert-torch raises many kinds for an op it cannot lower
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConversionError(f"litert-torch could not convert {source.name} to TFLite: {first}") from exc
        data = path.read_bytes()
    if any(e.dtype == _torch().int64 for e in example):
        warnings.warn(
            "the .tflite takes int32 where the PyTorch model takes int64 (litert-torch makes 64-bit I/O 32-bit); "
            "edgeship feeds int64 ids to it as int32 where they fit",
            stacklevel=3,
        )
    return data, settings


def calibration_arrays(
    source: SourceModel, calibration: Any, precision: str, samples: int, layout: str | None
) -> list[np.ndarray]:
    """The calibration samples, one array per input, in the layout the float file takes."""
    from edgeship.converters import calibration as _calibration
    from edgeship.runtimes._session import in_layout

    prepared = _calibration.prepare_all(calibration, source, target=f"tflite:{precision}", samples=samples)
    return list(in_layout(prepared if isinstance(prepared, list) else [prepared], layout))


def tflite_bytes(
    source: SourceModel,
    precision: str,
    calibration: Any,
    samples: int,
    *,
    layout: str | None = None,
    int16_tensors: Sequence[str] = (),
) -> tuple[bytes, dict[str, Any]]:
    """A ``.tflite`` of ``source`` at ``precision``: litert-torch's float file, its conv and linear
    weights cast to fp16 for ``fp16``, quantized by ai-edge-quantizer on the calibration samples for
    the int8 precisions (``int16_tensors``' ops with int16 activations)."""
    from edgeship.converters import tflite_mixed

    if precision not in PRECISIONS:
        raise UnsupportedModelError(
            f"tflite:{precision} is not made from PyTorch models yet; edgeship makes "
            f"{', '.join('tflite:' + p for p in PRECISIONS)} from them"
        )
    if int16_tensors and precision not in ("int8", "int8-float-io"):
        raise UnsupportedModelError(f"int16 tensors are for tflite:int8 and tflite:int8-float-io; received {precision}")
    data, settings = float_file(source, layout)
    if precision == "fp32":
        return data, settings
    if precision == "fp16":
        blob, cast = tflite_mixed.fp16_weights(data)
        return blob, {**settings, **cast}
    arrays = calibration_arrays(source, calibration, precision, samples, settings.get("layout"))
    blob, quantized = tflite_mixed.Mixed(data, precision, arrays, None).quantize(int16=int16_tensors)
    return blob, {**settings, **quantized}


def module_classes(source: SourceModel) -> dict[str, str]:
    """Module path -> the module's class (``layer1.0.conv1`` -> ``torch.nn.modules.conv.Conv2d``),
    from the ``nn_module_stack`` torch.export records on every node of the program."""
    found: dict[str, str] = {}
    for node in model_of(source).program.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            found[str(path)] = str(cls)
    return found


def module_path(tensor: str, classes: Mapping[str, str] | None = None) -> str | None:
    """The PyTorch module path of a litert-torch tensor name (the last of fused names: the op that
    computes it, the conv of conv + batch norm + ReLU), or None where the name has no module in it.

    With ``classes`` (``module_classes``) each level is matched against the modules the program
    has, so attribute names with ``_`` read back whole; without, a level is ``<Class>_<attr>``."""
    parts = [p for p in tensor.split(";") if p and not p.isdigit()]
    if not parts or "/" not in parts[-1]:
        return None
    levels = parts[-1].split("/")
    if levels[0].endswith(".ChannelLastIOWrapper"):  # layout=nhwc: the model is the wrapper's ``wrapped``
        levels = levels[1:]
    path = ""
    for level in levels[1:]:
        attr = _attribute(level, path, classes) if classes else None
        if attr is None:
            name = level.rsplit(".", 1)[-1]
            if "_" not in name:
                return path or None
            attr = name.split("_", 1)[1]
        path = f"{path}.{attr}" if path else attr
    return path or None


def _attribute(level: str, parent: str, classes: Mapping[str, str]) -> str | None:
    """The attribute ``level`` names below ``parent``: a known child whose ``<class>_<attr>`` it is."""
    prefix = f"{parent}." if parent else ""
    for path, cls in classes.items():
        if path.startswith(prefix) and path and level == f"{cls}_{path[len(prefix) :]}":
            return path[len(prefix) :]
    return None
