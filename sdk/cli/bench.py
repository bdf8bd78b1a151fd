"""The bench command: latency, throughput and memory of artifacts, interleaved when several."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.cli._app import (
    EXIT_ERROR,
    State,
    _emit,
    _given,
    _positive_ints,
    _run,
    _size,
    _thread_counts,
    cli,
    click,
    err_console,
    json_option,
    out_console,
    rich_table,
    shown,
)

if TYPE_CHECKING:
    from edgeship.runtimes._profile import OpProfile


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--threads", default="1", show_default=True, help="Interpreter threads; a comma list sweeps them.")
@click.option("--warmup", default=20, show_default=True, help="Untimed runs after the first inference.")
@click.option("--runs", default=500, show_default=True, help="Timed runs (at least).")
@click.option("--min-seconds", default=1.0, show_default=True, help="Keep timing until this long has passed.")
@click.option("--batch", default="1", show_default=True, help="Batch size; a comma list (1,8,32) reports each.")
@click.option(
    "--float-io",
    is_flag=True,
    help="Time the float call (Session.run quantizing inputs, dequantizing outputs) instead of the model "
    "on inputs in its own dtypes.",
)
@click.option(
    "--runtime",
    default=None,
    help="Backend other than the file's default: litert-compiled runs .tflite with LiteRT's CompiledModel.",
)
@click.option(
    "--accelerator",
    type=click.Choice(["cpu", "gpu", "npu"]),
    default=None,
    help="Where --runtime litert-compiled runs the whole model (default: cpu).",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Also show the top ops by time (ONNX Runtime; TFLite with the benchmark_model tool, as LiteRT's "
    "Python API times no single op).",
)
@click.option("--top", default=10, show_default=True, help="Ops shown by --profile.")
@click.option(
    "--isolate/--no-isolate",
    default=None,
    help="Run in a child process, so a crashing model ends as an error. Default: on, unless a "
    "manifest.json beside the model vouches for it (its sha256 matches).",
)
@click.option(
    "--optimization",
    type=click.Choice(["disable", "basic", "extended", "all"]),
    default=None,
    help="ONNX Runtime graph optimization level (default: all).",
)
@click.option("--providers", default=None, help="ONNX Runtime execution providers, comma-separated (default: CPU).")
@json_option
def bench(
    models: tuple[str, ...],
    threads: str,
    warmup: int,
    runs: int,
    min_seconds: float,
    batch: str,
    float_io: bool,
    runtime: str | None,
    accelerator: str | None,
    profile: bool,
    top: int,
    isolate: bool,
    optimization: str | None,
    providers: str | None,
) -> None:
    """Benchmark artifacts like TFLite's benchmark_model: init, first inference, warm-up, latency
    percentiles, throughput, memory. The timed call is the model on inputs in its own dtypes (int8
    for an int8 model); the float <-> int8 conversion a float caller adds is shown apart (io ms).
    Several MODELS are timed interleaved (A B A B …) and compared; comma lists of --threads and
    --batch sweep them. A folder convert wrote stands for every artifact its manifest lists."""
    from edgeship.records import vouched

    models = _run(lambda: _expanded(models))
    if isolate is None:
        isolate = not all(vouched(m) for m in models)
    settings = {
        "warmup": warmup,
        "runs": runs,
        "min_seconds": min_seconds,
        "float_io": float_io,
        **_given(
            {
                "optimization": optimization,
                "providers": providers.split(",") if providers else None,
                "runtime": runtime,
                "accelerator": accelerator,
            }
        ),
    }
    counts, sizes = _run(lambda: (_thread_counts(threads), _batch_sizes(batch)))
    rows, failed = _run(lambda: _timed(models, counts, sizes, isolate, settings))
    models = tuple(m for m in models if m not in failed)
    if not models:  # every file failed: each said, then one exit status
        for model, error in failed.items():
            err_console.print(f"[bold red]error:[/] {shown(model)}: {shown(error)}", highlight=False)
        sys.exit(EXIT_ERROR)
    profiles = (
        _run(lambda: {m: _profile_or_reason(m, rows[0][1].threads, top, isolate) for m in models}) if profile else {}
    )
    first = {(r.threads, r.batch): r.p50_ms for m, r in rows if m == models[0]}
    docs = []
    for model, r in rows:
        doc = {"model": model, **r.to_dict()}
        if len(models) > 1:
            doc["p50_ratio"] = r.p50_ms / first[(r.threads, r.batch)]
        if profile:
            doc["profile"] = profiles[model] if isinstance(profiles[model], str) else profiles[model].to_dict()
        docs.append(doc)
    docs += [{"model": model, "error": error} for model, error in failed.items()]
    if State.json:
        _emit(docs[0] if len(docs) == 1 else docs)
    elif not State.quiet:
        docs = [d for d in docs if "error" not in d]
        if len(docs) > len(models):
            _sweep_table(docs, len(models) > 1)
        _bench_tables(docs, profiles, full=len(docs) == len(models))
        from edgeship.runtimes import timing

        for why in dict.fromkeys(t[1] for t in (timing(d["model"]) for d in docs) if not t[0]):
            out_console.print(
                f"note: {shown(why)}: its latency here is not the device runtime's and says nothing about a device.",
                highlight=False,
            )
    for model, error in failed.items():  # after the others' figures: one line each, and exit status 1
        err_console.print(
            f"[bold red]error:[/] {shown(model)}: {shown(error)} (the other files were timed)", highlight=False
        )
    if failed:
        sys.exit(EXIT_ERROR)


def _expanded(models: tuple[str, ...]) -> tuple[str, ...]:
    """``models`` with each folder convert wrote (it holds a manifest.json) replaced by its artifacts'
    files, in the manifest's order, each checked against the sha256 the manifest records."""
    from edgeship.records import Manifest, verified_path

    found: list[str] = []
    for model in models:
        folder = Path(model)
        if folder.is_dir() and (folder / "manifest.json").is_file():
            manifest = Manifest.load(folder)
            found += [str(verified_path(folder, artifact)) for artifact in manifest.artifacts]
        else:
            found.append(model)
    return tuple(dict.fromkeys(found))


def _timed(
    models: tuple[str, ...], counts: list[int], sizes: list[int], isolate: bool, settings: dict[str, Any]
) -> tuple[list[Any], dict[str, str]]:
    """The sweep's rows, and the files that could not be timed at all with their errors. When an
    interleaved sweep of several files fails, each file runs once alone to find the broken ones,
    so that one broken file is its own failed row instead of ending the others."""
    from edgeship.errors import EdgeshipError
    from edgeship.runtimes.benchmark import sweep

    try:
        return sweep(models, counts, batches=sizes, isolate=isolate, **settings), {}
    except EdgeshipError:
        if len(models) == 1:
            raise
    quick = {**settings, "warmup": 0, "runs": 1, "min_seconds": 0.0}
    failed = {}
    for model in models:
        try:
            sweep([model], counts[:1], isolate=isolate, **quick)
        except EdgeshipError as exc:
            failed[model] = f"{type(exc).__name__}: {exc}"
    survivors = [m for m in models if m not in failed]
    rows = sweep(survivors, counts, batches=sizes, isolate=isolate, **settings) if survivors else []
    return rows, failed


def _batch_sizes(text: str) -> list[int]:
    return _positive_ints(text, "--batch", "1,8,32")


def _profile_or_reason(model: str, threads: int | None, top: int, isolate: bool) -> OpProfile | str:
    from edgeship.errors import UnsupportedModelError
    from edgeship.runtimes._profile import profile
    from edgeship.runtimes.benchmark import isolated

    try:
        return (
            isolated("profile", model, threads=threads, top=top)
            if isolate
            else profile(model, threads=threads, top=top)
        )
    except UnsupportedModelError as exc:
        return str(exc)


_BENCH_ROWS = (
    ("init ms", "init_ms", "{:.2f}"),
    ("first ms", "first_ms", "{:.3f}"),
    ("warm-up mean ms", "warmup_mean_ms", "{:.4f}"),
    ("count", "count", "{}"),
    ("mean ms", "mean_ms", "{:.4f}"),
    ("std ms", "std_ms", "{:.4f}"),
    ("min ms", "min_ms", "{:.4f}"),
    ("p5 ms", "p5_ms", "{:.4f}"),
    ("p50 ms", "p50_ms", "{:.4f}"),
    ("p90 ms", "p90_ms", "{:.4f}"),
    ("p95 ms", "p95_ms", "{:.4f}"),
    ("p99 ms", "p99_ms", "{:.4f}"),
    ("max ms", "max_ms", "{:.4f}"),
    ("throughput /s", "throughput", "{:.1f}"),
    ("io ms (float <-> int8)", "io_ms", "{:.4f}"),
    ("peak RSS", "peak_rss_bytes", None),
    ("RSS growth", "rss_growth_bytes", None),
    ("model size", "model_size_bytes", None),
    ("p50 ratio", "p50_ratio", "{:.3f}"),
    ("timed", "timed", "{}"),
)


def _sweep_table(docs: list[dict[str, Any]], several_models: bool) -> None:
    """One row per setting (and model): what people plan with, at a glance."""
    from rich import box

    table = rich_table.Table(
        title="benchmark sweep" + (" (models interleaved A B A B …)" if several_models else ""), box=box.SIMPLE_HEAD
    )
    columns = ["model"] * several_models + ["setting", "p50 ms", "p90 ms", "per s", "io ms"]
    for column in columns + ["ratio"] * several_models + ["timed"]:
        table.add_column(
            column,
            justify="left" if column in ("model", "setting", "timed") else "right",
            no_wrap=column in ("model", "setting"),
        )
    for d in docs:
        threads = f"{d['threads']} thread{'s' * (d['threads'] != 1)}" if d["threads"] else "default threads"
        cells = [shown(Path(d["model"]).name)] * several_models + [
            f"{threads}, batch {d['batch']}",
            f"{d['p50_ms']:.4f}",
            f"{d['p90_ms']:.4f}",
            f"{d['throughput']:.0f}",
            f"{d['io_ms']:.4f}",
        ]
        table.add_row(*cells, *([f"{d['p50_ratio']:.3f}"] if several_models else []), d["timed"])
    out_console.print(table)
    out_console.print(
        "per s: inferences per second (batch x calls); io ms: float <-> int8 conversion per call, "
        "timed apart" + ("; ratio: p50 over the first model's" if several_models else ""),
        highlight=False,
    )


def _bench_tables(docs: list[dict[str, Any]], profiles: dict[str, Any], full: bool = True) -> None:
    if full:
        table = rich_table.Table(title="benchmark" + (" (interleaved A B A B …)" if "p50_ratio" in docs[0] else ""))
        table.add_column("")
        for d in docs:
            batch = f", batch {d['batch']}" if d["batch"] != 1 else ""
            table.add_column(
                shown(f"{Path(d['model']).name}\n{d['threads'] or 'default'} thread(s){batch}"), justify="right"
            )
        for label, key, fmt in _BENCH_ROWS:
            if key in docs[0]:
                table.add_row(label, *(_size(d[key]) if fmt is None else shown(fmt.format(d[key])) for d in docs))
        out_console.print(table)
    env = docs[0]["env"]
    for d in {(d["runtime"], d["env"].get("accelerator")): d for d in docs}.values():
        out_console.print(
            shown(f"{d['runtime']} {d['runtime_version']} on {d['env'].get('accelerator', 'cpu')}"), highlight=False
        )
    out_console.print(
        shown(
            f"on {env.get('cpu')} ({env.get('cores')} cores), {env.get('system')} "
            f"{env.get('machine')}, Python {env.get('python')}, numpy {env.get('numpy')}"
        ),
        highlight=False,
    )
    for model, prof in profiles.items():
        if isinstance(prof, str):
            out_console.print(f"[yellow]no profile:[/] {shown(prof)}", highlight=False)
            continue
        ops = rich_table.Table(
            title=shown(
                f"{Path(model).name}: top ops by time ({prof.source}, {prof.runs} runs, "
                f"{prof.total_ms_per_run:.3f} ms of kernels per run)"
            )
        )
        for column in ("op", "calls/run", "ms/run", "%"):
            ops.add_column(column, justify="left" if column == "op" else "right")
        for op in prof.ops:
            ops.add_row(shown(op.op), f"{op.calls_per_run:g}", f"{op.ms_per_run:.4f}", f"{op.percent:.1f}")
        out_console.print(ops)
