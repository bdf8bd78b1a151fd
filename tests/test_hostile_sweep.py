"""The hostile-input sweep (tests/hostile_cases.py): every case ends as one clear error line or a
correct answer; no traceback, no unexpected error, nothing read outside the folder named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeship.cli import main

sys.path.insert(0, str(Path(__file__).parent))
import hostile_cases  # noqa: E402


@pytest.fixture(scope="module")
def converted(float_model_dir, tmp_path_factory) -> Path:
    import edgeship as es

    out = tmp_path_factory.mktemp("hostile") / "out"
    es.convert(float_model_dir, ["tflite:fp32", "tflite:int8"], data="digits", out=out)
    es.validate(out)
    return out


def test_every_hostile_case_is_one_clear_line_or_a_right_answer(converted, tmp_path, capsys):
    failures = {}
    cases = hostile_cases.cases(tmp_path / "work", converted)
    for case in cases:
        with pytest.raises(SystemExit) as info:
            main(list(case.argv))
        captured = capsys.readouterr()
        wrong = hostile_cases.check(case, int(info.value.code or 0), captured.out, captured.err)
        if wrong:
            failures[case.name] = wrong
    assert not failures, failures
    assert len(cases) >= 30
