"""The ``edgeship`` command: a thin click + rich layer over the Python API, one module per group.

    _app.py       the group, consoles, progress, --json, errors -> exit codes
    train.py      quickstart, train, list-models
    convert.py    convert, list-formats
    validate.py   validate, doctor, report
    bench.py      bench
    device.py     device run

Exit codes: 0 ok, 1 error (one line on stderr; ``--debug`` shows the traceback), 2 accuracy gate
failed. Every command takes ``--json`` and then prints exactly one JSON document on stdout.
A new command is a function in the module of its stage, decorated with ``@cli.command()``.
"""

from __future__ import annotations

import os
import sys

from edgeship.cli import bench, convert, device, train, validate  # noqa: F401  each registers its commands
from edgeship.cli._app import cli, click, err_console, interrupted, shown

__all__ = ["cli", "main"]


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g.:  eval "$(edgeship completion bash)" """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    if completer is None:  # not reached: click.Choice offers only the shells click knows
        raise click.BadParameter(f"no completion for {shell!r}")
    click.echo(completer(cli, {}, "edgeship", "_EDGESHIP_COMPLETE").source())


def main(argv: list[str] | None = None) -> None:
    """Entry point. Usage errors exit 1 like every other error: 2 means a failed accuracy gate."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        code = cli.main(args=argv, prog_name="edgeship", standalone_mode=False)
    except click.ClickException as exc:
        err_console.print(f"[bold red]error:[/] {shown(exc.format_message())}", highlight=False)
        code = 1
    except click.Abort:
        code = 1
    except KeyboardInterrupt:  # outside a command body (parsing, output): the same one line as inside
        interrupted()
    sys.exit(code if isinstance(code, int) else 0)
