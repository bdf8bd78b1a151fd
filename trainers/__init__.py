"""Trainers: the model zoo and the float, pruning-aware and quantization-aware recipes.

    >>> from edgeship.trainers import train
    >>> record = train("tiny_cnn", "digits", out="out/model", qat=True)    # doctest: +SKIP

Importing this package imports TensorFlow only when a function that needs it is called.
"""

from __future__ import annotations

from typing import Any

from edgeship.trainers.zoo import MODELS, ModelOptions

__all__ = ["train", "TrainConfig", "MODELS", "ModelOptions", "build_model", "count_macs", "load_trained"]


def __getattr__(name: str) -> Any:
    # Recipes import TensorFlow helpers; keep `import edgeship.trainers` light.
    if name in ("train", "TrainConfig"):
        from edgeship.trainers import recipes

        return getattr(recipes, name)
    if name in ("build_model", "count_macs"):
        from edgeship.trainers import zoo

        return getattr(zoo, name)
    if name == "load_trained":
        from edgeship.trainers.saving import load_trained

        return load_trained
    raise AttributeError(name)
