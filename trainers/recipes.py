"""Training recipes: float training, then optional pruning, clustering and quantization-aware fine-tunes.

    float ──► [prune to a sparsity, strip] ──► [cluster, strip] ──► [QAT keeping both] ──► save
    (early stopping,  (polynomial schedule from  (k-means++      (ranges initialised from
     cosine LR, ...)   steps per epoch)           centroids)      calibration data)

Each stage checkpoints every epoch under ``out/checkpoints`` (see checkpoints.py), so ``resume=True``
continues an interrupted run. The model after the last stage before QAT is the float reference that
converters and validation compare against; the QAT model (when asked for) is the one int8 artifacts
come from. Everything runs inside the tf.distribute strategy picked by distribute.py.

Why this file is long (about 440 lines): the configuration (TrainConfig, ModelOptions), ``train``'s
keywords that repeat it (tests/test_structure.py checks they agree) and the run of the stages are
one flow that reads top to bottom.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship._deps import keras as _keras
from edgeship.data import Dataset, load_dataset
from edgeship.errors import BadInputError
from edgeship.records import TrainingRecord
from edgeship.trainers import checkpoints, compress, distribute, fitting, saving
from edgeship.trainers.fitting import Augment
from edgeship.trainers.zoo import MODELS, ModelOptions, build_model, count_macs

log = logging.getLogger(__name__)

# Fine-tunes start from a trained model: smaller steps than float training.
PRUNE_LR, CLUSTER_LR, QAT_LR = 0.25, 0.1, 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; everything that changes the result is here.

    ``augment`` takes True (flips and shifts), an Augment, or a dict of its fields; ``model_options``
    a ModelOptions or a dict (dropout, l2, widths, alpha).
    """

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    patience: int = 6
    seed: int = 0
    qat: bool = False
    qat_epochs: int = 3
    prune: float | None = None
    prune_epochs: int = 6
    cluster: int | None = None
    cluster_epochs: int = 3
    class_weights: bool = False
    augment: Augment | None = None
    mixed_precision: bool = False
    model_options: ModelOptions = field(default_factory=ModelOptions)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "qat_epochs", "prune_epochs", "cluster_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"{name} must be a positive integer; received {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise BadInputError(f"seed must be an integer; received {self.seed!r}")
        if not self.learning_rate > 0:
            raise BadInputError(f"learning_rate must be > 0; received {self.learning_rate}")
        if self.lr_schedule not in fitting.SCHEDULES:
            raise BadInputError(f"lr_schedule must be one of {fitting.SCHEDULES}; received {self.lr_schedule!r}")
        if self.prune is not None and not (isinstance(self.prune, (int, float)) and 0 < self.prune < 1):
            raise BadInputError(
                f"prune is a target sparsity strictly between 0 and 1, like 0.75; received {self.prune!r}"
            )
        if self.cluster is not None and (
            isinstance(self.cluster, bool) or not isinstance(self.cluster, int) or not 2 <= self.cluster <= 256
        ):
            raise BadInputError(
                f"cluster is a number of weight clusters in [2, 256], like 16; received {self.cluster!r}"
            )
        object.__setattr__(self, "augment", _as(Augment, self.augment, "augment"))
        options = _as(ModelOptions, self.model_options, "model_options") or ModelOptions()
        object.__setattr__(self, "model_options", options)

    @property
    def recipe(self) -> str:
        parts = ["float", "prune" if self.prune else "", "cluster" if self.cluster else "", "qat" if self.qat else ""]
        return "+".join(p for p in parts if p)

    @property
    def preserve(self) -> str:
        """What QAT must keep from the stages before it (compress.quantize_aware's ``preserve``)."""
        return "+".join(p for p in ("sparsity" if self.prune else "", "clusters" if self.cluster else "") if p)


def _as(cls: type, value: Any, name: str) -> Any:
    if value is None or value is False or isinstance(value, cls):
        return value or None
    if value is True:
        return cls()
    if isinstance(value, dict):
        if "widths" in value:
            value = {**value, "widths": tuple(value["widths"])}
        try:
            return cls(**value)
        except TypeError as exc:
            raise BadInputError(f"{name}: {exc}; the fields are {[f.name for f in dataclasses.fields(cls)]}") from exc
    raise BadInputError(f"{name} takes True, a {cls.__name__} or a dict; received {value!r}")


def make_config(config: TrainConfig | None = None, **settings: Any) -> TrainConfig:
    """A TrainConfig from keyword settings; ModelOptions fields (dropout, l2, widths, alpha) go to model_options.

    With ``config``, every setting must be left at its default: the two ways of saying what to
    train are not mixed.
    """
    if config is not None:
        changed = sorted(k for k, v in settings.items() if v != _DEFAULTS[k])
        if changed:
            raise BadInputError(f"pass either config= or settings, not both; received settings {changed}")
        return config
    option_names = {f.name for f in dataclasses.fields(ModelOptions)}
    options = {k: settings.pop(k) for k in list(settings) if k in option_names}
    settings["model_options"] = ModelOptions(**options)
    return TrainConfig(**settings)


#: every training setting's default, from TrainConfig and ModelOptions (train()'s keywords repeat them)
_DEFAULTS = {
    f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[operator]  # a field has one or the other
    for cls in (TrainConfig, ModelOptions)
    for f in dataclasses.fields(cls)
    if f.name != "model_options"
}


def train(
    model: str | Any,
    data: Dataset | str,
    *,
    out: str | Path,
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    lr_schedule: str = "cosine",
    patience: int = 6,
    seed: int = 0,
    qat: bool = False,
    qat_epochs: int = 3,
    prune: float | None = None,
    prune_epochs: int = 6,
    cluster: int | None = None,
    cluster_epochs: int = 3,
    class_weights: bool = False,
    augment: Augment | bool | dict[str, Any] | None = None,
    mixed_precision: bool = False,
    dropout: float = 0.0,
    l2: float = 0.0,
    widths: tuple[int, ...] = (64, 32),
    alpha: float = 0.25,
    config: TrainConfig | None = None,
    callbacks: list[Any] | None = None,
    resume: bool = False,
    strategy: str = "auto",
    start_from: str | Path | None = None,
) -> TrainingRecord:
    """Train ``model`` (a zoo name, or a tf_keras model) on ``data`` and save it with its record in ``out``.

        >>> record = train("tiny_cnn", "digits", out="out/model", epochs=10, prune=0.75, qat=True)  # doctest: +SKIP
        >>> record.test_accuracy, record.sparsity                                                 # doctest: +SKIP

    The settings from ``epochs`` to ``mixed_precision`` are TrainConfig's fields and ``dropout``,
    ``l2``, ``widths`` (mlp), ``alpha`` (mobilenet_v1) ModelOptions'; ``config`` passes a whole
    TrainConfig instead. ``augment`` takes True (flips and shifts), an Augment or a dict of its
    fields. ``resume`` continues from ``out/checkpoints`` (same settings only); ``strategy`` is
    auto, cpu, gpu, mirrored or multiworker. ``start_from`` is a trained-model folder of the same
    model and data whose float model replaces float training (prune, cluster or QAT an existing
    model). Returns the TrainingRecord also written to ``out/training.json``.
    """
    config = make_config(
        config,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        patience=patience,
        seed=seed,
        qat=qat,
        qat_epochs=qat_epochs,
        prune=prune,
        prune_epochs=prune_epochs,
        cluster=cluster,
        cluster_epochs=cluster_epochs,
        class_weights=class_weights,
        augment=augment,
        mixed_precision=mixed_precision,
        dropout=dropout,
        l2=l2,
        widths=tuple(widths) if isinstance(widths, (list, tuple)) else widths,
        alpha=alpha,
    )
    if isinstance(model, str) and model not in MODELS:  # before the data loads: fail fast
        build_model(model, (1,), 2)
    data = data if isinstance(data, Dataset) else load_dataset(data, seed=config.seed)
    strat, plan = distribute.strategy(strategy)
    start = _start_from(start_from, model, data) if start_from is not None else None
    store = checkpoints.Store(
        Path(out) / "checkpoints",
        _fingerprint(model, data, config, start),
        resume=resume,
        chief=distribute.is_chief(strat),
    )
    _keras().utils.set_random_seed(config.seed)
    run = _Run(data, config, plan, store, list(callbacks or []), start)
    with distribute.scope(strat, plan):
        reference, final = run.all_stages(model)
    record = _record(model, data, config, run, reference, final, replicas=int(strat.num_replicas_in_sync))
    if start_from is not None:
        record = dataclasses.replace(record, settings={**record.settings, "start_from": str(start_from)})
    target = out if store.chief else store.folder / "model"  # other workers save too, then discard
    record = saving.save_trained(target, final=final, reference=reference, record=record)
    store.close()
    return record


def _record(
    model: str | Any, data: Dataset, config: TrainConfig, run: _Run, reference: Any, final: Any, *, replicas: int
) -> TrainingRecord:
    """The TrainingRecord of a finished run; sparsity is measured on the model that ships (QAT or not)."""
    history = run.store.history()
    return TrainingRecord(
        model=model if isinstance(model, str) else model.name,
        dataset=data.name,
        dataset_fingerprint=data.fingerprint,
        recipe=config.recipe,
        seed=config.seed,
        epochs_run=len(history.get("loss", ())),
        seconds=run.store.seconds(),
        history=history,
        test_accuracy=run.accuracy[list(run.accuracy)[-1]],
        float_test_accuracy=run.accuracy[[s for s in run.accuracy if s != "qat"][-1]],
        params=int(reference.count_params()),
        macs=count_macs(reference),
        sparsity=compress.measure_sparsity(final, run.targets) if config.prune else {},
        clusters=compress.count_clusters(reference, run.targets) if config.cluster else {},
        stage_accuracy=dict(run.accuracy),
        strategy=run.plan.kind,
        replicas=replicas,
        precision=run.policy,
        resumed=run.store.resumed,
        settings=_settings(config),
    )


class _Run:
    """The stages of one run, inside the strategy scope; ``accuracy`` collects test accuracy per stage."""

    def __init__(
        self,
        data: Dataset,
        config: TrainConfig,
        plan: distribute.Plan,
        store: checkpoints.Store,
        callbacks: list[Any],
        start: dict[str, Any] | None = None,
    ) -> None:
        self.data, self.config, self.plan, self.store, self.callbacks = data, config, plan, store, callbacks
        self.start = start
        self.accuracy: dict[str, float] = {}
        self.targets: list[str] = []
        self.policy = "float32"

    def all_stages(self, model: str | Any) -> tuple[Any, Any]:
        """(float reference, final model)."""
        cfg = self.config
        # 1. float training (mixed precision where asked and a GPU runs it)
        net = self.float_stage(model)
        if cfg.prune or cfg.cluster:
            self.targets = compress.target_layers(net)
        # 2. pruning-aware fine-tune, stripped back to plain layers
        if cfg.prune:
            wrapped, extra = compress.prune(net, cfg.prune, steps_per_epoch=self.steps, epochs=cfg.prune_epochs)
            net = compress.strip_pruning(self.fit("prune", wrapped, cfg.prune_epochs, PRUNE_LR, extra=extra))
            self.measure("prune", net)
        # 3. weight clustering (sparsity-preserving after pruning), stripped
        if cfg.cluster:
            wrapped = compress.cluster(net, cfg.cluster, preserve_sparsity=bool(cfg.prune))
            net = compress.strip_clustering(self.fit("cluster", wrapped, cfg.cluster_epochs, CLUSTER_LR))
            self.measure("cluster", net)
        if not cfg.qat:
            return net, net
        # 4. quantization-aware fine-tune keeping what 2 and 3 made, ranges set from calibration data first
        qat_net = compress.quantize_aware(net, preserve=cfg.preserve)
        if not self.store.done("qat") and not self.store.start_epoch("qat"):
            compress.init_quantizer_ranges(qat_net, self.data.calibration(256))
        qat_net = compress.finish_qat(self.fit("qat", qat_net, cfg.qat_epochs, QAT_LR), preserve=cfg.preserve)
        self.measure("qat", qat_net)
        return net, qat_net

    @property
    def steps(self) -> int:
        return fitting.steps_per_epoch(self.data, self.config.batch_size)

    def float_stage(self, model: str | Any) -> Any:
        cfg = self.config
        if self.start is not None:
            net = saving.load_keras(self.start["path"])  # inside the strategy scope: variables are distributed
            self.measure("float", net)
            return net
        with distribute.precision_policy(cfg.mixed_precision, self.plan) as self.policy:
            if isinstance(model, str):
                net = build_model(model, self.data.input_shape, self.data.num_classes, cfg.model_options)
            else:
                net = _check_custom(model, self.data, clone=self.plan.kind != "cpu")
            self.fit("float", net, cfg.epochs, 1.0, schedule=cfg.lr_schedule, early_stop=True)
        if self.policy != "float32" and (cfg.prune or cfg.cluster or cfg.qat):
            log.warning(
                "mixed precision covers float training only: pruning, clustering and QAT run in float32, "
                "which tensorflow-model-optimization's wrappers need"
            )
        net = distribute.as_float32(net)
        self.measure("float", net)
        return net

    def measure(self, stage: str, net: Any) -> None:
        self.accuracy[stage] = fitting.accuracy(net, self.data.x_test, self.data.y_test)
        log.info("%s: test accuracy %.4f", stage, self.accuracy[stage])

    def fit(
        self,
        stage: str,
        net: Any,
        epochs: int,
        lr_factor: float,
        *,
        schedule: str = "constant",
        early_stop: bool = False,
        extra: Sequence[Any] = (),
    ) -> Any:
        """Train ``net`` for stage ``stage`` from its checkpoint (or restore it when done); returns ``net``."""
        cfg, store = self.config, self.store
        if store.done(stage):
            store.restore(stage, net)
            return net
        fitting.compile_model(net, fitting.optimizer(cfg.learning_rate * lr_factor, schedule, self.steps * epochs))
        start = store.start_epoch(stage)
        if start:
            store.restore(stage, net, net.optimizer)
            log.info("resuming %s at epoch %d of %d", stage, start + 1, epochs)
        early = None
        if early_stop:
            state, best = store.entry(stage)["early_stop"], store.best_weights(stage)
            early = fitting.early_stop_class()(cfg.patience, state, best)
        if start < epochs and not (early and early.stopped):
            for callback in self.callbacks:  # callbacks that declare a stage (progress bars) are told it
                if hasattr(callback, "stage"):
                    callback.stage = stage
            callbacks = [*extra, *([early] if early else []), checkpoints.callback_class()(store, stage, early)]
            net.fit(
                self.dataset(skip_epochs=start),
                steps_per_epoch=self.steps,
                epochs=epochs,
                initial_epoch=start,
                callbacks=callbacks + self.callbacks,
                validation_data=(self.data.x_val, self.data.y_val),
                verbose=0,
            )
        elif early:
            early.restore(net)
        store.finish(stage, net)
        return net

    def dataset(self, *, skip_epochs: int) -> Any:
        cfg = self.config
        weights = fitting.class_weights(self.data) if cfg.class_weights else None
        return fitting.train_dataset(
            self.data,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            augment=cfg.augment,
            class_weights=weights,
            skip_epochs=skip_epochs,
        )


def _check_custom(model: Any, data: Dataset, *, clone: bool) -> Any:
    """A caller's tf_keras model, checked against the data; ``clone`` rebuilds it inside the strategy scope."""
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise BadInputError(
            "model must be a zoo name (see 'edgeship list-models') or a tf_keras Model; "
            f"received {type(model).__name__}"
        )
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if shape != tuple(data.input_shape):
        raise BadInputError(
            f"model '{model.name}' takes inputs of shape {shape}; dataset '{data.name}' has "
            f"{tuple(data.input_shape)}. Build the model for the dataset's input shape"
        )
    if not clone:
        return model
    copy = keras.models.clone_model(model)  # variables made outside a strategy's scope cannot train in it
    copy.set_weights(model.get_weights())
    return copy


def _settings(config: TrainConfig) -> dict[str, Any]:
    settings = dataclasses.asdict(config)
    settings["model_options"]["widths"] = list(config.model_options.widths)
    return settings


def _start_from(folder: str | Path, model: str | Any, data: Dataset) -> dict[str, Any]:
    """The float model file of trained folder ``folder``, checked against this run's model and data."""
    from edgeship import _io
    from edgeship.records import TrainingRecord

    folder = Path(folder)
    if not saving.is_trained_folder(folder):
        raise BadInputError(f"start_from must be a trained-model folder (with training.json); received {folder}")
    record = TrainingRecord.load(folder)
    name = model if isinstance(model, str) else model.name
    if record.model != name or record.dataset_fingerprint != data.fingerprint:
        raise BadInputError(
            f"start_from {folder} holds '{record.model}' trained on '{record.dataset}' (fingerprint "
            f"{record.dataset_fingerprint[:12]}); this run trains '{name}' on '{data.name}' ({data.fingerprint[:12]}). "
            "Start from a model trained on the same data, with the same seed"
        )
    path = folder / record.files.get("float", record.files.get("model", "model.keras"))
    return {"path": str(path), "sha256": _io.sha256_path(path)}


def _fingerprint(model: str | Any, data: Dataset, config: TrainConfig, start: dict | None) -> dict[str, Any]:
    """What a resume must match: the model, the exact data, every setting and the starting model."""
    name = model if isinstance(model, str) else "sha256:" + hashlib.sha256(model.to_json().encode()).hexdigest()
    return {
        "model": name,
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint,
        "config": _settings(config),
        "start_from": start["sha256"] if start else None,
    }
