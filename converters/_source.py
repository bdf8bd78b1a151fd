"""What a converter converts: one SourceModel, whatever the user handed in; the source contract.

A :class:`Source` plugin recognises an in-memory model or a path, loads it into a SourceModel
(input specs and layout, the float model), writes that float model as the folder's reference
(``out/reference/``) and runs a reference it wrote, giving float outputs. ``SOURCES`` holds them
by name, which is also the ``format`` of the reference they write; ``resolve`` asks each in turn.

Built in: ``keras`` (a trainer's output folder, a .keras/.h5 file, an in-memory tf_keras model),
``keras3`` (a Keras 3 model, exported to a SavedModel first: tfmot, tf2onnx and coremltools take
Keras 2 only), ``saved_model`` (a SavedModel folder), ``onnx`` (a .onnx file, for ONNX Runtime
quantization) and ``torch`` (an nn.Module, a torch.export program or a .pt2: ``_torch.py``).
A plugin distribution adds one with an entry point in the group
``edgeship.sources`` (``docs/architecture.md``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeship._deps import keras as _keras
from edgeship._deps import tensorflow as _tf
from edgeship._keras import is_qat
from edgeship._plugins import Registry
from edgeship.errors import BadArtifactError, BadInputError, UnsupportedModelError
from edgeship.records import TrainingRecord

log = logging.getLogger(__name__)


@dataclass
class SourceModel:
    """A model ready for conversion.

    ``keras`` is the model to convert (QAT-wrapped when ``qat``); ``reference`` is its float
    counterpart (the same object for a float model). ``saved_model`` is set for SavedModel and
    Keras 3 inputs, ``onnx`` for .onnx inputs; then ``keras`` is None. ``input_shape`` holds -1
    for a dimension the model leaves open until ``with_input_shape`` fixes it. ``kind`` names the
    Source that writes and runs its float reference; ``formats`` the formats it can become (None:
    every format).
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
    kind: str = "keras"
    torch: Any = None  # a PyTorch source's module, example inputs and exported program (converters/_torch.py)
    formats: tuple[str, ...] | None = None
    layout: str = "channels_last"
    _tmp: list[Any] = field(default_factory=list, repr=False)

    def can_become(self, fmt: str) -> bool:
        """Whether format ``fmt`` can be made from this model."""
        return self.formats is None or fmt in self.formats

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
            raise BadInputError(
                f"{self.name} takes inputs of shape {_text(self.input_shape)}; {why} gives "
                f"{_text(shape)}, which does not fit"
            )
        if self.extra_inputs:
            raise BadInputError(
                f"{self.name} has {len(self.input_specs)} inputs; edgeship fixes open dimensions of "
                "single-input models only: export it with fixed input shapes"
            )
        if self.keras is None:
            raise BadInputError(
                f"{self.name} ({self.kind}) has open input dimensions {_text(self.input_shape)}; "
                "edgeship fixes them for Keras models only: export it with a fixed input shape"
            )
        keras = _keras()
        log.info("fixing the open input dimensions of %s to %s (%s)", self.name, shape, why)

        def fixed(model: Any) -> Any:
            inp = keras.Input(shape=shape, dtype=model.inputs[0].dtype, name="input")
            return keras.Model(inp, model(inp), name=model.name)

        reference = (
            None if self.reference is None else (fixed(self.reference) if self.reference is not self.keras else None)
        )
        wrapped = fixed(self.keras)
        return dataclasses.replace(
            self,
            input_shape=shape,
            keras=wrapped,
            reference=reference if reference is not None else (None if self.qat else wrapped),
        )


def _text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("None" if d < 0 else str(d) for d in shape) + ")"


def _inputs_keras(model: Any) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype) of each input of a Keras model, in its order (-1 for an open dimension)."""
    return [(tuple(-1 if d is None else int(d) for d in t.shape[1:]), t.dtype.name) for t in model.inputs]


def _from_keras(
    model: Any, name: str, origin: str, reference: Any = None, record: TrainingRecord | None = None
) -> SourceModel:
    qat = is_qat(model)
    (shape, dtype), *extra = _inputs_keras(model)
    return SourceModel(
        name=name,
        origin=origin,
        input_shape=shape,
        keras=model,
        input_dtype=dtype,
        extra_inputs=tuple(extra),
        reference=reference if reference is not None else (None if qat else model),
        qat=qat,
        record=record,
    )


def _saved_model_shape(folder: Path) -> tuple[int, ...]:
    tf = _tf()
    try:
        loaded = tf.saved_model.load(str(folder))
        fn = loaded.signatures["serving_default"]
    except Exception as exc:  # TF raises many types for a bad SavedModel
        raise BadArtifactError(
            f"{folder} is not a loadable SavedModel with a 'serving_default' signature: {exc}"
        ) from exc
    specs = list(fn.structured_input_signature[1].values())
    if len(specs) != 1:
        raise UnsupportedModelError(
            f"edgeship converts single-input models; {folder} has inputs {[s.name for s in specs]}"
        )
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
    return SourceModel(
        name=name,
        origin="<keras 3 model>",
        input_shape=_saved_model_shape(folder),
        saved_model=folder,
        kind="saved_model",
        _tmp=[tmp],
    )


class Source(Protocol):
    """A kind of model edgeship converts from (see the module docstring)."""

    name: str

    def recognises(self, model: object) -> bool:
        """Whether ``model`` (an in-memory object, or a Path) is one of this source's."""

    def load(self, model: Any, name: str | None, *, trust_code: bool = False, example: Any = None) -> SourceModel:
        """The SourceModel of ``model``, named ``name`` (default: the model's own name); ``example``
        (inputs of batch 1) fixes the shapes of a model that carries none (a PyTorch module)."""

    def write_reference(self, source: SourceModel, folder: Path) -> Path:
        """Write ``source``'s float model into ``folder`` (``out/reference``); the path written."""

    def predictor(self, path: Path, *, trust_code: bool = False) -> Callable[[Any], list[np.ndarray]]:
        """A function from a batch of inputs (one array, or a tuple of one per input) to the float
        outputs of the reference at ``path``, one array per output in the model's order."""


def resolve(model: Any, name: str | None = None, *, trust_code: bool = False, example: Any = None) -> SourceModel:
    """Turn whatever the user passed into a SourceModel: the first Source that recognises it loads it."""
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, Path)):
        model = Path(model)
        if not model.exists():
            raise BadInputError(f"no model at {model}")
    for source in SOURCES.all():
        if source.recognises(model):
            return source.load(model, name, trust_code=trust_code, example=example)
    if isinstance(model, Path):
        raise BadInputError(
            f"{model} is not a model edgeship converts: expected a trained-model folder (training.json), a SavedModel "
            "folder (saved_model.pb), a .keras/.h5 file, a .onnx file or a PyTorch .pt2 file"
        )
    raise BadInputError(
        "convert takes a trained-model folder, a .keras/.h5 file, a SavedModel folder, a .onnx or .pt2 file, a "
        f"tf_keras / Keras 3 model or a PyTorch module; received {type(model).__name__}"
    )


def _batched(fn: Callable[[np.ndarray], list[np.ndarray]], x: np.ndarray, size: int = 256) -> list[np.ndarray]:
    parts = [fn(x[i : i + size]) for i in range(0, len(x), size)]
    return [np.concatenate(outputs) for outputs in zip(*parts)]


class KerasSource:
    """tf_keras: a trainer's output folder, a .keras/.h5 file, or an in-memory model."""

    name = "keras"

    def recognises(self, model: object) -> bool:
        from edgeship.trainers import saving

        if isinstance(model, Path):
            return saving.is_trained_folder(model) or model.suffix in saving.KERAS_SUFFIXES
        return type(model).__module__.startswith(("tf_keras", "tensorflow_model_optimization"))

    def load(self, model: Any, name: str | None, *, trust_code: bool = False, example: Any = None) -> SourceModel:
        from edgeship.trainers import saving

        if not isinstance(model, Path):
            return _from_keras(model, name or model.name, "<in-memory tf_keras model>")
        if saving.is_trained_folder(model):
            final, reference, record = saving.load_trained(model, trust_code=trust_code)
            return _from_keras(final, name or record.model, str(model), reference=reference, record=record)
        return _from_keras(saving.load_keras(model, trust_code=trust_code), name or model.stem, str(model))

    def write_reference(self, source: SourceModel, folder: Path) -> Path:
        from edgeship.trainers.saving import save_keras

        return save_keras(source.float_keras(), folder / "model.keras")

    def predictor(self, path: Path, *, trust_code: bool = False) -> Callable[[Any], list[np.ndarray]]:
        from edgeship.trainers.saving import load_keras

        model = load_keras(path, trust_code=trust_code)

        def predict(x: Any) -> list[np.ndarray]:
            out = model.predict(list(x) if isinstance(x, tuple) else x, batch_size=256, verbose=0)
            return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]

        return predict


class SavedModelSource:
    """A SavedModel folder (``saved_model.pb``) with a ``serving_default`` signature."""

    name = "saved_model"

    def recognises(self, model: object) -> bool:
        return isinstance(model, Path) and model.is_dir() and (model / "saved_model.pb").is_file()

    def load(self, model: Any, name: str | None, *, trust_code: bool = False, example: Any = None) -> SourceModel:
        return SourceModel(
            name=name or model.name,
            origin=str(model),
            input_shape=_saved_model_shape(model),
            saved_model=model,
            kind=self.name,
        )

    def write_reference(self, source: SourceModel, folder: Path) -> Path:
        from edgeship import _io

        path = folder / "saved_model"
        if path.resolve() != Path(str(source.saved_model)).resolve():
            with _io.staged(path, directory=True) as tmp:
                shutil.copytree(str(source.saved_model), tmp, dirs_exist_ok=True)
        return path

    def predictor(self, path: Path, *, trust_code: bool = False) -> Callable[[Any], list[np.ndarray]]:
        tf = _tf()
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]

        def run(batch: np.ndarray) -> list[np.ndarray]:
            result = fn(tf.constant(batch))
            return [result[k].numpy() for k in sorted(result)]

        return lambda x: _batched(run, x)


class Keras3Source(SavedModelSource):
    """An in-memory Keras 3 model, exported to a SavedModel (its reference is that SavedModel)."""

    name = "keras3"

    def recognises(self, model: object) -> bool:
        return not isinstance(model, Path) and type(model).__module__.startswith("keras")

    def load(self, model: Any, name: str | None, *, trust_code: bool = False, example: Any = None) -> SourceModel:
        return _from_keras3(model, name or str(getattr(model, "name", "model")))


class OnnxSource:
    """A .onnx file: quantized by ONNX Runtime, so it becomes ONNX artifacts only."""

    name = "onnx"

    def recognises(self, model: object) -> bool:
        return isinstance(model, Path) and model.suffix == ".onnx"

    def load(self, model: Any, name: str | None, *, trust_code: bool = False, example: Any = None) -> SourceModel:
        from edgeship.runtimes import load

        session = load(model)
        if len(session.inputs) != 1:
            raise UnsupportedModelError(
                f"edgeship converts single-input models; {model.name} has {len(session.inputs)}"
            )
        shape = tuple(max(d, 1) for d in session.inputs[0].shape[1:])
        return SourceModel(
            name=name or model.stem,
            origin=str(model),
            input_shape=shape,
            onnx=model,
            input_dtype=session.inputs[0].dtype,
            kind=self.name,
            formats=(self.name,),
        )

    def write_reference(self, source: SourceModel, folder: Path) -> Path:
        from edgeship import _io

        path = folder / "model.onnx"
        _io.write_bytes(path, Path(str(source.onnx)).read_bytes())
        return path

    def predictor(self, path: Path, *, trust_code: bool = False) -> Callable[[Any], list[np.ndarray]]:
        from edgeship.runtimes import load

        session = load(path)
        return lambda x: session.predict_outputs(x)


#: every source, in the order ``resolve`` asks them
SOURCES: Registry[Source] = Registry(
    "edgeship.sources",
    {
        "keras": KerasSource(),
        "saved_model": SavedModelSource(),
        "keras3": Keras3Source(),
        "onnx": OnnxSource(),
        "torch": "edgeship.converters._torch:SOURCE",
    },
)
