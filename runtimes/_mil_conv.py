"""The convolution and pooling kernels of the Core ML reference evaluator (``_mil_ops`` holds the rest).

Layouts are MIL's: NCHW activations, OIHW weights; the work is done channels-last (im2col over
``sliding_window_view``, a matrix product per chunk of output rows).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgeship.errors import BadArtifactError, UnsupportedModelError

#: op name -> kernel, merged into ``_mil_ops.OPS``
KERNELS: dict[str, Callable[..., Any]] = {}


def _op(fn: Callable[..., Any]) -> Callable[..., Any]:
    KERNELS[fn.__name__] = fn
    return fn


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.ravel(value)]


def _per_dim(value: Any, n: int, default: int) -> list[int]:
    return _ints(value) if value is not None else [default] * n


def _pads(
    pad_type: str,
    pad: Any,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dimension, with MIL's (and TensorFlow's) 'same' rule."""
    if pad_type == "valid":
        return [(0, 0)] * len(sizes)
    if pad_type == "custom":
        p = _ints(pad)
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(sizes))]
    if pad_type not in ("same", "same_lower"):
        raise UnsupportedModelError(f"pad_type '{pad_type}' is not supported by the reference evaluator")
    out = []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        out.append((total - small, small) if pad_type == "same_lower" else (small, total - small))
    return out


def _as_2d(x: np.ndarray, op: str) -> tuple[np.ndarray, bool]:
    if x.ndim == 3:  # 1-D: a height of one
        return x[:, :, None, :], True
    if x.ndim != 4:
        raise UnsupportedModelError(f"{op} on rank-{x.ndim} tensors (3-D) is not supported by the reference evaluator")
    return x, False


def _taps(
    x: np.ndarray,
    kernel: Sequence[int],
    out: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    axes: tuple[int, int],
) -> Any:
    """(i, j, window) for each kernel tap: the strided slice of ``x`` that tap multiplies."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            index: list[Any] = [slice(None)] * x.ndim
            for axis, tap, o, s, d in (
                (axes[0], i, out[0], strides[0], dilations[0]),
                (axes[1], j, out[1], strides[1], dilations[1]),
            ):
                index[axis] = slice(tap * d, tap * d + (o - 1) * s + 1, s)
            yield i, j, x[tuple(index)]


_CHUNK_BYTES = 2 << 20  # im2col columns per step: small enough to stay in cache


@_op
def conv(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    strides: Any = None,
    pad_type: str = "valid",
    pad: Any = None,
    dilations: Any = None,
    groups: int = 1,
) -> np.ndarray:
    x, one_d = _as_2d(x, "conv")
    if one_d:
        weight = weight[:, :, None, :]
        strides, dilations = [1, *_per_dim(strides, 1, 1)], [1, *_per_dim(dilations, 1, 1)]
        pad = [0, 0, *_ints(pad)] if pad is not None else None
    strides, dilations = _per_dim(strides, 2, 1), _per_dim(dilations, 2, 1)
    kernel = weight.shape[2:]
    pads = _pads(pad_type, pad, x.shape[2:], kernel, strides, dilations)
    xl = np.ascontiguousarray(np.pad(x, [(0, 0), (0, 0), *pads]).transpose(0, 2, 3, 1))  # channels last
    out_hw = [(xl.shape[1 + a] - (kernel[a] - 1) * dilations[a] - 1) // strides[a] + 1 for a in (0, 1)]
    n, c, o, groups = xl.shape[0], xl.shape[3], weight.shape[0], int(groups)
    if weight.shape[1] * groups != c or o % groups:
        raise BadArtifactError(f"conv weight {weight.shape} does not fit {c} input channels in {groups} groups")
    out = np.empty((n, *out_hw, o), np.float32)
    step = max(1, _CHUNK_BYTES // (4 * out_hw[0] * out_hw[1] * kernel[0] * kernel[1] * c))
    for start in range(0, n, step):  # a few images at a time: the columns stay in cache
        out[start : start + step] = _conv_nhwc(xl[start : start + step], weight, groups, out_hw, strides, dilations)
    if bias is not None:
        out += bias
    out = out.transpose(0, 3, 1, 2)
    return out[:, :, 0] if one_d else out


def _conv_nhwc(
    xl: np.ndarray,
    weight: np.ndarray,
    groups: int,
    out_hw: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> np.ndarray:
    o, cg, kh, kw = weight.shape
    og = o // groups
    if cg == 1 and groups > 1:  # depthwise: a multiply-add per kernel tap, no matrix product
        source = xl if og == 1 else np.repeat(xl, og, axis=3)
        out = np.zeros((xl.shape[0], *out_hw, o), np.float32)
        for i, j, window in _taps(source, (kh, kw), out_hw, strides, dilations, (1, 2)):
            out += window * weight[:, 0, i, j]
        return out
    span = [(k - 1) * d + 1 for k, d in zip((kh, kw), dilations)]
    windows = sliding_window_view(xl, span, axis=(1, 2))  # type: ignore[call-overload]  # numpy's stubs: list
    windows = windows[:, :: strides[0], :: strides[1], :, :: dilations[0], :: dilations[1]]
    columns = windows[:, : out_hw[0], : out_hw[1]].transpose(0, 1, 2, 4, 5, 3)  # (n, oh, ow, kh, kw, c)
    matrix = weight.transpose(0, 2, 3, 1).reshape(o, -1)  # (o, kh * kw * cg), the columns' order
    parts = [
        columns[..., g * cg : (g + 1) * cg].reshape(-1, kh * kw * cg) @ matrix[g * og : (g + 1) * og].T
        for g in range(groups)
    ]
    return (parts[0] if groups == 1 else np.concatenate(parts, axis=-1)).reshape(xl.shape[0], *out_hw, o)


def _pool(
    x: np.ndarray,
    kernel_sizes: Any,
    strides: Any,
    pad_type: str,
    pad: Any,
    ceil_mode: bool,
    kind: str,
    exclude_padding: bool = False,
) -> np.ndarray:
    x, one_d = _as_2d(x, f"{kind}_pool")
    kernel = _ints(kernel_sizes) if not one_d else [1, *_ints(kernel_sizes)]
    strides = _per_dim(strides, len(kernel), 1) if not one_d else [1, *_per_dim(strides, 1, 1)]
    pad = [0, 0, *_ints(pad)] if one_d and pad is not None else pad
    pads = _pads(pad_type, pad, x.shape[2:], kernel, strides, [1, 1])
    out_hw = []
    for a, (before, after) in enumerate(pads):
        span = x.shape[2 + a] + before + after - kernel[a]
        size = (-(-span // strides[a]) if ceil_mode else span // strides[a]) + 1
        pads[a] = (before, after + max(0, (size - 1) * strides[a] + kernel[a] - x.shape[2 + a] - before - after))
        out_hw.append(size)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    windows = (w for _, _, w in _taps(xp, kernel, out_hw, strides, [1, 1], (2, 3)))
    if kind == "max":
        out = functools.reduce(np.maximum, windows)
    else:
        out = sum(windows)
        if exclude_padding:
            ones = np.pad(np.ones((1, 1, *x.shape[2:]), np.float32), [(0, 0), (0, 0), *pads])
            out = out / sum(w for _, _, w in _taps(ones, kernel, out_hw, strides, [1, 1], (2, 3)))
        else:
            out = out / float(kernel[0] * kernel[1])
    return out[:, :, 0] if one_d else out


@_op
def max_pool(
    x: np.ndarray,
    kernel_sizes: Any,
    strides: Any = None,
    pad_type: str = "valid",
    pad: Any = None,
    ceil_mode: bool = False,
) -> np.ndarray:
    return _pool(x, kernel_sizes, strides, pad_type, pad, bool(ceil_mode), "max")


@_op
def avg_pool(
    x: np.ndarray,
    kernel_sizes: Any,
    strides: Any = None,
    pad_type: str = "valid",
    pad: Any = None,
    exclude_padding_from_average: bool = False,
    ceil_mode: bool = False,
) -> np.ndarray:
    return _pool(x, kernel_sizes, strides, pad_type, pad, bool(ceil_mode), "avg", bool(exclude_padding_from_average))
