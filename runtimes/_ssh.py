"""The ssh target: a host reached with OpenSSH, the check run in a venv there.

One kind of target of ``edgeship.runtimes.targets`` (its ``TARGETS``).
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import SplitResult

from edgeship import bundle as _bundle
from edgeship.errors import BadInputError, RuntimeFailure
from edgeship.runtimes._device_check import DeviceReport
from edgeship.runtimes._wheels import edgeship_wheel, host_wheels
from edgeship.runtimes.targets import MARKER, cache_dir, check_args, check_field, interpreters_for, parse_report


def tar_to(command: list[str], items: dict[str, Path], timeout: float) -> None:
    """Stream ``items`` (archive name -> local path) as a tar archive into ``command``'s stdin."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                for name, path in items.items():
                    tar.add(path, arcname=name)
            proc.stdin.close()  # type: ignore[union-attr]  # stdin=PIPE: always a stream
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

    FORM: ClassVar[str] = "ssh://[user@]host[:port][/path]"
    OPTIONS: ClassVar[tuple[str, ...]] = ("identity", "options", "python", "wheels", "wheel_cache", "timeout")

    @classmethod
    def parse(cls, url: str, parts: SplitResult, **options: Any) -> SshTarget | None:
        """The target ``ssh://…`` names, None for another form; a malformed field is a BadInputError."""
        if parts.scheme == "ssh" and parts.netloc and parts.netloc.rpartition("@")[2]:
            if parts.query or parts.fragment or parts.password is not None:
                raise BadInputError(
                    f"target {url!r} holds a password, '?' or '#'; an ssh target is "
                    "ssh://[user@]host[:port][/path] (keys, not passwords: --identity)"
                )
            try:
                port = parts.port
            except ValueError as exc:
                raise BadInputError(f"the port in {url!r} is not a number from 1 to 65535") from exc
            if parts.path.rstrip("/") == "" and parts.path:
                raise BadInputError(
                    f"{url!r} names the root folder; name a folder for edgeship, e.g. ssh://host/tmp/edgeship"
                )
            host = (
                parts.netloc.rpartition("@")[2].rpartition(":")[0]
                if port is not None
                else parts.netloc.rpartition("@")[2]
            )
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
            user = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
            if user == "":
                raise BadInputError(f"target {url!r} has an empty user name before '@'; drop the '@' or name the user")
            for kind, value in (("user", user), ("host", host), ("path", parts.path or ".edgeship")):
                if value is not None:
                    check_field(kind, value, url)
            return cls(host=host, user=user, port=port, path=parts.path or ".edgeship", **options)
        return None

    def __post_init__(self) -> None:
        where = f"ssh://{self.user + '@' if self.user else ''}{self.host}"
        check_field("host", self.host, where)
        if self.user is not None:
            check_field("user", self.user, where)
        check_field("path", self.path, where)
        if self.port is not None and (
            isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536
        ):
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

    def shell(self, remote: str) -> list[str]:
        """The command line that runs the shell command ``remote`` on the target (ssh here; a
        target that enters its device another way overrides this alone)."""
        return self.ssh_command(remote)

    def _ssh(self, remote: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self.shell(remote), capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailure(f"{self.url} did not answer within {self.timeout} s") from exc
        if proc.returncode == 255:
            raise RuntimeFailure(f"cannot reach {self.url} with ssh: {proc.stderr.strip()[-500:]}")
        return proc

    def _install_plan(
        self, manifest: _bundle.BundleManifest, tmp: Path, machine: str = ""
    ) -> tuple[str, dict[str, Path], list[str]]:
        """(install key, wheels to copy, pip arguments) for the venv this bundle needs on a device
        whose ``platform.machine()`` is ``machine`` (wheels built for another one are refused)."""
        interpreters = interpreters_for(manifest)
        own = edgeship_wheel(tmp)
        extras = ",".join(
            e for e, dist in (("litert", "ai-edge-litert"), ("onnx", "onnxruntime")) if dist in interpreters
        )
        wanted = f"wheels/{own.name}[{extras}]" if extras else f"wheels/{own.name}"
        if self.wheels is None:  # the device's own index resolves numpy and the interpreters
            files, pip = {own.name: own}, [wanted]
        elif self.wheels == "host":  # this host's own, repacked: exactly these, nothing resolved
            deps = host_wheels(["numpy", *interpreters], Path(self.wheel_cache or cache_dir() / "wheels"))
            check_platform(deps, machine, "--wheels host repacks this host's installed packages")
            files = {own.name: own, **{w.name: w for w in deps}}
            pip = ["--no-index", "--no-deps", *(f"wheels/{name}" for name in files)]
        else:  # a folder of wheels: pip resolves the bundle's needs from it alone
            folder = Path(self.wheels)
            wheels_in(folder, ["numpy", *interpreters])
            deps = sorted(folder.glob("*.whl"))
            check_platform(deps, machine, f"the wheels in {folder}")
            files = {own.name: own, **{w.name: w for w in deps if not w.name.startswith("edgeship-")}}
            pip = ["--no-index", "--find-links", "wheels", wanted]
        digest = hashlib.sha256(own.read_bytes())
        digest.update(" ".join(pip).encode())
        for name in sorted(files):
            digest.update(name.encode())
        return digest.hexdigest(), files, pip

    def _install(self, key: str, files: dict[str, Path], pip: list[str]) -> None:
        root = shlex.quote(self.path)
        tar_to(
            self.shell(f"rm -rf {root}/wheels && mkdir -p {root}/wheels && tar -xf - -C {root}/wheels"),
            files,
            self.timeout,
        )
        script = " && ".join(
            [
                f"cd {root}",
                "rm -rf venv",
                f"{shlex.quote(self.python)} -m venv venv",
                "venv/bin/python -m pip install --quiet --no-compile --disable-pip-version-check "
                + " ".join(map(shlex.quote, pip)),
                f"echo {key} > venv/{MARKER}",
                "rm -rf wheels",
            ]
        )
        proc = self._ssh(script)
        if proc.returncode != 0:
            raise RuntimeFailure(
                f"installing the thin runtime on {self.url} failed: {(proc.stderr or proc.stdout).strip()[-800:]}"
            )

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        manifest, _, _ = _bundle.load(bundle)
        root = shlex.quote(self.path)
        # 1. the venv, unless the one there was made from the same wheels (this also finds out,
        #    before anything is built, whether the target answers at all)
        said = self._ssh(f"uname -m; cat {root}/venv/{MARKER} 2>/dev/null || true").stdout.split()
        machine, installed = (said + ["", ""])[:2]
        with tempfile.TemporaryDirectory(prefix="edgeship-ssh-") as tmp:
            key, files, pip = self._install_plan(manifest, Path(tmp), machine)
            if installed != key:
                self._install(key, files, pip)
        # 2. the bundle
        tar_to(
            self.shell(f"rm -rf {root}/bundle && mkdir -p {root}/bundle && tar -xf - -C {root}/bundle"),
            {p.name: p for p in Path(bundle).iterdir()},
            self.timeout,
        )
        # 3. the check
        args = check_args(f"{self.path}/bundle", self.url, runs, warmup, threads)
        proc = self._ssh(" ".join(shlex.quote(a) for a in [f"{self.path}/venv/bin/python", *args]))
        return parse_report(proc.stdout, self.url, proc.stderr)


#: how a wheel's platform tag spells a machine (``platform.machine()``) where the two differ
_TAG_MACHINES = {"aarch64": ("aarch64", "arm64"), "x86_64": ("x86_64", "amd64"), "armv7l": ("armv7l",)}


def check_platform(wheels: list[Path], machine: str, what: str) -> None:
    """Refuse, naming the first, a wheel built for another machine than ``machine`` (pure-Python
    wheels fit everywhere; an unknown machine is not checked)."""
    if not machine:
        return
    spelled = _TAG_MACHINES.get(machine, (machine,))
    for wheel in wheels:
        tag = wheel.name[: -len(".whl")].rsplit("-", 1)[-1]
        if tag != "any" and not any(m in tag for m in spelled):
            raise BadInputError(
                f"{wheel.name} is built for {tag}, but the target is {machine}; {what}: give wheels built for "
                f"{machine} (pip download --platform ...{machine}) or let the device install from its index"
            )


def wheels_in(folder: Path, names: list[str]) -> list[Path]:
    found = []
    for name in names:
        prefix = name.replace("-", "_").lower() + "-"
        matches = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
        if not matches:
            raise BadInputError(
                f"no wheel of {name} in {folder}; it holds {sorted(p.name for p in folder.glob('*.whl'))}"
            )
        found.append(matches[-1])
    return found
