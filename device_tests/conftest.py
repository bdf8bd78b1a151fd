"""The device-side suite: ``pytest device_tests --bundle DIR`` on a target (or here).

Each test is parametrized over the bundle's artifacts. Options: ``--bundle`` (required),
``--runs``, ``--threads`` and ``--max-p50-ms`` (a budget) for the latency test, ``--latency-json FILE`` to keep the figures.
Needs edgeship's thin install (numpy and an interpreter) and pytest; nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgeship device tests")
    group.addoption("--bundle", default=None, help="validation bundle folder (validate writes OUT/bundle)")
    group.addoption("--runs", type=int, default=50, help="timed runs per artifact in the latency test")
    group.addoption("--threads", type=int, default=None, help="interpreter threads (default: the runtime's)")
    group.addoption("--latency-json", default=None, help="write the latency figures to this JSON file")
    group.addoption("--max-p50-ms", type=float, default=None,
                    help="fail the latency test of an artifact whose p50 on this device is over this many ms")


def _bundle_dir(config: pytest.Config) -> Path:
    value = config.getoption("--bundle")
    if not value:
        raise pytest.UsageError("device_tests need a bundle: pytest device_tests --bundle DIR")
    return Path(value)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "entry" in metafunc.fixturenames:
        from edgeship.bundle import BundleManifest

        manifest = BundleManifest.load(_bundle_dir(metafunc.config))
        metafunc.parametrize("entry", manifest.artifacts, ids=[e.name for e in manifest.artifacts])


@pytest.fixture(scope="session")
def bundle(pytestconfig: pytest.Config):
    """(folder, manifest, inputs, labels), every file's sha256 checked first; ``inputs`` holds one
    array per model input, in the model's order."""
    from edgeship import bundle as _bundle

    folder = _bundle_dir(pytestconfig)
    manifest, inputs, labels = _bundle.load(folder)
    return folder, manifest, inputs, labels


_SESSIONS: dict[str, object] = {}
_LATENCY: dict[str, dict] = {}


@pytest.fixture
def session(bundle, entry, pytestconfig: pytest.Config):
    """The artifact loaded with the thin runtime (once per session); skipped where it cannot run."""
    from edgeship.errors import MissingDependencyError, UnsupportedModelError
    from edgeship.runtimes import can_run, load

    path = bundle[0] / entry.path
    runnable, why = can_run(path)
    if not runnable:
        pytest.skip(why)
    if entry.name not in _SESSIONS:
        try:
            _SESSIONS[entry.name] = load(path, threads=pytestconfig.getoption("--threads"))
        except (MissingDependencyError, UnsupportedModelError) as exc:
            pytest.skip(f"not run: {exc}")
    return _SESSIONS[entry.name]


@pytest.fixture
def latency_log() -> dict[str, dict]:
    """Where the latency test files its figures (printed at the end, and written with --latency-json)."""
    return _LATENCY


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    results = _LATENCY
    if not results:
        return
    terminalreporter.section("latency on this device")
    for name, r in results.items():
        terminalreporter.write_line(f"{name:<16} p50 {r['p50_ms'] * 1000:9.1f} µs  p90 {r['p90_ms'] * 1000:9.1f} µs  "
                                    f"{r['runtime']} {r['runtime_version']}, {r['count']} runs")
    path = config.getoption("--latency-json", None)
    if path:
        Path(path).write_text(json.dumps(results, indent=2))
