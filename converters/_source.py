"""What a converter converts: one SourceModel, whatever the user handed in.

Accepted: a trainer's output folder, a .keras/.h5 file (tf_keras), a SavedModel folder, an
in-memory tf_keras model, a Keras 3 model (exported to a SavedModel first: tfmot, tf2onnx and
coremltools take Keras 2 only) and, for ONNX Runtime quantization, a .onnx file.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship._deps import keras as _keras
from edgeship._deps import tensorflow as _tf
from edgeship._keras import is_qat
from edgeship.errors import BadArtifactError, BadInputError, UnsupportedModelError
from edgeship.records import TrainingRecord

log = logging.getLogger(__name__)


@dataclass
class SourceModel:
    """A model ready for conversion.

    ``keras`` is the model to convert (QAT-wrapped when ``qat``); ``reference`` is its float
    counterpart (the same object for a float model). ``saved_model`` is set for SavedModel and
    Keras 3 inputs, ``onnx`` for .onnx inputs; then ``keras`` is None. ``input_shape`` holds -1
    for a dimension the model leaves open until ``with_input_shape`` fixes it.
    """

    name: str
    origin: str
    input_shape: tuple[int, ...]
    keras: Any = None
    reference: Any = None
    qat: bool = False
    saved_model: Path | None = None
    onnx: Path | None = None
    record: TrainingRecord | None = None
    input_dtype: str = "float32"
    extra_inputs: tuple[tuple[tuple[int, ...], str], ...] = ()  # (shape, dtype) of inputs 1, 2, … of a Keras model
    _tmp: list[Any] = field(default_factory=list, repr=False)

    @property
    def kind(self) -> str:
        return "onnx" if self.onnx else "saved_model" if self.saved_model else "keras"

    def float_keras(self) -> Any:
        return self.reference if self.reference is not None else self.keras

    @property
    def input_specs(self) -> list[tuple[tuple[int, ...], str]]:
        """(shape, dtype) of every input, in the model's order."""
        return [(tuple(self.input_shape), self.input_dtype), *self.extra_inputs]

    @property
    def dynamic(self) -> bool:
        """Whether a dimension besides the batch is left open (e.g. a fully convolutional net)."""
        return any(d < 0 for d in self.input_shape)

    def with_input_shape(self, shape: tuple[int, ...], why: str) -> SourceModel:
        """This model with its open dimensions fixed to ``shape`` (a Keras model is wrapped behind
        an Input of that shape; every format then sees static shapes)."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(self.input_shape) or any(a >= 0 and a != b for a, b in zip(self.input_shape, shape)):
            raise BadInputError(f"{self.name} takes inputs of shape {_text(self.input_shape)}; {why} gives "
                                f"{_text(shape)}, which does not fit")
        if self.extra_inputs:
            raise BadInputError(f"{self.name} has {len(self.input_specs)} inputs; edgeship fixes open dimensions of "
                                "single-input models only: export it with fixed input shapes")
        if self.kind != "keras":
            raise BadInputError(f"{self.name} ({self.kind}) has open input dimensions {_text(self.input_shape)}; "
                                "edgeship fixes them for Keras models only: export it with a fixed input shape")
        keras = _keras()
        log.info("fixing the open input dimensions of %s to %s (%s)", self.name, shape, why)

        def fixed(model: Any) -> Any:
            inp = keras.Input(shape=shape, dtype=model.inputs[0].dtype, name="input")
            return keras.Model(inp, model(inp), name=model.name)

        reference = None if self.reference is None else (
            fixed(self.reference) if self.reference is not self.keras else None)
        wrapped = fixed(self.keras)
        return dataclasses.replace(self, input_shape=shape, keras=wrapped,
                                   reference=reference if reference is not None else (None if self.qat else wrapped))


def _text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("None" if d < 0 else str(d) for d in shape) + ")"


def _inputs_keras(model: Any) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype) of each input of a Keras model, in its order (-1 for an open dimension)."""
    return [(tuple(-1 if d is None else int(d) for d in t.shape[1:]), t.dtype.name) for t in model.inputs]


def _from_keras(model: Any, name: str, origin: str, reference: Any = None, record: TrainingRecord | None = None) -> SourceModel:
    qat = is_qat(model)
    (shape, dtype), *extra = _inputs_keras(model)
    return SourceModel(
        name=name, origin=origin, input_shape=shape, keras=model, input_dtype=dtype, extra_inputs=tuple(extra),
        reference=reference if reference is not None else (None if qat else model), qat=qat, record=record,
    )


def _saved_model_shape(folder: Path) -> tuple[int, ...]:
    tf = _tf()
    try:
        loaded = tf.saved_model.load(str(folder))
        fn = loaded.signatures["serving_default"]
    except Exception as exc:  # TF raises many types for a bad SavedModel
        raise BadArtifactError(f"{folder} is not a loadable SavedModel with a 'serving_default' signature: {exc}") from exc
    specs = list(fn.structured_input_signature[1].values())
    if len(specs) != 1:
        raise UnsupportedModelError(f"edgeship converts single-input models; {folder} has inputs {[s.name for s in specs]}")
    return tuple(-1 if d is None else int(d) for d in specs[0].shape[1:])


def _from_keras3(model: Any, name: str) -> SourceModel:
    tmp = tempfile.TemporaryDirectory(prefix="edgeship-keras3-")
    folder = Path(tmp.name) / "saved_model"
    log.info("exporting the Keras 3 model to a SavedModel (tfmot, tf2onnx and coremltools take Keras 2 only)")
    try:
        model.export(str(folder))
    except Exception as exc:
        tmp.cleanup()
        raise BadInputError(f"this Keras 3 model could not be exported to a SavedModel: {exc}") from exc
    return SourceModel(name=name, origin="<keras 3 model>", input_shape=_saved_model_shape(folder),
                       saved_model=folder, _tmp=[tmp])


def resolve(model: Any, name: str | None = None, *, trust_code: bool = False) -> SourceModel:
    """Turn whatever the user passed into a SourceModel."""
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, Path)):
        return _from_path(Path(model), name, trust_code)
    module = type(model).__module__
    if module.startswith("tf_keras") or module.startswith("tensorflow_model_optimization"):
        return _from_keras(model, name or model.name, "<in-memory tf_keras model>")
    if module.startswith("keras"):
        return _from_keras3(model, name or getattr(model, "name", "model"))
    raise BadInputError(
        "convert takes a trained-model folder, a .keras/.h5 file, a SavedModel folder, a .onnx file or a "
        f"tf_keras / Keras 3 model; received {type(model).__name__}"
    )


def _from_path(path: Path, name: str | None, trust_code: bool = False) -> SourceModel:
    from edgeship.trainers import saving

    if not path.exists():
        raise BadInputError(f"no model at {path}")
    if saving.is_trained_folder(path):
        final, reference, record = saving.load_trained(path, trust_code=trust_code)
        return _from_keras(final, name or record.model, str(path), reference=reference, record=record)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SourceModel(name=name or path.name, origin=str(path), input_shape=_saved_model_shape(path), saved_model=path)
    if path.suffix in saving.KERAS_SUFFIXES:
        return _from_keras(saving.load_keras(path, trust_code=trust_code), name or path.stem, str(path))
    if path.suffix == ".onnx":
        return _from_onnx(path, name)
    raise BadInputError(
        f"{path} is not a model edgeship converts: expected a trained-model folder (training.json), a SavedModel "
        "folder (saved_model.pb), a .keras/.h5 file or a .onnx file"
    )


def _from_onnx(path: Path, name: str | None) -> SourceModel:
    from edgeship.runtimes import load

    session = load(path)
    if len(session.inputs) != 1:
        raise UnsupportedModelError(f"edgeship converts single-input models; {path.name} has {len(session.inputs)}")
    shape = tuple(max(d, 1) for d in session.inputs[0].shape[1:])
    return SourceModel(name=name or path.stem, origin=str(path), input_shape=shape, onnx=path,
                       input_dtype=session.inputs[0].dtype)
