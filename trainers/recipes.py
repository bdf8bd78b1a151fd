"""Training recipes: float, then optionally pruning-aware and quantization-aware fine-tunes.

    float ──► [prune to target sparsity, strip] ──► [QAT, or prune-preserving QAT] ──► save

The float model at the end of the float/prune stages is the reference that converters and
validation compare against; the QAT model (when asked for) is the one int8 artifacts come from.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeship._deps import keras as _keras
from edgeship._deps import require
from edgeship._deps import tensorflow as _tf
from edgeship.datasets import Dataset, load_dataset
from edgeship.errors import BadInputError, UnsupportedModelError
from edgeship.records import TrainingRecord
from edgeship.trainers import saving
from edgeship.trainers.zoo import ModelOptions, build_model, count_macs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; everything that changes the result is here."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    patience: int = 6
    seed: int = 0
    qat: bool = False
    qat_epochs: int = 3
    prune: float | None = None
    prune_epochs: int = 6
    class_weights: bool = False
    augment: bool = False
    model_options: ModelOptions = field(default_factory=ModelOptions)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "qat_epochs", "prune_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BadInputError(f"{name} must be a positive integer; received {value!r}")
        if not self.learning_rate > 0:
            raise BadInputError(f"learning_rate must be > 0; received {self.learning_rate}")
        if self.prune is not None and not 0 < self.prune < 1:
            raise BadInputError(f"prune is a target sparsity in (0, 1); received {self.prune}")

    @property
    def recipe(self) -> str:
        parts = ["float"] + (["prune"] if self.prune else []) + (["qat"] if self.qat else [])
        return "+".join(parts)


def train(
    model: str,
    data: Dataset | str,
    *,
    out: str | Path,
    config: TrainConfig | None = None,
    callbacks: list[Any] | None = None,
    **settings: Any,
) -> TrainingRecord:
    """Train zoo model ``model`` on ``data`` and save it with its record in ``out``.

        >>> record = train("tiny_cnn", "digits", out="out/model", epochs=10, qat=True)  # doctest: +SKIP
        >>> record.test_accuracy                                                          # doctest: +SKIP

    ``settings`` are TrainConfig fields (``epochs``, ``qat``, ``prune``, …) when no ``config`` is
    given. Returns the TrainingRecord also written to ``out/training.json``.
    """
    config = config or TrainConfig(**settings)
    data = data if isinstance(data, Dataset) else load_dataset(data, seed=config.seed)
    keras = _keras()
    tf = _tf()
    keras.utils.set_random_seed(config.seed)
    started = time.perf_counter()
    # 1. float training
    net = build_model(model, data.input_shape, data.num_classes, config.model_options)
    history = _fit(net, data, config, epochs=config.epochs, lr=config.learning_rate, callbacks=callbacks)
    # 2. pruning-aware fine-tune, stripped back to plain layers
    if config.prune:
        net, prune_history = _prune(net, data, config, callbacks)
        history = _merge(history, prune_history)
    reference = net
    float_accuracy = _accuracy(reference, data)
    # 3. quantization-aware fine-tune
    final = reference
    if config.qat:
        final, qat_history = _qat(reference, data, config, callbacks)
        history = _merge(history, qat_history)
    record = TrainingRecord(
        model=model,
        dataset=data.name,
        dataset_fingerprint=data.fingerprint,
        recipe=config.recipe,
        seed=config.seed,
        epochs_run=len(history.get("loss", ())),
        seconds=round(time.perf_counter() - started, 3),
        history=history,
        test_accuracy=_accuracy(final, data),
        float_test_accuracy=float_accuracy,
        params=int(reference.count_params()),
        macs=count_macs(reference),
        sparsity=measure_sparsity(reference) if config.prune else {},
        strategy=tf.distribute.get_strategy().__class__.__name__,
        settings=_settings(config),
    )
    return saving.save_trained(out, final=final, reference=reference, record=record)


def _settings(config: TrainConfig) -> dict[str, Any]:
    from dataclasses import asdict

    settings = asdict(config)
    settings["model_options"]["widths"] = list(config.model_options.widths)
    return settings


def _merge(a: dict[str, tuple[float, ...]], b: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
    return {k: tuple(a.get(k, ())) + tuple(b.get(k, ())) for k in sorted(set(a) | set(b))}


def _accuracy(net: Any, data: Dataset) -> float:
    probs = net.predict(data.x_test, batch_size=256, verbose=0)
    return float(np.mean(probs.argmax(-1) == data.y_test))


def _class_weight(data: Dataset) -> dict[int, float]:
    utils = require("sklearn.utils.class_weight", "weight imbalanced classes")
    classes = np.arange(data.num_classes)
    present = np.unique(data.y_train)
    weights = utils.compute_class_weight("balanced", classes=present, y=data.y_train)
    mapping = dict.fromkeys(classes.tolist(), 1.0)
    mapping.update({int(c): float(w) for c, w in zip(present, weights)})
    return mapping


def _augmenter(data: Dataset, seed: int) -> Any:
    keras = _keras()
    if data.kind != "image":
        raise BadInputError(f"augment takes image datasets; '{data.name}' is {data.kind}")
    return keras.Sequential(
        [keras.layers.RandomFlip("horizontal", seed=seed), keras.layers.RandomTranslation(0.1, 0.1, seed=seed)]
    )


def _dataset(data: Dataset, config: TrainConfig) -> Any:
    tf = _tf()
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(len(data.x_train), seed=config.seed, reshuffle_each_iteration=True).batch(config.batch_size)
    if config.augment:
        aug = _augmenter(data, config.seed)
        ds = ds.map(lambda x, y: (aug(x, training=True), y))
    return ds.prefetch(2)


def _fit(net: Any, data: Dataset, config: TrainConfig, *, epochs: int, lr: float,
         callbacks: list[Any] | None, extra: list[Any] | None = None, early_stop: bool = True) -> dict[str, tuple[float, ...]]:
    keras = _keras()
    net.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cbs = list(extra or []) + list(callbacks or [])
    if early_stop:
        cbs += [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, config.patience // 2)),
        ]
    hist = net.fit(
        _dataset(data, config),
        validation_data=(data.x_val, data.y_val),
        epochs=epochs,
        class_weight=_class_weight(data) if config.class_weights else None,
        callbacks=cbs,
        verbose=0,
    )
    return {k: tuple(float(v) for v in vals) for k, vals in hist.history.items() if k != "lr"}


def _tfmot() -> Any:
    _tf()
    return require("tensorflow_model_optimization", "prune or quantization-aware train")


def _prune(net: Any, data: Dataset, config: TrainConfig, callbacks: list[Any] | None) -> tuple[Any, dict]:
    tfmot = _tfmot()
    steps_per_epoch = int(np.ceil(len(data.x_train) / config.batch_size))
    # The schedule ends one epoch before training does, so the last epoch runs at full sparsity.
    end_step = steps_per_epoch * max(1, config.prune_epochs - 1)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=config.prune, begin_step=0, end_step=end_step,
        frequency=max(1, steps_per_epoch // 2),
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(net, pruning_schedule=schedule)
    history = _fit(pruned, data, config, epochs=config.prune_epochs, lr=config.learning_rate / 4,
                   callbacks=callbacks, extra=[tfmot.sparsity.keras.UpdatePruningStep()], early_stop=False)
    return tfmot.sparsity.keras.strip_pruning(pruned), history


def measure_sparsity(net: Any) -> dict[str, float]:
    """Fraction of exact zeros in each Conv/Dense kernel, measured from the weights."""
    keras = _keras()
    kinds = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D)
    out = {}
    for layer in net.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, kinds):
            kernel = np.asarray(inner.weights[0])
            out[inner.name] = float(np.mean(kernel == 0))
    return out


def quantize_aware(net: Any, *, preserve_sparsity: bool = False) -> Any:
    """Wrap a float tf_keras model for QAT with tfmot's default 8-bit scheme.

    A layer tfmot cannot quantize raises UnsupportedModelError naming it.
    """
    tfmot = _tfmot()
    qk = tfmot.quantization.keras
    try:
        if preserve_sparsity:
            from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
                default_8bit_prune_preserve_quantize_scheme as pqat,
            )

            annotated = qk.quantize_annotate_model(net)
            return qk.quantize_apply(annotated, pqat.Default8BitPrunePreserveQuantizeScheme())
        return qk.quantize_model(net)
    except (RuntimeError, ValueError) as exc:
        raise UnsupportedModelError(
            f"tensorflow-model-optimization cannot quantize this model: {exc}. Remove or move that layer "
            "(for example BatchNormalization directly after a Conv2D folds, elsewhere it does not), or "
            "train without qat and use post-training int8 conversion instead"
        ) from exc


def init_quantizer_ranges(qat_net: Any, calibration: np.ndarray) -> None:
    """Set every activation quantizer's range from calibration data (DESIGN.md fact 5).

    tfmot's moving-average quantizers start at [-6, 6] and move 0.1% per step, so a short fine-tune
    leaves them wide. One training-mode pass updates each range by ema = d*old + (1-d)*batch; the
    batch range is solved from that and assigned. Repeating once per layer lets ranges downstream
    see the already-fixed upstream ranges.
    """
    decay = 0.999
    ema_vars = [
        v for v in qat_net.variables
        if v.name.split("/")[-1].split(":")[0].endswith(("_min", "_max"))
        and "kernel" not in v.name and "quantize_layer" not in v.name
    ]
    x = np.asarray(calibration, dtype=np.float32)
    for _ in range(len(qat_net.layers)):
        before = [v.numpy() for v in ema_vars]
        qat_net(x, training=True)
        for var, old in zip(ema_vars, before):
            batch = (var.numpy() - decay * old) / (1 - decay)
            var.assign(batch.astype(np.float32) if np.all(np.isfinite(batch)) else old)


def _qat(net: Any, data: Dataset, config: TrainConfig, callbacks: list[Any] | None) -> tuple[Any, dict]:
    qat_net = quantize_aware(net, preserve_sparsity=bool(config.prune))
    init_quantizer_ranges(qat_net, data.calibration(256))
    history = _fit(qat_net, data, config, epochs=config.qat_epochs, lr=config.learning_rate / 10,
                   callbacks=callbacks, early_stop=False)
    return qat_net, history
