"""The README opens with the two commands a new user runs, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"^    \$ (.+)$", (ROOT / "README.md").read_text(), flags=re.M)


def test_readme_opens_with_quickstart_then_tests():
    first, second = _commands()[:2]
    assert first.startswith("python3.11 -m venv") and first.endswith("edgeship quickstart")
    assert second.startswith("python3.11 -m venv") and "[test]" in second and "pytest" in second


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run extracts the README's second "$ " line and runs it, so the two cannot drift apart
    assert "sed -n 2p" in ci and "README.md" in ci and 'bash -c "$cmd"' in ci


def test_ci_lints_and_type_checks_the_package():
    ci = (ROOT / ".ci" / "run").read_text()
    lint = (ROOT / ".ci" / "lint").read_text()
    assert "bash .ci/lint" in ci
    assert "ruff\" check" in lint and "ruff\" format --check" in lint and "mypy" in lint
