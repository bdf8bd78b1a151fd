"""The recovered artifact written beside the others, registered in manifest.json, read back and timed.

``recovery`` chooses the winner; here it becomes a file: ``<model>.<precision>-<method><suffix>``
(or the uniform precision it is), its record in the manifest, its float ops read back from the
file (``readback``), and its latency against the artifact it replaces where this host times both.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship import _io
from edgeship.doctor.layers import Context, Probe, leaf_names
from edgeship.doctor.records import Recovery
from edgeship.formats import FORMATS
from edgeship.records import Artifact, Manifest

if TYPE_CHECKING:
    from edgeship.converters._source import SourceModel
    from edgeship.doctor.readback import Precisions

__all__ = ["write", "registered"]


def write(
    ctx: Context,
    artifact: Artifact,
    path: Path,
    source: SourceModel,
    probe: Probe,
    chosen: Path,
    recovery: Recovery,
    made_with: dict[str, Any],
) -> Recovery:
    """Write ``<model>.<precision>-<method><suffix>``, read back its float ops, register it, and
    time it against the artifact it replaces."""
    from edgeship.converters import _artifact
    from edgeship.doctor import readback

    winner = recovery.test or next(s for s in recovery.steps if s.within_drop)
    # "precision": another uniform precision, written as convert writes it; else <precision>-<method>
    uniform = recovery.method == "precision"
    precision = winner.changes["precision"] if uniform else f"{artifact.precision}-{recovery.method}"
    final = ctx.folder / _artifact.file_name(source, precision, probe.suffix)
    known = leaf_names(source.float_keras()) or None
    # the doctor re-quantizes the float reference: a QAT artifact's route does not carry over; a
    # uniform precision keeps only the artifact's metadata (its made_with is the converter's record)
    settings = {
        k: v for k, v in artifact.settings.items() if k not in ("route", "qat") and (not uniform or k == "metadata")
    }
    settings.update(made_with)  # a rebuild's own record: its calibration samples and method, its equalized pairs
    settings.update(
        qat=False,
        method=recovery.method,
        changes=dict(winner.changes),
        made_from=artifact.name,
        made_by="edgeship doctor",
        max_drop=recovery.max_drop,
        chosen_on=recovery.chosen_on,
        accuracy_delta_pts=winner.accuracy_delta_pts,
        accuracy_split=winner.split,
        requested_float_layers=list(recovery.requested_float_layers),
    )
    name = f"{artifact.format}:{precision}"
    existing = next((a for a in Manifest.load(ctx.folder).artifacts if a.name == name), None)
    if uniform and existing is not None:
        # a precision the folder already holds (converted, or written by an earlier doctor run) is
        # not written over: other records may point at it, and a package is not byte-reproducible
        held = readback.read(ctx.folder / existing.path, known)
        recovery = dataclasses.replace(
            recovery,
            note=f"{recovery.note}; {existing.name} is already in the folder "
            "and was not written again (the figures above are of the "
            "doctor's own conversion to it)",
        )
        return registered(ctx, artifact, path, existing, held, recovery)
    if existing is not None:  # written again: its record goes first, so no record disagrees with its file
        Manifest.load(ctx.folder).without(existing.name).save(ctx.folder)
    with _io.staged(final, directory=chosen.is_dir()) as staged:
        if chosen.is_dir():
            shutil.copytree(chosen, staged, dirs_exist_ok=True)
        else:
            _io.write_bytes(staged, chosen.read_bytes())
        held = readback.read(staged, known)
        settings.update(
            float_layers=list(held.float_layers), float_ops=len(held.float_ops), compute_ops=held.compute_ops
        )
        recorded = getattr(FORMATS.get(artifact.format).converter_module(), "recorded_settings", None)
        if recorded is not None:  # as convert records the file: e.g. a package's compressed ops, read back
            settings.update(recorded(staged))
        written = _artifact.make(
            staged, ctx.folder, final=final, fmt=artifact.format, precision=precision, source=source, settings=settings
        )
    manifest = Manifest.load(ctx.folder).with_artifact(written)
    manifest.save(ctx.folder)
    return registered(ctx, artifact, path, written, held, recovery)


def registered(
    ctx: Context, artifact: Artifact, path: Path, written: Artifact, held: Precisions, recovery: Recovery
) -> Recovery:
    """``recovery`` with the artifact in the folder (``written``, read back as ``held``), timed
    against the one it replaces where this host runs both."""
    from edgeship.runtimes import timing
    from edgeship.runtimes.benchmark import compare

    timed, why = timing(path)
    kind = "compressed" if FORMATS.get(artifact.format).weights_only else "int8"
    ctx.progress(
        "doctor",
        f"{written.name} -> {written.path} ({held.compute_ops - len(held.float_ops)} of "
        f"{held.compute_ops} compute ops {kind}); "
        + (f"not timed: {why}" if not timed else f"timing it against {artifact.name}"),
    )
    recovery = dataclasses.replace(
        recovery,
        artifact=written,
        size_ratio=written.size_bytes / artifact.size_bytes,
        float_layers=held.float_layers,
        float_ops=held.float_ops,
        compute_ops=held.compute_ops,
    )
    if not timed:
        return dataclasses.replace(recovery, note=f"{recovery.note}; latency not measured: {why}")
    before, after = compare([path, ctx.folder / written.path], threads=1, warmup=10, runs=ctx.runs)
    return dataclasses.replace(
        recovery,
        p50_ratio=after.p50_ms / before.p50_ms if before.p50_ms > 0 else None,
        p50_ms={artifact.name: before.p50_ms, written.name: after.p50_ms},
    )
