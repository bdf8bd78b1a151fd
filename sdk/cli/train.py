"""Commands that train: quickstart (the whole pipeline on built-in data), train, list-models."""

from __future__ import annotations

from typing import Any

from edgeship.cli._app import (
    State,
    _emit,
    _int_list,
    _progress,
    _run,
    _show_report,
    cli,
    click,
    json_option,
    out_console,
    rich_table,
    shown,
)
from edgeship.errors import EdgeshipError


@cli.command()
@click.option(
    "--out", default="edgeship-out", show_default=True, type=click.Path(file_okay=False), help="Output folder."
)
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
@click.option(
    "--augment",
    is_flag=False,
    flag_value="flip,shift",
    default=None,
    metavar="[flip,shift]",
    help="Image augmentation: flip, shift or shift=FRACTION (bare --augment: flip,shift).",
)
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--l2", type=float, default=0.0, show_default=True, help="L2 weight decay on kernels.")
@click.option("--widths", default=None, help="mlp hidden widths, e.g. 64,32.")
@click.option("--alpha", type=float, default=0.25, show_default=True, help="mobilenet_v1 width multiplier.")
@click.option("--mixed-precision", is_flag=True, help="mixed_float16 float training on a GPU.")
@click.option(
    "--strategy",
    type=click.Choice(["auto", "cpu", "gpu", "mirrored", "multiworker"]),
    default="auto",
    show_default=True,
    help="Where to train; multiworker reads TF_CONFIG.",
)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints (same settings only).")
@click.option(
    "--start-from",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A trained folder of the same model and data: skip float training, fine-tune it.",
)
@click.option("--seed", default=0, show_default=True)
@json_option
def train(
    model: str,
    data: str,
    out: str,
    augment: str | None,
    widths: str | None,
    resume: bool,
    strategy: str,
    start_from: str | None,
    **settings: Any,
) -> None:
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

        return run(
            model,
            data,
            out=out,
            resume=resume,
            strategy=strategy,
            start_from=start_from,
            callbacks=[progress_callback(_progress)],
            **settings,
        )

    record = _run(body)
    if State.json:
        _emit(record.to_dict())
    elif not State.quiet:
        stages = ", ".join(f"{k} {v * 100:.2f}%" for k, v in record.stage_accuracy.items())
        out_console.print(
            shown(
                f"{record.model} ({record.recipe}) on {record.dataset}: test accuracy "
                f"{record.test_accuracy * 100:.2f}% ({stages}) after {record.epochs_run} epochs, "
                f"{record.seconds:.1f} s on {record.strategy} x{record.replicas}, {record.params} "
                f"parameters, {record.macs} MACs -> {out}"
            ),
            highlight=False,
        )
        if record.sparsity:
            out_console.print(
                shown("sparsity: " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in record.sparsity.items())),
                highlight=False,
            )
        if record.clusters:
            out_console.print(
                shown("distinct weights: " + ", ".join(f"{k} {v}" for k, v in record.clusters.items())), highlight=False
            )


@cli.command("list-models")
@click.option("--data", default=None, help="Size each model for this dataset (default: the input it was designed for).")
@json_option
def list_models(data: str | None) -> None:
    """The model zoo, with parameters and MACs per model."""
    from edgeship.trainers.zoo import MODELS, describe

    def body() -> list[dict[str, Any]]:
        shape = classes = None
        if data is not None:
            from edgeship.data import load_dataset

            dataset = load_dataset(data)
            shape, classes = dataset.input_shape, dataset.num_classes
        rows = []
        for name in MODELS:
            try:
                rows.append(describe(name, shape, classes))
            except EdgeshipError as exc:  # a model that cannot take this dataset says why
                rows.append(
                    {
                        "name": name,
                        "description": (MODELS[name].__doc__ or "").strip().splitlines()[0],
                        "error": str(exc),
                    }
                )
        return rows

    rows = _run(body)
    if State.json:  # keyed by model name
        _emit({row["name"]: {k: v for k, v in row.items() if k != "name"} for row in rows})
        return
    table = rich_table.Table(title=shown(f"model zoo{f' sized for {data}' if data else ''}"))
    for column in ("model", "input", "params", "MACs", "description"):
        table.add_column(column, justify="right" if column in ("params", "MACs") else "left")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "—", "—", "—", f"[red]{shown(row['error'])}[/]")
        else:
            table.add_row(
                row["name"],
                "x".join(map(str, row["input_shape"])) + f" → {row['classes']}",
                f"{row['params']:,}",
                f"{row['macs']:,}",
                row["description"],
            )
    out_console.print(table)
