"""Built-in datasets from Keras' cache (``~/.keras/datasets``): mnist, fashion_mnist, cifar10.

Read when a Keras install already downloaded them; never downloaded here.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.data._files import _labelled_arrays, _Raw, _read_npz
from edgeship.errors import DatasetError

_KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
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
    [path] = _keras_files(
        "mnist",
        ["mnist.npz"],
        f"Download {_KERAS_URL}mnist.npz on a machine with "
        f"network and put it at {_keras_datasets_dir() / 'mnist.npz'}.",
    )
    raw = _labelled_arrays(_read_npz(path), str(path))
    return replace(raw, source=f"Keras cache {path}")


def _fashion_mnist(samples: int | None) -> _Raw:
    stems = [f"{part}-{kind}-ubyte.gz" for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
    how = (
        f"Download {', '.join(_KERAS_URL + s for s in stems)} on a machine with network and put them in "
        f"{_keras_datasets_dir() / 'fashion-mnist'}."
    )
    paths = _keras_files("fashion_mnist", [f"fashion-mnist/{s}" for s in stems], how)
    arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), (_read_idx(p) for p in paths)))
    raw = _labelled_arrays(arrays, str(paths[0].parent), classes=_FASHION_CLASSES)
    return replace(raw, source=f"Keras cache {paths[0].parent}")


def _cifar10(samples: int | None) -> _Raw:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = _keras_datasets_dir() / "cifar-10-batches-py"
    how = (
        "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz on a machine with network and "
        f"extract it in {folder.parent}, so that {folder / 'data_batch_1'} exists."
    )
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
    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        module = "numpy._core" + module[len("numpy.core") :] if module.startswith("numpy.core") else module
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
        raise DatasetError(
            f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}). Download and extract it again."
        ) from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DatasetError(
            f"{path}: expected data of shape (N, 3072) and N labels. "
            f"Received data {data.shape} and {len(labels)} labels."
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


# ------------------------------------------------------------------------------------- user files
