"""Where training runs: one CPU, one GPU, several GPUs (MirroredStrategy) or several hosts
(MultiWorkerMirroredStrategy), and whether float training may use mixed precision.

    choose(name, gpus, cpus, tf_config) ──► Plan          pure: what to build, and why
    strategy(name) ──► (tf.distribute.Strategy, Plan)     builds it from what TensorFlow sees

``auto`` picks MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster of two or more tasks,
MirroredStrategy over every GPU when there are several, the GPU when there is one, else the CPU.
``mirrored`` without GPUs mirrors over the logical CPU devices (two of them make the distributed
path run on a laptop: ``tf.config.set_logical_device_configuration`` before TensorFlow starts).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edgeship._deps import keras as _keras
from edgeship._deps import tensorflow as _tf
from edgeship.errors import BadInputError

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multiworker")


@dataclass(frozen=True)
class Plan:
    """The strategy chosen: ``kind`` is one of cpu, gpu, mirrored, multiworker; ``devices`` the replicas."""

    kind: str
    devices: tuple[str, ...]
    reason: str

    @property
    def uses_gpu(self) -> bool:
        return any("GPU" in d.upper() for d in self.devices)


def cluster_size(tf_config: str | None) -> int:
    """Number of tasks in a TF_CONFIG cluster (0 when unset); a malformed TF_CONFIG is a BadInputError."""
    if not tf_config:
        return 0
    try:
        cluster = json.loads(tf_config)["cluster"]
        return sum(len(tasks) for tasks in cluster.values())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInputError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            f'"task": {{"type": "worker", "index": 0}}}}; received {tf_config[:200]!r}'
        ) from exc


def choose(name: str, gpus: list[str], cpus: list[str], tf_config: str | None) -> Plan:
    """Decide the strategy from the request and the devices, without touching TensorFlow."""
    if name not in STRATEGIES:
        raise BadInputError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    workers = cluster_size(tf_config)
    if name == "multiworker" or (name == "auto" and workers >= 2):
        if workers < 1:
            raise BadInputError(
                "strategy 'multiworker' needs TF_CONFIG describing the cluster; it is not set. "
                "Set TF_CONFIG on every host, or use --strategy auto"
            )
        return Plan("multiworker", tuple(gpus or cpus[:1]), f"TF_CONFIG describes {workers} tasks")
    if name == "gpu" and not gpus:
        raise BadInputError("strategy 'gpu' asked for, but TensorFlow sees no GPU; use --strategy cpu or auto")
    if name == "mirrored":
        devices = tuple(gpus) if gpus else tuple(cpus)
        return Plan("mirrored", devices, f"mirrored over {len(devices)} {'GPU' if gpus else 'CPU'} device(s)")
    if name == "auto" and len(gpus) >= 2:
        return Plan("mirrored", tuple(gpus), f"{len(gpus)} GPUs visible")
    if name in ("gpu", "auto") and gpus:
        return Plan("gpu", (gpus[0],), "one GPU visible")
    return Plan("cpu", (cpus[0] if cpus else "/device:CPU:0",), "no GPU visible" if name == "auto" else "asked for")


def strategy(name: str = "auto") -> tuple[Any, Plan]:
    """Build the tf.distribute strategy ``name`` asks for on this machine."""
    tf = _tf()
    tf_config = os.environ.get("TF_CONFIG")
    if name == "multiworker" or (name == "auto" and cluster_size(tf_config) >= 2):
        # MultiWorkerMirroredStrategy must come before anything starts TensorFlow's runtime, and listing
        # logical devices does: physical ones only here.
        gpus = [f"/device:GPU:{i}" for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]
        plan = choose(name, gpus, ["/device:CPU:0"], tf_config)
    else:
        plan = choose(name, _names(tf, "GPU"), _names(tf, "CPU"), tf_config)
    log.info("distribution: %s (%s)", plan.kind, plan.reason)
    return _build(plan.kind, plan.devices), plan


@functools.cache
def _build(kind: str, devices: tuple[str, ...]) -> Any:
    # One strategy object per kind and devices for the whole process: a second MirroredStrategy over the
    # same devices reuses collective instance keys and aborts, and TensorFlow allows one multi-worker one.
    tf = _tf()
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices))
    if kind == "gpu":
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.get_strategy()  # the default strategy; scope() pins it to the CPU


@contextlib.contextmanager
def scope(strat: Any, plan: Plan) -> Iterator[None]:
    """Enter ``strat``'s scope; on the cpu plan also place everything on the CPU (a GPU may be visible)."""
    tf = _tf()
    with strat.scope(), tf.device(plan.devices[0]) if plan.kind == "cpu" else contextlib.nullcontext():
        yield


def _names(tf: Any, kind: str) -> list[str]:
    return [d.name for d in tf.config.list_logical_devices(kind)]


def is_chief(strat: Any) -> bool:
    """True on the one worker that writes files (always, outside multi-worker training)."""
    resolver = getattr(strat, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


@contextlib.contextmanager
def precision_policy(mixed: bool, plan: Plan) -> Iterator[str]:
    """Set Keras' global dtype policy for float training and put it back afterwards.

    Mixed precision pays off on GPUs only (float16 matmuls); on CPUs it is refused with a warning.
    """
    keras = _keras()
    policy = "float32"
    if mixed and plan.uses_gpu:
        policy = "mixed_float16"
    elif mixed:
        log.warning(
            "mixed precision needs a GPU and strategy %s runs on %s: training in float32",
            plan.kind,
            ", ".join(plan.devices),
        )
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def as_float32(net: Any) -> Any:
    """A copy of ``net`` with every layer in float32 (tfmot's wrappers and the converters need it)."""
    if all(layer.dtype_policy.name == "float32" for layer in net.layers):
        return net
    config = net.get_config()
    for layer in config["layers"]:
        layer["config"]["dtype"] = "float32"
    copy = net.__class__.from_config(config)
    copy.set_weights(net.get_weights())
    log.info("model %s cast to float32 after mixed-precision training", net.name)
    return copy
