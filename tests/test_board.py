"""The emulated arm64 board: a real Debian aarch64 userland (debootstrap) run by qemu-user, the
ARM builds of LiteRT and ONNX Runtime from PyPI, and bundles replayed there against this host.

The board is built once (``.ci/run`` builds it into its work folder and names it in
EDGESHIP_TEST_BOARD; elsewhere the first test builds it into the edgeship cache, 2-3 minutes) and
only the tiny quickstart models run on it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship import _io, bundle
from edgeship.errors import BadInputError
from edgeship.runtimes._board import INFO, load_board, make_board
from edgeship.runtimes.targets import cache_dir, parse_target, run_targets


def _cli(*args: str) -> tuple[int, str]:
    from edgeship.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _can_build() -> str:
    if platform.system() != "Linux" or os.geteuid() != 0:
        return "the arm64 board needs Linux and root (debootstrap, chroot)"
    missing = [t for t in ("debootstrap", "qemu-aarch64-static") if shutil.which(t) is None]
    return f"the arm64 board needs {missing} (.ci/run installs debootstrap and qemu-user-static)" if missing else ""


@pytest.fixture(scope="module")
def board():
    folder = Path(os.environ.get("EDGESHIP_TEST_BOARD") or cache_dir() / "boards" / "arm64")
    if not (folder / INFO).is_file() and _can_build():
        pytest.skip(_can_build())
    return make_board(folder)


@pytest.fixture(scope="module")
def qs_bundle(quickstart_dir) -> Path:
    return quickstart_dir / "bundle"


@pytest.fixture(scope="module")
def replay(board, qs_bundle):
    """The quickstart bundle replayed on the board through the CLI, once: (exit code, JSON, seconds)."""
    started = time.perf_counter()
    code, out = _cli("device", "run", "--target", f"qemu-arm64:{board.folder}", "--bundle", str(qs_bundle),
                     "--runs", "3", "--warmup", "1", "--json")  # fmt: skip
    return code, out, time.perf_counter() - started


@pytest.fixture(scope="module")
def raw_bundle(quickstart_dir, tmp_path_factory) -> Path:
    """The quickstart's model converted from digits as their owner keeps them (uint8 0..16) with
    --preprocess scale=0.0625: its bundle holds the raw pixels, for the device to scale."""
    import edgeship as es
    from sklearn.datasets import load_digits

    work = tmp_path_factory.mktemp("raw")
    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8, 1).astype(np.uint8)
    np.savez(work / "digits16.npz", x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:])
    out = work / "out"
    es.convert(quickstart_dir / "model", ["tflite:int8", "onnx:int8"], data=work / "digits16.npz",
               preprocess="scale=0.0625", out=out)  # fmt: skip
    es.validate(out)
    return out / "bundle"


def test_a_built_board_is_returned_at_once_and_says_what_it_holds(board):
    started = time.perf_counter()
    again = make_board(board.folder)
    assert time.perf_counter() - started < 2 and again.built is False
    record = json.loads((board.folder / INFO).read_text())
    assert record["machine"] == "aarch64" and record["suite"] == "bookworm" and record["python"].startswith("3.")
    assert 150e6 < record["size_bytes"] < 1e9 and record["seconds"] > 10  # measured: 344 MB, 198 s
    assert sorted(again.interpreters()) == ["ai-edge-litert", "onnxruntime"]
    assert all("aarch64" in w or w.endswith("-any.whl") for w in record["wheels"]), record["wheels"]


def test_the_quickstart_bundle_replays_on_arm64_against_the_host(replay, qs_bundle):
    code, out, _ = replay
    assert code == 0, out
    report = json.loads(out)
    assert report["machine"] == "aarch64" and report["passed"] is True
    assert "qemu" in report["emulated"] and report["tensorflow_imported"] is False
    assert sorted(report["installed"]) == ["ai-edge-litert", "edgeship", "numpy", "onnxruntime"]
    names = [e.name for e in bundle.BundleManifest.load(qs_bundle).artifacts]
    rows = {a["name"]: a for a in report["artifacts"]}
    assert list(rows) == names and all(a["status"] == "ok" for a in rows.values())
    for name, a in rows.items():
        assert a["agreement"] >= 0.99 and a["max_abs_error_vs_host"] <= a["tolerance"], a
        if "int8" in name:  # measured: every output bit-exact with x86 (XNNPACK and MLAS on aarch64)
            assert a["bit_exact"] >= 0.99 and a["max_steps"] <= 1, a
        else:
            assert a["bit_exact"] is None and a["max_steps"] is None
    timed = [a for a in rows.values() if a["benchmark"]]
    assert len(timed) == 4 and all(a["runtime"].split()[0] in ("litert", "onnxruntime") for a in timed)


def test_raw_pixels_are_preprocessed_on_the_board_as_each_file_records(board, raw_bundle):
    manifest, inputs, _ = bundle.load(raw_bundle)
    assert manifest.raw_inputs and inputs[0].dtype == np.uint8 and inputs[0].max() == 16
    (report,) = run_targets([f"qemu-arm64:{board.folder}"], raw_bundle, runs=0)
    assert report.passed is True and report.machine == "aarch64", report.error
    assert report.preprocessed_here == "scale=0.0625 (x * 0.0625)"
    assert [(a.name, a.agreement) for a in report.artifacts] == [("tflite:int8", 1.0), ("onnx:int8", 1.0)]


def test_the_table_says_latency_is_the_emulators(board, qs_bundle):
    code, out = _cli("device", "run", "--target", f"qemu-arm64:{board.folder}", "--bundle", str(qs_bundle),
                     "--runs", "2", "--warmup", "1")  # fmt: skip
    assert code == 0, out
    assert "(emulated)" in out  # the p50 column's header
    assert "latency is the emulator's, not a device's; never compare it with a real device" in " ".join(out.split())


def test_a_difference_beyond_tolerance_fails_the_run_and_names_the_artifact(board, qs_bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(qs_bundle, folder)
    manifest = bundle.BundleManifest.load(folder)
    entry = next(e for e in manifest.artifacts if e.name == "onnx:int8")
    np.save(folder / entry.expected, np.load(folder / entry.expected) + 0.5)
    data = json.loads((folder / "bundle.json").read_text())
    data["files"][entry.expected] = _io.sha256_path(folder / entry.expected)
    (folder / "bundle.json").write_text(json.dumps(data))
    code, out = _cli("device", "run", "--target", f"qemu-arm64:{board.folder}", "--bundle", str(folder), "--runs", "0")
    assert code == 2, out
    said = " ".join(out.split())
    assert "onnx:int8 failed on qemu-arm64:" in said and "over the bundle's tolerance" in said


def test_a_missing_or_half_built_board_is_one_line(qs_bundle, tmp_path):
    (missing,) = run_targets([f"qemu-arm64:{tmp_path / 'nowhere'}"], qs_bundle)
    assert missing.passed is None and "no board at" in missing.error and "make-board" in missing.error
    half = tmp_path / "half"
    half.mkdir()
    (half / ".edgeship-board-partial").write_text("")
    with pytest.raises(BadInputError, match="is half-built .* run `edgeship device make-board"):
        load_board(half)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="already holds files and is not a board"):
        make_board(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"  # nothing of the user's is removed


def test_a_board_without_an_interpreter_the_bundle_needs_says_how_to_add_it(board, qs_bundle, tmp_path):
    lean = tmp_path / "lean"
    lean.mkdir()
    (lean / "root").symlink_to(board.root)
    record = json.loads((board.folder / INFO).read_text())
    record["wheels"] = [w for w in record["wheels"] if not w.startswith("onnxruntime")]
    (lean / INFO).write_text(json.dumps(record))
    (report,) = run_targets([f"qemu-arm64:{lean}"], qs_bundle)
    assert "holds no onnxruntime, which the bundle's onnx:fp32, onnx:int8 need(s)" in report.error
    assert "--interpreter ai-edge-litert --interpreter onnxruntime" in report.error


def test_wheels_for_another_machine_are_refused_before_install(board, qs_bundle, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("numpy-2.3.5-cp311-cp311-manylinux_2_27_x86_64.whl", "ai_edge_litert-2.3.0-cp311-cp311-"
                 "manylinux_2_27_x86_64.whl", "onnxruntime-1.32.0-cp311-cp311-manylinux_2_27_x86_64.whl"):
        (wheels / name).write_bytes(b"")
    target = parse_target(f"qemu-arm64:{board.folder}", wheels=str(wheels))
    (report,) = run_targets([target], qs_bundle)
    assert "is built for manylinux_2_27_x86_64, but the target is aarch64" in report.error


@pytest.mark.parametrize("url", ["qemu-arm64:", "qemu-arm64:-rf", "qemu-arm64:a b", "qemu-arm64:$(id)"])
def test_hostile_board_folders_are_refused(url):
    with pytest.raises(BadInputError):
        parse_target(url)
