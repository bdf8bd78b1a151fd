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
    os.environ["EDGESHIP_QUIET_NATIVE"] = "0" if debug else "1"
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
@click.option("--calibration-samples", type=int, default=None, help="Samples for full-integer calibration (100-500).")
@click.option("--calibrate-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
              help="ONNX Runtime static quantization calibration (default minmax).")
@click.option("--reduce-range/--no-reduce-range", default=None,
              help="ONNX int8: 7-bit weights (default: decided from this CPU's VNNI support).")
@click.option("--opset", type=int, default=None, help="ONNX opset (<= 18; default 17).")
@json_option
def convert(model: str, targets: str, data: str | None, out: str, calibration_samples: int | None,
            calibrate_method: str | None, reduce_range: bool | None, opset: int | None) -> None:
    """Convert a trained model to TFLite, ONNX and Core ML artifacts.

    MODEL is a folder written by 'edgeship train', a SavedModel folder, a .keras/.h5 file, or a
    .onnx file (for onnx:int8 / onnx:dynamic). Run 'edgeship list-formats' for every target.
    """
    from edgeship.converters import convert as run

    common = {"calibration_samples": calibration_samples}
    onnx = {"calibrate_method": calibrate_method, "reduce_range": reduce_range, "opset": opset}
    options = {"tflite": _given(common), "onnx": _given({**common, **onnx}), "coreml": {}}
    manifest = _run(lambda: run(model, targets, data=data, out=out, options=options,
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
@click.option("--bench", "bench_runs", type=int, default=0, help="Also benchmark each artifact with this many runs.")
@json_option
def validate(folder: str, data: str | None, max_drop: float | None, min_agreement: float | None, bench_runs: int) -> None:
    """Measure every artifact in FOLDER against the float reference.

    Writes FOLDER/report.json, FOLDER/report.html and the validation bundle FOLDER/bundle.
    """
    from edgeship.pipeline import validate as run

    bench = {"threads": 1, "warmup": 10, "runs": bench_runs} if bench_runs > 0 else None
    report = _run(lambda: run(folder, data=data, max_drop=max_drop, min_agreement=min_agreement,
                              benchmark=bench, progress=_progress))
    _show_report(report)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--threads", default="1", show_default=True, help="Interpreter threads; a comma list sweeps them.")
@click.option("--warmup", default=20, show_default=True, help="Untimed runs after the first inference.")
@click.option("--runs", default=500, show_default=True, help="Timed runs (at least).")
@click.option("--min-seconds", default=1.0, show_default=True, help="Keep timing until this long has passed.")
@click.option("--batch", default=1, show_default=True)
@click.option("--profile", is_flag=True, help="Also show the top ops by time (ONNX Runtime; TFLite with benchmark_model).")
@click.option("--top", default=10, show_default=True, help="Ops shown by --profile.")
@click.option("--isolate", is_flag=True, help="Run in a child process: a crashing model ends as an error.")
@json_option
def bench(models: tuple[str, ...], threads: str, warmup: int, runs: int, min_seconds: float, batch: int,
          profile: bool, top: int, isolate: bool) -> None:
    """Benchmark artifacts like TFLite's benchmark_model: init, first inference, warm-up, latency
    percentiles, throughput, memory. Several MODELS are timed interleaved (A B A B …) and compared."""
    from edgeship.runtimes.benchmark import sweep

    settings = {"warmup": warmup, "runs": runs, "min_seconds": min_seconds, "batch": batch}
    rows = _run(lambda: sweep(models, _thread_counts(threads), isolate=isolate, **settings))
    profiles = _run(lambda: {m: _profile_or_reason(m, rows[0][1].threads, top, isolate) for m in models}) if profile else {}
    first = {r.threads: r.p50_ms for m, r in rows if m == models[0]}
    docs = []
    for model, r in rows:
        doc = {"model": model, **r.to_dict()}
        if len(models) > 1:
            doc["p50_ratio"] = r.p50_ms / first[r.threads]
        if profile:
            doc["profile"] = profiles[model] if isinstance(profiles[model], str) else profiles[model].to_dict()
        docs.append(doc)
    if State.json:
        _emit(docs[0] if len(docs) == 1 else docs)
    elif not State.quiet:
        _bench_tables(docs, profiles)


def _profile_or_reason(model: str, threads: int | None, top: int, isolate: bool) -> Any:
    from edgeship.errors import UnsupportedModelError
    from edgeship.runtimes._profile import profile
    from edgeship.runtimes.benchmark import isolated

    try:
        return isolated("profile", model, threads=threads, top=top) if isolate else profile(model, threads=threads, top=top)
    except UnsupportedModelError as exc:
        return str(exc)


_BENCH_ROWS = (
    ("init ms", "init_ms", "{:.2f}"), ("first ms", "first_ms", "{:.3f}"), ("warm-up mean ms", "warmup_mean_ms", "{:.4f}"),
    ("count", "count", "{}"), ("mean ms", "mean_ms", "{:.4f}"), ("std ms", "std_ms", "{:.4f}"),
    ("min ms", "min_ms", "{:.4f}"), ("p5 ms", "p5_ms", "{:.4f}"), ("p50 ms", "p50_ms", "{:.4f}"),
    ("p90 ms", "p90_ms", "{:.4f}"), ("p95 ms", "p95_ms", "{:.4f}"), ("p99 ms", "p99_ms", "{:.4f}"),
    ("max ms", "max_ms", "{:.4f}"), ("throughput /s", "throughput", "{:.1f}"), ("peak RSS", "peak_rss_bytes", None),
    ("RSS growth", "rss_growth_bytes", None), ("model size", "model_size_bytes", None), ("p50 ratio", "p50_ratio", "{:.3f}"),
)


def _bench_tables(docs: list[dict[str, Any]], profiles: dict[str, Any]) -> None:
    table = rich_table.Table(title="benchmark" + (" (interleaved A B A B …)" if "p50_ratio" in docs[0] else ""))
    table.add_column("")
    for d in docs:
        table.add_column(f"{Path(d['model']).name}\n{d['threads'] or 'default'} thread(s)", justify="right")
    for label, key, fmt in _BENCH_ROWS:
        if key in docs[0]:
            table.add_row(label, *(_size(d[key]) if fmt is None else fmt.format(d[key]) for d in docs))
    out_console.print(table)
    env = docs[0]["env"]
    for d in {d["runtime"]: d for d in docs}.values():
        out_console.print(f"{d['runtime']} {d['runtime_version']}, batch {d['batch']}", highlight=False)
    out_console.print(f"on {env.get('cpu')} ({env.get('cores')} cores), {env.get('system')} {env.get('machine')}, "
                      f"Python {env.get('python')}, numpy {env.get('numpy')}", highlight=False)
    for model, prof in profiles.items():
        if isinstance(prof, str):
            out_console.print(f"[yellow]no profile:[/] {prof}", highlight=False)
            continue
        ops = rich_table.Table(title=f"{Path(model).name}: top ops by time ({prof.source}, {prof.runs} runs, "
                               f"{prof.total_ms_per_run:.3f} ms of kernels per run)")
        for column in ("op", "calls/run", "ms/run", "%"):
            ops.add_column(column, justify="left" if column == "op" else "right")
        for op in prof.ops:
            ops.add_row(op.op, f"{op.calls_per_run:g}", f"{op.ms_per_run:.4f}", f"{op.percent:.1f}")
        out_console.print(ops)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


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
    """Render FOLDER/report.json into FOLDER/report.html and show it as a table."""
    from edgeship import html

    result = _run(lambda: Report.load(folder))
    page = _run(lambda: html.write(folder, result))
    _show_report(result)
    if not (State.json or State.quiet):
        out_console.print(f"report page: {page}")


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


@cli.group()
def device() -> None:
    """Run validation bundles on targets: local, ssh://user@host[:port][/path], adb://SERIAL."""


@device.command("run")
@click.option("--target", "targets", multiple=True, required=True, help="local, ssh://user@host[:port][/path] or adb://SERIAL; repeat for several (run in parallel).")
@click.option("--bundle", required=True, type=click.Path(exists=True, file_okay=False), help="Validation bundle folder (validate writes OUT/bundle).")
@click.option("--runs", default=50, show_default=True, help="Timed runs per artifact on the device.")
@click.option("--warmup", default=5, show_default=True)
@click.option("--threads", type=int, default=None, help="Interpreter threads on the device (default: the runtime's).")
@click.option("--identity", "-i", default=None, help="ssh: private key file.")
@click.option("--ssh-option", "-o", "ssh_options", multiple=True, help="ssh: extra -o option, e.g. -o Port=2222.")
@click.option("--python", default=None, help="The target's Python (ssh: creates the venv; adb: runs the check).")
@click.option("--wheels", default=None, help="ssh: install numpy and the interpreters from this folder of wheels, or 'host' "
              "to repack this host's own (same platform only); default: the device's package index.")
@json_option
def device_run(targets: tuple[str, ...], bundle: str, runs: int, warmup: int, threads: int | None, identity: str | None,
               ssh_options: tuple[str, ...], python: str | None, wheels: str | None) -> None:
    """Copy BUNDLE and the thin runtime to each target, check outputs, accuracy and latency there.

    Exit status: 0 all passed, 2 an artifact failed its check on a target, 1 a target could not run it.
    """
    from edgeship.runtimes.targets import run_targets

    options = _given({"identity": identity, "options": ssh_options or None, "python": python, "wheels": wheels})
    for target in targets:
        _progress("device", f"{target}: copying the bundle and the thin runtime, then checking")
    reports = _run(lambda: run_targets(list(targets), bundle, runs=runs, warmup=warmup, threads=threads, **options))
    if State.json:
        docs = [r.to_dict() for r in reports]
        _emit(docs[0] if len(docs) == 1 else docs)
    elif not State.quiet:
        for r in reports:
            _device_table(r)
    if any(r.error for r in reports):
        sys.exit(1)
    if any(r.passed is False for r in reports):
        sys.exit(2)


def _device_table(report: Any) -> None:
    if report.error:
        err_console.print(f"[bold red]{report.target}:[/] {report.error}", highlight=False)
        return
    verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "nothing ran"}[report.passed]
    table = rich_table.Table(title=f"{report.target}: {report.model} bundle, {verdict} "
                             f"({report.host.get('cpu')}, {report.host.get('machine')}; {report.seconds:.1f} s)")
    for column in ("artifact", "status", "max err", "tolerance", "accuracy", "min acc", "p50", "runtime"):
        table.add_column(column, justify="left" if column in ("artifact", "status", "runtime") else "right")
    for a in report.artifacts:
        ok = a.status == "ok"
        table.add_row(a.name, "[green]ok[/]" if ok else f"[red]{a.status}[/]" if a.status == "failed" else a.status,
                      "—" if a.max_abs_error is None else f"{a.max_abs_error:.2g}", f"{a.tolerance:.2g}" if a.tolerance else "—",
                      "—" if a.accuracy is None else f"{a.accuracy * 100:.2f}%", f"{(a.min_accuracy or 0) * 100:.2f}%",
                      f"{a.benchmark.p50_ms * 1000:.0f} µs" if a.benchmark else "—", a.runtime)
    out_console.print(table)
    installed = ", ".join(f"{k} {v}" for k, v in report.installed.items())
    out_console.print(f"installed there: {installed}; TensorFlow imported: {report.tensorflow_imported}", highlight=False)


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
