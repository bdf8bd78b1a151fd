"""The numpy kernels of the Core ML reference evaluator: one function per ML Program op.

A kernel takes the op's parameters by their MIL names and returns its output (or a tuple of
outputs). Float tensors arrive as float32 whatever the program stores: the evaluator rounds each
op's output to fp16 where the program declares fp16, the way an fp16 Core ML program stores its
activations. Layouts are MIL's: NCHW for convolution and pooling, weights OIHW.

``OPS`` is the registry: the kernels of this module and those of convolution and pooling
(``_mil_conv``); an op that is not in it is refused when the program is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeship.errors import BadArtifactError, UnsupportedModelError
from edgeship.runtimes._mil_conv import KERNELS as _CONVOLUTION
from edgeship.runtimes._mil_conv import _per_dim

OPS: dict[str, Callable[..., Any]] = dict(_CONVOLUTION)


def _op(fn: Callable[..., Any]) -> Callable[..., Any]:
    OPS[fn.__name__] = fn
    return fn


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.ravel(value)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|, unlike 1 / (1 + exp(-x))


# -- elementwise ---------------------------------------------------------------------------------
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "tanh": np.tanh,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "square": np.square,
    "floor": np.floor,
    "ceil": np.ceil,
    "sign": np.sign,
    "sin": np.sin,
    "cos": np.cos,
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "identity": lambda x: x,
}
_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda x: fn(x)


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda x, y: fn(x, y)


OPS.update({name: _unary(fn) for name, fn in _UNARY.items()})
OPS.update({name: _binary(fn) for name, fn in _BINARY.items()})


@_op
def leaky_relu(x: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    return np.where(x >= 0, x, x * alpha)


@_op
def thresholded_relu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """x where x >= alpha, else 0 (the MIL spec; coremltools makes hardswish's gate of it)."""
    return np.where(x >= alpha, x, 0).astype(x.dtype, copy=False)


@_op
def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@_op
def clip(x: np.ndarray, alpha: Any, beta: Any) -> np.ndarray:
    return np.clip(x, alpha, beta)


@_op
def sigmoid_hard(x: np.ndarray, alpha: float = 0.2, beta: float = 0.5) -> np.ndarray:
    return np.clip(alpha * x + beta, 0, 1)


@_op
def rsqrt(x: np.ndarray, epsilon: float = 1e-12) -> np.ndarray:
    return 1 / np.sqrt(x + epsilon)


@_op
def inverse(x: np.ndarray, epsilon: float = 1e-4) -> np.ndarray:
    return 1 / (x + epsilon)


@_op
def log(x: np.ndarray, epsilon: float = 1e-45) -> np.ndarray:
    return np.log(x + epsilon)


@_op
def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


@_op
def cast(x: np.ndarray, dtype: str) -> np.ndarray:
    kinds = {
        "fp16": np.float16,
        "fp32": np.float32,
        "fp64": np.float64,
        "int8": np.int8,
        "uint8": np.uint8,
        "int16": np.int16,
        "uint16": np.uint16,
        "int32": np.int32,
        "int64": np.int64,
        "bool": np.bool_,
    }
    if dtype not in kinds:
        raise UnsupportedModelError(
            f"cast to '{dtype}' is not supported by the reference evaluator; it casts to {sorted(kinds)}"
        )
    return x.astype(kinds[dtype])


# -- reductions, matrices, normalisation ---------------------------------------------------------
def _reduce(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def run(x: np.ndarray, axes: Any = None, keep_dims: bool = False) -> np.ndarray:
        return fn(x, axis=None if axes is None else tuple(_ints(axes)), keepdims=bool(keep_dims))

    return run


OPS.update(
    {
        f"reduce_{name}": _reduce(fn)
        for name, fn in (("mean", np.mean), ("max", np.max), ("min", np.min), ("sum", np.sum), ("prod", np.prod))
    }
)


@_op
def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    y = x @ weight.T
    return y + bias if bias is not None else y


@_op
def matmul(x: np.ndarray, y: np.ndarray, transpose_x: bool = False, transpose_y: bool = False) -> np.ndarray:
    x = np.swapaxes(x, -1, -2) if transpose_x and x.ndim > 1 else x
    y = np.swapaxes(y, -1, -2) if transpose_y and y.ndim > 1 else y
    return np.matmul(x, y)


@_op
def batch_norm(
    x: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    epsilon: float = 1e-5,
) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)  # channels on axis 1
    scale = (gamma if gamma is not None else 1) / np.sqrt(variance + epsilon)
    y = (x - mean.reshape(shape)) * np.reshape(scale, shape)
    return y + beta.reshape(shape) if beta is not None else y


@_op
def layer_norm(
    x: np.ndarray,
    axes: Any = None,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    epsilon: float = 1e-5,
) -> np.ndarray:
    axes_ = tuple(_ints(axes)) if axes is not None else tuple(range(x.ndim))
    centred = x - x.mean(axis=axes_, keepdims=True)
    y = centred / np.sqrt(np.square(centred).mean(axis=axes_, keepdims=True) + epsilon)
    y = y * gamma if gamma is not None else y
    return y + beta if beta is not None else y


# -- shapes --------------------------------------------------------------------------------------
@_op
def reshape(x: np.ndarray, shape: Any) -> np.ndarray:
    dims = _ints(shape)
    if 0 in dims and len(dims) == x.ndim:  # 0 keeps that dimension of x
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@_op
def transpose(x: np.ndarray, perm: Any) -> np.ndarray:
    return np.transpose(x, _ints(perm))


@_op
def squeeze(x: np.ndarray, axes: Any = None) -> np.ndarray:
    return np.squeeze(x, axis=None if axes is None else tuple(_ints(axes)))


@_op
def expand_dims(x: np.ndarray, axes: Any) -> np.ndarray:
    return np.expand_dims(x, tuple(_ints(axes)))


@_op
def flatten2d(x: np.ndarray, axis: int = 1) -> np.ndarray:
    return x.reshape(int(np.prod(x.shape[: int(axis)])), -1)


@_op
def concat(values: Sequence[np.ndarray], axis: int, interleave: bool = False) -> np.ndarray:
    axis = int(axis) % values[0].ndim
    if interleave:
        stacked = np.stack(values, axis=axis + 1)
        return stacked.reshape(*values[0].shape[:axis], -1, *values[0].shape[axis + 1 :])
    return np.concatenate(values, axis=axis)


@_op
def stack(values: Sequence[np.ndarray], axis: int) -> np.ndarray:
    return np.stack(values, axis=int(axis))


@_op
def pad(x: np.ndarray, pad: Any, mode: str = "constant", constant_val: float = 0.0) -> np.ndarray:
    p = _ints(pad)
    widths = [(0, 0)] * (x.ndim - len(p) // 2) + [(p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=float(constant_val))
    modes = {"reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise UnsupportedModelError(f"pad mode '{mode}' is not supported by the reference evaluator")
    return np.pad(x, widths, mode=modes[mode])  # type: ignore[call-overload]  # a str mode is one of numpy's


@_op
def shape(x: np.ndarray) -> np.ndarray:
    return np.array(x.shape, np.int32)


@_op
def slice_by_index(
    x: np.ndarray,
    begin: Any,
    end: Any,
    stride: Any = None,
    begin_mask: Any = None,
    end_mask: Any = None,
    squeeze_mask: Any = None,
) -> np.ndarray:
    n = len(_ints(begin))
    begins, ends = _ints(begin), _ints(end)
    steps = _per_dim(stride, n, 1)
    bmask, emask, smask = (
        [bool(v) for v in np.ravel(m)] if m is not None else [False] * n for m in (begin_mask, end_mask, squeeze_mask)
    )
    index = tuple(
        begins[i] if smask[i] else slice(None if bmask[i] else begins[i], None if emask[i] else ends[i], steps[i])
        for i in range(n)
    )
    return x[index]


@_op
def tile(x: np.ndarray, reps: Any) -> np.ndarray:
    return np.tile(x, _ints(reps))


@_op
def upsample_nearest_neighbor(x: np.ndarray, scale_factor_height: Any = 1, scale_factor_width: Any = 1) -> np.ndarray:
    if float(scale_factor_height) % 1 or float(scale_factor_width) % 1:
        raise UnsupportedModelError(
            "upsample_nearest_neighbor with fractional scales is not supported by the reference evaluator"
        )
    return np.repeat(np.repeat(x, int(scale_factor_height), axis=-2), int(scale_factor_width), axis=-1)


# -- constexpr_*: compressed weights, decompressed once when the program is loaded ----------------
def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool = False) -> np.ndarray:
    """``count`` integers of ``nbits`` bits each, packed least significant bit first (Core ML's layout)."""
    bits = np.unpackbits(np.ascontiguousarray(packed).view(np.uint8), bitorder="little")
    if bits.size < count * nbits:
        raise BadArtifactError(
            f"packed data holds {bits.size} bits; {count} values of {nbits} bits need {count * nbits}"
        )
    values = bits[: count * nbits].reshape(count, nbits).astype(np.int32) @ (1 << np.arange(nbits, dtype=np.int32))
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
    return values.astype(np.int8 if signed else np.uint8)


def _along(value: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if value.ndim == 0:
        return value
    shape = [1] * ndim
    shape[axis] = -1
    return value.reshape(shape)


@_op
def constexpr_affine_dequantize(quantized_data: np.ndarray, zero_point: Any, scale: Any, axis: int) -> np.ndarray:
    axis = int(axis) % quantized_data.ndim
    zero = _along(zero_point, quantized_data.ndim, axis)
    return (quantized_data.astype(np.float32) - zero) * _along(scale, quantized_data.ndim, axis)


@_op
def constexpr_cast(source_val: np.ndarray, output_dtype: str) -> np.ndarray:
    return cast(source_val, output_dtype)


@_op
def constexpr_lut_to_dense(
    lut: np.ndarray, indices: np.ndarray, shape: Any = None, vector_axis: Any = None
) -> np.ndarray:
    if shape is not None:  # iOS16: one palette, indices packed into a flat uint8 vector
        dims = _ints(shape)
        nbits = int(round(math.log2(lut.size)))
        if 1 << nbits != lut.size:
            raise BadArtifactError(f"a palette of {lut.size} entries is not a power of two")
        return lut[unpack_bits(indices, nbits, int(np.prod(dims)))].reshape(dims)
    if lut.shape[-1] != 1:  # iOS18: a palette per block; lut is [blocks per axis..., entries, vector]
        raise UnsupportedModelError(
            "vector palettization (constexpr_lut_to_dense with vector_axis) is not supported "
            "by the reference evaluator; palettize with scalar palettes"
        )
    grid = np.indices(indices.shape, sparse=True)
    block = tuple(g // (dim // lut.shape[a]) for a, (g, dim) in enumerate(zip(grid, indices.shape)))
    return lut[block + (indices.astype(np.intp), 0)]


@_op
def constexpr_sparse_to_dense(nonzero_data: np.ndarray, mask: np.ndarray, shape: Any = None) -> np.ndarray:
    if shape is not None:  # iOS16: a flat bitmask packed into uint8
        dims = _ints(shape)
        keep = np.unpackbits(mask.view(np.uint8), bitorder="little")[: int(np.prod(dims))].astype(bool).reshape(dims)
    else:  # iOS18: the mask has the output's shape
        dims, keep = list(mask.shape), mask != 0
    if int(keep.sum()) != nonzero_data.size:
        raise BadArtifactError(
            f"a sparse weight's mask selects {int(keep.sum())} values; {nonzero_data.size} are stored"
        )
    dense = np.zeros(dims, nonzero_data.dtype)
    dense[keep] = nonzero_data
    return dense


@_op
def constexpr_blockwise_shift_scale(
    data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None = None
) -> np.ndarray:
    value = data.astype(np.float32)
    for axis, (size, blocks) in enumerate(zip(data.shape, scale.shape)):
        if blocks != size:
            scale = np.repeat(scale, size // blocks, axis)
            offset = np.repeat(offset, size // blocks, axis) if offset is not None else None
    if offset is not None:
        value = value - offset
    return value * scale
