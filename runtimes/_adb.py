"""The adb target: an Android device whose Python already has numpy and an interpreter.

What it can do today: replay a bundle on a phone that has a Python with numpy and LiteRT or ONNX
Runtime (Termux's python, with ``--python PATH``). What it cannot: LiteRT publishes no Android
Python wheel, and its on-device benchmark binary (``benchmark_model``) is not in a package of the
registries edgeship installs from (PyPI, npm, Debian), so a phone without such a Python is refused
in one line that names the alternatives: an arm64 board (``qemu-arm64:DIR`` here, ``ssh://`` to a
real one), which runs the same ARM builds of the interpreters.

One kind of target of ``edgeship.runtimes.targets`` (its ``TARGETS``).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import SplitResult

from edgeship import bundle as _bundle
from edgeship.errors import BadInputError, RuntimeFailure
from edgeship.runtimes._device_check import DeviceReport
from edgeship.runtimes._wheels import edgeship_wheel
from edgeship.runtimes.targets import check_args, check_field, parse_report

NO_PYTHON = (
    "{url} has no {python!r} on its PATH: the adb target runs the check with a Python on the phone "
    "(numpy and LiteRT or ONNX Runtime installed, e.g. Termux's; pass --python PATH), and LiteRT publishes "
    "neither an Android Python wheel nor its benchmark binary in a package edgeship installs from. Run the bundle "
    "on an arm64 board instead, with the same ARM interpreter builds: --target qemu-arm64:DIR (edgeship device "
    "make-board DIR) or --target ssh://user@board"
)


@dataclass
class AdbTarget:
    """An Android device over ``adb``: edgeship's pure-Python package is pushed next to the bundle
    and run by ``python`` on the device, which must already have numpy and an interpreter (for
    example Termux's). Tested up to its adb command lines; not yet verified on a real phone."""

    serial: str
    adb: str = "adb"
    python: str = "python3"
    path: str = "/data/local/tmp/edgeship"
    server_port: int | None = None
    timeout: float = 900.0

    FORM: ClassVar[str] = "adb://SERIAL"
    OPTIONS: ClassVar[tuple[str, ...]] = ("adb", "python", "server_port", "timeout")

    @classmethod
    def parse(cls, url: str, parts: SplitResult, **options: Any) -> AdbTarget | None:
        """The target ``adb://SERIAL`` names, None for another form."""
        if parts.scheme == "adb" and parts.netloc:
            if parts.path or parts.query or parts.fragment:
                raise BadInputError(f"target {url!r} has more than a serial; an adb target is adb://SERIAL")
            check_field("serial", parts.netloc, url)
            return cls(serial=parts.netloc, **options)
        return None

    def __post_init__(self) -> None:
        check_field("serial", self.serial, f"adb://{self.serial}")
        check_field("path", self.path, f"adb://{self.serial}")

    @property
    def url(self) -> str:
        return f"adb://{self.serial}"

    def commands(self, staged: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> list[list[str]]:
        """The adb command lines, in order: clear the folder, push lib/ and bundle/, run the check."""
        base = [self.adb] + (["-P", str(self.server_port)] if self.server_port else []) + ["-s", self.serial]
        root = shlex.quote(self.path)
        check = " ".join(
            shlex.quote(a) for a in [self.python, *check_args(f"{self.path}/bundle", self.url, runs, warmup, threads)]
        )
        return [
            base + ["shell", f"rm -rf {root} && mkdir -p {root}"],
            base + ["push", str(staged / "lib"), str(staged / "bundle"), f"{self.path}/"],
            base + ["shell", f"cd {root} && PYTHONPATH={root}/lib {check}"],
        ]

    def stage(self, bundle: Path, folder: Path) -> Path:
        """Lay out ``folder/lib`` (edgeship, unpacked from its wheel) and ``folder/bundle``."""
        _bundle.load(bundle)
        with zipfile.ZipFile(edgeship_wheel(folder)) as zf:
            zf.extractall(folder / "lib")
        shutil.copytree(bundle, folder / "bundle")
        return folder

    def _adb(self, command: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        verb = next(i for i, word in enumerate(command) if word in ("shell", "push"))
        shown = shlex.join(command[: verb + 1]) + " …"
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeFailure(f"{shown} failed for {self.url}: {exc}") from exc
        if check and proc.returncode != 0:
            said = [
                line for line in (proc.stderr or proc.stdout).strip().splitlines() if not line.startswith("* daemon")
            ]
            raise RuntimeFailure(
                f"{shown} failed for {self.url}: {' '.join(said)[-500:]} "
                "(`adb devices` lists the serials this adb server sees)"
            )
        return proc

    def check_python(self) -> None:
        """Refuse a device whose shell finds no ``python`` (the adb target needs one there)."""
        base = [self.adb] + (["-P", str(self.server_port)] if self.server_port else []) + ["-s", self.serial]
        proc = self._adb(base + ["shell", f"command -v {shlex.quote(self.python)} || echo EDGESHIP-NO-PYTHON"])
        if "EDGESHIP-NO-PYTHON" in proc.stdout:
            raise RuntimeFailure(NO_PYTHON.format(url=self.url, python=self.python))

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        self.check_python()
        with tempfile.TemporaryDirectory(prefix="edgeship-adb-") as tmp:
            *setup, check = self.commands(
                self.stage(Path(bundle), Path(tmp)), runs=runs, warmup=warmup, threads=threads
            )
            for command in setup:
                self._adb(command)
        proc = self._adb(check, check=False)  # exit 2 (a failed check) still carries the report
        return parse_report(proc.stdout, self.url, proc.stderr)
