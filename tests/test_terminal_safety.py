"""Values are data: markup-looking strings from the command line or from files reach the terminal
verbatim, as one clean line, from every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeship.cli import main

MARKUP = "m[/]x[red]y[bold]z[/bold]"
NAMED = "m[red]x[bold]y[#f00]z"  # for file names, which hold no '/': unescaped, rich drops the tags


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def _cases(tmp: Path) -> list[tuple[str, ...]]:
    odd = tmp / f"out{NAMED}"
    odd.mkdir(exist_ok=True)
    missing = str(tmp / f"no{NAMED}.keras")
    return [
        ("convert", missing, "--to", "tflite:fp32", "--out", str(tmp / "o1")),
        ("convert", missing, "--to", f"tflite:{MARKUP}", "--out", str(tmp / "o2")),
        ("convert", missing, "--to", f"{MARKUP}:int8", "--out", str(tmp / "o3")),
        ("convert", missing, "--to", "tflite:fp32", "--data", MARKUP, "--out", str(tmp / "o4")),
        ("convert", missing, "--to", "tflite:fp32", "--data", "digits", "--preprocess", MARKUP, "--out", str(tmp / "o5")),
        ("convert", missing, "--to", "tflite:fp32", "--input-shape", MARKUP, "--out", str(tmp / "o6")),
        ("convert", missing, "--to", "tflite:fp32", "--task", MARKUP, "--out", str(tmp / "o7")),
        ("convert", missing, "--to", "tflite:fp32", "--calibration-samples", MARKUP, "--out", str(tmp / "o8")),
        ("validate", str(odd)),
        ("validate", str(odd), "--reference", str(tmp / f"ref{NAMED}.onnx")),
        ("validate", str(odd), "--task", MARKUP),
        ("validate", str(odd), "--data", MARKUP),
        ("validate", str(odd), "--max-drop", MARKUP),
        ("bench", missing, "--threads", MARKUP),
        ("bench", missing, "--batch", MARKUP),
        ("bench", missing, "--runtime", MARKUP),
        ("bench", missing, "--providers", MARKUP),
        ("train", "--model", "mlp", "--data", "digits", "--widths", MARKUP, "--out", str(tmp / "t")),
        ("device", "run", "--bundle", str(odd), "--target", "local", "--wheels", MARKUP),
        ("validate", str(tmp / f"absent{NAMED}")),
        ("doctor", str(odd)),
        ("doctor", str(odd), "--artifact", MARKUP),
        ("report", str(odd)),
        ("bench", missing),
        ("bench", str(tmp / f"model{NAMED}.tflite")),
        ("train", "--model", MARKUP, "--data", "digits", "--out", str(tmp / "t")),
        ("train", "--model", "mlp", "--data", MARKUP, "--out", str(tmp / "t")),
        ("list-models", "--data", MARKUP),
        ("device", "run", "--bundle", str(odd), "--target", f"ftp://host/{MARKUP}"),
        ("device", "run", "--bundle", str(odd), "--target", f"local{MARKUP}"),
        ("device", "run", "--bundle", str(odd), "--target", f"ssh://user@{MARKUP}"),
        ("device", "run", "--bundle", str(odd), "--target", f"ssh://user@{NAMED}:22"),
        ("device", "run", "--bundle", str(odd), "--target", f"local;touch {MARKUP}"),
        ("device", "run", "--bundle", str(tmp / f"nobundle{NAMED}"), "--target", "local"),
    ]


def test_markup_in_every_command_line_value_is_shown_verbatim(tmp_path, capsys):
    for args in _cases(tmp_path):
        code, out, err = _main(capsys, *args)
        lines = [line for line in err.splitlines() if line.startswith("error")]  # progress lines may come first
        assert code == 1, (args, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert len(err.splitlines()) <= 2, (args, err)
        assert "Traceback" not in err and "unexpected" not in err and "MarkupError" not in err, (args, err)
        # the value as typed (or, for a path, its last part) is in the line, brackets and all
        assert MARKUP in lines[0] or NAMED in lines[0], (args, lines[0])


def test_markup_in_names_read_from_files_is_shown_verbatim(quickstart_dir, tmp_path, capsys):
    """Model, dataset and artifact names and notes from report.json: `report` and its table."""
    folder = Path(shutil.copytree(quickstart_dir, tmp_path / "out"))
    doc = json.loads((folder / "report.json").read_text())
    doc["model"], doc["dataset"] = f"net{MARKUP}", f"data[/]{MARKUP}"
    doc["notes"] = [f"note {MARKUP}"]
    doc["artifacts"][0]["name"] = f"tflite:[/]{MARKUP}"
    (folder / "report.json").write_text(json.dumps(doc))
    code, out, err = _main(capsys, "report", str(folder))
    assert code == 0, err
    text = out + err
    assert "Traceback" not in text and "MarkupError" not in text
    for value in (f"net{MARKUP}", f"data[/]{MARKUP}", f"note {MARKUP}"):
        assert value in text.replace("\n", ""), value
    assert "[/]" in out and "[red]" in out
