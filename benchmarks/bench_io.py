"""Float <-> int8 I/O conversion per call: the plain numpy version against the buffered one.

    .venv/bin/python benchmarks/bench_io.py [--rounds 40] [--block 200]

An int8-I/O model run with float inputs quantizes each input and dequantizes each output on every
call (``Session.run`` without ``raw``). ``before`` is the conversion edgeship used to do (a float32
temporary per step and a fresh int8 array); ``after`` is ``edgeship.runtimes._session``'s
``_Quantizer`` (buffers kept per shape, numpy's clip ufunc) and ``_Dequantizer`` (a 256-entry table
for small outputs). Both run side by side in one process, interleaved in blocks: each figure is the
median over rounds of a block's mean µs per call (input quantized + output dequantized). Shapes are
the zoo's reference inputs and their class-score outputs, plus a same-sized int8 output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgeship.runtimes._session import _Dequantizer, _Quantizer

#: (label, input shape, output shape)
SHAPES = (
    ("tiny_cnn / mlp 8x8x1 -> 10", (1, 8, 8, 1), (1, 10)),
    ("ds_cnn 49x10x1 -> 12", (1, 49, 10, 1), (1, 12)),
    ("resnet8 32x32x3 -> 10", (1, 32, 32, 3), (1, 10)),
    ("mobilenet_v1 96x96x3 -> 2", (1, 96, 96, 3), (1, 2)),
    ("32x32x3 -> 32x32x3", (1, 32, 32, 3), (1, 32, 32, 3)),
    ("batch 32 of 32x32x3 -> 10", (32, 32, 32, 3), (32, 10)),
)


def before_quantize(x: np.ndarray, params: tuple[np.float32, ...], dtype: np.dtype) -> np.ndarray:
    scale, zero_point, low, high = params
    q = np.divide(x, scale, dtype=np.float32)
    np.rint(q, out=q)
    np.add(q, zero_point, out=q)
    np.minimum(q, high, out=q)
    np.maximum(q, low, out=q)
    return q.astype(dtype)


def before_dequantize(y: np.ndarray, params: tuple[np.float32, ...]) -> np.ndarray:
    out = y.astype(np.float32)
    np.subtract(out, params[1], out=out)
    np.multiply(out, params[0], out=out)
    return out


def block_means(calls: dict, rounds: int, block: int) -> dict[str, float]:
    """Median over rounds of the mean µs per call of each callable; blocks interleaved."""
    clock = time.perf_counter
    means: dict = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            call()
            t = clock()
            for _ in range(block):
                call()
            means[name].append((clock() - t) / block * 1e6)
    return {name: float(np.median(v)) for name, v in means.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block", type=int, default=200)
    args = parser.parse_args(argv)
    scale, zero_point, dtype = 0.0235, -3, np.dtype(np.int8)
    params = (np.float32(scale), np.float32(zero_point), np.float32(-128), np.float32(127))
    quantize, dequantize = _Quantizer(scale, zero_point, dtype), _Dequantizer(scale, zero_point, dtype)
    rng = np.random.default_rng(0)
    rows = []
    for label, in_shape, out_shape in SHAPES:
        x = rng.standard_normal(in_shape, dtype=np.float32) * 2
        y = rng.integers(-128, 128, out_shape).astype(np.int8)
        assert np.array_equal(quantize(x), before_quantize(x, params, dtype))
        assert np.array_equal(dequantize(y), before_dequantize(y, params))
        t = block_means({"before": lambda: (before_quantize(x, params, dtype), before_dequantize(y, params)),
                         "after": lambda: (quantize(x), dequantize(y))}, args.rounds, args.block)
        rows.append({"shapes": label, "before_us": t["before"], "after_us": t["after"],
                     "speedup": t["before"] / t["after"]})
    print(f"\nfloat <-> int8 I/O per call (quantize input + dequantize output), µs; median of {args.rounds} "
          f"interleaved blocks of {args.block}; numpy {np.__version__}")
    print(f"{'shapes':<30}{'before':>9}{'after':>9}{'speed-up':>10}")
    for r in rows:
        print(f"{r['shapes']:<30}{r['before_us']:>9.2f}{r['after_us']:>9.2f}{r['speedup']:>9.2f}x")
    return rows


if __name__ == "__main__":
    main()
