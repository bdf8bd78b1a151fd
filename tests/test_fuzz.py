"""Hostile and corrupt files through load, bench and validate: an EdgeshipError, never a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeship
from edgeship import bundle
from edgeship.errors import BadArtifactError
from edgeship.records import Manifest

sys.path.insert(0, str(Path(__file__).parent))
import fuzzing  # noqa: E402

MODELS = ("tiny_cnn.int8.tflite", "tiny_cnn.fp32.tflite", "tiny_cnn.int8.onnx", "tiny_cnn.fp32.onnx")


@pytest.fixture(scope="module")
def corpus(quickstart_dir, tmp_path_factory) -> list[Path]:
    return fuzzing.write_corpus([quickstart_dir / m for m in MODELS], tmp_path_factory.mktemp("corpus"))


def test_every_hostile_model_file_ends_as_an_edgeship_error_or_a_valid_model(corpus):
    results, crashed = fuzzing.run_corpus(corpus)
    assert crashed is None, f"the interpreter crashed on {crashed}"
    assert len(results) == len(corpus) >= 120
    other = {f: o for f, o in results.items() if o != "ok" and o not in edgeship.__all__}
    assert not other, other
    # the structural damage classes are always refused: nothing of them is "ok"
    for file, outcome in results.items():
        if any(k in Path(file).name for k in (".empty", ".zeros", ".random", ".truncated", ".wrong-magic")):
            assert outcome == "BadArtifactError", (file, outcome)


def test_bench_on_hostile_files_is_one_line_exit_1(corpus):
    for name in (".truncated-0.5.tflite", ".random.onnx", ".absurd-size-s0.onnx", ".empty.tflite"):
        path = next(p for p in corpus if p.name.endswith(name))
        result = subprocess.run([sys.executable, "-m", "edgeship.cli", "bench", str(path), "--runs", "5"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, (name, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr


@pytest.fixture()
def folder(quickstart_dir, tmp_path) -> Path:
    return Path(shutil.copytree(quickstart_dir, tmp_path / "out"))


def test_validate_refuses_an_artifact_that_changed_after_conversion(folder, digits):
    target = folder / "tiny_cnn.int8.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    with pytest.raises(BadArtifactError, match=r"tflite:int8: tiny_cnn\.int8\.tflite has sha256 .* Convert again"):
        edgeship.validate(folder, data=digits, write_bundle=False)


@pytest.mark.parametrize("content", [
    "", "{", "null", "[1, 2]", '{"schema_version": 1, "artifacts": "all"}',
    '{"schema_version": 1, "artifacts": [{"name": "x"}]}', '{"schema_version": 99}',
    '{"schema_version": 1, "reference": {"path": 7}}', "\x00\xff" * 50,
])
def test_corrupt_manifest_is_a_bad_artifact_error(folder, digits, content):
    (folder / "manifest.json").write_text(content, errors="surrogateescape") if "\x00" not in content else \
        (folder / "manifest.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(BadArtifactError, match="manifest.json"):
        edgeship.validate(folder, data=digits)


def test_manifest_entry_pointing_outside_the_folder_is_refused(folder, digits):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"][0]["path"] = "../../../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BadArtifactError, match="points outside"):
        edgeship.validate(folder, data=digits)


@pytest.mark.parametrize("damage", ["truncate", "flip", "json", "escape", "missing", "link"])
def test_corrupt_bundle_is_refused_before_anything_loads(folder, damage):
    root = folder / "bundle"
    if damage == "truncate":
        (root / "inputs.npy").write_bytes((root / "inputs.npy").read_bytes()[:100])
    elif damage == "flip":
        path = next(root.glob("*.tflite"))
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "json":
        (root / "bundle.json").write_text('{"schema_version": 1, "artifacts": [{}]}')
    elif damage == "escape":
        doc = json.loads((root / "bundle.json").read_text())
        doc["artifacts"][0]["path"] = "../manifest.json"
        (root / "bundle.json").write_text(json.dumps(doc))
    elif damage == "link":
        (root / "expected" / "passwd.npy").symlink_to("/etc/passwd")
    else:
        (root / "labels.npy").unlink()
    with pytest.raises(BadArtifactError):
        bundle.load(root)


def test_wrong_inputs_are_refused_before_the_interpreter(quickstart_dir):
    session = edgeship.load(quickstart_dir / "tiny_cnn.int8.tflite")
    name = session.inputs[0].name
    for feeds, words in [({name: np.zeros((1, 8, 8))}, "shape"), ({"nope": np.zeros((1, 8, 8, 1))}, "inputs"),
                         ({name: np.array([["a"] * 8] * 8)}, "shape"), ({name: np.zeros((1, 8, 8, 1), "U1")}, "dtype")]:
        with pytest.raises(edgeship.BadInputError, match=words):
            session.run(feeds)
    assert Manifest.load(quickstart_dir).get("tflite:int8").inputs[0].dtype == "int8"
