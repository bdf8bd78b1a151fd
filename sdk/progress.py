"""How long-running stages report progress: one callback type, and the default that logs.

A stage calls ``progress(stage, detail, done, total)``; ``done`` and ``total`` are step counts
when the stage knows them. The CLI passes a callback that draws bars; the library default logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("edgeship")

#: progress callback: (stage, detail, steps done, steps in the stage) — the counts when known
Progress = Callable[..., None]


def log_progress(stage: str, detail: str, done: int | None = None, total: int | None = None) -> None:
    """The default callback: one log line per call."""
    log.info("%s: %s", stage, detail)
