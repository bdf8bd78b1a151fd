"""The browser target: Debian's headless Chromium, LiteRT.js and onnxruntime-web from the pinned
lock file, bundles replayed in a page served on 127.0.0.1 and measured against this host."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship import _io, bundle
from edgeship.errors import MissingDependencyError
from edgeship.runtimes import _browser
from edgeship.runtimes.targets import run_targets


def _cli(*args: str) -> tuple[int, str]:
    from edgeship.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def browser() -> Path:
    """The npm install the page is served from; skipped where Chromium or npm is missing."""
    try:
        _browser.find_chromium()
        return _browser.setup()
    except MissingDependencyError as exc:
        pytest.skip(f"{exc} (.ci/run installs Debian's chromium and npm)")


@pytest.fixture(scope="module")
def qs_bundle(quickstart_dir) -> Path:
    return quickstart_dir / "bundle"


@pytest.fixture(scope="module")
def replay(browser, qs_bundle):
    code, out = _cli("device", "run", "--target", "browser", "--bundle", str(qs_bundle), "--runs", "30", "--json")
    return code, out


def test_the_page_loads_only_what_the_lock_file_pins(browser):
    lock = json.loads((_browser.PAGE / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@litertjs/core"]["version"] == "2.5.3"
    assert _browser.installed_versions(browser) == {"@litertjs/core": "2.5.3", "onnxruntime-web": "1.31.1"}
    for url in json.loads((_browser.PAGE / "index.html").read_text().split('importmap">')[1].split("</script>")[0])[
        "imports"
    ].values():
        assert url.startswith("/node_modules/") and (browser / url[1:]).is_file()  # served here, nothing fetched


def test_the_quickstart_bundle_runs_in_the_browser_as_on_the_host(replay, qs_bundle):
    code, out = replay
    assert code == 0, out
    report = json.loads(out)
    assert report["passed"] is True and report["backend"].startswith("WASM, 1 thread")
    assert report["installed"]["chromium"].split(".")[0].isdigit()
    rows = {a["name"]: a for a in report["artifacts"]}
    assert list(rows) == [e.name for e in bundle.BundleManifest.load(qs_bundle).artifacts]
    ran = {n: a for n, a in rows.items() if a["status"] == "ok"}
    assert sorted(ran) == ["onnx:fp32", "onnx:int8", "tflite:fp32", "tflite:int8"]
    assert rows["coreml:fp16"]["status"] == "not run: no browser build runs .mlpackage files"
    for name, a in ran.items():
        assert a["agreement"] == 1.0 and a["max_abs_error_vs_host"] <= a["tolerance"], a
        # measured: every int8 output (int8 I/O in LiteRT.js included) bit-exact with the host
        assert (a["bit_exact"], a["max_steps"]) == ((1.0, 0.0) if "int8" in name else (None, None)), a
        assert 0 < a["browser_p50_ms"] <= a["browser_p90_ms"] and a["native_p50_ms"] > 0
        assert a["cold_start_ms"] > a["first_inference_ms"] > 0
        assert a["runtime"] == ("litert.js 2.5.3" if name.startswith("tflite") else "onnxruntime-web 1.31.1")


def test_the_table_prints_page_and_native_latency_and_cold_starts(browser, qs_bundle):
    code, out = _cli("device", "run", "--target", "browser", "--bundle", str(qs_bundle), "--runs", "5")
    said = " ".join(out.split())
    assert code == 0, out
    assert "p50 page / native" in said and "cold start, page to model ready: tflite:fp32" in said


def test_a_difference_beyond_tolerance_fails_the_run_and_names_the_artifact(browser, qs_bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(qs_bundle, folder)
    manifest = bundle.BundleManifest.load(folder)
    entry = next(e for e in manifest.artifacts if e.name == "tflite:int8")
    np.save(folder / entry.expected, np.load(folder / entry.expected) + 0.5)
    data = json.loads((folder / "bundle.json").read_text())
    data["files"][entry.expected] = _io.sha256_path(folder / entry.expected)
    (folder / "bundle.json").write_text(json.dumps(data))
    code, out = _cli("device", "run", "--target", "browser", "--bundle", str(folder), "--runs", "2")
    assert code == 2, out
    assert "tflite:int8 failed on browser: outputs differ from the host's by 0.5" in " ".join(out.split())


def test_what_a_browser_runtime_cannot_run_is_named_with_its_version(qs_bundle):
    # the page posts the runtime's own error when it cannot take a model (an op it lacks, say)
    manifest = bundle.BundleManifest.load(qs_bundle)
    entry = next(e for e in manifest.artifacts if e.name == "onnx:int8")
    result = {"index": 0, "runtime": "onnxruntime-web", "runtime_version": "1.31.1",
              "error": "Could not find an implementation for FancyOp(1) node with name 'f'"}  # fmt: skip
    check = _browser.BrowserTarget._scored(_browser.blank(entry), {"runtime": "onnxruntime-web"}, result, qs_bundle,
                                           manifest, np.zeros(0))  # fmt: skip
    assert check.passed is None and check.status == (
        f"not run: onnxruntime-web 1.31.1 cannot run {entry.path}: Could not find an implementation for FancyOp(1) "
        "node with name 'f'"
    )


def test_without_chromium_the_target_says_what_to_install(qs_bundle, monkeypatch, tmp_path):
    monkeypatch.setattr(_browser, "CHROMIUM", (str(tmp_path / "none"),))  # a machine without the package
    monkeypatch.setenv("PATH", str(tmp_path))
    (report,) = run_targets(["browser"], qs_bundle)
    assert report.passed is None and report.error == (
        "MissingDependencyError: the browser target needs Chromium, which is not installed here: apt-get install "
        "chromium (Debian's package; edgeship downloads no browser)"
    )
