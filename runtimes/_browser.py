"""The browser target: a bundle replayed in headless Chromium, each .tflite in LiteRT.js and each
.onnx in onnxruntime-web (their WASM builds, one thread).

    edgeship device setup-browser                          # once: npm ci of the pinned packages
    edgeship device run --bundle out/bundle --target browser

The page (``browser_page/``: index.html, runner.js, and the npm packages' versions in
package-lock.json) is served from 127.0.0.1 alone, with the headers that make it cross-origin
isolated; the npm packages come from a local install made from that lock file the first time the
target is used (``setup``), so the page fetches nothing from anywhere else. Chromium is Debian's
(``apt-get install chromium``): edgeship downloads no browser. The browser is driven with the
standard library — an HTTP server whose page POSTs its results back, and Chromium started headless
in its own process group and stopped with it — rather than Playwright or the DevTools protocol:
the page needs nothing from the driver but its job, so nothing else is worth a dependency.

The page loads once per artifact, so each one's cold start (page, runtime and model) is real; it
applies the preprocessing the file records to the bundle's raw inputs, quantizes for int8-input
files, runs every sample at batch 1, and times ``runs`` calls with ``performance.now()``. This host
runs the same file natively for the p50 it is printed beside. One kind of target of
``edgeship.runtimes.targets`` (its ``TARGETS``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit

import numpy as np

from edgeship import _io
from edgeship import bundle as _bundle
from edgeship.errors import BadInputError, EdgeshipError, MissingDependencyError, RuntimeFailure
from edgeship.formats import for_path
from edgeship.runtimes._device_check import (
    ArtifactCheck,
    DeviceReport,
    applied,
    blank,
    model_inputs,
    preprocessing_for,
    score,
)
from edgeship.runtimes.targets import cache_dir

PAGE = Path(__file__).with_name("browser_page")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
          ".wasm": "application/wasm"}  # fmt: skip
#: Chromium as root, headless, with nothing of its own on the network (this machine's is closed)
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
          "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")  # fmt: skip


#: where Debian's chromium package puts the browser binary
CHROMIUM = ("/usr/lib/chromium/chromium", "/usr/lib/chromium/chrome")


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium binary itself (Debian's /usr/bin/chromium is a wrapper script that does not
    exec, so stopping it would leave the browser running)."""
    for candidate in (explicit, *CHROMIUM, shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and Path(candidate).read_bytes()[:4] == b"\x7fELF":
            return candidate
    if explicit:
        raise BadInputError(f"--chromium {explicit} is not a Chromium executable")
    raise MissingDependencyError(
        "the browser target needs Chromium, which is not installed here: apt-get install chromium "
        "(Debian's package; edgeship downloads no browser)"
    )


def npm_folder() -> Path:
    """Where the pinned npm packages are installed: one folder per lock file."""
    digest = hashlib.sha256((PAGE / "package-lock.json").read_bytes()).hexdigest()[:12]
    return cache_dir() / "browser" / digest


def setup(progress: Any = None) -> Path:
    """Install the page's npm packages from the lock file (``npm ci``) once; the folder holding node_modules."""
    folder = npm_folder()
    if (folder / "node_modules" / ".edgeship-installed").is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise MissingDependencyError(
            "the browser target installs @litertjs/core and onnxruntime-web with npm, which is not installed "
            "here: apt-get install npm (or run `edgeship device setup-browser` where npm is)"
        )
    if progress:
        progress(f"npm ci of the pinned @litertjs/core and onnxruntime-web into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _io.staged(folder, directory=True) as tmp:
        tmp.mkdir(exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(PAGE / name, tmp / name)
        command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
        proc = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise RuntimeFailure(f"npm ci of the browser runtimes failed (exit status {proc.returncode}): {tail}")
        (tmp / "node_modules" / ".edgeship-installed").write_text("npm ci from package-lock.json\n")
    return folder


def installed_versions(folder: Path) -> dict[str, str]:
    found = {}
    for name in ("@litertjs/core", "onnxruntime-web"):
        package = folder / "node_modules" / name / "package.json"
        found[name] = json.loads(package.read_text()).get("version", "?") if package.is_file() else "missing"
    return found


def _encoded(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.name, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}


class _Page(ThreadingHTTPServer):
    """127.0.0.1 only: the page, the npm install, the job and the bundle's artifacts; results come back by POST."""

    daemon_threads = True

    def __init__(self, modules: Path, job: dict[str, Any], files: dict[str, Path], expected: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.modules, self.files, self.expected = modules.resolve(), files, expected
        self.job = json.dumps(job).encode()
        self.results: dict[int, dict[str, Any]] = {}
        self.done = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Page

    def log_message(self, *args: Any) -> None:
        return

    def _send(self, code: int, body: bytes, kind: str = "application/octet-stream") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")  # cross-origin isolated: WASM
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")  # threads, precise timers
        self.send_header("Cache-Control", "no-store")  # every page load is a cold start
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = unquote(urlsplit(self.path).path)
        found: Path | None = None
        if path == "/job.json":
            return self._send(200, self.server.job, "application/json")
        if path in ("/index.html", "/runner.js"):
            found = PAGE / path[1:]
        elif path.startswith("/files/"):
            found = self.server.files.get(path[len("/files/") :])
        elif path.startswith("/node_modules/"):
            candidate = (self.server.modules / path[1:]).resolve()
            found = candidate if candidate.is_relative_to(self.server.modules) and candidate.is_file() else None
        if found is None or not found.is_file():
            return self._send(404, b"not found", "text/plain")
        self._send(200, found.read_bytes(), _TYPES.get(found.suffix, "application/octet-stream"))

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/result":
            result = json.loads(body or b"{}")
            self.server.results[int(result.get("index", -1))] = result
            if int(result.get("index", -1)) < 0:
                self.server.done.set()  # the page itself failed: nothing more will come
        elif self.path == "/done":
            self.server.done.set()
        self._send(204, b"")


@dataclass
class BrowserTarget:
    """Headless Chromium on this host, driven over a page served on 127.0.0.1."""

    chromium: str | None = None
    timeout: float = 600.0
    url: str = "browser"

    FORM: ClassVar[str] = "browser"
    OPTIONS: ClassVar[tuple[str, ...]] = ("chromium", "timeout")

    @classmethod
    def parse(cls, url: str, parts: SplitResult, **options: Any) -> BrowserTarget | None:
        return cls(**options) if url == "browser" else None

    def run(self, bundle: Path, *, runs: int = 50, warmup: int = 5, threads: int | None = None) -> DeviceReport:
        from edgeship.runtimes.benchmark import environment

        started = time.perf_counter()
        manifest, inputs, labels = _bundle.load(bundle)  # a damaged bundle is refused before the browser starts
        chromium = find_chromium(self.chromium)
        modules = setup()
        checks, job_artifacts, files = self._plan(Path(bundle), manifest, inputs, runs, warmup)
        job = {
            "runs": max(runs, 1),
            "warmup": warmup,
            "inputs": [_encoded(a) for a in inputs],
            "artifacts": job_artifacts,
        }
        results = self._browse(chromium, modules, job, files) if job_artifacts else {}
        for i, planned in enumerate(job_artifacts):
            at = checks.index(next(c for c in checks if c.name == planned["name"]))
            checks[at] = self._scored(checks[at], planned, results.get(i), Path(bundle), manifest, labels)
        verdicts = [c.passed for c in checks if c.passed is not None]
        webgpu = next((r.get("webgpu") for r in results.values() if r.get("webgpu")), "")
        return DeviceReport(
            target=self.url,
            passed=all(verdicts) if verdicts else None,
            seconds=time.perf_counter() - started,
            machine=platform.machine(),
            model=manifest.model,
            dataset=manifest.dataset,
            host=environment(),
            installed={"chromium": _version(chromium), **installed_versions(modules)},
            backend=f"WASM, 1 thread; {webgpu}" if webgpu else "WASM, 1 thread",
            preprocessed_here=f"{applied(manifest)}, in the page" if manifest.raw_inputs else "",
            inputs={name: tuple(int(d) for d in a.shape) for name, a in zip(manifest.input_files, inputs)},
            artifacts=tuple(checks),
        )

    def _plan(
        self, folder: Path, manifest: _bundle.BundleManifest, inputs: tuple[np.ndarray, ...], runs: int, warmup: int
    ) -> tuple[list[ArtifactCheck], list[dict[str, Any]], dict[str, Path]]:
        """Each artifact's check so far, the page's job for those a browser runtime takes, and their files."""
        from edgeship.runtimes import load
        from edgeship.runtimes._session import in_order
        from edgeship.runtimes.benchmark import benchmark

        checks, planned, files = [], [], {}
        for entry in manifest.artifacts:
            check, path = blank(entry), folder / entry.path
            fmt = for_path(path)
            runtime = fmt.runtimes[0] if fmt else None
            if runtime is None or runtime.browser is None:
                checks.append(replace(check, status=f"not run: no browser build runs {path.suffix} files"))
                continue
            try:
                session = load(path, threads=1)  # the host's view of the file: specs, record, native speed
                fed = model_inputs(session, manifest, entry, inputs)
            except EdgeshipError as exc:
                checks.append(replace(check, status="failed", reason=str(exc)))
                continue
            ordered = in_order([s.shape for s in session.inputs], list(fed))
            native = benchmark(session, runs=max(runs, 10), warmup=warmup, feeds=session.feeds_for(fed, 1))
            spec = preprocessing_for(session, manifest, entry)
            files[entry.path] = path
            planned.append(
                {
                    "name": entry.name,
                    "url": f"/files/{entry.path}",
                    "runtime": runtime.browser,
                    "order": [next(k for k, a in enumerate(fed) if a is o) for o in ordered],
                    "inputs": [_tensor(s) for s in session.inputs],
                    "outputs": [_tensor(s) for s in session.outputs],
                    "preprocess": None if spec is None or spec.identity else _spec(spec),
                    "layout": entry.layout,
                }
            )
            checks.append(replace(check, native_p50_ms=native.p50_ms))
            session.close()
        return checks, planned, files

    def _browse(self, chromium: str, modules: Path, job: dict[str, Any], files: dict[str, Path]) -> dict[int, Any]:
        server = _Page(modules, job, files, len(job["artifacts"]))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        profile = tempfile.mkdtemp(prefix="edgeship-chromium-")
        port = server.server_address[1]
        command = [chromium, *_FLAGS, f"--user-data-dir={profile}", f"http://127.0.0.1:{port}/index.html"]
        try:
            with tempfile.TemporaryFile() as log:
                proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
                try:
                    finished = server.done.wait(self.timeout)
                finally:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                if not finished:
                    log.seek(0)
                    tail = " | ".join(log.read().decode(errors="replace").strip().splitlines()[-3:])
                    raise RuntimeFailure(
                        f"the browser page did not finish within {self.timeout:.0f} s "
                        f"({len(server.results)} of {len(job['artifacts'])} artifacts reported); Chromium said: {tail}"
                    )
        finally:
            server.shutdown()
            server.server_close()
            shutil.rmtree(profile, ignore_errors=True)
        if -1 in server.results:
            raise RuntimeFailure(f"the browser page failed before running a model: {server.results[-1].get('error')}")
        return server.results

    @staticmethod
    def _scored(
        check: ArtifactCheck,
        planned: dict[str, Any],
        result: dict[str, Any] | None,
        folder: Path,
        manifest: _bundle.BundleManifest,
        labels: np.ndarray,
    ) -> ArtifactCheck:
        if result is None:
            return replace(check, status="not run: the page reported nothing for it")
        runtime = f"{result.get('runtime', planned['runtime'])} {result.get('runtime_version', '')}".strip()
        if result.get("error"):
            return replace(
                check, runtime=runtime, status=f"not run: {runtime} cannot run {check.path}: {result['error']}"
            )
        output = result["output"]
        outputs = np.frombuffer(base64.b64decode(output["b64"]), np.float32).reshape(output["shape"])
        expected = _bundle.array(folder, next(e.expected for e in manifest.artifacts if e.name == check.name))
        scored = score(check, next(e for e in manifest.artifacts if e.name == check.name), outputs, expected, labels)
        return replace(
            scored,
            runtime=runtime,
            browser_p50_ms=result.get("p50_ms"),
            browser_p90_ms=result.get("p90_ms"),
            cold_start_ms=result.get("cold_start_ms"),
            first_inference_ms=result.get("first_inference_ms"),
        )


def _tensor(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "dtype": spec.dtype, "scale": spec.scale, "zero_point": spec.zero_point}


def _spec(spec: Any) -> dict[str, Any]:
    return {
        "scale": spec.scale,
        "offset": spec.offset,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "layout": spec.layout,
    }


def _version(chromium: str) -> str:
    try:
        out = subprocess.run([chromium, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.strip().split(" ")[1] if out.strip().count(" ") else out.strip()
