"""Splitting a loader's ``_Raw`` into train, validation and test, the same way for the same seed.

1. a class-balanced subset when fewer samples were asked for;
2. test from every class (a random share where targets are not classes), unless the source
   brought its own test split; then validation carved from the train split the same way;
3. the built-in tabular sets standardized with the train split's statistics alone;
4. the preprocessing spec applied to every input of every split;
5. read-only arrays, so a Dataset's fingerprint stays true to them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeship.data._files import _Raw
from edgeship.data._lazy import LazyArray
from edgeship.data.preprocess import Preprocess
from edgeship.errors import DatasetError


def as_tuple(value: Any) -> tuple[np.ndarray, ...]:
    """One array, several, or none, as a tuple."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def unwrap(arrays: tuple[np.ndarray, ...]) -> Any:
    """The inverse of ``as_tuple``: None, one array, or the tuple."""
    return None if not arrays else arrays[0] if len(arrays) == 1 else tuple(arrays)


def split(
    name: str,
    raw: _Raw,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    samples: int | None,
    preprocess: Preprocess,
) -> tuple[list[Any], tuple[str, ...], dict, Any]:
    """[x_train, y_train, x_val, y_val, x_test, y_test] (each as a Dataset holds it), the target
    kind per output, the preprocessing record, and the test inputs as stored (before the spec; None
    when the spec changes nothing): what a validation bundle carries for a device to preprocess."""
    rng = np.random.default_rng(seed)
    xs, ys = as_tuple(raw.x), as_tuple(raw.y)
    xs_test, ys_test = as_tuple(raw.x_test), as_tuple(raw.y_test)
    kinds = raw.target if isinstance(raw.target, tuple) else (raw.target,) * len(ys)
    strata = ys[0] if kinds[:1] == ("classes",) else None
    own_test = bool(xs_test)
    xs_val, ys_val = as_tuple(raw.x_val), as_tuple(raw.y_val)
    if xs_val and samples is not None:  # the file's own validation split takes its share of the subset
        total = len(xs[0]) + len(xs_val[0]) + (len(xs_test[0]) if own_test else 0)
        if total > samples:
            k = max(round(samples * len(xs_val[0]) / total), 1)
            idx = _pick(ys_val[0] if strata is not None else None, len(xs_val[0]), k, rng)
            xs_val, ys_val, samples = _take(xs_val, idx), _take(ys_val, idx), max(samples - k, 1)
    # 1. a class-balanced (or random) subset
    if samples is not None and len(xs[0]) + (len(xs_test[0]) if own_test else 0) > samples:
        keep = samples if not own_test else round(samples * len(xs[0]) / (len(xs[0]) + len(xs_test[0])))
        idx = _pick(strata, len(xs[0]), max(keep, 1), rng)
        xs, ys = _take(xs, idx), _take(ys, idx)
        if own_test:
            test_strata = ys_test[0] if strata is not None else None
            idx = _pick(test_strata, len(xs_test[0]), max(samples - keep, 1), rng)
            xs_test, ys_test = _take(xs_test, idx), _take(ys_test, idx)
        strata = ys[0] if strata is not None else None
    # 2. test, then validation from what is left (unless the file has its own)
    if not own_test:
        rest, test = _split(strata, len(xs[0]), test_fraction, rng)
        xs_test, ys_test, xs, ys = _take(xs, test), _take(ys, test), _take(xs, rest), _take(ys, rest)
        strata = ys[0] if strata is not None else None
    if xs_val:  # the file's own: train keeps every sample
        parts = {"train": (xs, ys), "val": (xs_val, ys_val), "test": (xs_test, ys_test)}
    else:
        train, val = _split(strata, len(xs[0]), val_fraction, rng)
        parts = {
            "train": (_take(xs, train), _take(ys, train)),
            "val": (_take(xs, val), _take(ys, val)),
            "test": (xs_test, ys_test),
        }
    _check_sizes(name, parts, raw, val_fraction, test_fraction)
    # 3. the built-in tabular sets: scaled by the train split alone, so nothing leaks
    record = dict(raw.preprocessing)
    if raw.standardize:
        scaled, record["standardize"] = _standardize(*(parts[s][0][0] for s in ("train", "val", "test")))
        parts = {s: ((x,) + parts[s][0][1:], parts[s][1]) for s, x in zip(("train", "val", "test"), scaled)}
    # 4. the preprocessing spec, on every input
    if not preprocess.identity:
        record["preprocess"] = preprocess.spec
        record["preprocess_steps"] = preprocess.describe()
    out: list[Any] = []
    for s in ("train", "val", "test"):
        inputs, targets = parts[s]
        out.append(unwrap(tuple(_prepared(x, preprocess) for x in inputs)))
        out.append(unwrap(tuple(_frozen(y) for y in targets)))
    stored = None if preprocess.identity else unwrap(tuple(_kept(x) for x in parts["test"][0]))
    return out, kinds, record, stored


def _take(arrays: tuple[np.ndarray, ...], idx: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(a[idx] for a in arrays)


def _split(
    strata: np.ndarray | None, n: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken): stratified per class where there are classes, a seeded share otherwise."""
    if strata is None:
        idx = rng.permutation(n)
        k = min(max(int(fraction * n + 0.5), 1), n - 1) if n >= 2 else 0
        return idx[k:], idx[:k]
    kept, taken = [], []
    for label in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == label))
        k = int(fraction * len(idx) + 0.5)
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        taken.append(idx[:k])
        kept.append(idx[k:])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(taken))


def _pick(strata: np.ndarray | None, n_total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return pick_per_class(strata, n, rng) if strata is not None else np.sort(rng.permutation(n_total)[:n])


def pick_per_class(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted indices, classes taking turns in a seeded order, so each is as even as sizes allow."""
    rank = np.empty(len(y), np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rank[rng.permutation(idx)] = np.arange(len(idx))
    return np.sort(np.lexsort((rng.permutation(len(y)), rank))[:n])


def _check_sizes(name: str, parts: dict, raw: _Raw, val_fraction: float, test_fraction: float) -> None:
    if all(len(parts[s][0][0]) for s in parts):
        return
    ys = as_tuple(raw.y)
    counts = (
        dict(zip(raw.classes, np.bincount(ys[0], minlength=len(raw.classes)).tolist()))
        if ys and raw.classes and np.asarray(ys[0]).ndim == 1
        else {"samples": len(as_tuple(raw.x)[0])}
    )
    raise DatasetError(
        f"Dataset {name!r} is too small to split into train, val and test "
        f"(val_fraction={val_fraction}, test_fraction={test_fraction}); every class needs at least 3 "
        f"samples. Add samples or pass samples= larger. Received class counts: {counts}"
    )


def _standardize(*arrays: np.ndarray) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    """Scale every array with the mean and std of the first; a constant feature keeps std 1."""
    mean = arrays[0].mean(axis=0, dtype=np.float64)
    std = arrays[0].std(axis=0, dtype=np.float64)
    std[std < 1e-12] = 1.0
    scaled = [((a.astype(np.float64) - mean) / std).astype(np.float32) for a in arrays]
    return scaled, {"mean": mean.tolist(), "std": std.tolist()}


def _prepared(x: Any, preprocess: Preprocess) -> Any:
    """One input's samples as the model takes them; a LazyArray stays lazy and prepares each piece read."""
    if isinstance(x, LazyArray):
        return x.map(lambda rows: _frozen(preprocess.apply(rows)))
    return _frozen(preprocess.apply(x))


def _kept(x: Any) -> Any:
    """One input's samples as stored (their own dtype), read-only; a LazyArray stays lazy."""
    if isinstance(x, LazyArray):
        return x
    array = np.ascontiguousarray(x)
    array.setflags(write=False)
    return array


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only array (float64 becomes float32, the dtype models take; integers stay)."""
    array = np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else None)
    array.setflags(write=False)
    return array
