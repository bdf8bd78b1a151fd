"""Targets: where a validation bundle runs — this host, a host over ssh, an Android device over adb.

    local                          this machine, in a child Python
    ssh://[user@]host[:port][/path]  a venv at ``path`` (default ``~/.edgeship``) holding only the thin
                                   install: edgeship, numpy and the interpreters the bundle needs
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

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence
from urllib.parse import urlsplit

from edgeship import bundle as _bundle
from edgeship.errors import BadInputError, EdgeshipError, RuntimeFailure
from edgeship.runtimes import RUNTIMES, runtime_for
from edgeship.runtimes._device_check import ArtifactCheck, DeviceReport
from edgeship.runtimes._wheels import INTERPRETERS, edgeship_wheel, host_wheels

__all__ = ["Target", "LocalTarget", "SshTarget", "AdbTarget", "parse_target", "run_targets",
           "DeviceReport", "ArtifactCheck"]

FORMS = ("local", "ssh://[user@]host[:port][/path]", "adb://SERIAL")

# What each field of a target may hold. A field is data that reaches ssh's or adb's argv (never a
# shell): none may start with '-' (it would be read as an option) or hold white space or shell
# metacharacters. Host names are DNS-style or IP literals; paths are plain folder names.
_FIELDS = {
    "user": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), "letters, digits, '_', '.' and '-' (not first)"),
    "host": (re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)+|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*"),
             "a host name (letters, digits, '-', '.') or an IP address"),
    "path": (re.compile(r"[A-Za-z0-9_.+~/][A-Za-z0-9_.+~/-]*"), "letters, digits and _ . + ~ / - (not first)"),
    "serial": (re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.:-]*"), "letters, digits and _ . : - (not first)"),
}


def check_field(kind: str, value: str, where: str) -> str:
    """``value`` if it is a well-formed ``kind`` (user, host, path, serial), else a BadInputError
    naming the field; ``where`` is the target as the user wrote it."""
    pattern, allowed = _FIELDS[kind]
    if not isinstance(value, str) or len(value) > 255 or not pattern.fullmatch(value):
        raise BadInputError(f"the {kind} in target {where!r} is {value!r}; a {kind} holds {allowed} "
                            "(a value starting with '-' would reach ssh or adb as an option)")
    return value
_CHECK = "edgeship.runtimes._device_check"
_MARKER = ".edgeship-install"


class Target(Protocol):
    """One place a bundle runs."""

    url: str

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        """Copy ``bundle`` and the thin runtime there, run the device-side check, return its report."""


def _check_args(folder: str, url: str, runs: int, warmup: int, threads: int | None) -> list[str]:
    args = ["-m", _CHECK, "--bundle", folder, "--target", url, "--runs", str(runs), "--warmup", str(warmup)]
    return args + (["--threads", str(threads)] if threads else [])


def _parse_report(stdout: str, url: str, stderr: str = "") -> DeviceReport:
    """The device check prints one JSON line last; libraries may print before it."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return DeviceReport.from_dict(json.loads(line))
            except (ValueError, EdgeshipError) as exc:
                raise RuntimeFailure(f"{url} sent back a report edgeship cannot read ({exc})") from exc
    tail = " | ".join((stderr or stdout).strip().splitlines()[-6:])
    raise RuntimeFailure(f"the device check on {url} printed no report; its output ended: {tail or '(nothing)'}")


def _cache_dir() -> Path:
    """Where host-built wheels are kept between runs: $EDGESHIP_CACHE, else ~/.cache/edgeship."""
    return Path(os.environ.get("EDGESHIP_CACHE") or Path.home() / ".cache" / "edgeship")


def _interpreters(manifest: _bundle.BundleManifest) -> list[str]:
    """Interpreter distributions the bundle's artifacts need (Core ML has none off Apple platforms)."""
    needed = {runtime_for(e.path) for e in manifest.artifacts if Path(e.path).suffix.lower() in RUNTIMES}
    return sorted(INTERPRETERS[r] for r in needed if r in INTERPRETERS)


@dataclass
class LocalTarget:
    """This machine: the check runs in a child ``python`` (default: this interpreter)."""

    python: str | None = None
    url: str = "local"

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        _bundle.load(bundle)  # refuse a damaged bundle here, before any work
        command = [self.python or sys.executable, *_check_args(str(Path(bundle).resolve()), self.url, runs, warmup, threads)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        return _parse_report(proc.stdout, self.url, proc.stderr)


def _tar_to(command: list[str], items: dict[str, Path], timeout: float) -> None:
    """Stream ``items`` (archive name -> local path) as a tar archive into ``command``'s stdin."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                for name, path in items.items():
                    tar.add(path, arcname=name)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the remote side stopped reading; its stderr says why
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise RuntimeFailure(f"copying to the target took over {timeout} s; stopped") from exc
        err.seek(0)
        message = err.read().decode(errors="replace").strip()[-500:]
    if proc.returncode != 0:
        raise RuntimeFailure(f"copying to the target failed (exit status {proc.returncode}): {message}")


@dataclass
class SshTarget:
    """A host reached with OpenSSH's ``ssh``; the check runs in a venv at ``path`` there (absolute,
    or relative to the login folder).

    ``identity`` is a private key file, ``options`` extra ``ssh -o`` settings (they take precedence
    over edgeship's defaults), ``python`` the device interpreter that creates the venv, ``wheels``
    where the dependencies come from (None: the device's index; a folder; or "host").
    """

    host: str
    user: str | None = None
    port: int | None = None
    path: str = ".edgeship"
    identity: str | None = None
    options: tuple[str, ...] = ()
    python: str = "python3"
    wheels: str | None = None
    wheel_cache: str | None = None
    timeout: float = 900.0

    def __post_init__(self) -> None:
        where = f"ssh://{self.user + '@' if self.user else ''}{self.host}"
        check_field("host", self.host, where)
        if self.user is not None:
            check_field("user", self.user, where)
        check_field("path", self.path, where)
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int)
                                      or not 0 < self.port < 65536):
            raise BadInputError(f"the port in target {where!r} is {self.port!r}; a port is a number from 1 to 65535")

    @property
    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        path = self.path if self.path.startswith("/") else ""
        return f"ssh://{user}{self.host}{port}{path}"

    def ssh_command(self, remote: str) -> list[str]:
        """The ssh command line that runs the shell command ``remote`` on the target: user and port
        as ``-l``/``-p`` values and the host after ``--``, so no field of the target is an option."""
        command = ["ssh"]
        for option in self.options:
            command += ["-o", option]
        command += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR"]
        if self.user:
            command += ["-l", self.user]
        if self.port:
            command += ["-p", str(self.port)]
        if self.identity:
            command += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return command + ["--", self.host, remote]

    def _ssh(self, remote: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self.ssh_command(remote), capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailure(f"{self.url} did not answer within {self.timeout} s") from exc
        if proc.returncode == 255:
            raise RuntimeFailure(f"cannot reach {self.url} with ssh: {proc.stderr.strip()[-500:]}")
        return proc

    def _install_plan(self, manifest: _bundle.BundleManifest, tmp: Path) -> tuple[str, dict[str, Path], list[str]]:
        """(install key, wheels to copy, pip arguments) for the venv this bundle needs."""
        interpreters = _interpreters(manifest)
        own = edgeship_wheel(tmp)
        if self.wheels is None:  # the device's own index resolves numpy and the interpreters
            extras = ",".join(e for e, dist in (("litert", "ai-edge-litert"), ("onnx", "onnxruntime")) if dist in interpreters)
            files, pip = {own.name: own}, [f"wheels/{own.name}[{extras}]" if extras else f"wheels/{own.name}"]
        else:
            names = ["numpy", *interpreters]
            if self.wheels == "host":
                deps = host_wheels(names, Path(self.wheel_cache or _cache_dir() / "wheels"))
            else:
                deps = _wheels_in(Path(self.wheels), names)
            files = {own.name: own, **{w.name: w for w in deps}}
            pip = ["--no-index", "--no-deps", *(f"wheels/{name}" for name in files)]
        digest = hashlib.sha256(own.read_bytes())
        digest.update(" ".join(pip).encode())
        return digest.hexdigest(), files, pip

    def _install(self, key: str, files: dict[str, Path], pip: list[str]) -> None:
        root = shlex.quote(self.path)
        _tar_to(self.ssh_command(f"rm -rf {root}/wheels && mkdir -p {root}/wheels && tar -xf - -C {root}/wheels"),
                files, self.timeout)
        script = " && ".join([
            f"cd {root}", "rm -rf venv", f"{shlex.quote(self.python)} -m venv venv",
            "venv/bin/python -m pip install --quiet --no-compile --disable-pip-version-check " + " ".join(map(shlex.quote, pip)),
            f"echo {key} > venv/{_MARKER}", "rm -rf wheels",
        ])
        proc = self._ssh(script)
        if proc.returncode != 0:
            raise RuntimeFailure(f"installing the thin runtime on {self.url} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        manifest, _, _ = _bundle.load(bundle)
        root = shlex.quote(self.path)
        # 1. the venv, unless the one there was made from the same wheels (this also finds out,
        #    before anything is built, whether the target answers at all)
        installed = self._ssh(f"cat {root}/venv/{_MARKER} 2>/dev/null || true").stdout.strip()
        with tempfile.TemporaryDirectory(prefix="edgeship-ssh-") as tmp:
            key, files, pip = self._install_plan(manifest, Path(tmp))
            if installed != key:
                self._install(key, files, pip)
        # 2. the bundle
        _tar_to(self.ssh_command(f"rm -rf {root}/bundle && mkdir -p {root}/bundle && tar -xf - -C {root}/bundle"),
                {p.name: p for p in Path(bundle).iterdir()}, self.timeout)
        # 3. the check
        args = _check_args(f"{self.path}/bundle", self.url, runs, warmup, threads)
        proc = self._ssh(" ".join(shlex.quote(a) for a in [f"{self.path}/venv/bin/python", *args]))
        return _parse_report(proc.stdout, self.url, proc.stderr)


def _wheels_in(folder: Path, names: list[str]) -> list[Path]:
    found = []
    for name in names:
        prefix = name.replace("-", "_").lower() + "-"
        matches = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
        if not matches:
            raise BadInputError(f"no wheel of {name} in {folder}; it holds {sorted(p.name for p in folder.glob('*.whl'))}")
        found.append(matches[-1])
    return found


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
        check = " ".join(shlex.quote(a) for a in [self.python, *_check_args(f"{self.path}/bundle", self.url, runs, warmup, threads)])
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
            said = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if not line.startswith("* daemon")]
            raise RuntimeFailure(f"{shown} failed for {self.url}: {' '.join(said)[-500:]} "
                                 "(`adb devices` lists the serials this adb server sees)")
        return proc

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        with tempfile.TemporaryDirectory(prefix="edgeship-adb-") as tmp:
            *setup, check = self.commands(self.stage(Path(bundle), Path(tmp)), runs=runs, warmup=warmup, threads=threads)
            for command in setup:
                self._adb(command)
        proc = self._adb(check, check=False)  # exit 2 (a failed check) still carries the report
        return _parse_report(proc.stdout, self.url, proc.stderr)


def parse_target(url: str, **options: Any) -> Target:
    """A Target from its URL (see ``FORMS``); ``options`` go to the target's class (e.g.
    ``identity``, ``options``, ``wheels`` for ssh; ``adb``, ``python`` for adb)."""
    if not isinstance(url, str):
        raise BadInputError(f"a target is a string, one of {list(FORMS)}; received {type(url).__name__}")
    if url == "local":
        return LocalTarget(**{k: v for k, v in options.items() if k == "python"})
    if any(c.isspace() or not c.isprintable() for c in url):
        raise BadInputError(f"target {url!r} holds white space or control characters; a target is one of {list(FORMS)}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' in the host
        raise BadInputError(f"target {url!r} is not a URL edgeship reads ({exc}); a target is one of {list(FORMS)}") from exc
    if parts.scheme == "ssh" and parts.netloc and parts.netloc.rpartition("@")[2]:
        if parts.query or parts.fragment or parts.password is not None:
            raise BadInputError(f"target {url!r} holds a password, '?' or '#'; an ssh target is "
                                "ssh://[user@]host[:port][/path] (keys, not passwords: --identity)")
        try:
            port = parts.port
        except ValueError as exc:
            raise BadInputError(f"the port in {url!r} is not a number from 1 to 65535") from exc
        if parts.path.rstrip("/") == "" and parts.path:
            raise BadInputError(f"{url!r} names the root folder; name a folder for edgeship, e.g. ssh://host/tmp/edgeship")
        host = parts.netloc.rpartition("@")[2].rpartition(":")[0] if port is not None else parts.netloc.rpartition("@")[2]
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
        user = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
        if user == "":
            raise BadInputError(f"target {url!r} has an empty user name before '@'; drop the '@' or name the user")
        for kind, value in (("user", user), ("host", host), ("path", parts.path or ".edgeship")):
            if value is not None:
                check_field(kind, value, url)
        return SshTarget(host=host, user=user, port=port, path=parts.path or ".edgeship",
                         **{k: v for k, v in options.items() if k in _SSH_OPTIONS})
    if parts.scheme == "adb" and parts.netloc:
        if parts.path or parts.query or parts.fragment:
            raise BadInputError(f"target {url!r} has more than a serial; an adb target is adb://SERIAL")
        check_field("serial", parts.netloc, url)
        return AdbTarget(serial=parts.netloc, **{k: v for k, v in options.items() if k in _ADB_OPTIONS})
    raise BadInputError(f"unknown target {url!r}; a target is one of {list(FORMS)}")


_SSH_OPTIONS = ("identity", "options", "python", "wheels", "wheel_cache", "timeout")
_ADB_OPTIONS = ("adb", "python", "server_port", "timeout")


def run_targets(targets: Sequence[str | Target], bundle: str | os.PathLike, *, runs: int = 50, warmup: int = 5,
                threads: int | None = None, **options: Any) -> list[DeviceReport]:
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
