"""Compatibility module: the data stage lives in ``edgeship.data``; this name re-exports it."""

from edgeship.data.dataset import TARGETS, Dataset, list_datasets, load_dataset

__all__ = ["Dataset", "load_dataset", "list_datasets", "TARGETS"]
