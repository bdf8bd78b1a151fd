"""The caller's ``.npz``: any rank and dtype, one or several inputs and outputs, any kind of target.

    inputs    x_train, x_test                  one input
              x_train_0, x_train_1, … (x_test_…) several, in the order of the model's inputs
    val       x_val, y_val (x_val_0, … y_val_0, …) optional: the validation split; without it,
                                               val_fraction of train is held out
    targets   y_train, y_test                  one output (a single y_* also applies to output 0)
              y_train_0, … (y_test_…)          one per output of a multi-output model
              none                             an autoencoder; a 0/1 y_test alone marks anomalies
    classes   optional names of output 0's classes

Integer targets are classes (a 0/1 matrix is multi-label), float targets regression values.
Arrays keep their dtype here: preprocessing (``edgeship.data.preprocess``) is applied after the split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeship.data._files import _contained, _encode_labels, _Raw
from edgeship.data._lazy import LazyArray, Stored, chunks, stored
from edgeship.errors import DatasetError

_FORMAT = (
    "x_train and x_test (or x_train_0, x_train_1, … for several inputs), y_train and y_test "
    "(or y_train_0, … per output; none for an autoencoder), optional classes"
)


def read(path: Path, *, lazy: bool = False) -> _Raw:
    """Check and sort the arrays of a user's .npz, or of a folder of .npy files named the same way,
    into a _Raw. ``lazy`` leaves the inputs on disk (``edgeship.data._lazy``): read when sliced."""
    arrays = _folder(path, lazy) if path.is_dir() else _members(path, lazy)
    where = str(path)
    x_train, x_test = _series(arrays, "x_train", where), _series(arrays, "x_test", where)
    if not x_train or len(x_train) != len(x_test):
        raise DatasetError(f"{where} needs inputs as {_FORMAT}; received keys {sorted(arrays)}")
    for i, (a, b) in enumerate(zip(x_train, x_test)):
        _check_input(a, f"input {i} of x_train", where)
        _check_input(b, f"input {i} of x_test", where)
        if a.shape[1:] != b.shape[1:]:
            raise DatasetError(f"{where}: input {i} has samples of shape {a.shape[1:]} in train, {b.shape[1:]} in test")
        if len(a) != len(x_train[0]) or len(b) != len(x_test[0]):
            raise DatasetError(f"{where}: every input needs as many samples as input 0 in each split")
    y_train, y_test = _series(arrays, "y_train", where), _series(arrays, "y_test", where)
    x_val, y_val = _validation(arrays, x_train, y_train, where)
    n_train = len(x_train[0])
    if x_val:  # labelled with train's classes: encoded together, then split again
        y_train = [np.concatenate([a, b]) for a, b in zip(y_train, y_val)]
    target, y_train, y_test, classes, test_only = _targets(
        y_train, y_test, arrays.get("classes"), n_train + (len(x_val[0]) if x_val else 0), len(x_test[0]), where
    )
    if x_val:
        y_train, y_val = [a[:n_train] for a in y_train], [a[n_train:] for a in y_train]
    first = x_train[0]
    kind = (
        "image"
        if first.ndim in (3, 4) and (first.dtype.kind in "iu" or first.ndim == 4)
        else "tabular"
        if first.ndim == 2 and first.dtype.kind == "f"
        else "array"
    )
    if kind == "image" and first.ndim == 3:  # grey (N, H, W) pixels gain their channel axis: (N, H, W, 1)
        x_train[0], x_test[0] = x_train[0][..., None], x_test[0][..., None]
        if x_val:
            x_val[0] = x_val[0][..., None]
    return _Raw(
        kind,
        classes,
        _one(x_train),
        _one(y_train),
        where,
        {},
        _one(x_test),
        _one(y_test),
        target=target,
        test_only=test_only,
        x_val=_one(x_val),
        y_val=_one(y_val),
    )


def _validation(arrays: dict[str, Any], x_train: list, y_train: list, where: str) -> tuple[list, list]:
    """The file's own validation split (x_val, y_val, or x_val_0, … y_val_0, …), checked against
    train; ([], []) when it has none, and the validation split is then taken from train."""
    x_val, y_val = _series(arrays, "x_val", where), _series(arrays, "y_val", where)
    if not x_val and not y_val:
        return [], []
    if len(x_val) != len(x_train) or len(y_val) != len(y_train):
        raise DatasetError(
            f"{where}: a validation split needs one x_val per input ({len(x_train)}) and one y_val per "
            f"output ({len(y_train)}); received {len(x_val)} and {len(y_val)}"
        )
    for i, (a, b) in enumerate(zip(x_train, x_val)):
        _check_input(b, f"input {i} of x_val", where)
        if a.shape[1:] != b.shape[1:] or len(b) != len(x_val[0]):
            raise DatasetError(
                f"{where}: input {i} has samples of shape {a.shape[1:]} in train, {b.shape[1:]} in val "
                "(and every input needs as many val samples as input 0)"
            )
    for i, (a, b) in enumerate(zip(y_train, y_val)):
        if len(b) != len(x_val[0]) or np.shape(a)[1:] != np.shape(b)[1:]:
            raise DatasetError(
                f"{where}: output {i}'s y_val has shape {np.shape(b)}; it needs one target per x_val "
                f"sample, shaped like y_train's {np.shape(a)[1:]}"
            )
    return x_val, y_val


def is_npy_folder(path: Path) -> bool:
    """A folder of arrays (x_train.npy, …) rather than one of class subfolders of images."""
    return path.is_dir() and any(path.glob("*.npy"))


def _members(path: Path, lazy: bool) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not lazy:
                return {k: archive[k] for k in archive.files}
            return {k: _lazy(path, k) if k.startswith("x_") else archive[k] for k in archive.files}
    except DatasetError:
        raise
    except Exception as exc:  # zipfile, pickle and format errors alike mean the file is unusable
        raise DatasetError(
            f"{path} is not a readable .npz of plain arrays ({type(exc).__name__}: {exc}). "
            "Write it with numpy.savez(x_train=..., y_train=..., x_test=..., y_test=...)."
        ) from exc


def _folder(path: Path, lazy: bool) -> dict[str, Any]:
    """The arrays of a folder of .npy files, one per name of the .npz format (x_test.npy, …).

    Unlike a .npz member, a .npy file can be memory-mapped by the caller's own tools, and large
    inputs are written one file at a time; with ``lazy`` the inputs are read in pieces."""
    arrays: dict[str, Any] = {}
    for file in sorted(path.glob("*.npy")):
        _contained(path, file)  # a link out of the folder is refused before it is opened
        try:
            if lazy and file.stem.startswith("x_"):
                arrays[file.stem] = _lazy(file, None)
            else:
                arrays[file.stem] = np.load(file, allow_pickle=False)
        except DatasetError:
            raise
        except Exception as exc:  # a truncated header, pickled objects, not a .npy at all
            raise DatasetError(
                f"{file} is not a readable .npy array ({type(exc).__name__}: {exc}); write it with numpy.save"
            ) from exc
    if "x_train" not in arrays and "x_train_0" not in arrays:
        raise DatasetError(
            f"{path} is a folder of .npy files without x_train.npy; it needs one file per array of "
            f"{_FORMAT}, e.g. x_train.npy, y_train.npy, x_test.npy, y_test.npy. "
            f"Received: {sorted(f.name for f in path.glob('*.npy'))}"
        )
    return arrays


def _lazy(path: Path, member: str | None) -> Any:
    found = stored(path, member)
    return LazyArray(found) if isinstance(found, Stored) else found


def _series(arrays: dict[str, np.ndarray], key: str, where: str) -> list[np.ndarray]:
    numbered: list[np.ndarray] = []
    while f"{key}_{len(numbered)}" in arrays:
        numbered.append(arrays[f"{key}_{len(numbered)}"])
    if key in arrays and numbered:
        raise DatasetError(f"{where} holds both {key} and {key}_0; name one input or output one way")
    numbers = {f"{key}_{i}" for i in range(len(numbered))}
    stray = sorted(k for k in arrays if k.startswith(key + "_") and k not in numbers)
    if stray:
        raise DatasetError(f"{where}: {stray} do not follow {key}_0, {key}_1, … without gaps")
    return [arrays[key]] if key in arrays else numbered


def _check_input(x: np.ndarray, what: str, where: str) -> None:
    if x.dtype.kind not in "fiub" or np.iscomplexobj(x):
        raise DatasetError(f"{where}: {what} must hold real numbers; received dtype {x.dtype}")
    if x.ndim < 1 or x.size == 0:
        raise DatasetError(
            f"{where}: {what} must be non-empty, with samples along its first axis; received shape {x.shape}"
        )
    bad = sum(int(np.sum(~np.isfinite(piece))) for piece in chunks(x)) if x.dtype.kind == "f" else 0
    if bad:
        raise DatasetError(f"{where}: {what} holds {bad} NaN or infinite values; remove or impute them first")


def _targets(
    y_train: list[np.ndarray], y_test: list[np.ndarray], names: np.ndarray | None, n_train: int, n_test: int, where: str
) -> tuple[tuple[str, ...], list[np.ndarray], list[np.ndarray], tuple[str, ...], bool]:
    """(target kind per output, train targets, test targets, output 0's class names, test-only labels)
    for ``n_train`` and ``n_test`` samples."""
    if not y_train and len(y_test) == 1:  # an autoencoder whose test split marks anomalies
        labels = np.asarray(y_test[0]).reshape(len(y_test[0]), -1)
        if labels.shape[1] != 1 or not np.isin(labels, (0, 1)).all() or len(labels) != n_test:
            raise DatasetError(
                f"{where}: a y_test without y_train marks anomalies and must be 0/1, one per test "
                f"sample; received shape {np.shape(y_test[0])}"
            )
        return (), [], [labels.reshape(-1).astype(np.int64)], ("normal", "anomaly"), True
    if len(y_train) != len(y_test):
        raise DatasetError(
            f"{where}: {len(y_train)} train target(s) (y_train…) but {len(y_test)} test target(s) "
            "(y_test…); give each output both y_train and y_test"
        )
    kinds, trains, tests = [], [], []
    classes: tuple[str, ...] = ()
    for i, (a, b) in enumerate(zip(y_train, y_test)):
        if len(a) != n_train or len(b) != n_test:
            raise DatasetError(
                f"{where}: the inputs hold {n_train}/{n_test} samples (train/test) "
                f"but output {i}'s targets y has {len(a)}/{len(b)}; they must match"
            )
        kind = _kind(a, b, where, i)
        if kind == "classes":
            (a, b), names_i = _encode_labels([a, b], names if i == 0 else None, where)
            classes = names_i if i == 0 else classes
        elif kind == "multilabel":
            a, b = (np.asarray(v, np.int64) for v in (a, b))
            if i == 0:
                classes = (
                    tuple(str(n) for n in np.asarray(names).reshape(-1))
                    if names is not None
                    else tuple(str(k) for k in range(a.shape[1]))
                )
        else:
            a, b = (np.asarray(v, np.float32) for v in (a, b))
        kinds.append(kind)
        trains.append(a)
        tests.append(b)
    return tuple(kinds), trains, tests, classes, False


def _kind(a: np.ndarray, b: np.ndarray, where: str, i: int) -> str:
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise DatasetError(f"{where}: output {i}'s targets hold NaN or infinite values")
        return "regression"
    squeezed = a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)
    if a.dtype.kind in "iub" and not squeezed and a.ndim == 2:
        if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
            raise DatasetError(
                f"{where}: output {i}'s integer targets of shape {a.shape} must be a 0/1 matrix "
                "(multi-label); class ids are one integer per sample"
            )
        return "multilabel"
    if a.dtype.kind in "iubUS" and squeezed:
        return "classes"
    raise DatasetError(
        f"{where}: output {i}'s targets of dtype {a.dtype} and shape {a.shape} are neither class ids, "
        "a 0/1 matrix nor float regression values"
    )


def _one(arrays: list[np.ndarray]) -> Any:
    return None if not arrays else arrays[0] if len(arrays) == 1 else tuple(arrays)
