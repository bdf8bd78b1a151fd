"""A checkpoint each epoch, and resuming a run after an interruption.

    out/checkpoints/
      settings.json            what the run was asked to do; a resume with other settings is refused
      state.json               per stage: epochs done, history, early-stopping state, latest checkpoint
      float-e0007.index/.data  model + optimizer after epoch 7 of the float stage (only the latest kept)
      float-best.npz           the best weights so far (early stopping restores them at the end)
      float-final.index/.data  the stage's result once it finished

A stage resumes from its latest epoch with its optimizer state, learning-rate step, early-stopping
state and history; a finished stage is restored from its final checkpoint instead of retrained.
state.json is written after the files it names, so an interruption at any point leaves a
consistent state.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeship import _io
from edgeship._deps import keras as _keras
from edgeship._deps import tensorflow as _tf
from edgeship.errors import BadArtifactError, BadInputError

log = logging.getLogger(__name__)

STATE_VERSION = 1


class Store:
    """The checkpoint folder of one training run (see the module docstring).

    ``chief`` is False on the non-chief workers of a multi-worker run: they must still write (reading
    mirrored variables is collective), so they write to a temporary folder that is removed at the end.
    """

    def __init__(self, folder: str | Path, settings: dict[str, Any], *, resume: bool, chief: bool = True) -> None:
        self.folder = Path(folder)
        self.started = time.perf_counter()
        self.state: dict[str, Any] = {"schema_version": STATE_VERSION, "seconds": 0.0, "stages": {}}
        self.resumed = resume and (self.folder / "state.json").is_file()
        if resume:
            self._check_settings(settings)
        if self.resumed:
            self.state = _read_json(self.folder / "state.json")
        self.base_seconds = float(self.state.get("seconds", 0.0))
        self.read_dir = self.folder  # checkpoints of earlier runs are read from here, even on other workers
        if not chief:
            self.folder = Path(tempfile.mkdtemp(prefix="edgeship-worker-ckpt-"))
        elif not self.resumed:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            _io.write_json(self.folder / "settings.json", {"schema_version": STATE_VERSION, **settings})
        self.chief = chief

    def _check_settings(self, settings: dict[str, Any]) -> None:
        path = self.folder / "settings.json"
        if not path.is_file():
            log.warning("--resume: no checkpoint in %s; training from the start", self.folder)
            return
        saved = {k: v for k, v in _read_json(path).items() if k != "schema_version"}
        wanted = _flatten(_jsonable(settings))
        found = _flatten(saved)
        changed = [
            f"{k}: {found.get(k, '—')} -> {wanted.get(k, '—')}"
            for k in sorted(set(wanted) | set(found))
            if found.get(k, "—") != wanted.get(k, "—")
        ]
        if changed:
            raise BadInputError(
                f"cannot resume: the checkpoint in {self.folder} was made with other settings ({'; '.join(changed)}). "
                "Resume with the same settings, or train without --resume to start over"
            )

    # ----------------------------------------------------------------------------------- reading

    def entry(self, stage: str) -> dict[str, Any]:
        return self.state["stages"].get(stage) or {"epoch": 0, "done": False, "history": {}, "early_stop": None}

    def done(self, stage: str) -> bool:
        return bool(self.entry(stage)["done"])

    def start_epoch(self, stage: str) -> int:
        return int(self.entry(stage)["epoch"])

    def history(self, stages: list[str] | None = None) -> dict[str, tuple[float, ...]]:
        """The per-epoch history of ``stages`` (default: all, in order), concatenated."""
        merged: dict[str, tuple[float, ...]] = {}
        for stage in stages if stages is not None else list(self.state["stages"]):
            for key, values in self.entry(stage)["history"].items():
                merged[key] = merged.get(key, ()) + tuple(values)
        return merged

    def restore(self, stage: str, model: Any, optimizer: Any = None) -> None:
        """Load the stage's latest checkpoint (its final one once done) into ``model`` (and ``optimizer``)."""
        tf = _tf()
        prefix = self.entry(stage).get("checkpoint")
        if prefix is None:
            raise BadArtifactError(f"{self.read_dir} records no checkpoint of stage {stage!r}; train it again")
        objects = {"model": model} | ({"optimizer": optimizer} if optimizer is not None else {})
        try:
            status = tf.train.Checkpoint(**objects).read(str(self.read_dir / prefix))
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError, TypeError) as exc:
            raise BadArtifactError(
                f"checkpoint {self.read_dir / str(prefix)} does not fit the model being resumed "
                f"({str(exc).splitlines()[0]}); train without --resume to start over"
            ) from exc

    def best_weights(self, stage: str) -> list[np.ndarray] | None:
        path = self.read_dir / f"{stage}-best.npz"
        if not self.entry(stage).get("early_stop") or not path.is_file():
            return None
        with np.load(path) as npz:
            return [npz[f"w{i}"] for i in range(len(npz.files))]

    def seconds(self) -> float:
        return round(self.base_seconds + time.perf_counter() - self.started, 3)

    # ----------------------------------------------------------------------------------- writing

    def save_epoch(self, stage: str, epoch: int, model: Any, logs: dict[str, Any], early: Any = None) -> None:
        """Record epoch ``epoch`` (1-based) of ``stage``: checkpoint, best weights, history, then state.json."""
        tf = _tf()
        entry = self.state["stages"].setdefault(stage, self.entry(stage))
        for key, value in (logs or {}).items():
            if key not in ("lr", "learning_rate"):
                entry["history"].setdefault(key, []).append(float(value))
        prefix = f"{stage}-e{epoch:04d}"
        tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(self.folder / prefix))
        if early is not None:
            if early.improved:
                arrays = {f"w{i}": w for i, w in enumerate(early.best_weights)}
                with _io.staged(self.folder / f"{stage}-best.npz") as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
            entry["early_stop"] = early.state
        self._advance(entry, prefix, epoch=epoch)

    def finish(self, stage: str, model: Any) -> None:
        """Mark ``stage`` done with ``model``'s weights as its final checkpoint."""
        tf = _tf()
        entry = self.state["stages"].setdefault(stage, self.entry(stage))
        prefix = f"{stage}-final"
        tf.train.Checkpoint(model=model).write(str(self.folder / prefix))
        entry["done"] = True
        self._advance(entry, prefix, epoch=entry["epoch"])

    def _advance(self, entry: dict[str, Any], prefix: str, *, epoch: int) -> None:
        old = entry.get("checkpoint")
        entry.update(epoch=epoch, checkpoint=prefix)
        self.state["seconds"] = self.seconds()
        _io.write_json(self.folder / "state.json", self.state)
        if old and old != prefix:
            for file in self.folder.glob(f"{old}.*"):
                file.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove a non-chief worker's temporary folder."""
        if not self.chief:
            shutil.rmtree(self.folder, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadArtifactError(f"{path} is unreadable ({exc}); train without --resume to start over") from exc
    if not isinstance(data, dict) or data.get("schema_version", 0) > STATE_VERSION:
        raise BadArtifactError(f"{path} was written by a newer edgeship or is malformed; train without --resume")
    return data


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@functools.cache
def callback_class() -> type:
    """The Keras callback that checkpoints each epoch (defined on first use: it subclasses tf_keras')."""
    keras = _keras()

    class EpochCheckpoint(keras.callbacks.Callback):  # type: ignore[name-defined]  # keras is loaded at run time
        def __init__(self, store: Store, stage: str, early: Any = None) -> None:
            super().__init__()
            self.store, self.stage, self.early = store, stage, early

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.store.save_epoch(self.stage, epoch + 1, self.model, logs or {}, self.early)

    return EpochCheckpoint
