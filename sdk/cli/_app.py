"""What every command shares: the click group, the consoles, progress, --json, and the one place
where errors become exit codes (0 ok, 1 a clear error, 2 an accuracy gate failed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from edgeship._deps import quiet_native, require

if TYPE_CHECKING:  # imported through require below, which says how to install them
    from click import Context, Parameter
    from rich.progress import Progress, TaskID
    from rich.table import Table

click = require("click", "use the edgeship command line")
rich_console = require("rich.console", "use the edgeship command line")
rich_table = require("rich.table", "use the edgeship command line")
rich_markup = require("rich.markup", "use the edgeship command line")

from edgeship._version import __version__  # noqa: E402
from edgeship.errors import AccuracyGateError, EdgeshipError  # noqa: E402
from edgeship.records import Report  # noqa: E402

out_console = rich_console.Console(width=max(100, rich_console.Console().width))
err_console = rich_console.Console(stderr=True, soft_wrap=True)


def shown(value: object) -> str:
    """``value`` as the terminal must show it: verbatim, never read as rich markup.

    Every string that comes from a file, a model or the command line (paths, class, layer and
    tensor names, messages that quote them) goes through here before a console or table sees it:
    ``[/]`` in a class name is text, not a closing tag."""
    return rich_markup.escape(str(value))


#: exit codes, the same for every command: the library's errors carry none
EXIT_ERROR = 1
EXIT_GATE = 2


class State:
    debug = False
    quiet = False
    json = False


class _ProgressView:
    """Progress on stderr: bars on a terminal, one line per finished step elsewhere (logs, CI)."""

    def __init__(self) -> None:
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, detail: str, done: int | None = None, total: int | None = None) -> None:
        if State.quiet or State.json:
            return
        detail = shown(detail)  # names and paths from files and the command line: never markup
        if total is None or not err_console.is_terminal:
            if total is None or done == total:
                err_console.print(f"[bold cyan]{stage:>9}[/] {detail}", highlight=False)
            return
        if self.bars is None:
            progress = require("rich.progress")
            self.bars = progress.Progress(
                progress.TextColumn("[bold cyan]{task.fields[stage]:>9}"),
                progress.BarColumn(),
                progress.MofNCompleteColumn(),
                progress.TextColumn("{task.description}"),
                progress.TimeElapsedColumn(),
                console=err_console,
            )
            self.bars.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(detail, total=total, stage=stage)
        self.bars.update(self.tasks[stage], completed=done, total=total, description=detail)

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()
        self.bars, self.tasks = None, {}


_progress = _ProgressView()


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, allow_nan=False))


def _run(fn: Callable[[], Any]) -> Any:
    """Run a command body: EdgeshipError -> one line and exit 1 (2 for a failed gate)."""
    try:
        return fn()
    except AccuracyGateError as exc:
        _progress.stop()
        if exc.report is not None:
            _show_report(exc.report)
        err_console.print(f"[bold red]gate failed:[/] {shown(exc)}", highlight=False)
        sys.exit(EXIT_GATE)
    except EdgeshipError as exc:
        if State.debug:
            raise
        err_console.print(f"[bold red]error:[/] {shown(exc)}", highlight=False)
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # not one of edgeship's errors: still one line, and the way to the traceback
        if State.debug:
            raise
        _progress.stop()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        err_console.print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {shown(first)} "
            "(this is a bug in edgeship; --debug shows the traceback)",
            highlight=False,
        )
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:  # the transaction rolled back on its way here
        _progress.stop()
        interrupted()
    finally:
        _progress.stop()


def interrupted() -> None:
    """Ctrl-C: one line and exit status 130. The process ends without the interpreter's teardown:
    TensorFlow, interrupted inside an op, can crash there (a segfault after the line was printed)."""
    err_console.print("[bold red]interrupted[/]: nothing half-written was kept", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def report_table(report: Report) -> Table:
    from edgeship.tasks import change_text, value_text

    heads = [e.validation.headline for e in report.artifacts if e.validation and e.validation.headline]
    head = heads[0] if heads else None
    name, unit = (head.name, head.unit) if head else ("accuracy", "points")
    reference = value_text(unit, head.reference if head else report.reference_accuracy)
    task = f", {report.task}" if report.task else ""
    table = rich_table.Table(
        title=shown(f"{report.model} on {report.dataset}{task}: float reference {name} {reference}")
    )
    delta_column = "Δ pts" if unit == "points" else f"Δ ({unit})"
    for column in ("artifact", "size", name, delta_column, "agree", "max err", "p50", "evaluated with"):
        table.add_column(
            column,
            justify="left" if column in ("artifact", "evaluated with") else "right",
            no_wrap=column != "evaluated with",
        )
    for e in report.artifacts:
        v, b = e.validation, e.benchmark
        h = v.headline if v else None
        verdict = "" if e.passed is None else (" [green]pass[/]" if e.passed else " [red]FAIL[/]")
        table.add_row(
            shown(e.name),
            _size(e.size_bytes),
            value_text(h.unit, h.value) if h else "—",
            f"{change_text(h)}{verdict}" if h else (verdict.strip() or "—"),
            f"{v.agreement * 100:.1f}%" if v and v.agreement is not None else "—",
            f"{v.max_abs_error:.2g}" if v else "—",
            f"{b.p50_ms * 1000:.0f} µs" if b else "—",
            shown(e.evaluated_with if v else e.status),
        )
    return table


def _show_report(report: Report) -> None:
    if State.json:
        _emit(report.to_dict())
    elif not State.quiet:
        out_console.print(report_table(report))
        for note in report.notes:
            err_console.print(f"[bold yellow]note:[/] {shown(note)}", highlight=False)


@contextlib.contextmanager
def _terminal(debug: bool) -> Iterator[None]:
    """What the terminal shows while one command runs: without --debug, native libraries' logs
    are silenced (``quiet_native``) and so is the stack's deprecation chatter; what a converter
    warns about the model is kept in the artifact's notes and printed by `convert`. Both end with
    the command: the library itself never silences anything."""
    with quiet_native(not debug), warnings.catch_warnings():
        if not debug:
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
        yield


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
    click.get_current_context().with_resource(_terminal(debug))  # left when the command ends
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(name)s: %(message)s")
    for noisy in (
        "tensorflow",
        "absl",
        "h5py",
        "coremltools",
        "tf2onnx",
        "onnxruntime",
        "torch",
        "torchao",
        "jax",
        "litert_torch",
    ):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.ERROR)


def json_option(fn: Callable) -> Callable:
    def set_json(ctx: Context, param: Parameter, value: bool) -> bool:
        State.json = value
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        is_eager=True,
        help="Print one JSON document on stdout.",
    )(fn)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    from edgeship.errors import BadInputError

    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise BadInputError(f"{option} takes integers like 64,32; received {text!r}") from exc


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _positive_ints(text: str, option: str, example: str) -> list[int]:
    """A comma list of positive integers from a CLI option, or one BadInputError line."""
    from edgeship.errors import BadInputError

    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise BadInputError(f"{option} takes integers like {example}; received {text!r}") from exc
    if not counts or min(counts) < 1:
        raise BadInputError(f"{option} takes positive integers; received {text!r}")
    return counts


def _thread_counts(text: str) -> list[int]:
    return _positive_ints(text, "--threads", "1,2,4")
