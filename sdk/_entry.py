"""The ``edgeship`` console script. It imports the command line inside a guard, so that Ctrl-C
while click, rich and the commands are still being imported ends with one line, as it does later."""

from __future__ import annotations

import os
import sys


def main() -> None:
    try:
        from edgeship.cli import main as run

        run()
    except KeyboardInterrupt:  # while the command line itself was being imported
        sys.stderr.write("interrupted: nothing half-written was kept\n")
        sys.stderr.flush()
        os._exit(130)
