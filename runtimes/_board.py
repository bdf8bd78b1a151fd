"""An emulated arm64 board: a Debian userland made with debootstrap, run through qemu-user.

    edgeship device make-board boards/arm64            # once: about 2-3 min and 350 MB here
    edgeship device run --bundle out/bundle --target qemu-arm64:boards/arm64

A board folder holds::

    board.json                what was built (suite, machine, Python, wheels, seconds, bytes): written last
    root/                     the aarch64 userland: Debian's python3 and python3-venv, nothing else
    root/opt/edgeship/wheels  aarch64 wheels of numpy and the interpreters, the releases this host runs

Every aarch64 executable in ``root`` runs under ``qemu-aarch64-static``: Debian's qemu-user-static
registers it with the kernel's binfmt_misc with the F flag, so the board needs no qemu binary of its
own and ``chroot root /usr/bin/python3`` simply runs the ARM Python, whose children (pip, the
interpreters' threads) are ARM too. The interpreters are the real ARM builds from PyPI, so their
ARM kernels (XNNPACK's and MLAS's aarch64 code paths) are what computes; only their speed means
nothing under emulation. Making a board needs root (debootstrap, chroot), network access to a Debian
mirror and PyPI, and the packages ``debootstrap`` and ``qemu-user-static``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship import _io
from edgeship.errors import BadInputError, MissingDependencyError, RuntimeFailure

__all__ = ["Board", "make_board", "load_board", "INTERPRETERS"]

#: the interpreters a board can hold: the distribution and the edgeship extra that names it
INTERPRETERS = {"ai-edge-litert": "litert", "onnxruntime": "onnx"}
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
WHEELS = "opt/edgeship/wheels"
INFO = "board.json"
_PARTIAL = ".edgeship-board-partial"
_BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
_MAKE = "edgeship device make-board"
_WHO = "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.machine())"


@dataclass(frozen=True)
class Board:
    """A built board: its folder and what ``board.json`` records."""

    folder: Path
    suite: str
    machine: str
    python: str
    wheels: tuple[str, ...]
    seconds: float
    size_bytes: int
    emulator: str = ""
    built: bool = field(default=False, compare=False)  # True when this call built it

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def wheel_dir(self) -> Path:
        return self.root / WHEELS

    def interpreters(self) -> list[str]:
        """The interpreter distributions whose wheels the board holds."""
        return [d for d in INTERPRETERS if any(w.lower().startswith(d.replace("-", "_") + "-") for w in self.wheels)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "suite": self.suite,
            "machine": self.machine,
            "python": self.python,
            "wheels": list(self.wheels),
            "seconds": round(self.seconds, 1),
            "size_bytes": self.size_bytes,
            "emulator": self.emulator,
        }


def load_board(folder: str | os.PathLike) -> Board:
    """The board built at ``folder``; a missing, half-built or foreign folder is a one-line error."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BadInputError(f"no board at {folder}: make one with `{_MAKE} {folder}` (about 2-3 minutes, 350 MB)")
    if (folder / _PARTIAL).exists() or not (folder / INFO).is_file():
        said = (
            "is half-built (make-board stopped before it finished)"
            if (folder / _PARTIAL).exists()
            else (f"holds no {INFO}, so it is not a board edgeship made")
        )
        raise BadInputError(f"{folder} {said}; run `{_MAKE} {folder}` (it starts again from a clean folder)")
    try:
        data = json.loads((folder / INFO).read_text())
        board = Board(
            folder=folder.resolve(),
            suite=str(data["suite"]),
            machine=str(data["machine"]),
            python=str(data["python"]),
            wheels=tuple(str(w) for w in data["wheels"]),
            seconds=float(data["seconds"]),
            size_bytes=int(data["size_bytes"]),
            emulator=str(data.get("emulator", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{folder / INFO} is not a board record edgeship reads ({exc}); run `{_MAKE} {folder}`")
    if not (board.root / "usr/bin/python3").exists():
        raise BadInputError(f"the board at {folder} has no root/usr/bin/python3; run `{_MAKE} {folder}` again")
    return board


def check_can_enter(board: Board) -> None:
    """Refuse, in one line, a host that cannot run the board's executables (chroot needs root; a
    foreign machine needs qemu-user registered with binfmt_misc)."""
    if os.geteuid() != 0:
        raise RuntimeFailure(
            f"entering the board at {board.folder} needs root (chroot); run edgeship as root, or put the board's "
            "userland on a real aarch64 machine and use an ssh:// target"
        )
    if board.machine != platform.machine():
        _binfmt_ready(enable=False)


def _binfmt_ready(*, enable: bool) -> str:
    """The registered qemu-aarch64 interpreter; with ``enable``, register it first if it is not."""

    def state() -> str:
        try:
            return _BINFMT.read_text()
        except OSError:
            return ""

    if not state().startswith("enabled") and enable and shutil.which("update-binfmts"):
        if not Path("/proc/sys/fs/binfmt_misc/register").exists():
            subprocess.run(
                ["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], capture_output=True
            )
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    text = state()
    if not text.startswith("enabled"):
        raise MissingDependencyError(
            "this kernel does not hand aarch64 programs to qemu (binfmt_misc has no enabled qemu-aarch64 entry); "
            "install Debian's qemu-user-static (apt-get install qemu-user-static) and run "
            "`update-binfmts --enable qemu-aarch64`"
        )
    line = next((w for w in text.splitlines() if w.startswith("interpreter ")), "interpreter qemu-aarch64")
    return line.split(" ", 1)[1]


def _emulator() -> str:
    """qemu-user's version line, for the record."""
    try:
        out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0].strip() if out.stdout else "qemu-aarch64-static"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "qemu-aarch64-static"


def _folder_size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_symlink() and p.is_file())


def _run(command: Sequence[str], what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFailure(f"{what} took over {timeout:.0f} s; stopped") from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise RuntimeFailure(f"{what} failed (exit status {proc.returncode}): {tail}")
    return proc.stdout


def host_versions(distributions: Sequence[str]) -> list[str]:
    """``name==version`` of each distribution as installed on this host (so the board runs the same
    releases), the bare name for one not installed here."""
    import importlib.metadata as metadata

    found = []
    for name in distributions:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(name)
    return found


def make_board(
    folder: str | os.PathLike,
    *,
    interpreters: Sequence[str] = tuple(INTERPRETERS),
    suite: str = SUITE,
    mirror: str = MIRROR,
    progress: Callable[[str], None] = lambda message: None,
) -> Board:
    """Build an arm64 board at ``folder``, or return the one already there (``built`` False) when it
    holds the same suite and interpreters. A half-built folder edgeship started is cleared and built
    again; a folder holding anything else is refused."""
    folder = Path(folder).expanduser()
    unknown = [i for i in interpreters if i not in INTERPRETERS]
    if unknown or not interpreters:
        raise BadInputError(f"a board holds interpreters from {sorted(INTERPRETERS)}; received {list(interpreters)}")
    wanted = host_versions(["numpy", *interpreters])
    if (folder / INFO).is_file() and not (folder / _PARTIAL).exists():
        board = load_board(folder)
        if board.suite == suite and sorted(board.interpreters()) == sorted(interpreters):
            return board
        progress(f"{folder}: the board holds {board.interpreters()}; fetching the wheels for {list(interpreters)}")
        started = time.perf_counter()
        wheels = _fetch_wheels(board.root, wanted, board.python)
        return _record(folder, board.suite, board.python, wheels, board.seconds + time.perf_counter() - started)
    if folder.exists() and any(folder.iterdir()) and not (folder / _PARTIAL).exists():
        raise BadInputError(
            f"{folder} already holds files and is not a board; name a new or empty folder for the board"
        )
    if os.geteuid() != 0:
        raise RuntimeFailure(f"making a board needs root (debootstrap and chroot); run `{_MAKE} {folder}` as root")
    if not shutil.which("debootstrap"):
        raise MissingDependencyError("making a board needs Debian's debootstrap: apt-get install debootstrap")
    if platform.machine() != "aarch64":
        if not shutil.which("qemu-aarch64-static"):
            raise MissingDependencyError(
                "making an arm64 board on this machine needs qemu-user: apt-get install qemu-user-static"
            )
        _binfmt_ready(enable=True)
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / _PARTIAL).write_text("make-board started here and has not finished\n")
    root = folder / "root"
    progress(f"debootstrap --arch=arm64 {suite} into {root} (about 2 minutes)")
    _run(
        [
            "debootstrap",
            "--arch=arm64",
            "--variant=minbase",
            "--include=python3,python3-venv",
            suite,
            str(root),
            mirror,
        ],
        f"debootstrap of Debian {suite} (arm64) from {mirror}",
        timeout=3600,
    )
    said = _run(
        ["chroot", str(root), "/usr/bin/python3", "-c", _WHO],
        "starting the board's Python",
        timeout=300,
    ).split()
    python, machine = said[0], said[1]
    if machine != "aarch64":
        raise RuntimeFailure(f"the board's Python at {root} runs as {machine}, not aarch64; run make-board again")
    progress(f"aarch64 wheels of {', '.join(wanted)} for Python {python}")
    wheels = _fetch_wheels(root, wanted, python)
    board = _record(folder, suite, python, wheels, time.perf_counter() - started)
    (folder / _PARTIAL).unlink()
    return board


def _fetch_wheels(root: Path, requirements: list[str], python: str) -> list[str]:
    """Download aarch64 wheels of ``requirements`` (and what they need) into the board, with this host's pip."""
    target = root / WHEELS
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    platforms = [f"manylinux_2_{minor}_aarch64" for minor in (17, 27, 28, 31, 34, 36)] + ["manylinux2014_aarch64"]
    abi = "cp" + python.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", abi]
    command += ["--abi", "abi3", "--abi", "none", *(x for p in platforms for x in ("--platform", p))]
    _run([*command, "--dest", str(target), *requirements], f"pip download of aarch64 wheels ({requirements})", 1800)
    return sorted(p.name for p in target.glob("*.whl"))


def _record(folder: Path, suite: str, python: str, wheels: list[str], seconds: float) -> Board:
    board = Board(
        folder=folder.resolve(),
        suite=suite,
        machine="aarch64",
        python=python,
        wheels=tuple(wheels),
        seconds=seconds,
        size_bytes=_folder_size(folder / "root"),
        emulator=_emulator() if platform.machine() != "aarch64" else "",
        built=True,
    )
    _io.write_bytes(folder / INFO, (json.dumps(board.to_dict(), indent=2) + "\n").encode())
    return board
