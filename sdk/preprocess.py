"""Compatibility module: preprocessing lives in ``edgeship.data.preprocess``; this name re-exports it."""

from edgeship.data.preprocess import PRESETS, Preprocess

__all__ = ["Preprocess", "PRESETS"]
