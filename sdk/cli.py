"""The ``edgeship`` command: a thin click + rich layer over the Python API.

Exit codes: 0 ok, 1 error (one line on stderr; ``--debug`` shows the traceback), 2 accuracy gate
failed. Every command takes ``--json`` and then prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from edgeship._deps import require

click = require("click", "use the edgeship command line")
rich_console = require("rich.console", "use the edgeship command line")
rich_table = require("rich.table", "use the edgeship command line")

from edgeship import __version__  # noqa: E402
from edgeship.errors import AccuracyGateError, EdgeshipError  # noqa: E402
from edgeship.records import Report  # noqa: E402

out_console = rich_console.Console(width=max(100, rich_console.Console().width))
err_console = rich_console.Console(stderr=True, soft_wrap=True)


class State:
    debug = False
    quiet = False
    json = False


def _progress(stage: str, detail: str) -> None:
    if not (State.quiet or State.json):
        err_console.print(f"[bold cyan]{stage:>9}[/] {detail}")


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, allow_nan=False))


def _run(fn: Callable[[], Any]) -> Any:
    """Run a command body: EdgeshipError -> one line and exit 1 (2 for a failed gate)."""
    try:
        return fn()
    except AccuracyGateError as exc:
        if exc.report is not None:
            _show_report(exc.report)
        err_console.print(f"[bold red]gate failed:[/] {exc}", highlight=False)
        sys.exit(2)
    except EdgeshipError as exc:
        if State.debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: nothing half-written was kept")
        sys.exit(130)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def report_table(report: Report) -> Any:
    table = rich_table.Table(title=f"{report.model} on {report.dataset}: float reference accuracy "
                             f"{(report.reference_accuracy or 0) * 100:.2f}%")
    for column in ("artifact", "size", "accuracy", "Δ pts", "agree", "max err", "p50", "evaluated with"):
        table.add_column(column, justify="left" if column in ("artifact", "evaluated with") else "right",
                         no_wrap=column != "evaluated with")
    for e in report.artifacts:
        v, b = e.validation, e.benchmark
        verdict = "" if e.passed is None else (" [green]pass[/]" if e.passed else " [red]FAIL[/]")
        table.add_row(
            e.name, _size(e.size_bytes),
            f"{v.accuracy * 100:.2f}%" if v else "—",
            f"{v.accuracy_delta_pts:+.2f}{verdict}" if v else "—",
            f"{v.agreement * 100:.1f}%" if v else "—",
            f"{v.max_abs_error:.2g}" if v else "—",
            f"{b.p50_ms * 1000:.0f} µs" if b else "—",
            e.evaluated_with if v else e.status,
        )
    return table


def _show_report(report: Report) -> None:
    if State.json:
        _emit(report.to_dict())
    elif not State.quiet:
        out_console.print(report_table(report))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeship")
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
@click.option("--quiet", "-q", is_flag=True, help="Print only results and errors.")
def cli(debug: bool, quiet: bool) -> None:
    """edgeship: train compact models, convert them for phones (TFLite, ONNX, Core ML),
    validate accuracy after quantization, and benchmark them on edge devices.

    Start with:  edgeship quickstart
    """
    State.debug, State.quiet, State.json = debug, quiet, False
    if not debug:
        warnings.filterwarnings("ignore")  # the stack's deprecation chatter is not the user's concern
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(name)s: %(message)s")
    for noisy in ("tensorflow", "absl", "h5py", "coremltools", "tf2onnx", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.ERROR)


def json_option(fn: Callable) -> Callable:
    def set_json(ctx: Any, param: Any, value: bool) -> bool:
        State.json = value
        return value

    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=set_json,
                        is_eager=True, help="Print one JSON document on stdout.")(fn)


@cli.command()
@click.option("--out", default="edgeship-out", show_default=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--epochs", default=40, show_default=True, help="Float training epochs (early stopping may end sooner).")
@click.option("--runs", default=200, show_default=True, help="Timed benchmark runs per artifact.")
@click.option("--max-drop", default=1.0, show_default=True, help="Accuracy gate: max drop in points vs float.")
@json_option
def quickstart(out: str, epochs: int, runs: int, max_drop: float) -> None:
    """Train, convert, validate and benchmark a small CNN on built-in digits data."""
    from edgeship.pipeline import quickstart as run

    report = _run(lambda: run(out, epochs=epochs, runs=runs, max_drop=max_drop, progress=_progress))
    _show_report(report)


@cli.command()
@click.option("--model", "model", required=True, help="Zoo model (see list-models).")
@click.option("--data", required=True, help="Built-in dataset name or a .npz/.csv file or image folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the model and training.json.")
@click.option("--epochs", default=30, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--qat", is_flag=True, help="Quantization-aware fine-tune after float training.")
@click.option("--qat-epochs", default=3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@json_option
def train(model: str, data: str, out: str, epochs: int, batch_size: int, qat: bool, qat_epochs: int, seed: int) -> None:
    """Train a zoo model and save it with its training record."""
    from edgeship.trainers import train as run

    _progress("train", f"{model} on {data}")
    record = _run(lambda: run(model, data, out=out, epochs=epochs, batch_size=batch_size, qat=qat,
                              qat_epochs=qat_epochs, seed=seed))
    if State.json:
        _emit(record.to_dict())
    elif not State.quiet:
        out_console.print(f"{record.model} ({record.recipe}) on {record.dataset}: test accuracy "
                          f"{record.test_accuracy * 100:.2f}% after {record.epochs_run} epochs, {record.seconds:.1f} s, "
                          f"{record.params} parameters, {record.macs} MACs -> {out}")


@cli.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--to", "targets", required=True, help="Comma-separated format:precision, e.g. tflite:int8,onnx:fp32,coreml:fp16.")
@click.option("--data", default=None, help="Dataset for calibration and the input check.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@json_option
def convert(model: str, targets: str, data: str | None, out: str) -> None:
    """Convert a trained model to TFLite, ONNX and Core ML artifacts."""
    from edgeship.converters import convert as run

    manifest = _run(lambda: run(model, targets, data=data, out=out,
                                on_artifact=lambda a: _progress("convert", f"{a.name} -> {a.path}")))
    if State.json:
        _emit(manifest.to_dict())
    elif not State.quiet:
        for a in manifest.artifacts:
            out_console.print(f"{a.name:<18} {_size(a.size_bytes):>10}  {Path(out) / a.path}")


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--data", default=None, help="Dataset to validate on (default: the one in manifest.json).")
@click.option("--max-drop", type=float, default=None, help="Fail (exit 2) when accuracy drops more points than this.")
@click.option("--min-agreement", type=float, default=None, help="Fail (exit 2) when agreement with float is below this fraction.")
@json_option
def validate(folder: str, data: str | None, max_drop: float | None, min_agreement: float | None) -> None:
    """Measure every artifact in FOLDER against the float reference."""
    from edgeship.pipeline import validate as run

    report = _run(lambda: run(folder, data=data, max_drop=max_drop, min_agreement=min_agreement, progress=_progress))
    _show_report(report)


@cli.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--threads", default="1", show_default=True, help="Interpreter threads; a comma list sweeps them.")
@click.option("--warmup", default=20, show_default=True)
@click.option("--runs", default=200, show_default=True)
@click.option("--min-seconds", default=0.0, show_default=True)
@click.option("--batch", default=1, show_default=True)
@json_option
def bench(model: str, threads: str, warmup: int, runs: int, min_seconds: float, batch: int) -> None:
    """Benchmark one artifact: init, first inference, warm-up, latency percentiles, memory."""
    from edgeship.runtimes.benchmark import benchmark

    def body() -> list[Any]:
        counts = _thread_counts(threads)
        return [benchmark(model, threads=t, warmup=warmup, runs=runs, min_seconds=min_seconds, batch=batch) for t in counts]

    results = _run(body)
    if State.json:
        _emit(results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results])
        return
    table = rich_table.Table(title=f"{model}")
    for column in ("threads", "init ms", "first ms", "count", "mean ms", "p50 ms", "p90 ms", "p99 ms", "throughput/s", "peak RSS"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(str(r.threads), f"{r.init_ms:.2f}", f"{r.first_ms:.3f}", str(r.count), f"{r.mean_ms:.4f}",
                      f"{r.p50_ms:.4f}", f"{r.p90_ms:.4f}", f"{r.p99_ms:.4f}", f"{r.throughput:.0f}", _size(r.peak_rss_bytes))
    out_console.print(table)
    out_console.print(f"{results[0].runtime} {results[0].runtime_version} on {results[0].env.get('cpu')}")


def _thread_counts(text: str) -> list[int]:
    from edgeship.errors import BadInputError

    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise BadInputError(f"--threads takes integers like 1,2,4; received {text!r}") from exc
    if not counts or min(counts) < 1:
        raise BadInputError(f"--threads takes positive integers; received {text!r}")
    return counts


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@json_option
def report(folder: str) -> None:
    """Show the report.json of FOLDER as a table."""
    result = _run(lambda: Report.load(folder))
    _show_report(result)


@cli.command("list-models")
@json_option
def list_models() -> None:
    """The model zoo."""
    from edgeship.trainers.zoo import MODELS

    docs = {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in MODELS.items()}
    if State.json:
        _emit(docs)
    else:
        for name, doc in docs.items():
            out_console.print(f"[bold]{name:<14}[/] {doc}")


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


def main(argv: list[str] | None = None) -> None:
    """Entry point. Usage errors exit 1 like every other error: 2 means a failed accuracy gate."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        code = cli.main(args=argv, prog_name="edgeship", standalone_mode=False)
    except click.ClickException as exc:
        err_console.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False)
        code = 1
    except click.Abort:
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
