"""``Dataset`` and ``load_dataset``: a source picked by name or path, split, preprocessed and fingerprinted.

The stage as a whole (sources, split, preprocessing) is drawn in ``edgeship.data``; this module
picks the loader, checks the arguments and assembles the frozen ``Dataset``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.data import _npz
from edgeship.data._builtins import BUILTINS
from edgeship.data._files import _csv, _image_folder, _Raw
from edgeship.data._lazy import chunks
from edgeship.data._split import as_tuple, pick_per_class, split
from edgeship.data.preprocess import Preprocess
from edgeship.errors import BadInputError, DatasetError

__all__ = ["Dataset", "load_dataset", "list_datasets", "TARGETS"]

log = logging.getLogger(__name__)

_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_FILE_TYPES = (
    "a .npz file with x_train, x_test and (for supervised models) y_train, y_test, a folder of .npy files "
    "named the same way (x_train.npy, …), a .csv file with a "
    "header row and a label column, or a folder holding one subfolder of images (png/jpg/bmp) per class"
)
#: what a dataset's targets hold, per model output
TARGETS = ("classes", "multilabel", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train, validation and test.

        >>> data = load_dataset("digits", seed=0)
        >>> data.input_shape, data.num_classes, data.x_train.dtype.name
        ((8, 8, 1), 10, 'float32')

    ``x_*`` is one array, or a tuple of arrays for a model with several inputs (in the order of its
    inputs); ``y_*`` one array, a tuple (one per output), or None (an autoencoder; its ``y_test``
    may still mark anomalies with 0/1). ``targets`` says per output what ``y`` holds (classes,
    multilabel, regression). ``preprocessing`` records what was applied (a scale, a
    standardization, the preprocess spec) and ``options`` how to load it again; ``fingerprint``
    identifies the exact arrays.
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    x_test: Any
    y_test: Any
    seed: int
    source: str
    preprocessing: dict
    targets: tuple[str, ...] = ("classes",)
    path: str = ""
    options: dict = field(default_factory=dict)
    #: the test inputs as stored, before the preprocessing spec (None when the spec is the identity)
    x_test_stored: Any = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "tabular", "array"):
            raise BadInputError(f"Dataset kind must be 'image', 'tabular' or 'array'. Received: {self.kind!r}")
        for split_name in ("train", "val", "test"):
            n = {len(a) for a in self.inputs(split_name)} | {len(a) for a in self.labels(split_name)}
            if len(n) > 1:
                raise BadInputError(f"Dataset {self.name!r}: the {split_name} split's arrays hold {sorted(n)} samples")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.inputs(s)[0])}" for s in ("train", "val", "test"))
        return f"Dataset(name={self.name!r}, kind={self.kind!r}, classes={self.num_classes}, {sizes})"

    def inputs(self, split_name: str) -> tuple[np.ndarray, ...]:
        """The model inputs of ``split_name`` (train, val or test), one array per input."""
        return as_tuple(getattr(self, f"x_{split_name}"))

    def stored_inputs(self, split_name: str = "test") -> tuple[np.ndarray, ...]:
        """The test split's inputs as stored, before the preprocessing spec (``inputs("test")`` when
        the spec changes nothing): raw data, as a device's app holds it."""
        if split_name != "test":
            raise BadInputError(f"a Dataset keeps the stored inputs of its test split only; received {split_name!r}")
        return self.inputs("test") if self.x_test_stored is None else as_tuple(self.x_test_stored)

    def labels(self, split_name: str) -> tuple[np.ndarray, ...]:
        """The targets of ``split_name``, one array per output (empty for an autoencoder)."""
        return as_tuple(getattr(self, f"y_{split_name}"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample of the first input, without the batch dimension."""
        return tuple(int(d) for d in self.inputs("train")[0].shape[1:])

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(d) for d in x.shape[1:]) for x in self.inputs("train"))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fingerprint(self) -> str:
        """sha256 over every array (dtype, shape, bytes) and the class names; computed once."""
        if "_fingerprint" not in self.__dict__:
            digest = hashlib.sha256()
            for name in _ARRAYS:
                for i, array in enumerate(as_tuple(getattr(self, name))):
                    key = name if i == 0 else f"{name}_{i}"
                    digest.update(f"{key}|{np.dtype(array.dtype).str}|{tuple(array.shape)}\n".encode())
                    for piece in chunks(array):  # a lazy split is hashed as it is read, the same bytes
                        digest.update(np.ascontiguousarray(piece).data.cast("B"))
            digest.update(json.dumps(list(self.classes)).encode())
            object.__setattr__(self, "_fingerprint", digest.hexdigest())  # a cache, not a field
        return self.__dict__["_fingerprint"]

    def calibration(self, n: int = 200) -> Any:
        """``n`` training samples for quantization calibration, the same for the same seed.

        Classes take turns, so each is represented as evenly as its size allows (a seeded random
        subset where targets are not classes); ``n`` is capped at the size of the training split.
        One array, or a tuple for several inputs.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise BadInputError(f"calibration needs a sample count of 1 or more. Received: n={n!r}")
        inputs, labels = self.inputs("train"), self.labels("train")
        n = min(int(n), len(inputs[0]))
        rng = np.random.default_rng(self.seed)
        if self.targets[:1] == ("classes",) and labels:
            idx = pick_per_class(labels[0], n, rng)
        else:
            idx = np.sort(rng.permutation(len(inputs[0]))[:n])
        picked = tuple(x[idx] for x in inputs)
        return picked[0] if len(picked) == 1 else picked

    def with_channel_axis(self) -> Dataset:
        """A copy whose first input gains a trailing channel axis of size 1 (the model takes (…, 1))."""

        def grown(value: Any) -> Any:
            arrays = as_tuple(value)
            first = arrays[0][..., None]
            first.setflags(write=False)
            return first if len(arrays) == 1 else (first, *arrays[1:])

        return dataclasses.replace(
            self,
            x_train=grown(self.x_train),
            x_val=grown(self.x_val),
            x_test=grown(self.x_test),
            x_test_stored=None if self.x_test_stored is None else grown(self.x_test_stored),
            options={**self.options, "channel_axis": True},
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: names, shapes, split sizes, fingerprint, source and preprocessing."""
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": list(self.classes),
            "targets": list(self.targets),
            "input_shape": list(self.input_shape),
            "input_shapes": [list(s) for s in self.input_shapes],
            "sizes": {s: int(len(self.inputs(s)[0])) for s in ("train", "val", "test")},
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "path": self.path,
            "preprocessing": copy.deepcopy(self.preprocessing),
        }


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts besides paths.

    >>> "digits" in list_datasets()
    True
    """
    return sorted(BUILTINS)


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    label_column: str = "label",
    samples: int | None = None,
    preprocess: str | Preprocess | None = None,
    lazy: bool = False,
) -> Dataset:
    """Load a built-in dataset by name, or the caller's .npz, .npy folder, .csv or image folder, and split it.

        >>> data = load_dataset("iris", seed=1)
        >>> data.kind, data.classes
        ('tabular', ('setosa', 'versicolor', 'virginica'))

    ``test_fraction`` of every class goes to test unless the source has its own test split;
    ``val_fraction`` of what is left goes to validation. The split depends on ``seed`` only.
    ``samples`` is how many images shapes32 generates; for other sets it keeps a class-balanced subset
    of that many. ``label_column`` names the label column of a CSV file. ``preprocess`` is a spec
    (``edgeship.data.preprocess``: a preset such as ``unit`` or items such as ``scale=…,mean=…``): for a
    user's file it replaces the default (``unit`` for integer image arrays, else ``none``); for a
    built-in set it is applied after the set's own documented preprocessing.

    ``lazy`` keeps the inputs of a .npz (uncompressed members) or .npy folder on disk: ``x_*`` are
    then ``LazyArray``s that read and preprocess the samples a slice asks for, so a test split of any
    size is measured in bounded memory (what ``validate`` does). Other sources load as usual.
    """
    _check_arguments(seed, val_fraction, test_fraction, label_column, samples)
    name, raw, path = _load_raw(name_or_path, label_column, samples, lazy)
    spec = Preprocess.parse(preprocess if preprocess is not None else _default_spec(raw, path))
    arrays, targets, record, stored = split(
        name, raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, samples=samples, preprocess=spec
    )
    if path:  # a user's file: say what reached the model, even when nothing was done
        record = {**record, "preprocess": spec.spec, "preprocess_steps": spec.describe()}
    options = {
        "seed": int(seed),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "label_column": label_column,
        "samples": samples,
        "preprocess": spec.spec,
    }
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    dataset = Dataset(
        name,
        raw.kind,
        raw.classes,
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        seed=int(seed),
        source=raw.source,
        preprocessing=record,
        targets=targets,
        path=path,
        options=options,
        x_test_stored=stored,
    )
    log.debug("loaded %r", dataset)
    return dataset


def _default_spec(raw: _Raw, path: str) -> str:
    if not path:
        return "none"  # a built-in set: its own preprocessing is already applied
    first = as_tuple(raw.x)[0]
    return "unit" if raw.kind == "image" and first.dtype.kind in "iu" else "none"


def _check_arguments(
    seed: object, val_fraction: object, test_fraction: object, label_column: object, samples: object
) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise BadInputError(f"seed must be an integer. Received: {seed!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise BadInputError(f"{name} must be a number strictly between 0 and 1. Received: {value!r}")
    if not isinstance(label_column, str) or not label_column:
        raise BadInputError(f"label_column must be a non-empty column name. Received: {label_column!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1):
        raise BadInputError(f"samples must be a positive integer or None. Received: {samples!r}")


def _load_raw(
    name_or_path: str | os.PathLike, label_column: str, samples: int | None, lazy: bool = False
) -> tuple[str, _Raw, str]:
    """(name, raw arrays, the file's absolute path or "" for a built-in). A bare built-in name wins
    over a file of the same name; pass a Path to force a path."""
    key = name_or_path.lower().replace("-", "_") if isinstance(name_or_path, str) else None
    if key in BUILTINS:
        return key, BUILTINS[key](samples), ""
    path = Path(name_or_path).expanduser()
    where = str(path.resolve())
    if _npz.is_npy_folder(path):
        return path.name, _npz.read(path, lazy=lazy), where
    if path.is_dir():
        return path.name, _image_folder(path), where
    if path.is_file() and path.suffix.lower() == ".npz":
        return path.stem, _npz.read(path, lazy=lazy), where
    if path.is_file() and path.suffix.lower() == ".csv":
        return path.stem, _csv(path, label_column), where
    found = "that file type is not supported" if path.exists() else "no such file or folder exists"
    raise DatasetError(
        f"Cannot load dataset {os.fspath(name_or_path)!r}: it is not a built-in name and {found}. "
        f"Built-in names: {', '.join(list_datasets())}. A path must be {_FILE_TYPES}."
    )
