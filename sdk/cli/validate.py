"""Commands that measure accuracy: validate, doctor, report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.cli._app import (
    EXIT_GATE,
    State,
    _emit,
    _progress,
    _run,
    _show_report,
    _size,
    cli,
    click,
    err_console,
    json_option,
    out_console,
    rich_table,
    shown,
)
from edgeship.records import Report
from edgeship.tasks import TASKS, delta_of, said

if TYPE_CHECKING:
    from edgeship.doctor.records import Diagnosis, Margins


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--reference",
    type=click.Path(exists=True),
    default=None,
    help="A float .tflite/.onnx model: measure the PATHS (model files made elsewhere) against it, "
    "without a manifest (needs --data).",
)
@click.option(
    "--data",
    default=None,
    help="Data to validate on (default: the data the conversion used, found through manifest.json).",
)
@click.option(
    "--preprocess", default=None, help="Preprocessing spec for --data (default: the one recorded at conversion)."
)
@click.option(
    "--task",
    type=click.Choice(["auto", *TASKS]),
    default=None,
    help="What the outputs mean (default: recorded at conversion, else detected).",
)
@click.option(
    "--max-drop",
    type=float,
    default=None,
    help="Fail (exit 2) when the headline figure falls more than "
    "this: accuracy points (classification), AUC points (anomaly detection), percent error growth "
    "(regression).",
)
@click.option(
    "--min-agreement", type=float, default=None, help="Fail (exit 2) when agreement with float is below this fraction."
)
@click.option("--bench", "bench_runs", type=int, default=0, help="Also benchmark each artifact with this many runs.")
@click.option(
    "--trust-code", is_flag=True, help="Load a float reference with Lambda layers: its stored Python code runs."
)
@json_option
def validate(
    paths: tuple[str, ...],
    reference: str | None,
    data: str | None,
    preprocess: str | None,
    task: str | None,
    max_drop: float | None,
    min_agreement: float | None,
    bench_runs: int,
    trust_code: bool,
) -> None:
    """Measure every artifact in a converted folder against the float reference, or (with
    --reference) model files made elsewhere against their float model.

    \b
    edgeship validate OUT          writes OUT/report.json, OUT/report.html and OUT/bundle
    edgeship validate --reference float.tflite vendor.int8.tflite --data images.npz
    """
    from edgeship.errors import BadInputError
    from edgeship.validation import validate as run
    from edgeship.validation import validate_files

    def body() -> Any:
        bench = {"threads": 1, "warmup": 10, "runs": bench_runs} if bench_runs > 0 else None
        if reference is not None:
            return validate_files(
                reference,
                paths,
                data=data,
                preprocess=preprocess,
                task=task,
                max_drop=max_drop,
                min_agreement=min_agreement,
                benchmark=bench,
                progress=_progress,
            )
        if len(paths) != 1 or not Path(paths[0]).is_dir():
            raise BadInputError(
                f"validate takes one converted folder, or model files with --reference FLOAT_MODEL; "
                f"received {list(paths)}"
            )
        return run(
            paths[0],
            data=data,
            max_drop=max_drop,
            min_agreement=min_agreement,
            preprocess=preprocess,
            task=task,
            benchmark=bench,
            trust_code=trust_code,
            progress=_progress,
        )

    _show_report(_run(body))


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--data", default=None, help="Dataset (default: the one in manifest.json).")
@click.option(
    "--max-drop",
    type=float,
    default=None,
    help="Find the smallest artifact within this many points of float: recalibration, then cross-layer "
    "equalization, int16, then the most harmful layers in float (Core ML: their weights "
    "uncompressed); write it as <model>.<precision>-<method> (exit 2 when none fits).",
)
@click.option(
    "--artifact",
    default=None,
    help="Examine one artifact, e.g. onnx:int8 or coreml:pal4 (default: every int8 or compressed one).",
)
@click.option("--samples", default=200, show_default=True, help="Test samples compared layer by layer.")
@click.option("--max-layers", default=8, show_default=True, help="Most layers tried in float.")
@click.option("--runs", default=200, show_default=True, help="Timed runs for the latency cost.")
@click.option(
    "--equalize/--no-equalize",
    default=True,
    show_default=True,
    help="Try cross-layer equalization before keeping layers in float (Keras models).",
)
@click.option(
    "--int16/--no-int16",
    default=True,
    show_default=True,
    help="Try int16 activations for the worst tensors (ONNX Runtime's QDQ overrides; TFLite: "
    "ai-edge-quantizer) before float.",
)
@click.option(
    "--calibration-samples", default=1000, show_default=True, help="Most training samples recovery recalibrates with."
)
@click.option(
    "--time-budget",
    type=float,
    default=None,
    help="Seconds per artifact after which recovery tries no further model (default: no limit).",
)
@click.option(
    "--qat",
    "qat_epochs",
    type=int,
    default=0,
    show_default=True,
    metavar="EPOCHS",
    help="Last resort: quantization-aware fine-tuning for this many epochs (tf_keras models; the float "
    "model's outputs teach it, no labels needed).",
)
@json_option
def doctor(
    folder: str,
    data: str | None,
    max_drop: float | None,
    artifact: str | None,
    samples: int,
    max_layers: int,
    runs: int,
    equalize: bool,
    calibration_samples: int,
    time_budget: float | None,
    qat_epochs: int,
    int16: bool,
) -> None:
    """Find the layers int8 (or Core ML weight compression) hurts in FOLDER's artifacts, say why,
    and with --max-drop write a mixed-precision artifact that keeps the most harmful ones in float
    (FOLDER/doctor.json)."""
    from edgeship.doctor import diagnose

    result = _run(
        lambda: diagnose(
            folder,
            data=data,
            max_drop=max_drop,
            artifact=artifact,
            samples=samples,
            max_layers=max_layers,
            runs=runs,
            equalize=equalize,
            calibration_samples=calibration_samples,
            time_budget=time_budget,
            qat_epochs=qat_epochs,
            int16=int16,
            progress=_progress,
        )
    )
    if State.json:
        # doctor.json keeps layers per artifact; `layers` up front are the worst-hit artifact's, worst first
        worst = min(result.artifacts, key=delta_of, default=None)
        layers = [{"artifact": worst.artifact, **layer.to_dict()} for layer in worst.layers] if worst else []
        _emit({"layers": layers, **result.to_dict()})
    elif not State.quiet:
        for diagnosis in result.artifacts:
            _show_diagnosis(diagnosis)
        for line in result.skipped:
            out_console.print(f"[yellow]not examined[/]: {shown(line)}", highlight=False)
    failed = [d.artifact for d in result.artifacts if d.recovery is not None and not d.recovery.within_drop]
    if failed:
        err_console.print(
            f"[bold red]no artifact within --max-drop {max_drop:g}:[/] {shown(', '.join(failed))}", highlight=False
        )
        sys.exit(EXIT_GATE)


def _show_diagnosis(d: Diagnosis, top: int = 10) -> None:
    table = rich_table.Table(
        title=shown(f"{d.artifact}: {said(d)} vs float, layers worst first"),
        caption="SQNR dB: median channel, whole tensor, whole tensor against the all-float model",
    )
    for column in ("layer", "op", "SQNR", "tensor", "vs float", "range", "max/p99.9", "spread"):
        table.add_column(column, justify="left" if column in ("layer", "op") else "right", no_wrap=True)
    for layer in d.layers[:top]:
        model_db = "—" if layer.model_sqnr_db is None else f"{layer.model_sqnr_db:.1f}"
        table.add_row(
            shown(layer.name),
            shown(layer.op.lower()),
            f"{layer.sqnr_db:.1f}",
            f"{layer.tensor_sqnr_db:.1f}",
            model_db,
            f"{layer.range_min:.3g}…{layer.range_max:.3g}",
            f"{layer.outlier_ratio:.1f}x",
            f"{layer.channel_spread:.1f}x",
        )
    out_console.print(table)
    if d.margins is not None:
        out_console.print(f"  {shown(_margin_line(d.margins))}", highlight=False)
    for advice in d.advice:  # the verdicts' messages open with their kind already
        text = advice.message.removeprefix(f"{advice.kind}: ")
        out_console.print(f"  [yellow]{shown(advice.kind)}[/]: {shown(text)}", highlight=False)
    r = d.recovery
    if r is None:
        return
    if r.steps:
        out_console.print(f"  candidates chosen on the {r.chosen_on} split:", highlight=False)
    for step in r.steps:
        verdict = "[green]fits[/]" if step.within_drop else "[red]too far[/]"
        kept = (
            f"float {', '.join(step.float_layers)}"
            if step.float_layers
            else f"{step.method}: "
            + (", ".join(f"{k}={v}" for k, v in step.changes.items()) or "the artifact's settings, rebuilt")
        )
        out_console.print(f"  {shown(kept)}: {shown(said(step))}, {_size(step.size_bytes)} {verdict}", highlight=False)
    if r.test is not None:
        agreement = "" if r.test.agreement is None else f", agreement {r.test.agreement:.1%}"
        out_console.print(f"  chosen model on the test split: {shown(said(r.test))}{agreement}", highlight=False)
        if r.test.margins is not None:
            out_console.print(f"  {shown(_margin_line(r.test.margins))}", highlight=False)
    if r.artifact is not None:
        p50 = f", p50 x{r.p50_ratio:.2f}" if r.p50_ratio is not None else ""
        held = (
            (
                f"{len(r.float_ops)} of {r.compute_ops} compute ops float"
                + (f" ({', '.join(r.float_layers)})" if r.float_layers else "")
            )
            if r.compute_ops is not None
            else ""
        )
        out_console.print(
            f"  [bold]{shown(r.artifact.name)}[/] "
            + shown(
                f"({r.method}) -> {r.artifact.path}: size "
                f"x{r.size_ratio:.2f}{p50} vs {d.artifact}; in the file: {held}. {r.note}"
            ),
            highlight=False,
        )
    elif r.note:
        out_console.print(f"  {'' if r.within_drop else '[red]'}{shown(r.note)}", highlight=False)


def _margin_line(m: Margins) -> str:
    """``agreement by float top-2 margin (test): <0.1 61.5% of 13 · 0.1-0.25 92.0% of 25 · …``"""
    parts = []
    for b in m.bins:
        span = f"<{b.high:g}" if b.low == 0 else f"≥{b.low:g}" if b.high >= 1 else f"{b.low:g}-{b.high:g}"
        share = "—" if b.agreement is None else f"{b.agreement:.1%}"
        parts.append(f"{span} {share} of {b.samples}")
    return f"agreement by float top-2 margin ({m.split}): " + " · ".join(parts)


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@json_option
def report(folder: str) -> None:
    """Render FOLDER/report.json into FOLDER/report.html and show it as a table."""
    from edgeship import report as html_page

    result = _run(lambda: Report.load(folder))
    page = _run(lambda: html_page.write(folder, result))
    _show_report(result)
    if not (State.json or State.quiet):
        out_console.print(f"report page: {shown(page)}", highlight=False)
