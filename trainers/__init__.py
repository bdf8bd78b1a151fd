"""Trainers: the model zoo and the float, pruning, clustering and quantization-aware recipes.

    >>> from edgeship.trainers import train
    >>> record = train("tiny_cnn", "digits", out="out/model", prune=0.75, qat=True)    # doctest: +SKIP

    zoo.py          the models, count_macs, describe
    recipes.py      train(): float ─► prune ─► cluster ─► QAT, and TrainConfig
    fitting.py      input pipeline, augmentation, class weights, LR schedule, early stopping
    compress.py     tensorflow-model-optimization: prune, cluster, QAT (PQAT, CQAT, PCQAT), sparsity
    checkpoints.py  a checkpoint each epoch; resume
    distribute.py   CPU, GPU, MirroredStrategy, MultiWorkerMirroredStrategy; mixed precision
    saving.py       the output folder: model.keras / model.h5, float.keras, saved_model/, training.json

Importing this package imports TensorFlow only when a function that needs it is called.
"""

from __future__ import annotations

from typing import Any

from edgeship.trainers.zoo import MODELS, ModelOptions

__all__ = [
    "train",
    "TrainConfig",
    "Augment",
    "MODELS",
    "ModelOptions",
    "build_model",
    "count_macs",
    "describe",
    "load_trained",
    "STRATEGIES",
]

_LAZY = {
    "train": "edgeship.trainers.recipes",
    "TrainConfig": "edgeship.trainers.recipes",
    "Augment": "edgeship.trainers.fitting",
    "build_model": "edgeship.trainers.zoo",
    "count_macs": "edgeship.trainers.zoo",
    "describe": "edgeship.trainers.zoo",
    "load_trained": "edgeship.trainers.saving",
    "STRATEGIES": "edgeship.trainers.distribute",
}


def __getattr__(name: str) -> Any:
    # Recipes import TensorFlow helpers; keep `import edgeship.trainers` light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeship.trainers' has no attribute {name!r}")
