"""The training loop's parts: a seeded input pipeline that can skip to any epoch, image augmentation
with stateless random ops, class weights, the optimizer and learning-rate schedule, and early
stopping that restores the best weights and survives a resume.

Every random choice is a function of (seed, step): the shuffle order of epoch k and the flips and
shifts of batch i are the same whether the run went straight through or resumed at epoch k.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeship._deps import keras as _keras
from edgeship._deps import require
from edgeship._deps import tensorflow as _tf
from edgeship.data import Dataset
from edgeship.errors import BadInputError

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Augment:
    """Image augmentation: random horizontal flips, and shifts of up to ``shift`` of the height/width."""

    flip: bool = True
    shift: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.shift, bool) or not isinstance(self.shift, (int, float)) or not 0 <= self.shift < 0.5:
            raise BadInputError(f"augment shift is a fraction of the image in [0, 0.5); received {self.shift!r}")

    @classmethod
    def parse(cls, text: str) -> Augment | None:
        """``"flip,shift"``, ``"flip"``, ``"shift"`` or ``"shift=0.125"``; ``"none"`` or "" gives None."""
        parts = [p.strip().lower() for p in text.split(",") if p.strip()]
        if not parts or parts == ["none"]:
            return None
        flip, shift = False, 0.0
        for part in parts:
            name, _, value = part.partition("=")
            if name == "flip" and not value:
                flip = True
            elif name == "shift":
                try:
                    shift = float(value) if value else 0.1
                except ValueError as exc:
                    raise BadInputError(f"augment shift takes a fraction like shift=0.1; received {part!r}") from exc
            else:
                raise BadInputError(f"augment takes flip, shift or shift=FRACTION, comma-separated; received {text!r}")
        return cls(flip=flip, shift=shift)


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    return max(1, math.ceil(len(data.y_train) / batch_size))


def train_dataset(
    data: Dataset,
    *,
    batch_size: int,
    seed: int,
    augment: Augment | None = None,
    class_weights: dict[int, float] | None = None,
    skip_epochs: int = 0,
) -> Any:
    """An endless, seeded tf.data pipeline of training batches, starting at epoch ``skip_epochs``.

    Batching happens before repeat, so every epoch is exactly ``steps_per_epoch`` batches of one
    permutation; fit is given that step count.
    """
    tf = _tf()
    if augment is not None and data.kind != "image":
        raise BadInputError(f"augment takes image datasets; '{data.name}' is {data.kind}. Train without augment")
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(len(data.y_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat()
    if augment is not None:
        ds = ds.enumerate().map(
            lambda i, xy: (_augment(tf, xy[0], seed, i, augment), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if class_weights is not None:
        table = tf.constant([class_weights[c] for c in range(data.num_classes)], tf.float32)
        ds = ds.map(lambda x, y: (x, y, tf.gather(table, y)))
    ds = ds.skip(skip_epochs * steps_per_epoch(data, batch_size))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _augment(tf: Any, images: Any, seed: int, step: Any, augment: Augment) -> Any:
    """Flip and shift each image of a batch; the randomness is a function of (seed, step) only."""
    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    if augment.flip:
        flip = tf.random.stateless_uniform([n, 1, 1, 1], seed=key) < 0.5
        images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    if augment.shift:
        limit = tf.constant([augment.shift * width, augment.shift * height], tf.float32)
        shift = tf.round(tf.random.stateless_uniform([n, 2], seed=key + [0, 1 << 40], minval=-1.0) * limit)
        one, zero = tf.ones([n, 1]), tf.zeros([n, 1])
        # output pixel (x, y) reads input pixel (x - dx, y - dy); edges are reflected
        transforms = tf.concat([one, zero, -shift[:, :1], zero, one, -shift[:, 1:], zero, zero], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.constant([height, width]),
            fill_value=0.0,
            interpolation="NEAREST",
            fill_mode="REFLECT",
        )
    return images


def class_weights(data: Dataset) -> dict[int, float]:
    """scikit-learn's balanced class weights; a class missing from the training split weighs 1."""
    utils = require("sklearn.utils.class_weight", "weight imbalanced classes")
    present = np.unique(data.y_train)
    weights = utils.compute_class_weight("balanced", classes=present, y=data.y_train)
    mapping = dict.fromkeys(range(data.num_classes), 1.0)
    mapping.update({int(c): float(w) for c, w in zip(present, weights)})
    return mapping


def optimizer(learning_rate: float, schedule: str, total_steps: int) -> Any:
    """Adam with a cosine decay over ``total_steps`` (to 5% of the rate) or a constant rate.

    The rate is a function of the optimizer's step counter, which checkpoints hold: a resumed run
    continues the same curve.
    """
    keras = _keras()
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps), alpha=0.05)
        return keras.optimizers.Adam(rate)
    return keras.optimizers.Adam(learning_rate)


def compile_model(net: Any, opt: Any) -> None:
    """Compile for integer labels and softmax outputs, reporting accuracy."""
    net.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def accuracy(net: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``net`` on (x, y) as a fraction."""
    probs = net.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.asarray(probs).argmax(-1) == y))


@functools.cache
def early_stop_class() -> type:
    """The early-stopping callback class (defined on first use: it subclasses tf_keras')."""
    keras = _keras()

    class EarlyStop(keras.callbacks.Callback):  # type: ignore[name-defined]  # keras is loaded at run time
        """Stop when val_loss has not improved for ``patience`` epochs and end on the best weights,
        also when every epoch ran (Keras' EarlyStopping keeps the last ones then). Its ``state``
        and ``best_weights`` go into each checkpoint and come back on resume."""

        def __init__(self, patience: int, state: dict | None = None, best_weights: list | None = None) -> None:
            super().__init__()
            self.patience = patience
            state = state or {}
            self.best = math.inf if state.get("best") is None else float(state["best"])
            self.best_epoch = int(state.get("best_epoch", -1))
            self.wait = int(state.get("wait", 0))
            self.best_weights = best_weights
            self.improved = False

        @property
        def state(self) -> dict[str, Any]:
            return {
                "best": self.best if math.isfinite(self.best) else None,
                "best_epoch": self.best_epoch,
                "wait": self.wait,
            }

        @property
        def stopped(self) -> bool:
            return self.wait >= self.patience

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            loss = float((logs or {}).get("val_loss", math.nan))
            self.improved = math.isfinite(loss) and loss < self.best
            if self.improved:
                self.best, self.best_epoch, self.wait = loss, epoch, 0
                self.best_weights = self.model.get_weights()
            else:
                self.wait += 1
                self.model.stop_training = self.stopped

        def on_train_end(self, logs: dict | None = None) -> None:
            self.restore(self.model)

        def restore(self, model: Any) -> None:
            if self.best_weights is not None:
                model.set_weights(self.best_weights)

    return EarlyStop


def progress_callback(progress: Callable[..., None]) -> Any:
    """A Keras callback reporting each epoch as ``progress("train", detail, epoch, epochs)``;
    the trainer sets its ``stage`` (float, prune, cluster, qat) before each stage's fit."""
    keras = _keras()

    class EpochProgress(keras.callbacks.Callback):  # type: ignore[name-defined]  # keras is loaded at run time
        stage = "float"

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            epochs = self.params.get("epochs") or epoch + 1
            detail = f"{self.stage} epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f}"
            if "val_accuracy" in logs:
                detail += f", val accuracy {logs['val_accuracy'] * 100:.2f}%"
            progress("train", detail, epoch + 1, epochs)

    return EpochProgress()
