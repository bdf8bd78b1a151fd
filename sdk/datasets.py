"""Datasets: built-in sets, Keras' cached downloads and the caller's files, split the same way every time.

    load_dataset(name_or_path)
     ├── scikit-learn    digits, iris, wine, breast_cancer          (bundled with the package)
     ├── generated       shapes32                                    (numpy, fixed generator seed)
     ├── Keras cache     mnist, fashion_mnist, cifar10               (read from disk, never downloaded)
     └── a path          .npz, .csv, or a folder of class subfolders of images
            │
            ▼
    _Raw (every sample, or the file's own train/test) → stratified split → standardize (tabular) → Dataset

Images come out float32 NHWC in [0, 1]; tabular features float32, standardized with the train split's
mean and std; labels int64 in 0..C-1. Nothing heavier than numpy is imported until a loader needs it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeship._dataset_files import (
    _cifar10,
    _csv,
    _fashion_mnist,
    _image_folder,
    _labelled_arrays,
    _mnist,
    _Raw,
    _read_npz,
)
from edgeship._deps import require
from edgeship.errors import BadInputError, DatasetError

__all__ = ["Dataset", "load_dataset", "list_datasets"]

log = logging.getLogger(__name__)

_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_FILE_TYPES = (
    "a .npz file with x_train, y_train, x_test, y_test (optional classes), a .csv file with a header "
    "row and a label column, or a folder holding one subfolder of images (png/jpg/bmp) per class"
)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset split into train, validation and test.

        >>> data = load_dataset("digits", seed=0)
        >>> data.input_shape, data.num_classes, data.x_train.dtype.name
        ((8, 8, 1), 10, 'float32')

    ``preprocessing`` records what was applied (a scale, a standardization) so it can be repeated on
    new samples; ``fingerprint`` identifies the exact arrays.
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int
    source: str
    preprocessing: dict

    def __post_init__(self) -> None:
        if self.kind not in ("image", "tabular"):
            raise BadInputError(f"Dataset kind must be 'image' or 'tabular'. Received: {self.kind!r}")
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise BadInputError(f"Dataset {self.name!r}: x_{split} has {len(x)} samples, y_{split} {len(y)}")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, 'y_' + s))}" for s in ("train", "val", "test"))
        return f"Dataset(name={self.name!r}, kind={self.kind!r}, classes={self.num_classes}, {sizes})"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fingerprint(self) -> str:
        """sha256 over the six arrays (dtype, shape, bytes) and the class names; computed once."""
        if "_fingerprint" not in self.__dict__:
            digest = hashlib.sha256()
            for name in _ARRAYS:
                array = np.ascontiguousarray(getattr(self, name))
                digest.update(f"{name}|{array.dtype.str}|{array.shape}\n".encode())
                digest.update(memoryview(array).cast("B"))
            digest.update(json.dumps(list(self.classes)).encode())
            object.__setattr__(self, "_fingerprint", digest.hexdigest())  # a cache, not a field
        return self.__dict__["_fingerprint"]

    def calibration(self, n: int = 200) -> np.ndarray:
        """``n`` training samples for quantization calibration, the same for the same seed.

        Classes take turns, so each is represented as evenly as its size allows; ``n`` is capped at
        the size of the training split.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise BadInputError(f"calibration needs a sample count of 1 or more. Received: n={n!r}")
        n = min(int(n), len(self.y_train))
        return self.x_train[_pick_per_class(self.y_train, n, np.random.default_rng(self.seed))]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: names, shapes, split sizes, fingerprint, source and preprocessing."""
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "sizes": {s: int(len(getattr(self, f"y_{s}"))) for s in ("train", "val", "test")},
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "preprocessing": copy.deepcopy(self.preprocessing),
        }


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts besides paths.

        >>> "digits" in list_datasets()
        True
    """
    return sorted(_BUILTINS)


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    label_column: str = "label",
    samples: int | None = None,
) -> Dataset:
    """Load a built-in dataset by name, or the caller's .npz, .csv or image folder, and split it.

        >>> data = load_dataset("iris", seed=1)
        >>> data.kind, data.classes
        ('tabular', ('setosa', 'versicolor', 'virginica'))

    ``test_fraction`` of every class goes to test unless the source has its own test split;
    ``val_fraction`` of what is left goes to validation. The split depends on ``seed`` only.
    ``samples`` is how many images shapes32 generates; for other sets it keeps a class-balanced subset
    of that many. ``label_column`` names the label column of a CSV file.
    """
    _check_arguments(seed, val_fraction, test_fraction, label_column, samples)
    name, raw = _load_raw(name_or_path, label_column, samples)
    dataset = _finish(name, raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, samples=samples)
    log.debug("loaded %r", dataset)
    return dataset


def _check_arguments(seed: Any, val_fraction: Any, test_fraction: Any, label_column: Any, samples: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise BadInputError(f"seed must be an integer. Received: {seed!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise BadInputError(f"{name} must be a number strictly between 0 and 1. Received: {value!r}")
    if not isinstance(label_column, str) or not label_column:
        raise BadInputError(f"label_column must be a non-empty column name. Received: {label_column!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1):
        raise BadInputError(f"samples must be a positive integer or None. Received: {samples!r}")


def _load_raw(name_or_path: str | os.PathLike, label_column: str, samples: int | None) -> tuple[str, _Raw]:
    """A bare built-in name wins over a file of the same name; pass a Path to force a path."""
    key = name_or_path.lower().replace("-", "_") if isinstance(name_or_path, str) else None
    if key in _BUILTINS:
        return key, _BUILTINS[key](samples)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.name, _image_folder(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        return path.stem, _labelled_arrays(_read_npz(path), str(path))
    if path.is_file() and path.suffix.lower() == ".csv":
        return path.stem, _csv(path, label_column)
    found = "that file type is not supported" if path.exists() else "no such file or folder exists"
    raise DatasetError(
        f"Cannot load dataset {os.fspath(name_or_path)!r}: it is not a built-in name and {found}. "
        f"Built-in names: {', '.join(list_datasets())}. A path must be {_FILE_TYPES}."
    )


# ---------------------------------------------------------------------------------------------- split


def _finish(name: str, raw: _Raw, *, seed: int, val_fraction: float, test_fraction: float,
            samples: int | None) -> Dataset:
    """Subset, split and standardize ``raw`` into a Dataset, in numbered steps."""
    rng = np.random.default_rng(seed)
    x, y, x_test, y_test = raw.x, raw.y, raw.x_test, raw.y_test
    # 1. a class-balanced subset when fewer samples were asked for
    if samples is not None and len(y) + (0 if y_test is None else len(y_test)) > samples:
        keep = samples if y_test is None else round(samples * len(y) / (len(y) + len(y_test)))
        idx = _pick_per_class(y, max(keep, 1), rng)
        x, y = x[idx], y[idx]
        if y_test is not None:
            idx = _pick_per_class(y_test, max(samples - keep, 1), rng)
            x_test, y_test = x_test[idx], y_test[idx]
    # 2. test from every class, unless the source brought its own; then validation from the rest
    if y_test is None:
        rest, test = _stratified_split(y, test_fraction, rng)
        x, y, x_test, y_test = x[rest], y[rest], x[test], y[test]
    train, val = _stratified_split(y, val_fraction, rng)
    splits = [x[train], y[train], x[val], y[val], x_test, y_test]
    _check_sizes(name, splits[1::2], raw, val_fraction, test_fraction)
    # 3. tabular features scaled by the train split alone, so nothing leaks from val or test
    preprocessing = dict(raw.preprocessing)
    if raw.kind == "tabular":
        splits[0::2], preprocessing["standardize"] = _standardize(*splits[0::2])
    splits = [_frozen(a, np.float32 if i % 2 == 0 else np.int64) for i, a in enumerate(splits)]
    return Dataset(name, raw.kind, raw.classes, *splits, seed=int(seed), source=raw.source,
                   preprocessing=preprocessing)


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken): per class a seeded permutation, ``fraction`` of it taken (at least one,
    never all, for classes of two or more)."""
    kept, taken = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        k = int(fraction * len(idx) + 0.5)
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        taken.append(idx[:k])
        kept.append(idx[k:])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(taken))


def _pick_per_class(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted indices, classes taking turns in a seeded order, so each is as even as sizes allow."""
    rank = np.empty(len(y), np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rank[rng.permutation(idx)] = np.arange(len(idx))
    return np.sort(np.lexsort((rng.permutation(len(y)), rank))[:n])


def _check_sizes(name: str, labels: list[np.ndarray], raw: _Raw, val_fraction: float, test_fraction: float) -> None:
    if all(len(y) for y in labels):
        return
    counts = dict(zip(raw.classes, np.bincount(raw.y, minlength=len(raw.classes)).tolist()))
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
    scaled = [(a.astype(np.float64) - mean) / std for a in arrays]
    return scaled, {"mean": mean.tolist(), "std": std.tolist()}


def _frozen(array: np.ndarray, dtype: type) -> np.ndarray:
    """A read-only copy, so a Dataset's fingerprint stays true to its arrays."""
    array = np.ascontiguousarray(array, dtype=dtype)
    array.setflags(write=False)
    return array


# ----------------------------------------------------------------------------- built-in: scikit-learn


def _sklearn_bunch(loader: str) -> Any:
    datasets = require("sklearn.datasets", "load the scikit-learn bundled datasets")
    return getattr(datasets, loader)()


def _digits(samples: int | None) -> _Raw:
    bunch = _sklearn_bunch("load_digits")
    x = bunch.images.astype(np.float32)[..., None] / np.float32(16.0)
    classes = tuple(str(c) for c in bunch.target_names)
    return _Raw("image", classes, x, bunch.target.astype(np.int64), "scikit-learn load_digits", {"scale": 1 / 16})


def _sklearn_tabular(loader: str) -> Callable[[int | None], _Raw]:
    def load(samples: int | None) -> _Raw:
        bunch = _sklearn_bunch(loader)
        classes = tuple(str(c) for c in bunch.target_names)
        return _Raw("tabular", classes, bunch.data.astype(np.float64), bunch.target.astype(np.int64),
                    f"scikit-learn {loader}")

    return load


# -------------------------------------------------------------------------------- built-in: shapes32

_SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
_SHAPES_SEED = 20240611  # fixed: the images never change; only the split follows the caller's seed
_SHAPES_DEFAULT = 3000


def _shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to a shape of radius ``r`` at the origin."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return np.hypot(dx, dy) - r
    if shape == "ring":
        return np.abs(np.hypot(dx, dy) - 0.72 * r) - 0.28 * r
    if shape == "square":
        return np.maximum(ax, ay) - 0.82 * r
    if shape == "diamond":
        return (ax + ay) * np.float32(0.7071) - 0.75 * r
    if shape == "cross":
        arm = 0.3 * r
        return np.minimum(np.maximum(ax - arm, ay - r), np.maximum(ay - arm, ax - r))
    return np.maximum(dy, np.float32(0.866) * ax - 0.5 * dy) - 0.5 * r  # triangle, apex up


def _shapes32(samples: int | None) -> _Raw:
    """Coloured shapes on coloured noisy backgrounds: position, size and both colours vary, so raw
    pixels say little to a linear model while a small CNN learns the outlines."""
    n = _SHAPES_DEFAULT if samples is None else int(samples)
    rng = np.random.default_rng(_SHAPES_SEED)
    y = rng.permutation(np.arange(n) % len(_SHAPES))
    r = rng.uniform(5.0, 12.0, n).astype(np.float32)
    cx, cy = (rng.uniform(r, 32.0 - r).astype(np.float32) for _ in range(2))
    grid = np.arange(32, dtype=np.float32) + np.float32(0.5)
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    distance = np.empty((n, 32, 32), np.float32)
    for label, shape in enumerate(_SHAPES):
        m = y == label
        distance[m] = _shape_distance(shape, dx[m], dy[m], r[m, None, None])
    alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]  # one pixel of anti-aliasing
    bg = rng.uniform(0.0, 1.0, (n, 1, 1, 3)).astype(np.float32)
    fg = rng.uniform(0.0, 1.0, (n, 1, 1, 3)).astype(np.float32)
    faint = np.abs(fg.mean(-1, keepdims=True) - bg.mean(-1, keepdims=True)) < 0.3
    fg = np.where(faint, 1.0 - bg, fg)  # keep every shape visible against its background
    x = rng.standard_normal((n, 32, 32, 3), dtype=np.float32)
    x *= np.float32(0.06)
    x += bg + alpha * (fg - bg)
    np.clip(x, 0.0, 1.0, out=x)
    source = f"generated by edgeship (shapes32, generator seed {_SHAPES_SEED}, {n} samples)"
    return _Raw("image", _SHAPES, x, y.astype(np.int64), source)


_BUILTINS: dict[str, Callable[[int | None], _Raw]] = {
    "digits": _digits,
    "iris": _sklearn_tabular("load_iris"),
    "wine": _sklearn_tabular("load_wine"),
    "breast_cancer": _sklearn_tabular("load_breast_cancer"),
    "shapes32": _shapes32,
    "mnist": _mnist,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar10,
}
