"""The doctor's flow: for each int8 artifact, score it, probe its layers, advise, and recover."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeship._deps import quiet_native_stderr
from edgeship.doctor.advice import advise
from edgeship.doctor.layers import Context, Probe, ranked
from edgeship.doctor.margins import strata
from edgeship.doctor.records import Diagnosis, DoctorReport, LayerError, Margins, Recovery
from edgeship.doctor.recovery import NO_VAL, recover
from edgeship.errors import BadArtifactError, BadInputError, ConversionError, EdgeshipError, UnsupportedModelError
from edgeship.formats import FORMATS, DoctorProbe
from edgeship.progress import Progress, log_progress
from edgeship.records import AccuracyDelta, Artifact, Gate, Manifest, verified_path
from edgeship.runtimes._session import in_layout
from edgeship.tasks import Scorer, align, parse_task, said
from edgeship.validation import dataset_for, float_outputs

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.data import Dataset

__all__ = ["diagnose", "doctored", "NO_VAL"]


def doctored() -> set[tuple[str, str]]:
    """The (format, precision) pairs the doctor examines: each format's doctor module names its
    own (``DOCTORED``; int8 TFLite and ONNX, Core ML's compressed weights)."""
    return {
        (fmt.name, precision)
        for fmt in FORMATS.all()
        if (probe := fmt.doctor_module()) is not None
        for precision in probe.DOCTORED
    }


def _probe(fmt: str) -> DoctorProbe:
    probe = FORMATS.get(fmt).doctor_module()
    if probe is None:
        raise UnsupportedModelError(f"the doctor does not examine {fmt} files")
    return probe


def diagnose(
    folder: str | Path,
    *,
    data: Dataset | str | os.PathLike | None = None,
    max_drop: float | None = None,
    artifact: str | None = None,
    calibration: np.ndarray | Sequence[np.ndarray] | None = None,
    samples: int = 200,
    max_layers: int = 8,
    runs: int = 200,
    equalize: bool = True,
    calibration_samples: int = 1000,
    time_budget: float | None = None,
    qat_epochs: int = 0,
    int16: bool = True,
    progress: Progress = log_progress,
) -> DoctorReport:
    """Diagnose the int8 artifacts of ``folder`` (written by ``edgeship.convert``) and, with
    ``max_drop`` (accuracy points), write a mixed-precision artifact within it.

        >>> report = diagnose("out", data="digits", max_drop=1.0)         # doctest: +SKIP
        >>> report.artifacts[0].recovery.float_layers                      # doctest: +SKIP

    ``artifact`` picks one artifact by name; ``calibration`` (the samples the artifacts were
    calibrated with, when known) sharpens the normalisation check; ``samples`` test samples feed
    the per-layer comparison; at most ``max_layers`` layers are tried in float; ``runs`` timed
    runs measure the latency cost. Recovery tries recalibration (up to ``calibration_samples``
    training samples), cross-layer equalization (unless ``equalize`` is False), int16 activations
    (unless ``int16`` is False) and then float
    layers, then (with ``qat_epochs``) quantization-aware fine-tuning of a tf_keras source, and
    stops trying after ``time_budget`` seconds per artifact. Writes
    ``folder/doctor.json`` and returns the report.
    """
    from edgeship._version import __version__

    folder = Path(folder)
    gate = Gate(max_drop=max_drop)  # validates max_drop before any work
    _check_counts(
        samples=samples,
        max_layers=max_layers,
        runs=runs,
        calibration_samples=calibration_samples,
        qat_epochs=qat_epochs,
    )
    if time_budget is not None and (
        isinstance(time_budget, bool) or not isinstance(time_budget, (int, float)) or not time_budget > 0
    ):
        raise BadInputError(f"time_budget is seconds, a number above 0; received {time_budget!r}")
    from edgeship import _io

    if not folder.is_dir():
        raise BadInputError(f"no folder at {folder}: run edgeship convert first")
    Manifest.load(folder)  # a folder convert never wrote is refused before anything is written into it
    # what it writes (recovered artifacts, the manifest, doctor.json) is one transaction (edgeship._io)
    with _io.transaction(folder, lambda: Manifest.recorded_names(folder) | {DoctorReport.file_name}):
        manifest = Manifest.load(folder)
        chosen = _choose(manifest, artifact)
        dataset = dataset_for(folder, manifest, data)
        reference = float_outputs(folder, manifest, dataset, "test", progress, "doctor")
        task = parse_task(manifest.task)
        scorer = Scorer.for_split(dataset, reference, task=task)
        context = Context(
            folder,
            manifest,
            dataset,
            scorer,
            gate,
            calibration,
            samples,
            max_layers,
            runs,
            progress,
            equalize=bool(equalize),
            calibration_samples=calibration_samples,
            time_budget=time_budget,
            qat_epochs=qat_epochs,
            int16=bool(int16),
        )
        if max_drop is not None:
            context.select, context.select_split, context.select_note = _selection(
                folder, manifest, dataset, task, scorer, progress
            )
        diagnoses, skipped = [], []
        for one in chosen:
            try:
                diagnoses.append(_diagnose_one(context, one))
            except UnsupportedModelError as exc:
                if artifact is not None or not getattr(_probe(one.format), "BEST_EFFORT", False):
                    raise
                # e.g. a Core ML package the numpy evaluator cannot run: the int8 artifacts are still examined
                skipped.append(f"{one.name}: {exc}")
                progress("doctor", f"{one.name} not examined: {exc}")
        report = DoctorReport(
            edgeship_version=__version__,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            model=manifest.model,
            dataset=dataset.name,
            dataset_fingerprint=dataset.fingerprint,
            max_drop=max_drop,
            artifacts=tuple(diagnoses),
            skipped=tuple(skipped),
        )
        report.save(folder)
        return report


def _selection(
    folder: Path, manifest: Manifest, dataset: Dataset, task: str | None, test: Scorer, progress: Progress
) -> tuple[Scorer | None, str, str]:
    """The scorer candidates are chosen with: the validation split, so that the test split, on
    which the chosen artifact is reported, plays no part in choosing it. Test where val is empty,
    or where val is judged by another figure than test (an autoencoder's anomaly labels may mark
    the test split only: its drop would be AUC points on test and error growth on val)."""
    from edgeship.converters import reference as _reference

    if not len(dataset.inputs("val")[0]):
        progress("doctor", NO_VAL)
        return None, "test", NO_VAL
    outputs = _reference.outputs(folder, manifest, dataset, split="val")
    val = Scorer.for_split(dataset, outputs, task=task, split="val")
    on_val, on_test = _headline_of(val), _headline_of(test)
    if on_val != on_test:
        why = (
            f"the validation split is judged by {on_val[0]} ({on_val[1]}), the test split by {on_test[0]} "
            f"({on_test[1]}): chosen and reported on test — the figures are optimistic"
        )
        progress("doctor", why)
        return None, "test", why
    progress("doctor", f"candidates chosen on {len(outputs[0])} validation samples, reported on test")
    return val, "val", ""


def _headline_of(scorer: Scorer) -> tuple[str, str]:
    """(name, unit) of the figure ``scorer`` judges by: the float model scored against itself."""
    head = scorer(scorer.reference).headline
    return (head.name, head.unit) if head is not None else ("accuracy", "points")


def _check_counts(**counts: object) -> None:
    for name, value in counts.items():
        least = 0 if name in ("max_layers", "qat_epochs") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise BadInputError(f"{name} must be an integer of at least {least}; received {value!r}")


def _choose(manifest: Manifest, name: str | None) -> tuple[Artifact, ...]:
    pairs = doctored()
    examined = tuple(a for a in manifest.artifacts if (a.format, a.precision) in pairs)
    if name is not None:
        chosen = manifest.get(name)
        if chosen not in examined:
            raise BadInputError(
                f"the doctor examines int8 and compressed artifacts "
                f"({', '.join(sorted(f'{f}:{p}' for f, p in pairs))}); received '{name}'"
            )
        return (chosen,)
    if not examined:
        raise BadInputError(
            f"the folder holds no int8 or compressed artifact to examine (artifacts: "
            f"{[a.name for a in manifest.artifacts]}); convert with --to tflite:int8,onnx:int8,coreml:pal4 first"
        )
    return examined


def _diagnose_one(ctx: Context, artifact: Artifact) -> Diagnosis:
    from edgeship.converters._source import resolve
    from edgeship.runtimes import load

    path = verified_path(ctx.folder, artifact)
    layout = artifact.settings.get("layout")  # each file fed in its own layout, from the same data
    with quiet_native_stderr():
        session = load(path)
        outputs = session.predict_outputs(in_layout(ctx.dataset.inputs("test"), layout))
        chosen = (
            outputs
            if ctx.select is None
            else session.predict_outputs(in_layout(ctx.dataset.inputs(ctx.select_split), layout))
        )
    score, baseline = ctx.scorer(outputs), ctx.select_scorer()(chosen)
    margins = strata(ctx.scorer.reference, align(ctx.scorer.reference, outputs), ctx.scorer.task, "test")
    ctx.progress("doctor", f"{artifact.name}: {said(score)}; comparing layers")
    ref = ctx.manifest.reference
    if ref is None:  # not reached: the float outputs came from it
        raise BadArtifactError(f"{ctx.folder}/manifest.json names no float reference; convert again to write one")
    source = resolve(ctx.folder / ref.path, ctx.manifest.model)
    if artifact.settings.get("equalized") is not None:  # made from the equalized model: probe and rebuild that
        from edgeship.converters import equalize

        source, _ = equalize.source(source, artifact.name)
    x = _model_inputs(ctx.dataset.inputs("test"), source, ctx.samples, artifact.name)
    try:
        probe = _probe(artifact.format).probe(source, artifact, path, x, ctx.dataset)
    except EdgeshipError:
        raise
    except Exception as exc:  # the debuggers raise their own types on models they cannot instrument
        raise ConversionError(
            f"the doctor could not compare {artifact.name} layer by layer: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        ) from exc
    try:
        layers = ranked(probe.layers)
        recovery = _recovery(ctx, artifact, path, source, probe, layers, baseline, margins)
    finally:
        probe.close()
    advice = advise(
        artifact,
        layers,
        probe.input_range,
        ctx.dataset,
        ctx.calibration,
        score,
        recovery,
        margins=margins,
        baseline=baseline,
        equalizable=source.keras is not None and not source.qat,
    )
    return Diagnosis(
        artifact=artifact.name,
        path=artifact.path,
        analysed_with=probe.analysed_with,
        samples=len(x[0]),
        accuracy=score.accuracy,
        reference_accuracy=score.reference_accuracy,
        accuracy_delta_pts=score.accuracy_delta_pts,
        agreement=score.agreement,
        sqnr_db=score.sqnr_db,
        layers=layers,
        advice=advice,
        recovery=recovery,
        headline=score.headline,
        margins=margins,
    )


def _recovery(
    ctx: Context,
    artifact: Artifact,
    path: Path,
    source: SourceModel,
    probe: Probe,
    layers: tuple[LayerError, ...],
    baseline: AccuracyDelta,
    margins: Margins | None,
) -> Recovery | None:
    """Recover when the artifact misses the drop on the split candidates are chosen on."""
    if ctx.gate.max_drop is None:
        return None
    if not ctx.gate.check(baseline):
        note = (
            f"{artifact.name} is already within {ctx.gate.max_drop:g} points on the {ctx.select_split} split; "
            "nothing to recover"
        )
        return Recovery(
            max_drop=float(ctx.gate.max_drop),
            within_drop=True,
            chosen_on=ctx.select_split,
            note=note if ctx.select is not None else f"{note}; {ctx.select_note or NO_VAL}",
        )
    return recover(ctx, artifact, path, source, probe, layers, margins)


def _model_inputs(test: tuple[np.ndarray, ...], source: SourceModel, samples: int, name: str) -> list[np.ndarray]:
    """The first ``samples`` test samples of every input, in the model's input order and each in
    the model's own dtype: uint8 pixels for a float model become floats, token ids stay integers."""
    specs = source.input_specs
    if len(specs) != len(test):
        raise BadInputError(
            f"{name}'s float reference takes {len(specs)} input(s); the data holds {len(test)} "
            "(x_test_0, x_test_1, … in the model's input order)"
        )
    return [np.asarray(a[:samples]).astype(dtype, copy=False) for a, (_, dtype) in zip(test, specs)]
