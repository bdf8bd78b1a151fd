"""Targets: where a validation bundle runs — this host, a host over ssh, an emulated arm64 board, a phone.

    local                          this machine, in a child Python
    ssh://[user@]host[:port][/path]  a venv at ``path`` (default ``~/.edgeship``) holding only the thin
                                   install: edgeship, numpy and the interpreters the bundle needs
    qemu-arm64:DIR                 the arm64 board ``edgeship device make-board DIR`` built, run under
                                   qemu-user: the ssh target's install and check, entered with chroot
    browser                        headless Chromium here: .tflite in LiteRT.js, .onnx in onnxruntime-web
    adb://SERIAL                   ``/data/local/tmp/edgeship`` on an Android device whose Python
                                   already has numpy and an interpreter (not yet verified on a phone)

Every target does the same three things: copy the bundle and the thin runtime, run
``python -m edgeship.runtimes._device_check`` there, and bring back its DeviceReport (outputs vs
expected within tolerance, accuracy on the bundle's labels, latency measured on the device).

    >>> reports = run_targets(["local", "ssh://pi@raspberrypi"], "out/bundle")   # doctest: +SKIP
    >>> [(r.target, r.passed) for r in reports]                                   # doctest: +SKIP

The ssh target installs the device's venv once and reuses it while edgeship and the wheels stay the
same. Its dependencies come from the device's package index, or with ``wheels=DIR`` from wheels
in DIR (an offline device), or with ``wheels="host"`` from this host's own installed numpy and
interpreters, repacked as wheels (only for a device of the same platform and Python).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import SplitResult, urlsplit

from edgeship import bundle as _bundle
from edgeship._deps import QUIET_CHILD_ENV, native_is_quiet
from edgeship._plugins import Registry
from edgeship.errors import BadInputError, EdgeshipError, RuntimeFailure
from edgeship.formats import for_path
from edgeship.runtimes._device_check import ArtifactCheck, DeviceReport

__all__ = [
    "Target",
    "TARGETS",
    "LocalTarget",
    "SshTarget",  # noqa: F822 (module __getattr__)
    "AdbTarget",  # noqa: F822
    "QemuTarget",  # noqa: F822
    "parse_target",
    "run_targets",
    "forms",
    "DeviceReport",
    "ArtifactCheck",
]

# What each field of a target may hold. A field is data that reaches ssh's or adb's argv (never a
# shell): none may start with '-' (it would be read as an option) or hold white space or shell
# metacharacters. Host names are DNS-style or IP literals; paths are plain folder names.
_FIELDS = {
    "user": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), "letters, digits, '_', '.' and '-' (not first)"),
    "host": (
        re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)+|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*"),
        "a host name (letters, digits, '-', '.') or an IP address",
    ),
    "path": (re.compile(r"[A-Za-z0-9_.+~/][A-Za-z0-9_.+~/-]*"), "letters, digits and _ . + ~ / - (not first)"),
    "serial": (re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.:-]*"), "letters, digits and _ . : - (not first)"),
}


def check_field(kind: str, value: str, where: str) -> str:
    """``value`` if it is a well-formed ``kind`` (user, host, path, serial), else a BadInputError
    naming the field; ``where`` is the target as the user wrote it."""
    pattern, allowed = _FIELDS[kind]
    if not isinstance(value, str) or len(value) > 255 or not pattern.fullmatch(value):
        raise BadInputError(
            f"the {kind} in target {where!r} is {value!r}; a {kind} holds {allowed} "
            "(a value starting with '-' would reach ssh or adb as an option)"
        )
    return value


_CHECK = "edgeship.runtimes._device_check"
MARKER = ".edgeship-install"


class Target(Protocol):
    """One place a bundle runs: the target contract.

    A kind of target is a class with ``FORM`` (the target string it takes, for messages),
    ``OPTIONS`` (the keyword options of ``parse_target`` it accepts) and ``parse(url, parts,
    **options)``, which returns a target for a string of its form and None for any other (a
    malformed field of its own form is a BadInputError). A target has its ``url`` and ``run``, which
    sends the bundle and the thin runtime, runs ``python -m edgeship.runtimes._device_check`` there
    and fetches its DeviceReport. Kinds are found in ``TARGETS``, built-ins first, then plugins of
    the entry-point group ``edgeship.targets``.
    """

    FORM: ClassVar[str]
    OPTIONS: ClassVar[tuple[str, ...]]
    url: str

    @classmethod
    def parse(cls, url: str, parts: SplitResult, **options: Any) -> Target | None:
        """The target ``url`` names (``parts`` is its ``urlsplit``), or None for another form."""

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        """Copy ``bundle`` and the thin runtime there, run the device-side check, return its report."""


def check_args(folder: str, url: str, runs: int, warmup: int, threads: int | None) -> list[str]:
    args = ["-m", _CHECK, "--bundle", folder, "--target", url, "--runs", str(runs), "--warmup", str(warmup)]
    return args + (["--threads", str(threads)] if threads else [])


def parse_report(stdout: str, url: str, stderr: str = "") -> DeviceReport:
    """The device check prints one JSON line last; libraries may print before it."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return DeviceReport.from_dict(json.loads(line))
            except (ValueError, EdgeshipError) as exc:
                raise RuntimeFailure(f"{url} sent back a report edgeship cannot read ({exc})") from exc
    tail = " | ".join((stderr or stdout).strip().splitlines()[-6:])
    raise RuntimeFailure(f"the device check on {url} printed no report; its output ended: {tail or '(nothing)'}")


def cache_dir() -> Path:
    """Where host-built wheels are kept between runs: $EDGESHIP_CACHE, else ~/.cache/edgeship."""
    return Path(os.environ.get("EDGESHIP_CACHE") or Path.home() / ".cache" / "edgeship")


def interpreters_for(manifest: _bundle.BundleManifest) -> list[str]:
    """Interpreter distributions the bundle's artifacts need (Core ML has none off Apple platforms)."""
    formats = [f for f in (for_path(e.path) for e in manifest.artifacts) if f is not None]
    return sorted({f.runtimes[0].distribution for f in formats if f.runtimes[0].distribution})


@dataclass
class LocalTarget:
    """This machine: the check runs in a child ``python`` (default: this interpreter)."""

    python: str | None = None
    url: str = "local"
    FORM: ClassVar[str] = "local"
    OPTIONS: ClassVar[tuple[str, ...]] = ("python",)

    @classmethod
    def parse(cls, url: str, parts: SplitResult, **options: Any) -> LocalTarget | None:
        return cls(**options) if url == "local" else None

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        _bundle.load(bundle)  # refuse a damaged bundle here, before any work
        command = [
            self.python or sys.executable,
            *check_args(str(Path(bundle).resolve()), self.url, runs, warmup, threads),
        ]
        env = {**os.environ, QUIET_CHILD_ENV: "1" if native_is_quiet() else "0"}  # the child: as quiet as this process
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600, env=env)
        return parse_report(proc.stdout, self.url, proc.stderr)


#: every kind of target, in the order ``parse_target`` asks them
TARGETS: Registry[Any] = Registry(
    "edgeship.targets",
    {
        "local": LocalTarget,
        "ssh": "edgeship.runtimes._ssh:SshTarget",
        "qemu-arm64": "edgeship.runtimes._qemu:QemuTarget",
        "browser": "edgeship.runtimes._browser:BrowserTarget",
        "adb": "edgeship.runtimes._adb:AdbTarget",
    },
)


def __getattr__(name: str) -> Any:
    """``SshTarget``, ``QemuTarget`` and ``AdbTarget`` live in their own modules, imported when first named here."""
    kinds = {"SshTarget": "ssh", "QemuTarget": "qemu-arm64", "AdbTarget": "adb"}
    if name in kinds:
        return TARGETS.get(kinds[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def forms() -> list[str]:
    """The target strings every known target takes (``local``, ``ssh://…``, ``adb://SERIAL``)."""
    return [kind.FORM for kind in TARGETS.all()]


def parse_target(url: str, **options: Any) -> Target:
    """A Target from its string: the first kind in ``TARGETS`` whose ``parse`` takes it; each kind
    gets the ``options`` it names (``OPTIONS``: ``identity``, ``wheels`` for ssh; ``adb`` for adb)."""
    if not isinstance(url, str):
        raise BadInputError(f"a target is a string, one of {forms()}; received {type(url).__name__}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise BadInputError(f"target {url!r} holds white space or control characters; a target is one of {forms()}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' in the host
        raise BadInputError(
            f"target {url!r} is not a URL edgeship reads ({exc}); a target is one of {forms()}"
        ) from exc
    for kind in TARGETS.all():
        target = kind.parse(url, parts, **{k: v for k, v in options.items() if k in kind.OPTIONS})
        if target is not None:
            return target
    raise BadInputError(f"unknown target {url!r}; a target is one of {forms()}")


def run_targets(
    targets: Sequence[str | Target],
    bundle: str | os.PathLike,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    **options: Any,
) -> list[DeviceReport]:
    """Run ``bundle`` on every target in parallel; a target that fails comes back with ``error`` set
    (and ``passed`` None) while the others finish."""
    resolved = [t if not isinstance(t, str) else parse_target(t, **options) for t in targets]
    urls = [t.url for t in resolved]
    if len(set(urls)) != len(urls):
        raise BadInputError(f"each target may appear once (they would share a folder); received {urls}")
    folder = Path(bundle)
    _bundle.load(folder)

    def one(target: Target) -> DeviceReport:
        try:
            return target.run(folder, runs=runs, warmup=warmup, threads=threads)
        except EdgeshipError as exc:
            return DeviceReport(target=target.url, passed=None, error=f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, len(resolved))) as pool:
        return list(pool.map(one, resolved))
