"""How the doctor's recovery makes its candidates other than float layers: the artifact converted
again from its float reference with changed settings (more calibration samples, another
calibrator, equalization, int16 activations), or after quantization-aware fine-tuning. Each
returns the model's bytes (or the path of what its converter wrote: a Core ML package is a folder)
and the settings its converter recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship._deps import quiet_native_stderr
from edgeship.doctor.layers import Context
from edgeship.doctor.records import LayerError
from edgeship.formats import FORMATS
from edgeship.records import Artifact

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel

__all__ = ["rebuild", "int16", "int16_changes", "qat", "INT16_TENSORS"]


#: how many of the worst tensors get int16 activations
INT16_TENSORS = 3


def int16_changes(artifact: Artifact, layers: Sequence[LayerError]) -> dict[str, Any]:
    """int16 activations for the worst tensors, beside int8: ONNX Runtime's QDQ overrides; for
    TFLite, ai-edge-quantizer's recipes (TFLiteConverter itself takes 16x8 for a whole model only)."""
    return {"int16_tensors": [layer.tensor for layer in layers[:INT16_TENSORS]]}


def int16(
    ctx: Context, artifact: Artifact, source: SourceModel, changes: dict[str, Any]
) -> tuple[bytes | Path, dict[str, Any]]:
    """The artifact rebuilt with ``int16_changes``. Without ai-edge-quantizer a TFLite artifact
    with float I/O falls back to TFLite's 16x8 for the whole model (16x8 has int16 input and
    output, so an int8 interface could not be kept)."""
    from edgeship.errors import MissingDependencyError

    try:
        return rebuild(ctx, artifact, source, changes)
    except MissingDependencyError as exc:
        whole = getattr(FORMATS.get(artifact.format).doctor_module(), "whole_model_int16", None)
        if whole is None:
            raise
        return rebuild(ctx, artifact, source, {}, precision=whole(artifact, exc))


def rebuild(
    ctx: Context,
    artifact: Artifact,
    source: SourceModel,
    changes: dict[str, Any],
    keep_qat: bool = False,
    precision: str | None = None,
) -> tuple[bytes | Path, dict[str, Any]]:
    """``artifact`` converted again from its float reference (``source``, equalized already where
    the artifact was) with its own settings and ``changes``; returns (bytes, settings)."""
    from edgeship.converters import backend

    settings = artifact.settings
    converter = backend(artifact.format)
    options: dict[str, Any] = {"calibration_samples": settings.get("calibration_samples")}
    options.update(converter.rebuild_options(settings) if hasattr(converter, "rebuild_options") else {})
    options = {k: v for k, v in {**options, **changes}.items() if v is not None}
    float_source = (
        dataclasses.replace(source, keras=source.float_keras(), qat=False) if source.qat and not keep_qat else source
    )
    with quiet_native_stderr():
        return converter.to_bytes(float_source, precision or artifact.precision, ctx.dataset, **options)


def qat(ctx: Context, artifact: Artifact, source: SourceModel, epochs: int) -> tuple[bytes | Path, dict[str, Any]]:
    """Quantization-aware fine-tuning of the float model (tfmot's 8-bit scheme), taught by the
    float model's own outputs on the training split (KL divergence for a softmax classifier, else
    squared error): no labels needed, and what it learns is to stay close to float. Converted as
    the artifact's precision from the QAT model's ranges."""
    from edgeship._deps import keras as _keras
    from edgeship.converters._source import resolve
    from edgeship.errors import UnsupportedModelError
    from edgeship.trainers import compress

    if source.keras is None or len(source.input_specs) != 1:
        raise UnsupportedModelError(
            f"the doctor fine-tunes single-input tf_keras models; {source.name} is "
            f"{'a ' + source.kind + ' model' if source.keras is None else 'multi-input'}"
        )
    keras = _keras()
    model = source.float_keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    qat = compress.quantize_aware(clone)  # UnsupportedModelError for what tfmot cannot wrap (nested models)
    x = np.asarray(ctx.dataset.inputs("train")[0], dtype=np.float32)
    compress.init_quantizer_ranges(qat, ctx.dataset.calibration(min(len(x), 256)))
    teacher = model.predict(x, verbose=0, batch_size=256)
    loss = "kl_divergence" if ctx.scorer.task == "multiclass" else "mse"
    ctx.progress("doctor", f"QAT: {epochs} epoch(s) on {len(x)} training samples, {loss} to the float outputs")
    qat.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    qat.fit(x, teacher, epochs=epochs, batch_size=32, verbose=0)
    blob, settings = rebuild(ctx, artifact, resolve(qat, source.name), {}, keep_qat=True)
    return blob, {**settings, "qat_epochs": epochs, "qat_loss": f"{loss} to the float model's outputs"}
