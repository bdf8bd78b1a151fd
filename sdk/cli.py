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


class _ProgressView:
    """Progress on stderr: bars on a terminal, one line per finished step elsewhere (logs, CI)."""

    def __init__(self) -> None:
        self.bars: Any = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, detail: str, done: int | None = None, total: int | None = None) -> None:
        if State.quiet or State.json:
            return
        if total is None or not err_console.is_terminal:
            if total is None or done == total:
                err_console.print(f"[bold cyan]{stage:>9}[/] {detail}", highlight=False)
            return
        if self.bars is None:
            progress = require("rich.progress")
            self.bars = progress.Progress(
                progress.TextColumn("[bold cyan]{task.fields[stage]:>9}"), progress.BarColumn(),
                progress.MofNCompleteColumn(), progress.TextColumn("{task.description}"),
                progress.TimeElapsedColumn(), console=err_console)
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
        err_console.print(f"[bold red]gate failed:[/] {exc}", highlight=False)
        sys.exit(2)
    except EdgeshipError as exc:
        if State.debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        _progress.stop()
        err_console.print("[bold red]interrupted[/]: nothing half-written was kept")
        sys.exit(130)
    finally:
        _progress.stop()


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
@click.option("--epochs", default=30, show_default=True, help="Float training epochs (early stopping may end sooner).")
@click.option("--batch-size", default=32, show_default=True, help="Global batch size (split across replicas).")
@click.option("--learning-rate", "--lr", "learning_rate", default=2e-3, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True)
@click.option("--patience", default=6, show_default=True, help="Early stopping: epochs without a better val_loss.")
@click.option("--prune", type=float, default=None, help="Prune to this sparsity, in (0, 1), e.g. 0.75.")
@click.option("--prune-epochs", default=6, show_default=True)
@click.option("--cluster", type=int, default=None, help="Cluster weights to this many values per kernel, e.g. 16.")
@click.option("--cluster-epochs", default=3, show_default=True)
@click.option("--qat", is_flag=True, help="Quantization-aware fine-tune (keeps sparsity and clusters when combined).")
@click.option("--qat-epochs", default=3, show_default=True)
@click.option("--class-weights", is_flag=True, help="Weight classes by inverse frequency (imbalanced labels).")
@click.option("--augment", is_flag=False, flag_value="flip,shift", default=None, metavar="[flip,shift]",
              help="Image augmentation: flip, shift or shift=FRACTION (bare --augment: flip,shift).")
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--l2", type=float, default=0.0, show_default=True, help="L2 weight decay on kernels.")
@click.option("--widths", default=None, help="mlp hidden widths, e.g. 64,32.")
@click.option("--alpha", type=float, default=0.25, show_default=True, help="mobilenet_v1 width multiplier.")
@click.option("--mixed-precision", is_flag=True, help="mixed_float16 float training on a GPU.")
@click.option("--strategy", type=click.Choice(["auto", "cpu", "gpu", "mirrored", "multiworker"]), default="auto",
              show_default=True, help="Where to train; multiworker reads TF_CONFIG.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints (same settings only).")
@click.option("--start-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="A trained folder of the same model and data: skip float training, fine-tune it.")
@click.option("--seed", default=0, show_default=True)
@json_option
def train(model: str, data: str, out: str, augment: str | None, widths: str | None, resume: bool, strategy: str,
          start_from: str | None, **settings: Any) -> None:
    """Train a zoo model (float, then --prune, --cluster, --qat) and save it with its training record."""
    from edgeship.trainers import train as run
    from edgeship.trainers.fitting import Augment

    def body() -> Any:
        if augment is not None:
            settings["augment"] = Augment.parse(augment)
        if widths is not None:
            settings["widths"] = _int_list(widths, "--widths")
        _progress("train", f"{model} on {data}")
        from edgeship.trainers.fitting import progress_callback

        return run(model, data, out=out, resume=resume, strategy=strategy, start_from=start_from,
                   callbacks=[progress_callback(_progress)], **settings)

    record = _run(body)
    if State.json:
        _emit(record.to_dict())
    elif not State.quiet:
        stages = ", ".join(f"{k} {v * 100:.2f}%" for k, v in record.stage_accuracy.items())
        out_console.print(f"{record.model} ({record.recipe}) on {record.dataset}: test accuracy "
                          f"{record.test_accuracy * 100:.2f}% ({stages}) after {record.epochs_run} epochs, "
                          f"{record.seconds:.1f} s on {record.strategy} x{record.replicas}, {record.params} parameters, "
                          f"{record.macs} MACs -> {out}")
        if record.sparsity:
            out_console.print("sparsity: " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in record.sparsity.items()))
        if record.clusters:
            out_console.print("distinct weights: " + ", ".join(f"{k} {v}" for k, v in record.clusters.items()))


def _int_list(text: str, option: str) -> tuple[int, ...]:
    from edgeship.errors import BadInputError

    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise BadInputError(f"{option} takes integers like 64,32; received {text!r}") from exc


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
@click.option("--trust-code", is_flag=True, help="Load model files with Lambda layers: their stored Python code runs.")
@json_option
def convert(model: str, targets: str, data: str | None, out: str, calibration_samples: int | None,
            calibrate_method: str | None, reduce_range: bool | None, opset: int | None, trust_code: bool) -> None:
    """Convert a trained model to TFLite, ONNX and Core ML artifacts.

    MODEL is a folder written by 'edgeship train', a SavedModel folder, a .keras/.h5 file, or a
    .onnx file (for onnx:int8 / onnx:dynamic). Run 'edgeship list-formats' for every target.
    """
    from edgeship.converters import convert as run

    common = {"calibration_samples": calibration_samples}
    onnx = {"calibrate_method": calibrate_method, "reduce_range": reduce_range, "opset": opset}
    options = {"tflite": _given(common), "onnx": _given({**common, **onnx}), "coreml": {}}
    manifest = _run(lambda: run(model, targets, data=data, out=out, options=options, trust_code=trust_code,
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
@click.option("--trust-code", is_flag=True, help="Load a float reference with Lambda layers: its stored Python code runs.")
@json_option
def validate(folder: str, data: str | None, max_drop: float | None, min_agreement: float | None, bench_runs: int,
             trust_code: bool) -> None:
    """Measure every artifact in FOLDER against the float reference.

    Writes FOLDER/report.json, FOLDER/report.html and the validation bundle FOLDER/bundle.
    """
    from edgeship.pipeline import validate as run

    bench = {"threads": 1, "warmup": 10, "runs": bench_runs} if bench_runs > 0 else None
    report = _run(lambda: run(folder, data=data, max_drop=max_drop, min_agreement=min_agreement,
                              benchmark=bench, trust_code=trust_code, progress=_progress))
    _show_report(report)


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--data", default=None, help="Dataset (default: the one in manifest.json).")
@click.option("--max-drop", type=float, default=None,
              help="Keep the most harmful layers in float until accuracy drops at most this many points, and write "
                   "that <model>.<precision>-mixed artifact (exit 2 when none fits).")
@click.option("--artifact", default=None, help="Examine one artifact, e.g. onnx:int8 (default: every int8 one).")
@click.option("--samples", default=200, show_default=True, help="Test samples compared layer by layer.")
@click.option("--max-layers", default=8, show_default=True, help="Most layers tried in float.")
@click.option("--runs", default=200, show_default=True, help="Timed runs for the latency cost.")
@json_option
def doctor(folder: str, data: str | None, max_drop: float | None, artifact: str | None, samples: int,
           max_layers: int, runs: int) -> None:
    """Find the layers int8 hurts in FOLDER's artifacts, say why, and with --max-drop write a
    mixed-precision artifact that keeps the most harmful ones in float (FOLDER/doctor.json)."""
    from edgeship.converters.doctor import diagnose

    result = _run(lambda: diagnose(folder, data=data, max_drop=max_drop, artifact=artifact, samples=samples,
                                   max_layers=max_layers, runs=runs, progress=_progress))
    if State.json:
        # doctor.json keeps layers per artifact; `layers` up front are the worst-hit artifact's, worst first
        worst = min(result.artifacts, key=lambda d: d.accuracy_delta_pts, default=None)
        layers = [{"artifact": worst.artifact, **layer.to_dict()} for layer in worst.layers] if worst else []
        _emit({"layers": layers, **result.to_dict()})
    elif not State.quiet:
        for diagnosis in result.artifacts:
            _show_diagnosis(diagnosis)
    failed = [d.artifact for d in result.artifacts if d.recovery is not None and not d.recovery.within_drop]
    if failed:
        err_console.print(f"[bold red]no artifact within --max-drop {max_drop:g}:[/] {', '.join(failed)}", highlight=False)
        sys.exit(2)


def _show_diagnosis(d: Any, top: int = 10) -> None:
    table = rich_table.Table(title=f"{d.artifact}: {d.accuracy * 100:.2f}% ({d.accuracy_delta_pts:+.2f} pts vs float), "
                             "layers worst first",
                             caption="SQNR dB: median channel, whole tensor, whole tensor against the all-float model")
    for column in ("layer", "op", "SQNR", "tensor", "vs float", "range", "max/p99.9", "spread"):
        table.add_column(column, justify="left" if column in ("layer", "op") else "right", no_wrap=True)
    for layer in d.layers[:top]:
        model_db = "—" if layer.model_sqnr_db is None else f"{layer.model_sqnr_db:.1f}"
        table.add_row(layer.name, layer.op.lower(), f"{layer.sqnr_db:.1f}", f"{layer.tensor_sqnr_db:.1f}", model_db,
                      f"{layer.range_min:.3g}…{layer.range_max:.3g}", f"{layer.outlier_ratio:.1f}x",
                      f"{layer.channel_spread:.1f}x")
    out_console.print(table)
    for advice in d.advice:
        out_console.print(f"  [yellow]{advice.kind}[/]: {advice.message}", highlight=False)
    r = d.recovery
    if r is None:
        return
    for step in r.steps:
        verdict = "[green]fits[/]" if step.within_drop else "[red]too far[/]"
        kept = f"float {', '.join(step.float_layers)}" if step.float_layers else "all int8 (rebuilt)"
        out_console.print(f"  {kept}: {step.accuracy * 100:.2f}% "
                          f"({step.accuracy_delta_pts:+.2f} pts), {_size(step.size_bytes)} {verdict}", highlight=False)
    if r.artifact is not None:
        p50 = f", p50 x{r.p50_ratio:.2f}" if r.p50_ratio is not None else ""
        out_console.print(f"  [bold]{r.artifact.name}[/] -> {r.artifact.path}: size x{r.size_ratio:.2f}{p50} vs "
                          f"{d.artifact}. {r.note}", highlight=False)
    elif r.note:
        out_console.print(f"  {'' if r.within_drop else '[red]'}{r.note}", highlight=False)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--threads", default="1", show_default=True, help="Interpreter threads; a comma list sweeps them.")
@click.option("--warmup", default=20, show_default=True, help="Untimed runs after the first inference.")
@click.option("--runs", default=500, show_default=True, help="Timed runs (at least).")
@click.option("--min-seconds", default=1.0, show_default=True, help="Keep timing until this long has passed.")
@click.option("--batch", default=1, show_default=True)
@click.option("--profile", is_flag=True, help="Also show the top ops by time (ONNX Runtime; TFLite with benchmark_model).")
@click.option("--top", default=10, show_default=True, help="Ops shown by --profile.")
@click.option("--isolate/--no-isolate", default=None,
              help="Run in a child process, so a crashing model ends as an error. Default: on, unless a "
                   "manifest.json beside the model vouches for it (its sha256 matches).")
@click.option("--optimization", type=click.Choice(["disable", "basic", "extended", "all"]), default=None,
              help="ONNX Runtime graph optimization level (default: all).")
@click.option("--providers", default=None, help="ONNX Runtime execution providers, comma-separated (default: CPU).")
@json_option
def bench(models: tuple[str, ...], threads: str, warmup: int, runs: int, min_seconds: float, batch: int,
          profile: bool, top: int, isolate: bool, optimization: str | None, providers: str | None) -> None:
    """Benchmark artifacts like TFLite's benchmark_model: init, first inference, warm-up, latency
    percentiles, throughput, memory. Several MODELS are timed interleaved (A B A B …) and compared."""
    from edgeship.runtimes.benchmark import sweep

    from edgeship.pipeline import vouched

    if isolate is None:
        isolate = not all(vouched(m) for m in models)
    settings = {"warmup": warmup, "runs": runs, "min_seconds": min_seconds, "batch": batch,
                **_given({"optimization": optimization, "providers": providers.split(",") if providers else None})}
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
        if any(d["runtime"] == "mil-numpy" for d in docs):
            out_console.print("note: Core ML ran in edgeship's numpy reference evaluator here; its latency is "
                              "not Core ML's and says nothing about a device.")


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
@click.option("--data", default=None, help="Size each model for this dataset (default: the input it was designed for).")
@json_option
def list_models(data: str | None) -> None:
    """The model zoo, with parameters and MACs per model."""
    from edgeship.trainers.zoo import MODELS, describe

    def body() -> list[dict[str, Any]]:
        shape = classes = None
        if data is not None:
            from edgeship.datasets import load_dataset

            dataset = load_dataset(data)
            shape, classes = dataset.input_shape, dataset.num_classes
        rows = []
        for name in MODELS:
            try:
                rows.append(describe(name, shape, classes))
            except EdgeshipError as exc:  # a model that cannot take this dataset says why
                rows.append({"name": name, "description": (MODELS[name].__doc__ or "").strip().splitlines()[0],
                             "error": str(exc)})
        return rows

    rows = _run(body)
    if State.json:  # keyed by model name
        _emit({row["name"]: {k: v for k, v in row.items() if k != "name"} for row in rows})
        return
    table = rich_table.Table(title=f"model zoo{f' sized for {data}' if data else ''}")
    for column in ("model", "input", "params", "MACs", "description"):
        table.add_column(column, justify="right" if column in ("params", "MACs") else "left")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "—", "—", "—", f"[red]{row['error']}[/]")
        else:
            table.add_row(row["name"], "x".join(map(str, row["input_shape"])) + f" → {row['classes']}",
                          f"{row['params']:,}", f"{row['macs']:,}", row["description"])
    out_console.print(table)


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
    """Run validation bundles on targets: local, ssh://user@host[:port][/path], adb://SERIAL.

    The ssh target installs a venv with only edgeship, numpy and the interpreters the bundle needs.
    The adb target is tested up to its adb command lines and not yet verified on a real phone.
    """


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


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g.:  eval "$(edgeship completion bash)" """
    from click.shell_completion import get_completion_class

    click.echo(get_completion_class(shell)(cli, {}, "edgeship", "_EDGESHIP_COMPLETE").source())


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
