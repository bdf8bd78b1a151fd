"""The device commands: make an arm64 board; run a validation bundle on local, ssh, qemu-arm64 and adb targets."""

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
    from edgeship.runtimes._device_check import ArtifactCheck, DeviceReport


@cli.group()
def device() -> None:
    """Run validation bundles on targets: local, ssh://user@host[:port][/path], qemu-arm64:DIR, browser, adb://SERIAL.

    The ssh target installs a venv with only edgeship, numpy and the interpreters the bundle needs;
    qemu-arm64:DIR does the same on an emulated arm64 board (make-board DIR builds one); browser
    replays the bundle in headless Chromium with LiteRT.js and onnxruntime-web (setup-browser).
    The adb target needs a Python with numpy and an interpreter on the phone (Termux's; --python)
    and refuses a phone without one; it is not yet verified on a real phone.
    """


@device.command("make-board")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--interpreter",
    "interpreters",
    multiple=True,
    type=click.Choice(["ai-edge-litert", "onnxruntime"]),
    help="Interpreters to put on the board (repeat; default: both).",
)
@click.option("--suite", default="bookworm", show_default=True, help="Debian release of the board's userland.")
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True, help="Debian mirror.")
@json_option
def make_board(folder: str, interpreters: tuple[str, ...], suite: str, mirror: str) -> None:
    """Build an arm64 Debian board at FOLDER (debootstrap + qemu-user; needs root), once.

    The board holds Debian's Python and aarch64 wheels of numpy and the interpreters (the releases
    this host runs); `device run --target qemu-arm64:FOLDER` installs edgeship's thin runtime there
    and replays a bundle with the ARM builds. A second call on a built board returns at once.
    """
    from edgeship.runtimes._board import INTERPRETERS
    from edgeship.runtimes._board import make_board as build

    chosen = interpreters or tuple(INTERPRETERS)
    board = _run(lambda: build(folder, interpreters=chosen, suite=suite, mirror=mirror,
                               progress=lambda m: _progress("board", m)))  # fmt: skip
    if State.json:
        _emit({**board.to_dict(), "folder": str(board.folder), "built": board.built})
    elif not State.quiet:
        said = f"built in {board.seconds:.0f} s" if board.built else f"already built (took {board.seconds:.0f} s)"
        out_console.print(
            shown(
                f"board {board.folder}: Debian {board.suite} {board.machine}, Python {board.python}, "
                f"{board.size_bytes / 1e6:.0f} MB, {said}; interpreters: {', '.join(board.interpreters())}"
            ),
            highlight=False,
        )


@device.command("setup-browser")
@json_option
def setup_browser() -> None:
    """Install the browser target's npm packages (@litertjs/core, onnxruntime-web) from the pinned lock file, once."""
    from edgeship.runtimes._browser import installed_versions, setup

    folder = _run(lambda: setup(progress=lambda m: _progress("browser", m)))
    versions = installed_versions(folder)
    size = sum(p.stat().st_size for p in (folder / "node_modules").rglob("*") if p.is_file())
    if State.json:
        _emit({"folder": str(folder), "packages": versions, "size_bytes": size})
    elif not State.quiet:
        said = ", ".join(f"{k} {v}" for k, v in versions.items())
        out_console.print(shown(f"browser runtimes in {folder}: {said}; {size / 1e6:.0f} MB"), highlight=False)


@device.command("run")
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    help="local, ssh://user@host[:port][/path], qemu-arm64:DIR, browser or adb://SERIAL; repeat for several.",
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
        + shown(f"({report.host.get('cpu')}, {report.machine or report.host.get('machine')}; {report.seconds:.1f} s)")
    )
    browser = any(a.browser_p50_ms is not None for a in report.artifacts)
    p50 = "p50 (emulated)" if report.emulated else "p50 page / native" if browser else "p50"
    columns = ("artifact", "status", "agree", "max err (tol)", "bit-exact", "accuracy (min)", p50, "runtime")
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("artifact", "status", "runtime") else "right",
            no_wrap=column in ("artifact", p50),
            min_width=len(column) if column == p50 else None,
        )
    for a in report.artifacts:
        ok = a.status == "ok"
        table.add_row(
            shown(a.name),
            "[green]ok[/]" if ok else "[red]failed[/]" if a.status == "failed" else shown(a.status),
            "—" if a.agreement is None else f"{a.agreement * 100:.1f}%",
            ("—" if a.max_abs_error_vs_host is None else f"{a.max_abs_error_vs_host:.2g}")
            + (f" ({a.tolerance:.2g})" if a.tolerance else ""),
            "—" if a.bit_exact is None else f"{a.bit_exact * 100:.1f}% ({a.max_steps:g} st)",
            ("—" if a.accuracy is None else f"{a.accuracy * 100:.2f}%")
            + ("" if a.min_accuracy is None else f" ({a.min_accuracy * 100:.1f}%)"),
            _p50(a),
            shown(" ".join(a.runtime.split()[:2])),
        )
    out_console.print(table)
    for a in report.artifacts:
        if a.status == "failed":
            out_console.print(
                shown(f"{a.name} failed on {report.target}: {_why_failed(a)}"), style="red", highlight=False
            )
    if browser:
        colds = ", ".join(
            f"{a.name} {a.cold_start_ms:.0f} ms (first run {a.first_inference_ms:.1f} ms)"
            for a in report.artifacts
            if a.cold_start_ms is not None and a.first_inference_ms is not None
        )
        out_console.print(
            shown(f"cold start, page to model ready: {colds}; backend: {report.backend}"), highlight=False
        )
    if report.preprocessed_here:
        out_console.print(
            shown(f"preprocessing applied there to the raw inputs: {report.preprocessed_here}"), highlight=False
        )
    if report.emulated:
        out_console.print(shown(f"latency: {report.emulated}; never compare it with a real device"), highlight=False)
    if len(report.inputs) > 1:  # a model of several inputs: say that every one of them was fed
        fed = ", ".join(f"{name} {list(shape)}" for name, shape in report.inputs.items())
        out_console.print(f"inputs fed: {shown(fed)}", highlight=False)
    installed = ", ".join(f"{k} {v}" for k, v in report.installed.items())
    out_console.print(
        shown(f"installed there: {installed}; TensorFlow imported: {report.tensorflow_imported}"), highlight=False
    )


def _why_failed(a: ArtifactCheck) -> str:
    said = []
    if a.outputs_ok is False:
        error = "a different shape" if a.max_abs_error_vs_host is None else f"{a.max_abs_error_vs_host:.3g}"
        said.append(f"outputs differ from the host's by {error}, over the bundle's tolerance {a.tolerance:.3g}")
    if a.accuracy_ok is False and a.accuracy is not None and a.min_accuracy is not None:
        said.append(f"accuracy {a.accuracy * 100:.2f}% is below {a.min_accuracy * 100:.2f}%")
    return "; ".join(said) or a.reason or a.status


def _p50(a: ArtifactCheck) -> str:
    if a.browser_p50_ms is not None:
        native = f"{a.native_p50_ms * 1000:.0f}" if a.native_p50_ms is not None else "—"
        return f"{a.browser_p50_ms * 1000:.0f} / {native} µs"
    return f"{a.benchmark.p50_ms * 1000:.0f} µs" if a.benchmark else "—"
