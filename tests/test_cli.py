"""The CLI: exit codes, one-line errors, --json in the report's shapes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


def run(*args: str, columns: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)} if columns else None
    return subprocess.run(EDGESHIP + list(args), capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture()
def workdir(quickstart_dir, tmp_path) -> Path:
    """A private copy of the quickstart folder, for commands that rewrite report.json."""
    return Path(shutil.copytree(quickstart_dir, tmp_path / "out"))


def _one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_version_and_help():
    from edgeship import __version__

    assert run("--version").stdout.strip().endswith(__version__)
    text = run("--help").stdout
    for command in ("quickstart", "train", "convert", "validate", "bench", "report"):
        assert command in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("bench", "/no/such/model.tflite"), "does not exist"),
        (("bench", "README.md"), "no runtime for 'README.md'"),
        (("validate", "."), "no manifest.json"),
        (("train", "--model", "nope", "--data", "digits", "--out", "/tmp/x"), "unknown model 'nope'"),
        (("train", "--model", "mlp", "--data", "no_such_data", "--out", "/tmp/x"), "no_such_data"),
        (("convert", "README.md", "--to", "tflite:int3", "--out", "/tmp/x"), "no precision 'int3'"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(args, expected):
    assert expected in _one_line_error(run(*args))


def test_corrupt_model_is_one_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 100)
    assert "not a TFLite model" in _one_line_error(run("bench", str(bad)))


def test_validate_json_matches_report_schema(workdir):
    jsonschema = pytest.importorskip("jsonschema")
    result = run("validate", str(workdir), "--max-drop", "1.0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    schema = json.loads((ROOT / "sdk" / "schemas" / "report.schema.json").read_text())
    jsonschema.validate(report, schema)
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert by_name["tflite:int8"]["passed"] is True
    assert json.loads((workdir / "report.json").read_text())["artifacts"] == report["artifacts"]


def test_failed_gate_exits_2_and_names_the_artifact(damaged_dir, tmp_path):
    folder = shutil.copytree(damaged_dir, tmp_path / "damaged")
    result = run("validate", str(folder), "--max-drop", "1.0", "--json")
    assert result.returncode == 2, result.stderr
    assert "gate failed" in result.stderr and "tflite:int8-float-io" in result.stderr and "onnx:int8" in result.stderr
    report = json.loads(result.stdout)
    verdicts = {a["name"]: a["passed"] for a in report["artifacts"]}
    assert verdicts == {"tflite:fp32": True, "tflite:int8-float-io": False, "onnx:int8": False}
    assert report["passed"] is False and json.loads((folder / "report.json").read_text())["passed"] is False


def test_bench_json_has_benchmark_model_fields(quickstart_dir):
    result = run("bench", str(quickstart_dir / "tiny_cnn.int8.tflite"), "--runs", "30", "--warmup", "3", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for field in ("init_ms", "first_ms", "count", "mean_ms", "std_ms", "min_ms", "max_ms", "p5_ms", "p50_ms",
                  "p90_ms", "p95_ms", "p99_ms", "throughput", "peak_rss_bytes", "rss_growth_bytes", "env"):
        assert field in data
    assert data["count"] >= 30 and data["min_ms"] <= data["p50_ms"] <= data["p99_ms"] <= data["max_ms"]


def test_report_and_list_commands(quickstart_dir):
    report = json.loads(run("report", str(quickstart_dir), "--json").stdout)
    assert report["model"] == "tiny_cnn"
    lines = run("report", str(quickstart_dir), columns=200).stdout.splitlines()
    rows = {line.split()[1]: line for line in lines if line.startswith("│ ") and ":" in line.split()[1]}
    # every artifact has its row, showing the figures report.json holds for it
    assert sorted(rows) == sorted(e["name"] for e in report["artifacts"]) and len(rows) >= 5
    for entry in report["artifacts"]:
        delta = entry["accuracy_delta_pts"]
        assert f"{delta:+.2f}" in rows[entry["name"]], rows[entry["name"]]
    assert "resnet8" in json.loads(run("list-models", "--json").stdout)
    formats = json.loads(run("list-formats", "--json").stdout)
    assert "int8" in formats["tflite"] and "fp16" in formats["coreml"]


def test_validate_reference_honours_bench(quickstart_dir):
    """--bench with --reference times each file too (it used to be ignored without a word)."""
    result = run("validate", "--reference", str(quickstart_dir / "tiny_cnn.fp32.tflite"),
                 str(quickstart_dir / "tiny_cnn.int8.tflite"), "--data", "digits", "--bench", "20", "--json")
    assert result.returncode == 0, result.stderr
    entry, = json.loads(result.stdout)["artifacts"]
    assert entry["benchmark"]["count"] >= 20 and entry["benchmark"]["p50_ms"] > 0


def test_a_failing_file_in_a_multi_file_bench_is_one_failed_row(quickstart_dir, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"garbage")
    good = str(quickstart_dir / "tiny_cnn.int8.tflite")
    result = run("bench", good, str(broken), "--runs", "20", "--warmup", "2", "--json")
    assert result.returncode == 1, result.stderr
    timed, failed = json.loads(result.stdout)
    assert timed["model"] == good and timed["count"] >= 20 and timed["p50_ms"] > 0
    assert failed == {"model": str(broken), "error": failed["error"]} and "not a TFLite model" in failed["error"]
    shown = run("bench", good, str(broken), "--runs", "20", "--warmup", "2")
    assert shown.returncode == 1 and "p50 ms" in shown.stdout
    assert [line for line in shown.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {broken}: {failed['error']} (the other files were timed)"]


def test_shell_completion_script_and_completions():
    script = run("completion", "bash").stdout
    assert "_EDGESHIP_COMPLETE" in script and "complete " in script
    env = {**__import__("os").environ, "_EDGESHIP_COMPLETE": "bash_complete", "COMP_WORDS": "edgeship val",
           "COMP_CWORD": "1"}
    result = subprocess.run(EDGESHIP, capture_output=True, text=True, env=env, timeout=60)
    assert "validate" in result.stdout
