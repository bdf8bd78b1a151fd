"""Saving and loading tf_keras models, QAT and pruned ones included, atomically and safely.

A trainer's output folder:

    model.keras      the trained model (model.h5 when QAT-wrapped: tfmot's wrappers reload from .h5 only)
    float.keras      the float reference it came from (only when it differs from model.keras)
    saved_model/     model.keras as a TensorFlow SavedModel
    training.json    the TrainingRecord
    checkpoints/     a checkpoint each epoch, for resume (see checkpoints.py)

Pruning and clustering wrappers are stripped before saving; QAT models (prune- and cluster-preserving
ones included) go to .h5 and reload under ``custom_scope``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeship import _io
from edgeship._deps import keras as _keras
from edgeship._deps import require
from edgeship._deps import tensorflow as _tf
from edgeship._keras import is_qat
from edgeship.errors import BadArtifactError, BadInputError
from edgeship.records import TrainingRecord

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@contextlib.contextmanager
def custom_scope() -> Iterator[None]:
    """The tfmot scopes that QAT and pruning wrappers need to deserialize."""
    keras = _keras()
    tfmot = require("tensorflow_model_optimization", "load QAT or pruned models")
    with (
        tfmot.quantization.keras.quantize_scope(),
        keras.utils.custom_object_scope({"PruneLowMagnitude": tfmot.sparsity.keras.prune_low_magnitude}),
    ):
        yield


def save_keras(model: Any, path: str | Path) -> Path:
    """Save ``model`` to ``path`` (.keras or .h5) under a temporary name, then rename."""
    path = Path(path)
    with _io.staged(path) as tmp:
        tmp.unlink()  # keras refuses to overwrite without asking
        model.save(tmp)
    return path


def save_saved_model(model: Any, folder: str | Path) -> Path:
    tf = _tf()
    with _io.staged(folder, directory=True) as tmp:
        tf.saved_model.save(model, str(tmp))
    return Path(folder)


def lambda_layers(path: str | Path) -> list[str]:
    """Names of the Lambda layers a .keras/.h5 file declares, read from its config without loading it."""
    path = Path(path)
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            with require("h5py", "read .h5 models").File(path, "r") as h5:
                raw = h5.attrs.get("model_config")
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else {}
    except Exception as exc:  # zipfile, h5py and json each raise their own types on a bad file
        raise BadArtifactError(f"{path} could not be read as a tf_keras model file: {exc}") from exc
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append(str((node.get("config") or {}).get("name", "?")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def load_keras(path: str | Path, *, trust_code: bool = False) -> Any:
    """Load a tf_keras .keras/.h5 file, with tfmot scopes.

    A Lambda layer stores Python code that runs when the model loads (CVE-2024-3660), so files that
    declare one are refused unless ``trust_code`` is set; .keras files also load in Keras' safe mode.
    """
    path = Path(path)
    keras = _keras()
    if not path.exists():
        raise BadArtifactError(f"no model file at {path}")
    lambdas = lambda_layers(path)
    if lambdas and not trust_code:
        raise BadArtifactError(
            f"{path.name} holds Lambda layer(s) {lambdas}: loading one runs the Python code stored in the file, "
            "which can do anything on this machine. Load only files you trust; to load this one anyway pass "
            "trust_code=True (CLI: --trust-code)"
        )
    kwargs = {"safe_mode": not trust_code} if path.suffix == ".keras" else {}
    try:
        with custom_scope():
            return keras.models.load_model(path, compile=False, **kwargs)
    except Exception as exc:  # tf_keras raises ValueError, OSError, TypeError, zipfile errors …
        raise BadArtifactError(f"{path} could not be loaded as a tf_keras model: {exc}") from exc


def save_trained(out: str | Path, *, final: Any, reference: Any, record: TrainingRecord) -> TrainingRecord:
    """Write a trainer's output folder (see the module docstring) and return the record written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # tfmot's QAT wrappers do not reload from .keras (duplicated quantizer variables): QAT models go to .h5.
    files = {"model": "model.h5" if is_qat(final) else "model.keras", "saved_model": "saved_model"}
    save_keras(final, out / files["model"])
    if reference is not final:
        files["float"] = "float.keras"
        save_keras(reference, out / files["float"])
    else:
        files["float"] = files["model"]
    save_saved_model(final, out / files["saved_model"])
    record = dataclasses.replace(record, files=files)
    record.save(out)
    return record


def is_trained_folder(path: str | Path) -> bool:
    return (Path(path) / TrainingRecord.file_name).is_file()


def load_trained(folder: str | Path, *, trust_code: bool = False) -> tuple[Any, Any, TrainingRecord]:
    """(final model, float reference, record) from a trainer's output folder."""
    folder = Path(folder)
    if not is_trained_folder(folder):
        raise BadInputError(f"{folder} is not a trained-model folder (no training.json); run 'edgeship train' first")
    record = TrainingRecord.load(folder)
    final = load_keras(folder / record.files.get("model", "model.keras"), trust_code=trust_code)
    float_file = record.files.get("float", record.files.get("model", "model.keras"))
    reference = (
        final if float_file == record.files.get("model") else load_keras(folder / float_file, trust_code=trust_code)
    )
    return final, reference, record
