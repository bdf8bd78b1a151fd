"""Preprocessing as the data stage uses it: ``Preprocess`` lives in ``edgeship.preprocess`` (a core
module, so the thin runtime applies an artifact's recorded step on a device); this name re-exports it."""

from edgeship.preprocess import PRESETS, Preprocess

__all__ = ["Preprocess", "PRESETS"]
