"""The qemu-arm64 target: a bundle replayed on an emulated arm64 board (``edgeship.runtimes._board``).

    edgeship device run --bundle out/bundle --target qemu-arm64:boards/arm64

It does on the board what the ssh target does on a real one — the same install script (a venv
from the board's Python; edgeship's own wheel; numpy and the interpreters, resolved by pip from the
board's aarch64 wheels) and the same check — and enters it with ``chroot`` instead of ssh: nothing
listens on a port, no keys are made, and files cross by a local copy. The ssh path itself is
tested against a real sshd on loopback. Latency measured there is the emulator's, and the report
says so (``DeviceReport.emulated``).

One kind of target of ``edgeship.runtimes.targets`` (its ``TARGETS``).
"""

from __future__ import annotations

import dataclasses
import fcntl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import SplitResult

from edgeship import bundle as _bundle
from edgeship.errors import BadInputError
from edgeship.runtimes._board import check_can_enter, load_board
from edgeship.runtimes._device_check import DeviceReport
from edgeship.runtimes._ssh import SshTarget
from edgeship.runtimes.targets import check_field, interpreters_for

PREFIX = "qemu-arm64:"
#: where the runs live inside the board (a real board's ssh target uses ~/.edgeship)
INSIDE = "/opt/edgeship/run"


@dataclass
class QemuTarget(SshTarget):
    """The board at ``board`` (a folder ``make_board`` built), entered with chroot."""

    board: str = ""
    host: str = "localhost"
    path: str = INSIDE
    python: str = "/usr/bin/python3"

    FORM: ClassVar[str] = "qemu-arm64:DIR"
    OPTIONS: ClassVar[tuple[str, ...]] = ("wheels", "timeout")

    @classmethod
    def parse(cls, url: str, parts: SplitResult, **options: Any) -> QemuTarget | None:
        """The target ``qemu-arm64:DIR`` names, None for another form."""
        if not url.startswith(PREFIX):
            return None
        folder = url[len(PREFIX) :]
        if not folder:
            raise BadInputError(
                f"target {url!r} names no board folder; write qemu-arm64:DIR (edgeship device make-board DIR)"
            )
        check_field("path", folder, url)
        return cls(board=folder, **options)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_field("path", self.board, f"{PREFIX}{self.board}")

    @property
    def url(self) -> str:
        return f"{PREFIX}{self.board}"

    def shell(self, remote: str) -> list[str]:
        """``remote`` run by the board's /bin/sh, inside the board (chroot; qemu-user runs it)."""
        root = str(load_board(self.board).root)
        return ["chroot", root, "/usr/bin/env", "-i", "HOME=/root", "PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8",
                "/bin/sh", "-c", remote]  # fmt: skip

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        board = load_board(self.board)  # missing or half-built: one line, before anything else
        manifest, _, _ = _bundle.load(bundle)
        lacking = [d for d in interpreters_for(manifest) if d not in board.interpreters()]
        if lacking and self.wheels is None:
            extras = " ".join(f"--interpreter {d}" for d in sorted({*board.interpreters(), *lacking}))
            raise BadInputError(
                f"the board at {board.folder} holds no {', '.join(lacking)}, which the bundle's "
                f"{', '.join(e.name for e in manifest.artifacts if _needs(e.path, lacking))} need(s); "
                f"add it: edgeship device make-board {self.board} {extras}"
            )
        check_can_enter(board)
        target = self if self.wheels is not None else dataclasses.replace(self, wheels=str(board.wheel_dir))
        with open(board.folder / ".run-lock", "w") as lock:  # one run at a time: they share the board's venv
            fcntl.flock(lock, fcntl.LOCK_EX)
            report = SshTarget.run(target, bundle, runs=runs, warmup=warmup, threads=threads)
        return dataclasses.replace(
            report, emulated=f"{board.emulator or 'qemu-user'} on this host: latency is the emulator's, not a device's"
        )


def _needs(path: str, distributions: list[str]) -> bool:
    from edgeship.formats import for_path

    fmt = for_path(path)
    return fmt is not None and fmt.runtimes[0].distribution in distributions
