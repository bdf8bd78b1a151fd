"""ONNX per-layer error from the QDQ artifact's intermediate outputs; mixed models by nodes_to_exclude.

Every activation of a QDQ model passes QuantizeLinear -> DequantizeLinear. Run with graph
optimisation off (as ``onnxruntime.quantization.qdq_loss_debug.collect_activations`` does), the
tensor before that pair is the layer's float result on already-quantized inputs, and the one
after is what int8 makes of it: their difference is this layer's own error. The same tensors of
the float model (rebuilt exactly as the converter made it) give the accumulated error.
``create_activation_matching`` pairs the tensors by ONNX Runtime's naming rules.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship._deps import require
from edgeship.converters import _torch
from edgeship.converters import calibration as _calibration
from edgeship.converters import onnx as _onnx
from edgeship.doctor.layers import LayerTrace, Probe, layer_name, leaf_names, unique_names
from edgeship.records import Artifact
from edgeship.runtimes._session import in_order

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset

_ONNX_MOVES = {
    "QuantizeLinear",
    "DequantizeLinear",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Concat",
    "Shape",
    "Gather",
    "Slice",
    "Split",
    "Identity",
    "Cast",
    "Pad",
    "Constant",
}
#: the precisions the doctor examines
DOCTORED = frozenset({"int8"})
_BATCH = 50
_SHAPE_ONLY = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


def _collect(
    model: ModelProto, names: Sequence[str], x: Sequence[np.ndarray], tmp: Path, tag: str
) -> dict[str, list[np.ndarray]]:
    """Run ``model`` on ``x`` (one array per input, in the source model's order) with ``names``
    added as outputs (optimisation off); name -> one array per batch."""
    onnx = require("onnx")
    ort = require("onnxruntime", "run ONNX models")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    floats = _float_tensors(model)
    present = {o.name for o in model.graph.output}
    wanted = [n for n in dict.fromkeys(names) if n in floats]
    for name in wanted:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    path = tmp / f"{tag}.onnx"
    onnx.save(model, str(path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = _feeds(session.get_inputs(), x)
    collected: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    first = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else None
    step = first if isinstance(first, int) and first > 0 else _BATCH  # a file exported with a fixed batch
    for i in range(0, len(x[0]), step):
        for name, value in zip(wanted, session.run(wanted, {k: a[i : i + step] for k, a in feeds.items()})):
            collected[name].append(value)
    return collected


def _names(inputs: Sequence[Any], x: Sequence[np.ndarray]) -> list[str]:
    """ONNX Runtime's input name for each array of ``x``, matched by shape (a symbolic dimension
    is open): a converter may order the inputs differently from the source model."""
    shapes = [[d if isinstance(d, int) else -1 for d in i.shape] for i in inputs]
    arrays = in_order(shapes, x)
    names = [next((i.name for i, a in zip(inputs, arrays) if a is given), "") for given in x]
    return names if sorted(names) == sorted(i.name for i in inputs) else [i.name for i in inputs]


def _feeds(inputs: Sequence[Any], x: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """``x`` keyed by ONNX Runtime's input names; integer ids stay as they are, floats become float32."""
    return {name: a if a.dtype.kind in "iu" else a.astype(np.float32) for name, a in zip(_names(inputs, x), x)}


def _float_tensors(model: ModelProto) -> set[str]:
    """Names of the float32 tensors of ``model`` (graph inputs, node outputs), by shape inference."""
    onnx = require("onnx")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort: then trust every node output to be float
        return {o for node in model.graph.node for o in node.output}
    infos = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    return {v.name for v in infos if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


class _Graph:
    """Producers, consumers and initializers of one ONNX graph."""

    def __init__(self, model: ModelProto) -> None:
        numpy_helper = require("onnx").numpy_helper
        self.model = model
        self.producer = {o: node for node in model.graph.node for o in node.output}
        self.consumers: dict[str, list[NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def quant_params(self, tensor: str) -> tuple[float, int, np.dtype] | None:
        node = next((n for n in self.consumers.get(tensor, []) if n.op_type == "QuantizeLinear"), None)
        if node is None or node.input[1] not in self.init:
            return None
        zero = self.init.get(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8)
        scale = self.init[node.input[1]]
        if scale.size != 1:
            return None
        return float(scale.reshape(())), int(np.asarray(zero).reshape(-1)[0]), np.asarray(zero).dtype

    def input_range(self, tensor: str) -> tuple[float, float] | None:
        """The float range the model quantizes input ``tensor`` to, past shape-only ops."""
        while True:
            params = self.quant_params(tensor)
            if params is not None:
                scale, zero, dtype = params
                info = np.iinfo(dtype)
                return scale * (info.min - zero), scale * (info.max - zero)
            nxt = [n for n in self.consumers.get(tensor, []) if n.op_type in _SHAPE_ONLY]
            if not nxt:
                return None
            tensor = nxt[0].output[0]


def _pre_tensor(qdq: _Graph, name: str) -> str:
    """The tensor a QuantizeLinear reads for activation ``name`` (output tensors are renamed)."""
    renamed = f"{name}_QuantizeLinear_Input"
    return renamed if renamed in qdq.producer else name


def _local_reference(pre: np.ndarray, name: str, qdq: _Graph, fp: _Graph) -> np.ndarray:
    """``pre`` with any activation the quantizer folded into the QDQ pair put back.

    ONNX Runtime drops a Relu (or Clip) whose output range the QDQ pair already clamps; then the
    tensor before QDQ is the pre-activation, and comparing it raw would count the Relu as error.
    """
    float_node = fp.producer.get(name)
    qdq_node = qdq.producer.get(_pre_tensor(qdq, name))
    if float_node is None or qdq_node is None or qdq_node.op_type == float_node.op_type:
        return pre
    if float_node.op_type == "Relu":
        return np.maximum(pre, 0)
    if float_node.op_type == "Clip":
        bounds = [fp.init.get(i) for i in float_node.input[1:3]]
        low = float(bounds[0]) if len(bounds) > 0 and bounds[0] is not None else None
        high = float(bounds[1]) if len(bounds) > 1 and bounds[1] is not None else None
        return np.clip(pre, low, high)
    return pre


def _input_reached(graph: _Graph, tensor: str) -> str | None:
    """The graph input ``tensor`` is, past shape-only nodes; None when ``tensor`` is computed."""
    inputs = {i.name for i in graph.model.graph.input}
    while tensor not in inputs:
        node = graph.producer.get(tensor)
        if node is None or node.op_type not in _SHAPE_ONLY:
            return None
        tensor = node.input[0]
    return tensor


def _input_path(graph: _Graph, tensor: str) -> list[str] | None:
    """The shape-only nodes between the graph input and ``tensor``, or None when ``tensor`` is computed."""
    nodes: list[str] = []
    inputs = {i.name for i in graph.model.graph.input}
    while tensor not in inputs:
        node = graph.producer.get(tensor)
        if node is None or node.op_type not in _SHAPE_ONLY:
            return None
        nodes.append(node.name)
        tensor = node.input[0]
    return nodes


def _traces(
    matching: dict[str, dict[str, Any]],
    qdq: _Graph,
    fp: _Graph,
    known: Collection[str],
    paths: dict[str, str] | None = None,
) -> list[LayerTrace]:
    traces = []
    several = len(qdq.model.graph.input) > 1
    for name, match in matching.items():
        producer = qdq.producer.get(_pre_tensor(qdq, name))
        params = qdq.quant_params(_pre_tensor(qdq, name))
        ndim = match["pre_qdq"][0].ndim
        # tf2onnx names the input's NCHW transpose after the first layer: call its quantization "input"
        reached = _input_reached(qdq, _pre_tensor(qdq, name))
        layer = "input" if reached is not None else (paths or {}).get(name) or layer_name(name, known)
        trace = LayerTrace(
            layer,
            producer.op_type if producer is not None else "Input",
            name,
            channel_axis=1 if ndim == 4 else -1,  # tf2onnx keeps 4-D activations NCHW
            scale=params[0] if params else None,
            zero_point=params[1] if params else None,
        )
        if reached is not None and several:  # which of the inputs: its graph input's name
            trace.name = f"input:{reached}"
        refs = match.get("float") or [None] * len(match["pre_qdq"])
        for pre, post, ref in zip(match["pre_qdq"], match["post_qdq"], refs):
            trace.add(_local_reference(pre, name, qdq, fp), post)
            if ref is not None and ref.shape == post.shape:
                trace.add_model(ref, post)
        traces.append(trace)
    return traces


def _groups(fp: _Graph, traces: list[LayerTrace]) -> dict[str, list[str]]:
    """Float-graph node names per trace: the nodes that compute its tensor from the traced
    tensors before it (the shape ops for the input), found by tensor, so that a layer of a nested
    backbone is its own nodes and not the backbone's; and each trace's readers (the traces its
    tensor reaches first)."""
    traced = {t.tensor: t.name for t in traces}
    inputs = {i.name for i in fp.model.graph.input}
    groups: dict[str, list[str]] = {}
    for trace in traces:
        path = _input_path(fp, trace.tensor) if trace.layer == "input" else None
        groups[trace.name] = path if path is not None else _computing(fp, trace.tensor, traced, inputs)
        reached = [r for node in fp.consumers.get(trace.tensor, []) for r in _reached(fp, node, traced)]
        trace.readers = tuple(dict.fromkeys(r for r in reached if r != trace.name))
    return groups


def _computing(fp: _Graph, tensor: str, traced: dict[str, str], inputs: set[str]) -> list[str]:
    """The nodes between the traced tensors (or graph inputs) before ``tensor`` and ``tensor``."""
    nodes: list[str] = []
    stack = [tensor]
    while stack:
        node = fp.producer.get(stack.pop())
        if node is None or node.name in nodes:
            continue
        nodes.append(node.name)
        stack += [i for i in node.input if i and i not in fp.init and i not in inputs and i not in traced]
    return nodes


def _reached(fp: _Graph, node: NodeProto, traced: dict[str, str], depth: int = 16) -> list[str]:
    """The traces whose tensors ``node`` computes first, walking forward past untraced tensors."""
    found: list[str] = []
    for out in node.output:
        if out in traced:
            found.append(traced[out])
        elif depth > 0:
            found += [r for reader in fp.consumers.get(out, []) for r in _reached(fp, reader, traced, depth - 1)]
    return found


def _analyse(
    qdq: _Graph,
    fp: _Graph,
    x: Sequence[np.ndarray],
    tmp: Path,
    known: Collection[str],
    paths: dict[str, str] | None = None,
) -> list[LayerTrace]:
    """A LayerTrace per QDQ activation: its own error, and its error against the float model."""
    debug = require("onnxruntime.quantization.qdq_loss_debug", "debug ONNX quantization")
    quantize = [n for n in qdq.model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in qdq.init]
    activations = [
        t for node in quantize for t in (node.input[0], *(d.output[0] for d in qdq.consumers.get(node.output[0], [])))
    ]
    qdq_acts = _collect(qdq.model, activations, x, tmp, "qdq-debug")
    float_acts = _collect(fp.model, list(qdq_acts), x, tmp, "float-debug")
    traces = _traces(debug.create_activation_matching(qdq_acts, float_acts), qdq, fp, known, paths)
    unique_names(traces)
    return traces


def probe(source: SourceModel, artifact: Artifact, path: Path, x: Sequence[np.ndarray], dataset: Dataset) -> Probe:
    """Per-layer figures of the QDQ ``artifact`` on ``x`` (one array per model input, in the
    model's order and dtypes) and a builder of nodes_to_exclude variants."""
    onnx = require("onnx")
    ort = require("onnxruntime", "run ONNX models")
    tmp_dir = tempfile.TemporaryDirectory(prefix="edgeship-doctor-onnx-")
    tmp = Path(tmp_dir.name)
    settings = artifact.settings
    # the float model exactly as the converter handed it to quantize_static
    float_proto = _onnx.float_model(source, int(settings.get("opset", _onnx.DEFAULT_OPSET)))
    prepared, _ = _onnx.prepare_for_quantization(float_proto, tmp)
    n = int(settings.get("calibration_samples", _calibration.DEFAULT_SAMPLES))
    samples = _calibration.prepare_all(dataset, source, target="onnx:int8", samples=n)
    groups: dict[str, list[str]] = {}  # filled once the layers are known

    def build(float_layers: Sequence[str]) -> bytes:
        excluded = sorted({node for name in float_layers for node in groups[name]})
        out = tmp / "mixed.onnx"
        _onnx.quantize(prepared, out, "int8", samples, {**_onnx.options_of(settings), "nodes_to_exclude": excluded})
        return out.read_bytes()

    # a QAT artifact went through TFLite (tf2onnx.from_tflite): its QDQ layout is not ONNX Runtime's
    rebuilt = "route" in settings
    fp = _Graph(onnx.load(str(prepared)))
    qdq = _Graph(onnx.load_from_string(build(())) if rebuilt else onnx.load(str(path)))
    known = leaf_names(source.float_keras())
    # a PyTorch model's layers are its module paths (layer2.0.conv1), which torch.onnx records
    paths = _torch.module_paths(float_proto) if source.kind == "torch" else None
    traces = _analyse(qdq, fp, x, tmp, known, paths)
    groups.update(_groups(fp, traces))
    what = (
        "the doctor's post-training rebuild (the artifact came from a QAT model through TFLite)"
        if rebuilt
        else artifact.path
    )
    return Probe(
        layers=[t.result() for t in traces],
        build=build,
        suffix=_onnx.SUFFIX,
        analysed_with=(
            f"ONNX Runtime {ort.__version__} QDQ intermediate outputs of {what} on {len(x[0])} test samples"
            f"{_inputs(x)} (graph optimisation off); float tensors from the float reference through "
            f"{settings.get('exporter', 'tf2onnx')}; mixed models re-quantized with {_count(samples)} calibration "
            f"samples from '{dataset.name}'"
        ),
        input_range=_first_input_range(path, x),
        close=tmp_dir.cleanup,
    )


def _first_input_range(path: Path, x: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The float range the artifact quantizes the model's first input (``x[0]``) to."""
    ort = require("onnxruntime", "run ONNX models")
    inputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    return _Graph(require("onnx").load(str(path))).input_range(_names(inputs, x)[0])


def _count(samples: np.ndarray | list[np.ndarray]) -> int:
    return len(samples[0] if isinstance(samples, list) else samples)


def _inputs(x: Sequence[np.ndarray]) -> str:
    """How many inputs fed the comparison, said only where there are several."""
    return f" (each of its {len(x)} inputs fed)" if len(x) > 1 else ""


def compute_ops(
    path: Path, known: Collection[str] | None = None
) -> tuple[list[tuple[str, str, bool]], Callable[..., str]]:
    """The compute ops of a ``.onnx`` file: (op type, output, whether float), and the layer namer."""
    onnx = require("onnx", "read ONNX models")
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type in _ONNX_MOVES:
            continue
        if node.op_type.startswith("QLinear") or node.op_type.endswith("Integer"):
            found.append((node.op_type, node.output[0], False))
            continue
        data = [i for i in node.input if i and i not in initializers]
        quantized = bool(data) and all(_dequantized(i, producer) for i in data)
        found.append((node.op_type, node.output[0] if node.output else node.name, not quantized))
    return found, layer_name


def _dequantized(tensor: str, producer: dict) -> bool:
    """Whether ``tensor`` comes out of a DequantizeLinear, past data-movement nodes."""
    node = producer.get(tensor)
    while node is not None and node.op_type in _ONNX_MOVES - {"DequantizeLinear", "QuantizeLinear"}:
        node = producer.get(node.input[0]) if node.input else None
    return node is not None and node.op_type == "DequantizeLinear"
