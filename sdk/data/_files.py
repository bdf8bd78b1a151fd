"""Datasets read from the caller's files: .npz, .csv and image folders (Keras' cached downloads:
``_keras_cache``). ``edgeship.data`` splits what these return."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
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
    target: str | tuple[str, ...] = "classes"  # one kind per output where ``y`` is a tuple
    standardize: bool = False
    test_only: bool = False
    x_val: Any = None  # the file's own validation split (then none is taken from x)
    y_val: Any = None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DatasetError(
                    f"{path} lacks the arrays {missing}; a dataset .npz needs {list(keys)} "
                    f"(and optionally classes). Received keys: {sorted(archive.files)}"
                )
            return {k: archive[k] for k in (*keys, "classes") if k in archive.files}
    except DatasetError:
        raise
    except Exception as exc:  # zipfile, pickle and format errors alike mean the file is unusable
        raise DatasetError(
            f"{path} is not a readable .npz of plain arrays ({type(exc).__name__}: {exc}). "
            "Write it with numpy.savez(x_train=..., y_train=..., x_test=..., y_test=...)."
        ) from exc


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
        return _Raw(
            "tabular", labels, x_train.astype(np.float64), y_train, where, {}, x_test.astype(np.float64), y_test
        )
    scale = _image_scale(x_train, x_test, where)
    x_train, x_test = (_as_nhwc(x, scale) for x in (x_train, x_test))
    return _Raw("image", labels, x_train, y_train, where, {"scale": scale} if scale != 1 else {}, x_test, y_test)


def _check_features(x: np.ndarray, key: str, where: str) -> None:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise DatasetError(f"{where}: {key} must hold real numbers. Received dtype {x.dtype}.")
    if x.size == 0 or x.ndim < 2 or x.ndim > 4:
        raise DatasetError(
            f"{where}: {key} must be non-empty, (N, features), (N, H, W) or (N, H, W, C). Received shape {x.shape}."
        )
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DatasetError(
            f"{where}: {key} holds {int(np.sum(~np.isfinite(x)))} NaN or infinite values; remove or impute them first."
        )


def _image_scale(x_train: np.ndarray, x_test: np.ndarray, where: str) -> float:
    """1/255 for integer pixels 0..255, 1 for floats already in [0, 1]; anything else is refused."""
    low, high = min(x_train.min(), x_test.min()), max(x_train.max(), x_test.max())
    if np.issubdtype(x_train.dtype, np.integer) and 0 <= low and high <= 255:
        return 1 / 255
    if np.issubdtype(x_train.dtype, np.floating) and 0 <= low and high <= 1:
        return 1.0
    raise DatasetError(
        f"{where}: image pixels must be integers in 0..255 or floats in [0, 1]. "
        f"Received {x_train.dtype} values in [{low}, {high}]; rescale them first."
    )


def _as_nhwc(x: np.ndarray, scale: float) -> np.ndarray:
    x = x.astype(np.float32) * np.float32(scale)
    return x[..., None] if x.ndim == 3 else x


def _encode_labels(
    ys: list[np.ndarray], classes: Sequence[str] | np.ndarray | None, where: str
) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Labels as 0..C-1. With ``classes`` given, labels are its indices or its names; without, the
    sorted distinct labels become the classes."""
    ys = [np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y) for y in ys]
    for y in ys:
        if y.ndim != 1 or y.dtype.kind not in "iubUS":
            raise DatasetError(
                f"{where}: labels must be a 1-D array of integers or strings. "
                f"Received dtype {y.dtype}, shape {y.shape}."
            )
    if len({y.dtype.kind in "iub" for y in ys}) > 1:
        raise DatasetError(
            f"{where}: train and test labels must both be integers or both strings. "
            f"Received dtypes {[str(y.dtype) for y in ys]}."
        )
    if classes is None:
        values = np.unique(np.concatenate(ys))
        return [np.searchsorted(values, y).astype(np.int64) for y in ys], tuple(_label_name(v) for v in values)
    names = tuple(_label_name(c) for c in np.asarray(classes).reshape(-1))
    bad: list[int] | list[str]
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


def _label_name(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _csv(path: Path, label_column: str) -> _Raw:
    """A header row, one label column, every other column a number."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(line, row) for line, row in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in row)]
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "a CSV dataset is UTF-8: save it as UTF-8 (or it is not a CSV file)"
        ) from exc
    except csv.Error as exc:  # a field over the csv module's 128 KiB limit, a NUL byte, …
        raise DatasetError(
            f"{path} is not a CSV file edgeship reads ({exc}); a dataset CSV holds one sample per "
            "row of numbers and a label column"
        ) from exc
    if len(rows) < 2:
        raise DatasetError(f"{path} needs a header row and at least one data row. Received {len(rows)} rows.")
    header = [h.strip() for h in rows[0][1]]
    if label_column not in header:
        raise DatasetError(
            f"{path} has no column {label_column!r}. Received columns: {header}. "
            "Pass label_column= with the name of the label column."
        )
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
        raise DatasetError(
            f"{path}, line {line}, column {column!r}: {cell!r} is not a finite number; "
            "every column except the label must be numeric."
        )
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
        raise DatasetError(
            f"{path} must hold one subfolder of images per class, at least 2. "
            f"Received {len(folders)} subfolders: {[d.name for d in folders]}"
        )
    pixels, labels, first = [], [], None
    for label, folder in enumerate(folders):
        files = sorted(
            _contained(path, f)
            for f in folder.iterdir()
            if (f.is_file() or f.is_symlink()) and f.suffix.lower() in _IMAGE_SUFFIXES
        )
        if not files:
            raise DatasetError(f"class folder {folder} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")
        for file in files:
            pixels.append(_read_image(image, file))
            labels.append(label)
            first = first or (file, pixels[-1].shape[:2])
            if pixels[-1].shape[:2] != first[1]:
                raise DatasetError(
                    f"{path}: images must all have one size; found {first[1][::-1]} (w x h) in "
                    f"{first[0]} and {pixels[-1].shape[1::-1]} in {file}. Resize them first."
                )
    # uint8 pixels: the default preprocessing (unit, x/255) or the caller's runs on them
    return _Raw(
        "image",
        tuple(d.name for d in folders),
        np.stack(pixels),
        np.array(labels, np.int64),
        str(path),
        {"color": "RGB"},
    )


def _contained(root: Path, entry: Path) -> Path:
    """``entry`` if it stays inside the folder the user named: a symbolic link (or a class folder
    reached through one) that leads out of it is refused, naming the entry, before it is opened."""
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a dangling link or a loop
        raise DatasetError(f"{entry} cannot be followed ({type(exc).__name__}: {exc}); remove it from {root}") from exc
    if not target.is_relative_to(root.resolve()):
        raise DatasetError(
            f"{entry} leads outside {root} (to {target}); an image folder dataset reads only files "
            "inside the folder named: copy the file in or remove the link"
        )
    if entry.is_symlink() and not target.is_file() and not target.is_dir():
        raise DatasetError(f"{entry} is a link to {target}, which is not a regular file; remove it from {root}")
    return entry


def _read_image(image: ModuleType, file: Path) -> np.ndarray:
    try:
        with image.open(file) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, image.DecompressionBombError) as exc:
        raise DatasetError(f"{file} is not a readable image ({exc}). Remove or replace it.") from exc
