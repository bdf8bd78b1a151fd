"""The doctor's recovery: the smallest artifact within the drop, cheapest fix first.

Methods, in order of what they cost on the device: **calibration** (re-quantize with the
artifact's settings on the dataset's samples; then more samples, up to ``calibration_samples``
from the training split; for ONNX also the Percentile and Entropy calibrators), **equalization**
(cross-layer equalization of the Keras float model, then the artifact's settings:
``edgeship.converters.equalize``), **int16** activations (ONNX Runtime's QDQ overrides for the
worst tensors; ai-edge-quantizer's recipes for TFLite), and only then **float** (the worst
layers by SQNR each kept in float alone, ranked by the accuracy each recovers, then combined in
that order); **qat** last when asked. The first two cost nothing at run time; the first model
within the drop wins. Each model tried is run on the whole validation split and scored against
the float reference's outputs there (``edgeship.tasks.Scorer``, the same figures ``validate``
gives). The winner is scored once more on the test split, which took no part in choosing it (the
figures to report), written as ``<model>.<precision>-<method><suffix>``, registered in
manifest.json, read back (which compute ops run in float: ``readback``) and timed against the
artifact it replaces.
Without a validation split candidates are chosen on test, and the note says so. The winner is
written and registered by ``written``.

Why this file is long (about 400 lines): the ladder, the trials and the notes that explain what
they found are one decision, read top to bottom.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship import _io
from edgeship._deps import quiet_native_stderr
from edgeship.doctor import rebuild, written
from edgeship.doctor.advice import ambiguous
from edgeship.doctor.layers import Context, Probe
from edgeship.doctor.margins import strata
from edgeship.doctor.records import LayerError, Margins, Recovery, RecoveryStep
from edgeship.errors import BadInputError, EdgeshipError
from edgeship.formats import FORMATS
from edgeship.records import Artifact
from edgeship.tasks import align, delta_of, said

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel

__all__ = ["recover", "METHODS", "NO_VAL"]

#: how a recovered artifact was made, cheapest on the device first; its file is <precision>-<method>.
#: A Core ML artifact's rebuild is "compression" (its compression needs no data), its "float" ops
#: keep uncompressed fp16 weights, and "8bit" gives the ops float would keep 8 bits in the
#: artifact's own family (8-bit palettes, int8 blocks) instead; "precision" is the whole model at
#: the next finer uniform precision (written as that precision, e.g. ``coreml:pal4``), chosen when
#: it is the smallest within the drop.
METHODS = ("calibration", "compression", "equalization", "int16", "8bit", "float", "precision", "qat")
NO_VAL = "no validation split: chosen and reported on test — the figures are optimistic"


class _Trials:
    """Builds and scores candidate models; remembers the bytes of the first within the drop."""

    def __init__(self, ctx: Context, probe: Probe, tmp: Path) -> None:
        self.ctx, self.probe, self.tmp = ctx, probe, tmp
        self.steps: list[RecoveryStep] = []
        self.made: dict[int, tuple[Path, dict[str, Any]]] = {}  # id(step) -> its model's path, its settings
        self.skipped: list[str] = []  # methods this model could not take, and why
        self.started = time.monotonic()

    @property
    def out_of_time(self) -> bool:
        budget = self.ctx.time_budget
        return budget is not None and time.monotonic() - self.started > budget

    def score(self, float_layers: tuple[str, ...]) -> RecoveryStep:
        return self._scored(
            self.probe.build(float_layers), "float" if float_layers else self.probe.rebuild_method, {}, float_layers
        )

    def variant(
        self, method: str, changes: dict[str, Any], build: Callable[[], tuple[bytes | Path, dict[str, Any]]]
    ) -> RecoveryStep | None:
        try:
            blob, settings = build()
        except EdgeshipError as exc:  # a method this model cannot take: said, and the next one tried
            self.ctx.progress("doctor", f"{method} {_changes(changes)} not tried: {exc}")
            self.skipped.append(f"{method} not tried: {exc}")
            return None
        return self._scored(blob, method, changes, (), settings)

    def _scored(
        self,
        blob: bytes | Path,
        method: str,
        changes: dict[str, Any],
        float_layers: tuple[str, ...],
        settings: dict[str, Any] | None = None,
    ) -> RecoveryStep:
        """``blob``: a model's bytes, or the path of the model a probe wrote (a Core ML package is a folder)."""
        path = self.tmp / f"trial-{len(self.steps)}{self.probe.suffix}"
        if isinstance(blob, Path):
            shutil.move(str(blob), str(path))
        else:
            path.write_bytes(blob)
        step = dataclasses.replace(
            _scored(self.ctx, path, float_layers, _io.size_bytes(path), self.ctx.select_split, self.probe.layout),
            method=method,
            changes=dict(changes),
        )
        what = f"float {list(float_layers)}" if float_layers else f"{method} {_changes(changes)}".strip()
        self.ctx.progress("doctor", f"{what} on {step.split}: {said(step)}")
        self.steps.append(step)
        self.made[id(step)] = (path, dict(settings or {}))
        return step


def _changes(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in changes.items())


def _short(value: Any) -> Any:
    """A long tensor name (litert-torch's hold every module's class) by its end, in progress lines."""
    if isinstance(value, list):
        return [_short(v) for v in value]
    return f"…{value[-48:]}" if isinstance(value, str) and len(value) > 64 else value


def _scored(
    ctx: Context, path: Path, float_layers: tuple[str, ...], size: int, split: str, layout: str | None = None
) -> RecoveryStep:
    """The model at ``path`` (taking ``layout``) scored against float on ``split``; on test with its margin strata."""
    from edgeship.runtimes import load
    from edgeship.runtimes._session import in_layout

    scorer = ctx.scorer if split == "test" else ctx.select_scorer()
    with quiet_native_stderr():
        outputs = load(path).predict_outputs(in_layout(ctx.dataset.inputs(split), layout))
    delta = scorer(outputs)
    margins = (
        strata(scorer.reference, align(scorer.reference, outputs), scorer.task, split) if split == "test" else None
    )
    return RecoveryStep(
        float_layers=float_layers,
        accuracy=delta.accuracy,
        accuracy_delta_pts=delta.accuracy_delta_pts,
        agreement=delta.agreement,
        sqnr_db=delta.sqnr_db,
        size_bytes=size,
        within_drop=not ctx.gate.check(delta),
        headline=delta.headline,
        split=split,
        margins=margins,
    )


def ladder(
    ctx: Context, artifact: Artifact, layers: Sequence[LayerError], equalizable: bool = True
) -> list[tuple[str, dict[str, Any]]]:
    """The candidates after the plain rebuild and before float layers, in the order they are tried:
    the zero-cost ones (calibration, equalization of a Keras model), then int16 for the worst ``layers``."""
    from edgeship.converters import calibration as _calibration

    fmt = FORMATS.get(artifact.format)
    if fmt.weights_only:  # compressed without data: nothing to calibrate or equalize
        return []
    had = int(artifact.settings.get("calibration_samples", _calibration.DEFAULT_SAMPLES))
    more = min(ctx.calibration_samples, len(ctx.dataset.inputs("train")[0]))
    steps: list[tuple[str, dict[str, Any]]] = []
    if more > had:
        steps.append(("calibration", {"calibration_samples": more}))
    if fmt.calibration_methods:  # the other calibration methods, most robust to outliers first
        method = str(artifact.settings.get("calibrate_method", fmt.calibration_methods[0])).lower()
        steps += [
            ("calibration", {"calibration_samples": max(had, more), "calibrate_method": m})
            for m in reversed(fmt.calibration_methods[1:])
            if m != method
        ]
    # an equalized artifact's source already is; edgeship equalizes tf_keras weights only
    if ctx.equalize and artifact.settings.get("equalized") is None and equalizable:
        steps.append(("equalization", {"equalize": True}))
    if ctx.int16:
        steps.append(("int16", rebuild.int16_changes(artifact, layers)))
    return steps


def recover(
    ctx: Context,
    artifact: Artifact,
    path: Path,
    source: SourceModel,
    probe: Probe,
    layers: Sequence[LayerError],
    margins: Margins | None = None,
) -> Recovery:
    """Cheapest fix first: recalibration, equalization, int16, float layers (``_float_layers``),
    then QAT with ``ctx.qat_epochs``.

    A quantized reader requantizes a float layer's output to the same calibrated range, so an
    outlier-dominated tensor only recovers when its readers stay float too; both are tried and
    the better kept (the smaller set on a tie). ``margins`` (the artifact's on test) tell whether
    a miss is ambiguity in the data rather than layers left to try.
    """
    if ctx.gate.max_drop is None:  # the doctor recovers only toward a drop (doctor.run._recovery)
        raise BadInputError("recovery needs max_drop (accuracy points); received None")
    with tempfile.TemporaryDirectory(prefix="edgeship-doctor-") as tmp:
        trials = _Trials(ctx, probe, Path(tmp))
        best = trials.score(())
        for method, changes in ladder(ctx, artifact, layers, source.keras is not None):
            if best.within_drop or trials.out_of_time:
                break
            build = (
                (lambda: rebuild.int16(ctx, artifact, source, changes))
                if method == "int16"
                else (lambda: rebuild.rebuild(ctx, artifact, source, changes))
            )
            step = trials.variant(method, changes, build)
            if step is not None and step.within_drop:
                best = step
        weights_only = FORMATS.get(artifact.format).weights_only
        if not best.within_drop:
            best = _float_layers(ctx, trials, trials.steps[0], layers, monotone=weights_only)
        if weights_only and not trials.steps[0].within_drop:
            best = _smaller(trials, probe, best)
        if not best.within_drop and ctx.qat_epochs and not trials.out_of_time and not weights_only:
            changes = {"epochs": ctx.qat_epochs}
            step = trials.variant("qat", changes, lambda: rebuild.qat(ctx, artifact, source, ctx.qat_epochs))
            if step is not None and step.within_drop:
                best = step
        note = _note(
            best,
            trials,
            ctx,
            min(len(layers), ctx.max_layers),
            margins is not None and ambiguous(margins),
            weights_only=weights_only,
            fine_tunable=source.keras is not None,
        )
        test = None
        winner, made_with = trials.made[id(best)]
        if best.within_drop:
            test = dataclasses.replace(
                _scored(ctx, winner, best.float_layers, _io.size_bytes(winner), "test", probe.layout),
                method=best.method,
                changes=best.changes,
            )
        recovery = Recovery(
            max_drop=float(ctx.gate.max_drop),
            within_drop=best.within_drop,
            steps=tuple(trials.steps),
            requested_float_layers=best.float_layers if best.within_drop else (),
            note=note if ctx.select is not None else f"{note}; {ctx.select_note or NO_VAL}",
            chosen_on=ctx.select_split,
            test=test,
            method=best.method if best.within_drop else None,
        )
        if best.within_drop:
            recovery = written.write(ctx, artifact, path, source, probe, winner, recovery, made_with)
    return recovery


def _smaller(trials: _Trials, probe: Probe, best: RecoveryStep) -> RecoveryStep:
    """Core ML: cheaper than the ops ``best`` leaves uncompressed (fp16), the same ops at 8 bits in
    the artifact's own family; and the whole model at the next finer uniform precision (what a
    user would convert to instead). The smallest within the drop wins."""
    candidates: list[RecoveryStep | None] = [best]
    eight_bit = probe.eight_bit
    if best.within_drop and best.method == "float" and eight_bit is not None and not trials.out_of_time:
        kept = best.float_layers
        candidates.append(trials.variant("8bit", {"eight_bit_layers": list(kept)}, lambda: (eight_bit(kept), {})))
    if probe.finer is not None and not trials.out_of_time:
        precision, build = probe.finer
        candidates.append(trials.variant("precision", {"precision": precision}, build))
    fitting = [s for s in candidates if s is not None and s.within_drop]
    return min(fitting, key=lambda s: s.size_bytes) if fitting else best


def _float_layers(
    ctx: Context, trials: _Trials, best: RecoveryStep, layers: Sequence[LayerError], monotone: bool = False
) -> RecoveryStep:
    """``_search``, or ``best`` when the probe cannot build models with float layers (a model
    ai-edge-quantizer cannot take): said in the note, as a method this model could not take."""
    try:
        return _search(ctx, trials, best, layers, monotone)
    except EdgeshipError as exc:
        ctx.progress("doctor", f"float layers not tried: {exc}")
        trials.skipped.append(f"float layers not tried: {exc}")
        fitting = [s for s in trials.steps if s.within_drop]
        return fitting[0] if fitting else max([best, *trials.steps], key=delta_of)


def _search(
    ctx: Context, trials: _Trials, best: RecoveryStep, layers: Sequence[LayerError], monotone: bool
) -> RecoveryStep:
    """Rank the ``max_layers`` worst layers (by SQNR) by what keeping each in float recovers,
    measured: each alone, and with its readers where alone is not enough. The first within the
    drop wins; otherwise they are combined in the measured order until the drop fits. A layer
    that does not help is dropped from the combination, unless ``monotone`` (Core ML: an
    uncompressed weight cannot add error, so every step keeps growing the set toward all-fp16)."""
    measured: list[RecoveryStep] = []
    for layer in layers[: ctx.max_layers]:
        if trials.out_of_time:
            break
        options = [trials.score((layer.name,))]
        widened = (layer.name,) + tuple(r for r in layer.readers if r != layer.name)
        if len(widened) > 1 and not options[0].within_drop:
            options.append(trials.score(widened))
        chosen = max(options, key=lambda s: (s.within_drop, delta_of(s), -len(s.float_layers)))
        if chosen.within_drop:
            return chosen
        measured.append(chosen)
    if measured:
        ctx.progress(
            "doctor",
            "float layers by measured recovery: "
            + ", ".join(
                f"{'+'.join(s.float_layers)} {delta_of(s):+.2f}" for s in sorted(measured, key=delta_of, reverse=True)
            ),
        )
    order = sorted(measured, key=delta_of, reverse=True)
    best = max([best, *measured], key=delta_of)
    kept = order[0].float_layers if order else ()
    for step in order[1:]:
        if trials.out_of_time:
            break
        combined = kept + tuple(n for n in step.float_layers if n not in kept)
        if combined == kept:
            continue
        tried = trials.score(combined)
        if monotone:
            kept = combined
        if delta_of(tried) >= delta_of(best) or (monotone and tried.within_drop):
            best, kept = tried, combined
        if best.within_drop:
            break
    return best


#: how the note names a method the search tried
_TRIED = {"calibration": "recalibration", "equalization": "equalization", "int16": "int16 activations"}


def _note(
    best: RecoveryStep,
    trials: _Trials,
    ctx: Context,
    tried: int,
    unsure: bool,
    weights_only: bool = False,
    fine_tunable: bool = True,
) -> str:
    """What the search found, in one sentence, with the methods this model could not take.
    ``weights_only``: a Core ML artifact, whose "float" layers keep uncompressed fp16 weights;
    ``fine_tunable``: the doctor's QAT can take the model (a tf_keras one)."""
    max_drop = ctx.gate.max_drop
    if weights_only:
        return _weights_note(best, trials, ctx, tried, unsure)
    tail = "".join(f"; {why}" for why in trials.skipped)
    if trials.out_of_time:
        tail += f"; the time budget ({ctx.time_budget:g} s) ran out after {len(trials.steps)} models"
    if not best.within_drop and unsure:
        return (
            f"no model within {max_drop:g} points after trying {tried} layers in float: the disagreements sit on "
            f"inputs the float model itself is unsure about (see advice), which more float layers do not fix{tail}"
        )
    if not best.within_drop:
        qat = next((s for s in trials.steps if s.method == "qat"), None)
        last = (
            f", and quantization-aware fine-tuning ({ctx.qat_epochs} epochs) reached {said(qat)}"
            if qat
            else "; quantization-aware fine-tuning is left (doctor --qat EPOCHS)"
            if not ctx.qat_epochs and fine_tunable
            else ""
        )
        methods = dict.fromkeys(_TRIED[s.method] for s in trials.steps if s.method in _TRIED)
        return (
            f"no model within {max_drop:g} points after {', '.join([*methods, f'{tried} layers in float'])}"
            f"{last}; raise max_layers{tail}"
        )
    if best.method == "calibration":
        how = _changes(best.changes) or "the artifact's settings on the dataset's samples"
        return f"recalibration was enough ({how}): all int8, no layer in float{tail}"
    if best.method == "equalization":
        return f"cross-layer equalization was enough: all int8, no layer in float{tail}"
    if best.method == "int16":
        what = (
            f"{len(best.changes['int16_tensors'])} tensor(s)"
            if "int16_tensors" in best.changes
            else "the whole model (TFLite 16x8)"
        )
        return f"int16 activations for {what} were enough: int8 weights, no layer in float{tail}"
    if best.method == "qat":
        return f"quantization-aware fine-tuning ({ctx.qat_epochs} epochs) was enough: all int8, no layer in float{tail}"
    return f"{len(best.float_layers)} layer(s) asked to stay float after {len(trials.steps)} models tried{tail}"


def _weights_note(best: RecoveryStep, trials: _Trials, ctx: Context, tried: int, unsure: bool) -> str:
    """``_note`` for Core ML: its compression is of weights only and needs no data, so the one fix
    is leaving the ops whose weights it hurts most uncompressed."""
    tail = (
        f"; the time budget ({ctx.time_budget:g} s) ran out after {len(trials.steps)} models"
        if trials.out_of_time
        else ""
    )
    if best.within_drop and best.method == "precision":
        size = best.size_bytes / trials.steps[0].size_bytes
        return (
            f"the whole model as {best.changes['precision']} is the smallest model within the drop "
            f"(x{size:.2f} the rebuild's size; leaving ops uncompressed came to more or missed){tail}"
        )
    if best.within_drop and best.method == "8bit":
        kept = best.changes.get("eight_bit_layers", [])
        return (
            f"{len(kept)} op(s) compressed at 8 bits in the artifact's own family instead of the rest's bits, "
            f"no weight uncompressed, after {len(trials.steps)} models tried{tail}"
        )
    if best.within_drop and not best.float_layers:
        return f"the rebuild with the artifact's own settings is within the drop: every weight compressed{tail}"
    if best.within_drop:
        return (
            f"{len(best.float_layers)} op(s) asked to keep uncompressed fp16 weights after {len(trials.steps)} "
            f"models tried (Core ML compresses weights only: activations are fp16 either way){tail}"
        )
    if unsure:
        return (
            f"no model within {ctx.gate.max_drop:g} points after leaving {tried} ops uncompressed: the "
            f"disagreements sit on inputs the float model itself is unsure about (see advice){tail}"
        )
    finer = next((s for s in trials.steps if s.method == "precision"), None)
    also = f", nor the whole model as {finer.changes['precision']} ({said(finer)})" if finer is not None else ""
    return (
        f"no model within {ctx.gate.max_drop:g} points after leaving {tried} ops uncompressed{also}; raise "
        f"max_layers, or convert with a finer precision (more palette bits, w8, per-block or grouped){tail}"
    )
