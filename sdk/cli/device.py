"""The device commands: run a validation bundle on local, ssh and adb targets."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from edgeship.cli._app import (
    EXIT_ERROR,
    EXIT_GATE,
    State,
    _emit,
    _given,
    _progress,
    _run,
    cli,
    click,
    err_console,
    json_option,
    out_console,
    rich_table,
    shown,
)

if TYPE_CHECKING:
    from edgeship.runtimes._device_check import DeviceReport


@cli.group()
def device() -> None:
    """Run validation bundles on targets: local, ssh://user@host[:port][/path], adb://SERIAL.

    The ssh target installs a venv with only edgeship, numpy and the interpreters the bundle needs.
    The adb target is tested up to its adb command lines and not yet verified on a real phone.
    """


@device.command("run")
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    help="local, ssh://user@host[:port][/path] or adb://SERIAL; repeat for several (run in parallel).",
)
@click.option(
    "--bundle",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Validation bundle folder (validate writes OUT/bundle).",
)
@click.option("--runs", default=50, show_default=True, help="Timed runs per artifact on the device.")
@click.option("--warmup", default=5, show_default=True)
@click.option("--threads", type=int, default=None, help="Interpreter threads on the device (default: the runtime's).")
@click.option("--identity", "-i", default=None, help="ssh: private key file.")
@click.option("--ssh-option", "-o", "ssh_options", multiple=True, help="ssh: extra -o option, e.g. -o Port=2222.")
@click.option("--python", default=None, help="The target's Python (ssh: creates the venv; adb: runs the check).")
@click.option(
    "--wheels",
    default=None,
    help="ssh: install numpy and the interpreters from this folder of wheels, "
    "or 'host' to repack this host's own (same platform only); default: the device's package index.",
)
@json_option
def device_run(
    targets: tuple[str, ...],
    bundle: str,
    runs: int,
    warmup: int,
    threads: int | None,
    identity: str | None,
    ssh_options: tuple[str, ...],
    python: str | None,
    wheels: str | None,
) -> None:
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
        sys.exit(EXIT_ERROR)
    if any(r.passed is False for r in reports):
        sys.exit(EXIT_GATE)


def _device_table(report: DeviceReport) -> None:
    if report.error:
        err_console.print(f"[bold red]{shown(report.target)}:[/] {shown(report.error)}", highlight=False)
        return
    verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "nothing ran"}[report.passed]
    table = rich_table.Table(
        title=f"{shown(report.target)}: {shown(report.model)} bundle, {verdict} "
        + shown(f"({report.host.get('cpu')}, {report.host.get('machine')}; {report.seconds:.1f} s)")
    )
    for column in ("artifact", "status", "max err", "tolerance", "accuracy", "min acc", "p50", "runtime"):
        table.add_column(column, justify="left" if column in ("artifact", "status", "runtime") else "right")
    for a in report.artifacts:
        ok = a.status == "ok"
        table.add_row(
            shown(a.name),
            "[green]ok[/]" if ok else "[red]failed[/]" if a.status == "failed" else shown(a.status),
            "—" if a.max_abs_error is None else f"{a.max_abs_error:.2g}",
            f"{a.tolerance:.2g}" if a.tolerance else "—",
            "—" if a.accuracy is None else f"{a.accuracy * 100:.2f}%",
            "—" if a.min_accuracy is None else f"{a.min_accuracy * 100:.2f}%",
            f"{a.benchmark.p50_ms * 1000:.0f} µs" if a.benchmark else "—",
            shown(a.runtime),
        )
    out_console.print(table)
    if len(report.inputs) > 1:  # a model of several inputs: say that every one of them was fed
        fed = ", ".join(f"{name} {list(shape)}" for name, shape in report.inputs.items())
        out_console.print(f"inputs fed: {shown(fed)}", highlight=False)
    installed = ", ".join(f"{k} {v}" for k, v in report.installed.items())
    out_console.print(
        shown(f"installed there: {installed}; TensorFlow imported: {report.tensorflow_imported}"), highlight=False
    )
