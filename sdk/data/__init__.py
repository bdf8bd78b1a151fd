"""The data stage: built-in sets, Keras' cached downloads and the caller's files, split the same way every time.

    load_dataset(name_or_path, preprocess=None)                                      dataset.py
     ├── scikit-learn    digits, iris, wine, breast_cancer          (bundled)         _builtins.py
     ├── generated       shapes32                                    (numpy, seeded)   _builtins.py
     ├── Keras cache     mnist, fashion_mnist, cifar10               (never fetched)   _keras_cache.py
     └── a path          .npz (any rank and dtype, several inputs or outputs,         _npz.py
                         any target), a folder of .npy files named as in a .npz,
                         .csv, or a folder of class subfolders of images              _files.py
            │
            ▼
    _Raw → subset → test and validation splits → (built-in tabular: standardize)      _split.py
         → preprocess → Dataset                                                       preprocess.py

Built-in images come out float32 NHWC in [0, 1] and the built-in tabular sets standardized with the
train split's mean and std (their documented preprocessing). A user's file gets exactly the
preprocessing asked for (``Preprocess``): by default ``unit`` (x/255) for integer image arrays and
``none`` for everything else. ``lazy=True`` leaves a .npz or .npy folder on disk (``_lazy.py``:
arrays read when sliced). Nothing heavier than numpy is imported until a loader needs it.

    >>> from edgeship.data import load_dataset
    >>> data = load_dataset("digits", seed=0)
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
"""

from __future__ import annotations

from edgeship.data.dataset import TARGETS, Dataset, list_datasets, load_dataset
from edgeship.data.preprocess import PRESETS, Preprocess

__all__ = ["Dataset", "load_dataset", "list_datasets", "TARGETS", "Preprocess", "PRESETS"]
