"""The doctor's recovery: keep the most harmful layers in float until the accuracy drop fits.

Each model tried is built by the backend's Probe, run on the whole validation split and scored
against the float reference's outputs there (``edgeship.tasks.Scorer``, the same figures
``validate`` gives). The first within the drop is scored once more on the test split, which took
no part in choosing it (the figures to report), written as ``<model>.<precision>-mixed<suffix>``,
registered in manifest.json, and timed against the int8 artifact it replaces. Without a
validation split candidates are chosen on test, and the note says so.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Sequence

from edgeship import _io
from edgeship._deps import quiet_native_stderr
from edgeship.doctor.advice import ambiguous
from edgeship.doctor.layers import Context, Probe
from edgeship.doctor.margins import strata
from edgeship.doctor.records import LayerError, Margins, Recovery, RecoveryStep
from edgeship.records import Artifact, Manifest
from edgeship.tasks import align, delta_of, said

#: the suffix of a recovered artifact's precision: ``int8`` -> ``int8-mixed``
MIXED = "-mixed"
NO_VAL = "no validation split: chosen and reported on test — the figures are optimistic"


class _Trials:
    """Builds and scores mixed models; remembers the bytes of the best one within the drop."""

    def __init__(self, ctx: Context, probe: Probe, tmp: Path) -> None:
        self.ctx, self.probe, self.tmp = ctx, probe, tmp
        self.steps: list[RecoveryStep] = []
        self.winner: bytes | None = None
        self.winner_path: Path | None = None

    def score(self, float_layers: tuple[str, ...]) -> RecoveryStep:
        blob = self.probe.build(float_layers)
        path = self.tmp / f"trial-{len(self.steps)}{self.probe.suffix}"
        path.write_bytes(blob)
        step = _scored(self.ctx, path, float_layers, len(blob), self.ctx.select_split)
        self.ctx.progress("doctor", f"float {list(float_layers) or 'nothing'} on {step.split}: {said(step)}")
        self.steps.append(step)
        if step.within_drop and self.winner is None:
            self.winner, self.winner_path = blob, path
        return step


def _scored(ctx: Context, path: Path, float_layers: tuple[str, ...], size: int, split: str) -> RecoveryStep:
    """The model at ``path`` scored against float on ``split``; on test with its margin strata."""
    from edgeship.runtimes import load

    scorer = ctx.scorer if split == "test" else ctx.select_scorer()
    with quiet_native_stderr():
        outputs = load(path).predict_outputs(ctx.dataset.inputs(split))
    delta = scorer(outputs)
    margins = strata(scorer.reference, align(scorer.reference, outputs), scorer.task, split) if split == "test" \
        else None
    return RecoveryStep(float_layers=float_layers, accuracy=delta.accuracy, accuracy_delta_pts=delta.accuracy_delta_pts,
                        agreement=delta.agreement, sqnr_db=delta.sqnr_db, size_bytes=size,
                        within_drop=not ctx.gate.check(delta), headline=delta.headline, split=split, margins=margins)


def recover(ctx: Context, artifact: Artifact, path: Path, source: Any, probe: Probe,
             layers: Sequence[LayerError], margins: Margins | None = None) -> Recovery:
    """Greedy: keep the next-worst layer in float, alone or with its readers, until the drop fits.

    A quantized reader requantizes a float layer's output to the same calibrated range, so an
    outlier-dominated tensor only recovers when its readers stay float too; both are tried and
    the better kept (the smaller set on a tie). ``margins`` (the artifact's on test) tell whether
    a miss is ambiguity in the data rather than layers left to try.
    """
    with tempfile.TemporaryDirectory(prefix="edgeship-doctor-") as tmp:
        trials = _Trials(ctx, probe, Path(tmp))
        best = trials.score(())
        kept: tuple[str, ...] = ()
        for layer in layers[: ctx.max_layers]:
            if best.within_drop:
                break
            if layer.name in kept:
                continue
            alone = kept + (layer.name,)
            options = [trials.score(alone)]
            widened = alone + tuple(r for r in layer.readers if r not in alone)
            if widened != alone and not options[0].within_drop:
                options.append(trials.score(widened))
            best = max(options, key=lambda s: (s.within_drop, delta_of(s), -len(s.float_layers)))
            kept = best.float_layers
        note = _note(best, trials.steps, ctx.gate.max_drop, min(len(layers), ctx.max_layers),
                     margins is not None and ambiguous(margins))
        test = None
        if best.within_drop and trials.winner_path is not None:
            test = _scored(ctx, trials.winner_path, best.float_layers, len(trials.winner), "test")
        recovery = Recovery(max_drop=float(ctx.gate.max_drop), within_drop=best.within_drop,
                            steps=tuple(trials.steps), float_layers=best.float_layers if best.within_drop else (),
                            note=note if ctx.select is not None else f"{note}; {ctx.select_note or NO_VAL}",
                            chosen_on=ctx.select_split, test=test)
        if best.within_drop:
            recovery = _write_mixed(ctx, artifact, path, source, probe, trials.winner, recovery)
    return recovery


def _note(best: RecoveryStep, steps: Sequence[RecoveryStep], max_drop: float, tried: int, unsure: bool) -> str:
    if not best.within_drop and unsure:
        return (f"no model within {max_drop:g} points after trying {tried} layers in float: the disagreements sit on "
                "inputs the float model itself is unsure about (see advice), which more float layers do not fix")
    if not best.within_drop:
        return (f"no model within {max_drop:g} points after trying {tried} layers in float; raise max_layers, "
                "recalibrate (see advice) or train with QAT")
    if not best.float_layers:
        return "the all-int8 rebuild fits: recalibrating on the dataset's samples was enough, no layer stays float"
    return f"{len(best.float_layers)} layer(s) kept in float after {len(steps)} models tried"


def _write_mixed(ctx: Context, artifact: Artifact, path: Path, source: Any, probe: Probe, blob: bytes,
                 recovery: Recovery) -> Recovery:
    """Write ``<model>.<precision>-mixed<suffix>``, register it, and time it against the int8 one."""
    from edgeship.converters import _artifact
    from edgeship.runtimes.benchmark import compare

    precision = artifact.precision + MIXED
    final = ctx.folder / _artifact.file_name(source, precision, probe.suffix)
    winner = recovery.test or next(s for s in recovery.steps if s.within_drop)
    # the doctor re-quantizes the float reference: a QAT artifact's route does not carry over
    settings = {k: v for k, v in artifact.settings.items() if k not in ("route", "qat")}
    settings.update(qat=False, float_layers=list(recovery.float_layers), made_from=artifact.name,
                    made_by="edgeship doctor", max_drop=recovery.max_drop, chosen_on=recovery.chosen_on,
                    accuracy_delta_pts=winner.accuracy_delta_pts, accuracy_split=winner.split)
    with _io.staged(final) as staged:
        _io.write_bytes(staged, blob)
        mixed = _artifact.make(staged, ctx.folder, final=final, fmt=artifact.format, precision=precision,
                               source=source, settings=settings)
    manifest = Manifest.load(ctx.folder).with_artifact(mixed)
    manifest.save(ctx.folder)
    ctx.progress("doctor", f"{mixed.name} -> {mixed.path}; timing it against {artifact.name}")
    int8, mixed_bench = compare([path, final], threads=1, warmup=10, runs=ctx.runs)
    return dataclasses.replace(
        recovery, artifact=mixed, size_ratio=mixed.size_bytes / artifact.size_bytes,
        p50_ratio=mixed_bench.p50_ms / int8.p50_ms if int8.p50_ms > 0 else None,
        p50_ms={artifact.name: int8.p50_ms, mixed.name: mixed_bench.p50_ms},
    )
