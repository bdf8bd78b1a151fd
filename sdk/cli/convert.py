"""Commands that convert: convert, list-formats."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeship.cli._app import (
    State,
    _emit,
    _given,
    _int_list,
    _progress,
    _run,
    _size,
    cli,
    click,
    json_option,
    out_console,
    shown,
)
from edgeship.formats import FORMATS
from edgeship.tasks import TASKS


def format_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """A click option for every convert option a format names (``Format.options``), once each: the
    first format naming one gives its help."""
    seen: dict[str, Any] = {}
    for fmt in FORMATS.all():
        for option in fmt.options:
            seen.setdefault(option.name, option)
    for option in reversed(list(seen.values())):
        if option.kind == "flag":
            command = click.option(option.flag, option.name, is_flag=True, help=option.help)(command)
        elif option.kind == "switch":
            command = click.option(
                f"{option.flag}/--no-{option.flag[2:]}", option.name, default=None, help=option.help
            )(command)
        elif isinstance(option.kind, tuple):
            command = click.option(
                option.flag, option.name, type=click.Choice(option.kind), default=None, help=option.help
            )(command)
        else:
            command = click.option(
                option.flag, option.name, type={"int": int}.get(option.kind, str), default=None, help=option.help
            )(command)
    return command


@cli.command()
@click.argument("model", type=click.Path(exists=True))
@click.option(
    "--to", "targets", required=True, help="Comma-separated format:precision, e.g. tflite:int8,onnx:fp32,coreml:fp16."
)
@click.option(
    "--data",
    default=None,
    help="Data for calibration and validation: a built-in name or a .npz/.csv "
    "file or image folder (recorded, so validate finds it again).",
)
@click.option(
    "--preprocess",
    default=None,
    help="How stored arrays become model inputs: none, unit (x/255), imagenet, "
    "symmetric, or items like scale=0.003921,mean=0.5/0.5/0.5,std=0.25/0.25/0.25,layout=nchw "
    "(default: unit for integer images, else none).",
)
@click.option(
    "--input-shape",
    default=None,
    help="Fix the model's open input dimensions, e.g. 96,96,3 (default: the data's sample shape).",
)
@click.option(
    "--task",
    type=click.Choice(["auto", *TASKS]),
    default=None,
    help="What the outputs mean (default: detected from the outputs and the data).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@format_options
@click.option("--trust-code", is_flag=True, help="Load model files with Lambda layers: their stored Python code runs.")
@json_option
def convert(
    model: str,
    targets: str,
    data: str | None,
    preprocess: str | None,
    input_shape: str | None,
    task: str | None,
    out: str,
    trust_code: bool,
    **given: Any,
) -> None:
    """Convert a trained model to TFLite, ONNX and Core ML artifacts.

    MODEL is a folder written by 'edgeship train', a SavedModel folder, a .keras/.h5 file, a .onnx
    file (for onnx:int8 / onnx:dynamic) or a PyTorch .pt2 file (torch.export.save; images NCHW, so
    --preprocess layout=nchw for NHWC data). Run 'edgeship list-formats' for every target.
    """
    from edgeship.converters import convert as run

    # each format gets the options it names (edgeship.formats: Format.options), those given only
    options = {
        fmt.name: _given(
            {o.name: given.get(o.name) or None if o.kind == "flag" else given.get(o.name) for o in fmt.options}
        )
        for fmt in FORMATS.all()
    }
    manifest = _run(
        lambda: run(
            model,
            targets,
            data=data,
            out=out,
            options=options,
            trust_code=trust_code,
            preprocess=preprocess,
            task=task,
            input_shape=_int_list(input_shape, "--input-shape") if input_shape else None,
            on_artifact=lambda a: _progress("convert", f"{a.name} -> {a.path}"),
        )
    )
    if State.json:
        _emit(manifest.to_dict())
    elif not State.quiet:
        for a in manifest.artifacts:
            out_console.print(shown(f"{a.name:<18} {_size(a.size_bytes):>10}  {Path(out) / a.path}"), highlight=False)
            for note in a.notes:
                out_console.print(f"  [yellow]note:[/] {shown(note)}", highlight=False)


@cli.command("list-formats")
@json_option
def list_formats() -> None:
    """Every format:precision convert can make."""
    from edgeship.converters import FORMATS, precisions

    table = {fmt: precisions(fmt) for fmt in FORMATS}
    if State.json:
        _emit(table)
    else:
        for fmt, items in table.items():
            for precision, doc in items.items():
                out_console.print(f"[bold]{fmt}:{precision:<14}[/] {doc}")
