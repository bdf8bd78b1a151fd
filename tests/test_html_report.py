"""report.html as a person sees it: rendered by headless Chromium, every plot present."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeship import report as html
from edgeship.records import Report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]
PLOTS = ("Accuracy against float", "Latency distribution", "Size", "Per-class F1", "Confusion matrix", "Training curves")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=120)


def test_quickstart_page_is_self_contained_with_every_plot(quickstart_dir):
    text = (quickstart_dir / html.PAGE_NAME).read_text()
    for title in PLOTS:
        assert f'alt="{title}' in text, title
    # nothing is fetched when the page opens
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<link" not in text
    for png in re.findall(r'src="data:image/png;base64,([^"]+)"', text):
        assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_renders_in_headless_chromium(quickstart_dir, tmp_path):
    page = quickstart_dir / html.PAGE_NAME
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-ready="yes"' in dom.stdout and "data-errors" not in dom.stdout
    images = re.findall(r"<img[^>]*>", dom.stdout)
    assert len(images) >= len(PLOTS)
    assert all('data-loaded="yes"' in img for img in images), [i[:80] for i in images if 'data-loaded="yes"' not in i]
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "error" in line.lower()]
    assert not console_errors, console_errors
    shot = tmp_path / "report.png"
    result = _chromium(tmp_path, "--window-size=1100,2400", f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_unmeasured_artifacts_are_explained_not_drawn(quickstart_dir, tmp_path):
    report = Report.load(quickstart_dir)
    stripped = Report.from_dict(report.to_dict() | {"artifacts": [
        {**e.to_dict(), **{k: None for k in ("samples", "accuracy", "accuracy_delta_pts", "agreement", "passed")},
         "status": "not run: needs macOS", "benchmark": None}
        if e.format == "coreml" else e.to_dict() for e in report.artifacts]})
    page = html.render(stripped)
    assert "coreml:fp16: not run: needs macOS" in page
    assert page.count("data:image/png") == len(PLOTS)
