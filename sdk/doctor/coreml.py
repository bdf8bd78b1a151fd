"""Core ML per-op error of weight compression, by edgeship's numpy evaluator; mixed models by op_name_configs.

Core ML's compressed precisions (``w8``, ``pal4``, ``w4-block``, ``pruned``, …) change weights
only: activations stay fp16. The doctor rebuilds the artifact's ML Program from the float
reference (``converters.coreml.program``: fp16 compute, the artifact's deployment target), keeps
it uncompressed as the reference, and compresses it again with the artifact's settings. Both are
run by the reference evaluator (``runtimes.coreml.Evaluator``: no macOS needed) on the test
samples. For each op whose weights were compressed (conv, linear, matmul with a constant), its
own error is that op run on the *uncompressed* program's inputs with the compressed weights,
against the uncompressed op; the accumulated error is the compressed program's value of the
same tensor. Mixed models leave the chosen ops' weights uncompressed (fp16): coremltools'
``OptimizationConfig(op_name_configs={op: None})``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.converters import _torch
from edgeship.converters.coreml import PRECISIONS
from edgeship.doctor.layers import LayerTrace, Probe, leaf_names, op_layer, unique_names
from edgeship.errors import UnsupportedModelError
from edgeship.records import Artifact, TensorSpec
from edgeship.runtimes._session import in_order
from edgeship.runtimes.mil import Op, Program, weighted_ops

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset
    from edgeship.runtimes.coreml import Evaluator

_BATCH = 50
SUFFIX = ".mlpackage"
#: the precisions the doctor examines: every compressed one
DOCTORED = frozenset(p for p in PRECISIONS if p not in ("fp16", "fp32"))
#: examining a whole folder, a package the numpy evaluator cannot run is skipped, not an error
BEST_EFFORT = True


def probe(source: SourceModel, artifact: Artifact, path: Path, x: Sequence[np.ndarray], dataset: Dataset) -> Probe:
    """Per-op figures of ``artifact``'s rebuild on ``x`` (one array per model input, in the
    model's order) and a builder of variants with ops left uncompressed."""
    from edgeship.converters import coreml as _coreml
    from edgeship.runtimes import mil
    from edgeship.runtimes.coreml import Evaluator

    if source.kind == "onnx":
        raise UnsupportedModelError(
            f"{artifact.name} cannot be rebuilt from an ONNX reference; coremltools "
            "converts Keras and SavedModel models"
        )
    precision = artifact.precision
    options: dict[str, Any] = {
        k: artifact.settings[k]
        for k in ("weight_threshold", "block_size", "group_size", "target_sparsity")
        if k in artifact.settings
    }
    tmp = Path(tempfile.mkdtemp(prefix="edgeship-doctor-coreml-"))
    try:
        uncompressed = _coreml.program(source, precision)
        reference = tmp / f"uncompressed{SUFFIX}"
        uncompressed.save(str(reference))
        ops: dict[str, str] = {}  # layer name -> op name, filled from the traces before any build with layers
        made = [0]

        def build(keep: Sequence[str], how: str = "keep") -> Path:
            """The artifact's compression with the ops of ``keep`` (layer names) left uncompressed
            (or, with ``how="eight_bit"``, compressed at 8 bits)."""
            made[0] += 1
            out = tmp / f"build-{made[0]}{SUFFIX}"
            result = _coreml.compress(uncompressed, precision, source, {**options, how: [ops[n] for n in keep]})
            result["model"].save(str(out))
            return out

        compressed = mil.read(build(()))
        known = leaf_names(source.float_keras())
        # a PyTorch model's layers are its module paths (layer2.0.conv1), from the traced graph
        paths = _by_order(compressed.program, _torch.weighted_layers(source)) if source.kind == "torch" else None
        traces = _traces(compressed.program, known, paths)
        ops.update({t.name: t.tensor for t in traces.values()})
        _compare(
            Evaluator(mil.read(reference).program, "the uncompressed program"),
            Evaluator(compressed.program, "the compressed rebuild"),
            traces,
            x,
            compressed.inputs,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Probe(
        layers=[t.result() for t in traces.values()],
        build=build,
        suffix=SUFFIX,
        analysed_with=(
            f"edgeship's numpy ML Program evaluator (not Apple's Core ML runtime): the float reference "
            f"converted and compressed again as {artifact.name} "
            f"({artifact.settings.get('compression', precision)}), "
            f"each compressed op run on the uncompressed program's inputs, on {len(x[0])} test samples"
            f"{_inputs(x)}"
        ),
        close=lambda: shutil.rmtree(tmp, ignore_errors=True),
        rebuild_method="compression",
        eight_bit=(lambda keep: build(keep, "eight_bit")) if precision in _coreml.EIGHT_BIT else None,
        finer=_finer(source, precision, options, tmp),
    )


def _finer(
    source: SourceModel, precision: str, options: dict[str, Any], tmp: Path
) -> tuple[str, Callable[[], tuple[Path, dict[str, Any]]]] | None:
    """The next finer uniform precision (``converters.coreml.FINER``) and a builder of it,
    returning (path, settings): what a user would convert to instead, a candidate beside the
    mixed ones."""
    from edgeship.converters import coreml as _coreml

    finer = _coreml.FINER.get(precision)
    if finer is None:
        return None

    def build() -> tuple[Path, dict[str, Any]]:
        out = tmp / f"finer-{finer}{SUFFIX}"
        model, settings = _coreml.made(source, finer, options)
        model.save(str(out))
        return out, settings

    return finer, build


def layer_names(program: Program, known: Collection[str], paths: dict[str, str] | None = None) -> dict[str, str]:
    """op name -> Keras layer (``known`` leaf names) of each weighted compute op of ``program``.
    coremltools names some ops generically (``conv_0_cast_fp16``), so where the op's own name holds
    no layer, the names of its outputs, of its parameters (``model_c1_Conv2Dx_pad_type_0``) and of
    its readers' outputs are tried in that order; the op's name where none holds one. ``paths``
    (a PyTorch model's: op name -> module path, ``_by_order``) names the ops it holds."""
    if paths:
        return {op.name: paths.get(op.name, op.name) for op, _ in weighted_ops(program)}
    readers: dict[str, list[Op]] = {}
    for op in program.ops:
        for refs in op.inputs.values():
            for ref in refs:
                if isinstance(ref, str):
                    readers.setdefault(ref, []).append(op)
    names = {}
    for op, _ in weighted_ops(program):
        outputs = [name for name, _ in op.outputs]
        params = [ref for param, refs in op.inputs.items() if param != "x" for ref in refs if isinstance(ref, str)]
        after = [name for out in outputs for reader in readers.get(out, []) for name, _ in reader.outputs]
        found = (op_layer(c, known) for c in [op.name, *outputs, *params, *after])
        names[op.name] = next((layer for layer in found if layer in known), op.name)
    return names


def _by_order(program: Program, layers: Sequence[tuple[str, str, tuple[int, ...]]]) -> dict[str, str]:
    """op name -> PyTorch module path: the program's conv and linear ops matched in order to the
    exported program's (``converters._torch.weighted_layers``), kept only where every pair's weight
    shape agrees (coremltools names the ops after TorchScript values, which carry no module when a
    ``.pt2``'s flat module is traced). Empty where they do not: the ops keep their own names."""
    shapes = {name: tuple(t.shape) for op in program.ops for name, t in op.outputs if t.shape is not None}
    found: dict[str, str] = {}
    weighted = [op for op, _ in weighted_ops(program)]
    for kind in ("conv", "linear"):
        ops = [op for op in weighted if op.type == kind]
        wanted = [(path, shape) for k, path, shape in layers if k == kind]
        if len(ops) != len(wanted):
            return {}
        for op, (path, shape) in zip(ops, wanted):
            weight = next((r for r in op.inputs.get("weight", ()) if isinstance(r, str)), None)
            if weight is None or shapes.get(weight) != shape:
                return {}
            found[op.name] = path
    return found


def _traces(program: Program, known: Collection[str], paths: dict[str, str] | None = None) -> dict[str, LayerTrace]:
    """One LayerTrace per compressed compute op, keyed by its output value's name."""
    traces: dict[str, LayerTrace] = {}
    layers = layer_names(program, known, paths)
    for op, compressed in weighted_ops(program):
        if not compressed:
            continue
        out = op.outputs[0][0]
        name = layers[op.name]
        traces[out] = LayerTrace(
            name if name != op.name else op.type, op.type, op.name, channel_axis=1 if op.type.startswith("conv") else -1
        )
    unique_names(list(traces.values()))
    return traces


def _compare(
    reference: Evaluator,
    compressed: Evaluator,
    traces: dict[str, LayerTrace],
    x: Sequence[np.ndarray],
    inputs: Sequence[TensorSpec],
) -> None:
    """Feed both programs ``x`` a batch at a time; each traced op's own and accumulated error."""
    arrays = in_order([s.shape for s in inputs], x)
    names = [s.name for s in inputs]
    steps = [op for op in compressed.ops if op.outputs and op.outputs[0][0] in traces]
    for i in range(0, len(arrays[0]), _BATCH):
        feeds = {n: a[i : i + _BATCH] for n, a in zip(names, arrays)}
        floats, quantized = reference.values(feeds), compressed.values(feeds)
        for op in steps:
            out = op.outputs[0][0]
            if out not in floats:  # the uncompressed program names this value otherwise: no pair
                continue
            local = compressed.apply(op, {**floats, **compressed.constants})[out]
            traces[out].add(floats[out], local)
            traces[out].add_model(floats[out], quantized[out])


def _inputs(x: Sequence[np.ndarray]) -> str:
    return f" (each of the {len(x)} inputs fed)" if len(x) > 1 else ""


def compute_ops(
    path: Path, known: Collection[str] | None = None
) -> tuple[list[tuple[str, str, bool]], Callable[..., str]]:
    """The weighted compute ops of a package (type, name, whether float) and the namer of their Keras layers."""
    from edgeship.runtimes import mil

    program = mil.read(path).program
    ops = [(op.type, op.name, not compressed) for op, compressed in mil.weighted_ops(program)]
    layers = layer_names(program, known or frozenset())
    return ops, lambda name, _: layers[name]
