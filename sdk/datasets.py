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
import csv
import gzip
import hashlib
import json
import logging
import os
import pickle
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeship._deps import require
from edgeship.errors import BadInputError, DatasetError

__all__ = ["Dataset", "load_dataset", "list_datasets"]

log = logging.getLogger(__name__)

_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
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


@dataclass
class _Raw:
    """What a loader returns: scaled samples and labels, plus the file's own test split if it has one."""

    kind: str
    classes: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    source: str
    preprocessing: dict = field(default_factory=dict)
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


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


# ------------------------------------------------------------------------------ built-in: Keras cache

_KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag", "Ankle boot")
_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _keras_datasets_dir() -> Path:
    """Where Keras caches downloads: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    home = os.environ.get("KERAS_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".keras") / "datasets"


def _keras_files(dataset: str, names: list[str], how: str) -> list[Path]:
    """The cached files, or a DatasetError naming every missing path and how to put it there."""
    folder = _keras_datasets_dir()
    paths = [folder / name for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{dataset} is read from the Keras cache and edgeship never downloads it. Missing: "
            f"{', '.join(missing)}. {how} Alternatively run keras.datasets.{dataset}.load_data() on a machine "
            f"with network and copy its {folder.name} folder to {folder} (set KERAS_HOME to use another folder)."
        )
    return paths


def _mnist(samples: int | None) -> _Raw:
    [path] = _keras_files("mnist", ["mnist.npz"], f"Download {_KERAS_URL}mnist.npz on a machine with "
                          f"network and put it at {_keras_datasets_dir() / 'mnist.npz'}.")
    raw = _labelled_arrays(_read_npz(path), str(path))
    return replace(raw, source=f"Keras cache {path}")


def _fashion_mnist(samples: int | None) -> _Raw:
    stems = [f"{part}-{kind}-ubyte.gz" for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
    how = (f"Download {', '.join(_KERAS_URL + s for s in stems)} on a machine with network and put them in "
           f"{_keras_datasets_dir() / 'fashion-mnist'}.")
    paths = _keras_files("fashion_mnist", [f"fashion-mnist/{s}" for s in stems], how)
    arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), (_read_idx(p) for p in paths)))
    raw = _labelled_arrays(arrays, str(paths[0].parent), classes=_FASHION_CLASSES)
    return replace(raw, source=f"Keras cache {paths[0].parent}")


def _cifar10(samples: int | None) -> _Raw:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = _keras_datasets_dir() / "cifar-10-batches-py"
    how = ("Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz on a machine with network and "
           f"extract it in {folder.parent}, so that {folder / 'data_batch_1'} exists.")
    paths = _keras_files("cifar10", [f"cifar-10-batches-py/{n}" for n in names], how)
    batches = [_read_cifar_batch(p) for p in paths]
    x_train = np.concatenate([b[0] for b in batches[:5]])
    y_train = np.concatenate([b[1] for b in batches[:5]])
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": batches[5][0], "y_test": batches[5][1]}
    raw = _labelled_arrays(arrays, str(folder), classes=_CIFAR_CLASSES)
    return replace(raw, source=f"Keras cache {folder}")


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format), gzip-compressed."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path} is not a readable gzip file ({exc}). Download it again.") from exc
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes (header {data[:4]!r}). Download it again.")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4)) if len(data) >= 4 + 4 * ndim else ()
    if len(dims) != ndim or len(data) - 4 - 4 * ndim != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: its header promises shape {dims}. Download it again.")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles containers, bytes and numpy arrays only: a cached file must not be able to run code."""

    # _codecs.encode is how protocol-2 pickles written by Python 3 spell bytes
    _ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        module = "numpy._core" + module[len("numpy.core"):] if module.startswith("numpy.core") else module
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: N x 3072 bytes in CHW order, turned into NHWC."""
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:  # a malformed pickle can fail in many ways; all mean "not a CIFAR batch"
        raise DatasetError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}). "
                           "Download and extract it again.") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DatasetError(f"{path}: expected data of shape (N, 3072) and N labels. "
                           f"Received data {data.shape} and {len(labels)} labels.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


# ------------------------------------------------------------------------------------- user files


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DatasetError(f"{path} lacks the arrays {missing}; a dataset .npz needs {list(keys)} "
                                   f"(and optionally classes). Received keys: {sorted(archive.files)}")
            return {k: archive[k] for k in (*keys, "classes") if k in archive.files}
    except DatasetError:
        raise
    except Exception as exc:  # zipfile, pickle and format errors alike mean the file is unusable
        raise DatasetError(f"{path} is not a readable .npz of plain arrays ({type(exc).__name__}: {exc}). "
                           "Write it with numpy.savez(x_train=..., y_train=..., x_test=..., y_test=...).") from exc


def _labelled_arrays(arrays: dict[str, np.ndarray], where: str, classes: tuple[str, ...] | None = None) -> _Raw:
    """Check train/test arrays from a file, encode the labels and scale images to [0, 1]."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_features(x, f"x_{split}", where)
        if len(x) != len(y):
            raise DatasetError(f"{where}: x_{split} has {len(x)} samples but y_{split} has {len(y)}; they must match.")
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{where}: x_train samples have shape {x_train.shape[1:]}, x_test {x_test.shape[1:]}.")
    names = classes if classes is not None else arrays.get("classes")
    (y_train, y_test), labels = _encode_labels([arrays["y_train"], arrays["y_test"]], names, where)
    if x_train.ndim == 2:
        return _Raw("tabular", labels, x_train.astype(np.float64), y_train, where, {},
                    x_test.astype(np.float64), y_test)
    scale = _image_scale(x_train, x_test, where)
    x_train, x_test = (_as_nhwc(x, scale) for x in (x_train, x_test))
    return _Raw("image", labels, x_train, y_train, where, {"scale": scale} if scale != 1 else {}, x_test, y_test)


def _check_features(x: np.ndarray, key: str, where: str) -> None:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise DatasetError(f"{where}: {key} must hold real numbers. Received dtype {x.dtype}.")
    if x.size == 0 or x.ndim < 2 or x.ndim > 4:
        raise DatasetError(f"{where}: {key} must be non-empty, (N, features), (N, H, W) or (N, H, W, C). "
                           f"Received shape {x.shape}.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DatasetError(f"{where}: {key} holds {int(np.sum(~np.isfinite(x)))} NaN or infinite values; "
                           "remove or impute them first.")


def _image_scale(x_train: np.ndarray, x_test: np.ndarray, where: str) -> float:
    """1/255 for integer pixels 0..255, 1 for floats already in [0, 1]; anything else is refused."""
    low, high = min(x_train.min(), x_test.min()), max(x_train.max(), x_test.max())
    if np.issubdtype(x_train.dtype, np.integer) and 0 <= low and high <= 255:
        return 1 / 255
    if np.issubdtype(x_train.dtype, np.floating) and 0 <= low and high <= 1:
        return 1.0
    raise DatasetError(f"{where}: image pixels must be integers in 0..255 or floats in [0, 1]. "
                       f"Received {x_train.dtype} values in [{low}, {high}]; rescale them first.")


def _as_nhwc(x: np.ndarray, scale: float) -> np.ndarray:
    x = x.astype(np.float32) * np.float32(scale)
    return x[..., None] if x.ndim == 3 else x


def _encode_labels(ys: list[np.ndarray], classes: Any, where: str) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Labels as 0..C-1. With ``classes`` given, labels are its indices or its names; without, the
    sorted distinct labels become the classes."""
    ys = [np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y) for y in ys]
    for y in ys:
        if y.ndim != 1 or y.dtype.kind not in "iubUS":
            raise DatasetError(f"{where}: labels must be a 1-D array of integers or strings. "
                               f"Received dtype {y.dtype}, shape {y.shape}.")
    if len({y.dtype.kind in "iub" for y in ys}) > 1:
        raise DatasetError(f"{where}: train and test labels must both be integers or both strings. "
                           f"Received dtypes {[str(y.dtype) for y in ys]}.")
    if classes is None:
        values = np.unique(np.concatenate(ys))
        return [np.searchsorted(values, y).astype(np.int64) for y in ys], tuple(_label_name(v) for v in values)
    names = tuple(_label_name(c) for c in np.asarray(classes).reshape(-1))
    if all(np.issubdtype(y.dtype, np.integer) for y in ys):
        bad = sorted({int(v) for y in ys for v in y[(y < 0) | (y >= len(names))]})
        codes = [y.astype(np.int64) for y in ys]
    else:
        lookup = {n: i for i, n in enumerate(names)}
        bad = sorted({_label_name(v) for y in ys for v in y if _label_name(v) not in lookup})
        codes = [np.array([lookup.get(_label_name(v), -1) for v in y], np.int64) for y in ys]
    if bad:
        raise DatasetError(f"{where}: labels {bad[:10]} are not among the {len(names)} classes {list(names)}.")
    return codes, names


def _label_name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _csv(path: Path, label_column: str) -> _Raw:
    """A header row, one label column, every other column a number."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [(line, row) for line, row in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in row)]
    if len(rows) < 2:
        raise DatasetError(f"{path} needs a header row and at least one data row. Received {len(rows)} rows.")
    header = [h.strip() for h in rows[0][1]]
    if label_column not in header:
        raise DatasetError(f"{path} has no column {label_column!r}. Received columns: {header}. "
                           "Pass label_column= with the name of the label column.")
    li = header.index(label_column)
    features = [h for i, h in enumerate(header) if i != li]
    if not features:
        raise DatasetError(f"{path} has a label column but no feature columns. Received columns: {header}")
    labels, cells = [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DatasetError(f"{path}, line {line}: {len(row)} values but the header has {len(header)} columns.")
        labels.append(row[li].strip())
        cells.append([_number(c, path, line, h) for i, (c, h) in enumerate(zip(row, header)) if i != li])
    y = np.array([int(v) for v in labels]) if all(_is_int(v) for v in labels) else np.array(labels)
    [y], classes = _encode_labels([y], None, str(path))
    return _Raw("tabular", classes, np.array(cells, np.float64), y, str(path))


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise DatasetError(f"{path}, line {line}, column {column!r}: {cell!r} is not a finite number; "
                           "every column except the label must be numeric.")
    return value


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _image_folder(path: Path) -> _Raw:
    """One subfolder per class, sorted by name; every image converted to RGB and of one size."""
    image = require("PIL.Image", "read image folders")
    folders = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(folders) < 2:
        raise DatasetError(f"{path} must hold one subfolder of images per class, at least 2. "
                           f"Received {len(folders)} subfolders: {[d.name for d in folders]}")
    pixels, labels, first = [], [], None
    for label, folder in enumerate(folders):
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"class folder {folder} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")
        for file in files:
            pixels.append(_read_image(image, file))
            labels.append(label)
            first = first or (file, pixels[-1].shape[:2])
            if pixels[-1].shape[:2] != first[1]:
                raise DatasetError(f"{path}: images must all have one size; found {first[1][::-1]} (w x h) in "
                                   f"{first[0]} and {pixels[-1].shape[1::-1]} in {file}. Resize them first.")
    x = np.stack(pixels).astype(np.float32) * np.float32(1 / 255)
    return _Raw("image", tuple(d.name for d in folders), x, np.array(labels, np.int64), str(path),
                {"scale": 1 / 255, "color": "RGB"})


def _read_image(image: Any, file: Path) -> np.ndarray:
    try:
        with image.open(file) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, image.DecompressionBombError) as exc:
        raise DatasetError(f"{file} is not a readable image ({exc}). Remove or replace it.") from exc


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
