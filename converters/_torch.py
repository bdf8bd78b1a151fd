"""PyTorch models in: an ``nn.Module`` in eval mode with example inputs, a ``torch.export`` program, or a ``.pt2``.

    >>> manifest = convert(module, "tflite:int8,onnx:int8,coreml:fp16", data="digits",
    ...                    preprocess="layout=nchw", out="out")                   # doctest: +SKIP

The Source plugin ``torch`` (``converters/_source.py``'s ``SOURCES``) exports the model once with
``torch.export`` (the batch dimension left open where the model allows) and keeps that program as
the folder's float reference (``reference/model.pt2``, ``torch.export.save``); its outputs on the
data are stored at convert time, so validate and the doctor on the same data never import torch.
Each format makes its file with the field's own converter for PyTorch:

    tflite   litert-torch (``litert_torch.convert``); fp16, int8 and int8-float-io by ai-edge-quantizer
             on that float file (``converters/_torch_tflite.py``, which says why not PT2E)
    onnx     torch.onnx's dynamo exporter (onnxscript); int8 by ONNX Runtime's static quantization
    coreml   coremltools from the traced module (its ``torch.export`` frontend does not take this
             torch's max_pool2d), then edgeship's Core ML compression

Examples fix the input shapes: ``example=`` (a tensor or array, or a tuple of them, batch 1), else
the first test sample of the data. PyTorch images are NCHW: data stored NHWC takes
``--preprocess layout=nchw``; ``layout=nhwc`` (a tflite option, ``--layout nhwc``) makes a .tflite
that takes NHWC images, the transposes built in by litert-torch (``to_channel_last_io``) and the
artifact's ``layout`` recorded, so every stage feeds it its own layout (``runtimes._session.in_layout``).
The packages come with ``pip install 'edgeship[torch]'``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship._deps import progress_bars_off, require
from edgeship.errors import BadArtifactError, BadInputError, ConversionError, UnsupportedModelError

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel

log = logging.getLogger(__name__)


def _torch() -> Any:
    # torch imports tqdm, which reads TQDM_DISABLE once, at import: set it first, as converters/coreml.py
    # does, or coremltools' passes draw progress bars on stderr later
    os.environ.setdefault("TQDM_DISABLE", "1")
    return require("torch", "convert PyTorch models")


@dataclass(frozen=True)
class TorchModel:
    """What the converters take from a PyTorch source: the module to run (an ``nn.Module`` in eval
    mode, or an exported program's module), its example inputs (batch 1) and the exported program."""

    module: Any
    example: tuple[Any, ...]
    program: Any


def _examples(example: Any, source_name: str) -> tuple[Any, ...]:
    """``example`` as a tuple of float or integer torch tensors with a batch dimension, or a clear error."""
    torch = _torch()
    if example is None:
        raise BadInputError(
            f"{source_name} is a PyTorch model: its input shapes come from example inputs. Pass example=<a tensor "
            "of batch 1> (or a tuple, one per input), or data whose first test sample serves as the example"
        )
    items = example if isinstance(example, (tuple, list)) else (example,)
    tensors = []
    for i, item in enumerate(items):
        value = item if isinstance(item, torch.Tensor) else torch.from_numpy(np.array(item))  # a copy torch may write
        if value.ndim == 0 or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise BadInputError(
                f"example input {i} of {source_name} must be a float or integer tensor with a batch dimension; "
                f"received {type(item).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
            )
        tensors.append(value.float() if value.is_floating_point() else value)
    return tuple(tensors)


def _export(module: Any, example: tuple[Any, ...], name: str) -> Any:
    """``torch.export`` of ``module``: the batch dimension open where the model allows, else as the example."""
    torch = _torch()
    doubled = tuple(torch.cat([t, t]) for t in example)  # batch 1 would be specialised to a constant
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with quiet_torch():
            return torch.export.export(module, doubled, dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as exc:  # a model whose batch cannot vary (a reshape to a fixed size, …): as given
        log.info("%s exports with a fixed batch (%s)", name, str(exc).splitlines()[0] if str(exc) else exc)
    try:
        return torch.export.export(module, example)
    except Exception as exc:  # torch raises many kinds for an op or a control flow it cannot export
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UnsupportedModelError(
            f"torch.export could not export {name}: {first}. Export needs ops and control flow it can trace; "
            "see the torch.export docs, or export the model yourself and pass the ExportedProgram"
        ) from exc


def _load_pt2(path: Path) -> Any:
    torch = _torch()
    try:
        return torch.export.load(str(path))
    except Exception as exc:  # a damaged zip, another torch's serialization, a file that is not a .pt2
        raise BadArtifactError(
            f"{path} could not be loaded by torch.export.load (torch {torch.__version__}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Save it again with "
            "torch.export.save from this torch version"
        ) from exc


def _program_examples(program: Any) -> tuple[Any, ...] | None:
    """The example inputs an exported program carries (torch.export keeps them), as batch-1 tensors."""
    found = getattr(program, "example_inputs", None)
    args = found[0] if isinstance(found, tuple) and found else None
    return tuple(a[:1] for a in args) if args else None


class TorchSource:
    """PyTorch: an ``nn.Module``, a ``torch.export.ExportedProgram`` or a ``.pt2`` file."""

    name = "torch"

    def recognises(self, model: object) -> bool:
        if isinstance(model, Path):
            return model.suffix == ".pt2"
        torch = sys.modules.get("torch")  # a torch object exists only where torch is imported
        return torch is not None and isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))

    def load(self, model: Any, name: str | None, *, trust_code: bool = False, example: Any = None) -> SourceModel:
        from edgeship.converters._source import SourceModel

        torch = _torch()
        if isinstance(model, Path):
            program, origin, default = _load_pt2(model), str(model), model.stem
        elif isinstance(model, torch.export.ExportedProgram):
            program, origin, default = model, "<torch.export program>", "model"
        else:
            if model.training:
                raise BadInputError(
                    f"{type(model).__name__} is in training mode (dropout and batch norm act differently there); "
                    "call model.eval() before converting it"
                )
            program, origin, default = None, "<in-memory torch module>", type(model).__name__.lower()
        name = name or default
        given = example if example is not None else (_program_examples(program) if program is not None else None)
        examples = _examples(given, name)
        module = model if program is None else program.module()
        with torch.no_grad():
            try:
                module(*examples)
            except Exception as exc:  # shapes or dtypes the model does not take
                raise BadInputError(
                    f"{name} does not run on the example inputs of shapes {[tuple(e.shape) for e in examples]}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
        program = program if program is not None else _export(model, examples, name)
        specs = [(tuple(int(d) for d in e.shape[1:]), str(e.dtype).removeprefix("torch.")) for e in examples]
        (shape, dtype), *extra = specs
        return SourceModel(
            name=name, origin=origin, input_shape=shape, input_dtype=dtype, extra_inputs=tuple(extra),
            kind=self.name, torch=TorchModel(module=module, example=examples, program=program),
            layout="channels_first" if len(shape) == 3 else "channels_last",
        )  # fmt: skip

    def write_reference(self, source: SourceModel, folder: Path) -> Path:
        from edgeship import _io

        torch = _torch()
        path = folder / "model.pt2"
        with _io.staged(path) as tmp:
            torch.export.save(model_of(source).program, str(tmp))
        return path

    def predictor(self, path: Path, *, trust_code: bool = False) -> Callable[[Any], list[np.ndarray]]:
        torch = _torch()
        module = _load_pt2(path).module()

        def run(x: Any) -> list[np.ndarray]:
            arrays = list(x) if isinstance(x, tuple) else [x]
            with torch.no_grad():
                try:
                    out = module(*(torch.from_numpy(np.array(a)) for a in arrays))
                except Exception:  # exported with a fixed batch: one sample at a time
                    parts = [module(*(torch.from_numpy(np.array(a[i : i + 1])) for a in arrays))
                             for i in range(len(arrays[0]))]  # fmt: skip
                    out = _joined(parts)
            outs = out if isinstance(out, (tuple, list)) else [out]
            return [o.detach().numpy() for o in outs]

        return run


#: the plugin ``SOURCES`` names
SOURCE = TorchSource()


def _joined(parts: list[Any]) -> Any:
    torch = _torch()
    if isinstance(parts[0], (tuple, list)):
        return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
    return torch.cat(parts)


def model_of(source: SourceModel) -> TorchModel:
    if not isinstance(source.torch, TorchModel):
        raise ConversionError(f"{source.name} is not a PyTorch source")
    return source.torch


def onnx_file(source: SourceModel, folder: Path, opset: int) -> tuple[Path, dict[str, Any]]:
    """The exported program translated to ONNX by torch.onnx's dynamo exporter, written in ``folder``
    (its batch dimension open where the program's is)."""
    require("onnxscript", "export PyTorch models to ONNX")
    torch = _torch()
    model = model_of(source)
    path = folder / "model.onnx"
    try:
        with quiet_torch():
            exported = torch.onnx.export(model.program, dynamo=True, opset_version=max(opset, 18), verbose=False)
            exported.save(str(path))
    except Exception as exc:  # an op the exporter has no translation for, and the like
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConversionError(f"torch.onnx could not export {source.name}: {first}") from exc
    return path, {"exporter": f"torch.onnx dynamo (torch {exporter('torch')}, onnxscript {exporter('onnxscript')})"}


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """torch's exporters print progress to stdout and log the guards of a first try that fails;
    both are torch's business, not the user's (the error, when there is one, is raised)."""
    # root too: litert-torch logs its notes there (its int64 downcast is said as a note instead)
    loggers = [logging.getLogger(n) for n in ("", "torch", "torch._guards", "torch.export", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def coreml_model(source: SourceModel, ct: Any, compute: Any, target: Any, batch: Any) -> Any:
    """An ML Program from the traced module (coremltools' torch frontend)."""
    torch = _torch()
    model = model_of(source)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # torch's own ops, traced once at this shape
        traced = torch.jit.trace(model.module, model.example)
    inputs = [
        ct.TensorType(name=f"input_{i}" if i else "input", shape=(batch, *e.shape[1:]),
                      dtype=np.float32 if e.is_floating_point() else np.int32)
        for i, e in enumerate(model.example)
    ]  # fmt: skip
    with torch.no_grad():
        produced = model.module(*model.example)
    count = len(produced) if isinstance(produced, (tuple, list)) else 1
    outputs = [ct.TensorType(name=f"output_{i}" if i else "output") for i in range(count)]
    with progress_bars_off():  # coremltools draws progress bars (tqdm came with torch, before TQDM_DISABLE)
        return ct.convert(traced, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                          compute_precision=compute, minimum_deployment_target=target)  # fmt: skip


def weighted_layers(source: SourceModel) -> list[tuple[str, str, tuple[int, ...]]]:
    """(``conv`` or ``linear``, module path, weight shape) of each conv and linear op of the
    exported program, in program order: its nodes record the module they ran in (``nn_module_stack``)."""
    found = []
    for node in model_of(source).program.graph.nodes:
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        kind = next((k for k in ("conv", "linear") if k in str(node.target)), None)
        if node.op != "call_function" or kind is None or not stack or len(node.args) < 2:
            continue
        value = getattr(node.args[1], "meta", {}).get("val")
        if value is not None:
            found.append((kind, str(stack[-1][0]), tuple(int(d) for d in value.shape)))
    return found


_ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh"}


def module_paths(model: Any) -> dict[str, str]:
    """Tensor -> the PyTorch module that computes it, from what torch.onnx records: a node's weight
    initializer (``layer2.0.conv1.weight``), else its ``pkg.torch.onnx.name_scopes`` (the module
    scopes it ran in, innermost last, then the op's own name)."""
    import ast

    found: dict[str, str] = {}
    weighted: dict[str, str] = {}  # tensors computed by a layer with weights (conv, linear)
    for node in model.graph.node:
        weight = next((i for i in node.input[1:] if i.endswith(".weight")), None)
        path: str | None = weight.removesuffix(".weight") if weight else None
        if path is not None:
            weighted.update(dict.fromkeys(node.output, path))
        elif node.op_type in _ACTIVATIONS and node.input and node.input[0] in weighted:
            path = weighted[node.input[0]]  # its activation, as one quantized tensor: the layer's (conv_1 + ReLU)
        if path is None:
            scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
            try:
                parts = [s for s in ast.literal_eval(scopes) if s] if scopes else []
            except (ValueError, SyntaxError):  # a scope list written another way: no name from it
                parts = []
            path = parts[-2] if len(parts) >= 2 else None
        if path:
            found.update(dict.fromkeys(node.output, str(path)))
    return found


def exporter(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


__all__ = ["module_paths", "weighted_layers", "SOURCE", "TorchSource", "TorchModel", "onnx_file", "coreml_model"]
