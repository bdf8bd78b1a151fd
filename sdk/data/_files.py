"""Datasets read from files: Keras' cached downloads (never downloaded here) and the caller's
.npz, .csv and image folders. ``edgeship.data`` splits what these return."""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeship._deps import require
from edgeship.errors import DatasetError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class _Raw:
    """What a loader returns: samples and targets, plus the file's own test split if it has one.

    ``x`` is one array or a tuple (one per model input); ``y`` one array, a tuple (one per model
    output) or None (an autoencoder). ``target`` says what ``y`` holds: classes (integer ids),
    multilabel (a 0/1 matrix), regression (floats) or none; ``test_only`` marks a ``y_test``
    without ``y`` (an autoencoder's anomaly labels). ``standardize`` asks the split to scale
    tabular features with the train split's statistics (the built-in tabular sets).
    """

    kind: str
    classes: tuple[str, ...]
    x: Any
    y: Any
    source: str
    preprocessing: dict = field(default_factory=dict)
    x_test: Any = None
    y_test: Any = None
    target: str = "classes"
    standardize: bool = False
    test_only: bool = False
    x_val: Any = None  # the file's own validation split (then none is taken from x)
    y_val: Any = None


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
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(line, row) for line, row in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in row)]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                           "a CSV dataset is UTF-8: save it as UTF-8 (or it is not a CSV file)") from exc
    except csv.Error as exc:  # a field over the csv module's 128 KiB limit, a NUL byte, …
        raise DatasetError(f"{path} is not a CSV file edgeship reads ({exc}); a dataset CSV holds one sample per "
                           "row of numbers and a label column") from exc
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
    folders = sorted(_contained(path, d) for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(folders) < 2:
        raise DatasetError(f"{path} must hold one subfolder of images per class, at least 2. "
                           f"Received {len(folders)} subfolders: {[d.name for d in folders]}")
    pixels, labels, first = [], [], None
    for label, folder in enumerate(folders):
        files = sorted(_contained(path, f) for f in folder.iterdir()
                       if (f.is_file() or f.is_symlink()) and f.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"class folder {folder} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")
        for file in files:
            pixels.append(_read_image(image, file))
            labels.append(label)
            first = first or (file, pixels[-1].shape[:2])
            if pixels[-1].shape[:2] != first[1]:
                raise DatasetError(f"{path}: images must all have one size; found {first[1][::-1]} (w x h) in "
                                   f"{first[0]} and {pixels[-1].shape[1::-1]} in {file}. Resize them first.")
    # uint8 pixels: the default preprocessing (unit, x/255) or the caller's runs on them
    return _Raw("image", tuple(d.name for d in folders), np.stack(pixels), np.array(labels, np.int64), str(path),
                {"color": "RGB"})


def _contained(root: Path, entry: Path) -> Path:
    """``entry`` if it stays inside the folder the user named: a symbolic link (or a class folder
    reached through one) that leads out of it is refused, naming the entry, before it is opened."""
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a dangling link or a loop
        raise DatasetError(f"{entry} cannot be followed ({type(exc).__name__}: {exc}); remove it from {root}") from exc
    if not target.is_relative_to(root.resolve()):
        raise DatasetError(f"{entry} leads outside {root} (to {target}); an image folder dataset reads only files "
                           "inside the folder named: copy the file in or remove the link")
    if entry.is_symlink() and not target.is_file() and not target.is_dir():
        raise DatasetError(f"{entry} is a link to {target}, which is not a regular file; remove it from {root}")
    return entry


def _read_image(image: Any, file: Path) -> np.ndarray:
    try:
        with image.open(file) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, image.DecompressionBombError) as exc:
        raise DatasetError(f"{file} is not a readable image ({exc}). Remove or replace it.") from exc


