"""A format added from outside the package, by one entry-point line, goes through every stage.

The plugin (tests/toy_format_plugin.py: a float MLP stored as ``.npz`` weights, run by numpy) is
copied into a temporary folder beside a ``.dist-info`` holding its entry point, and that folder is
put on PYTHONPATH: nothing in edgeship is edited. The CLI then converts to it, validates it (the
bundle included), benchmarks it, renders the report and runs the bundle on ``--target local``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
PLUGIN = "edgeship_toy_npz"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("plugins")
    shutil.copy(HERE / "toy_format_plugin.py", where / f"{PLUGIN}.py")
    info = where / f"{PLUGIN}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[edgeship.formats]\nnpz = {PLUGIN}:FORMAT\n")  # the registry line
    return where


def _cli(plugin_dir: Path | None, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process that finds the plugin (or, with None, does not)."""
    env = dict(os.environ)
    if plugin_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "edgeship.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.slow
def test_a_plugin_format_goes_through_every_stage(plugin_dir, mlp_model_dir, tmp_path):
    out = tmp_path / "out"
    listed = _cli(plugin_dir, "list-formats", "--json")
    assert listed.returncode == 0 and "npz" in json.loads(listed.stdout), listed.stderr

    made = _cli(plugin_dir, "--quiet", "convert", str(mlp_model_dir), "--to", "npz:fp32,tflite:fp32", "--data",
                "digits", "--out", str(out), "--json")
    assert made.returncode == 0, made.stderr
    manifest = json.loads(made.stdout)
    npz = next(a for a in manifest["artifacts"] if a["format"] == "npz")
    assert npz["path"] == "mlp.fp32.npz" and (out / npz["path"]).is_file()
    assert [s["shape"] for s in npz["outputs"]] == [[-1, 10]]

    checked = _cli(plugin_dir, "--quiet", "validate", str(out), "--data", "digits", "--json")
    assert checked.returncode == 0, checked.stderr
    rows = {e["name"]: e for e in json.loads(checked.stdout)["artifacts"]}
    # the same float weights: the numpy forward pass agrees with TFLite's fp32 file on every test sample
    assert rows["npz:fp32"]["agreement"] == 1.0 and rows["npz:fp32"]["max_abs_error"] < 1e-5
    assert rows["npz:fp32"]["accuracy"] == rows["tflite:fp32"]["accuracy"] > 0.8
    assert rows["npz:fp32"]["evaluated_with"] == f"numpy-mlp {np.__version__}"
    assert (out / "bundle").is_dir()

    timed = _cli(plugin_dir, "--quiet", "bench", str(out / "mlp.fp32.npz"), "--runs", "20", "--min-seconds", "0",
                 "--json")
    assert timed.returncode == 0, timed.stderr
    assert json.loads(timed.stdout)["runtime"] == "numpy-mlp" and json.loads(timed.stdout)["p50_ms"] > 0

    page = _cli(plugin_dir, "--quiet", "report", str(out))
    assert page.returncode == 0, page.stderr
    assert "npz:fp32" in (out / "report.html").read_text()

    device = _cli(plugin_dir, "--quiet", "device", "run", "--target", "local", "--bundle", str(out / "bundle"),
                  "--runs", "5", "--json")
    assert device.returncode == 0, device.stderr + device.stdout
    report = json.loads(device.stdout)  # one target: its DeviceReport
    check = next(c for c in report["artifacts"] if c["name"] == "npz:fp32")
    assert report["passed"] is True and check["outputs_ok"] and check["runtime"] == f"numpy-mlp {np.__version__}"

    # where the plugin is not installed, validate says which file it skipped and why, and measures the rest
    without = _cli(None, "--quiet", "validate", str(out), "--data", "digits", "--json")
    assert without.returncode == 0, without.stderr
    rows = {e["name"]: e for e in json.loads(without.stdout)["artifacts"]}
    assert rows["npz:fp32"]["status"].startswith("no runtime runs '.npz' files") and rows["npz:fp32"]["accuracy"] is None
    assert rows["tflite:fp32"]["status"] == "ok" and rows["tflite:fp32"]["agreement"] == 1.0


def test_without_the_plugin_the_file_is_skipped_with_its_reason(tmp_path):
    from edgeship.runtimes import can_run

    ok, why = can_run(tmp_path / "m.fp32.npz")
    assert not ok and "no runtime runs '.npz' files" in why


def test_a_plugin_registered_in_process_is_used_by_load(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    import toy_format_plugin as toy

    from edgeship.formats import FORMATS, for_path
    from edgeship.runtimes import can_run, load

    FORMATS.register("npz", toy.FORMAT)
    try:
        path = tmp_path / "m.npz"
        np.savez(path, w0=np.eye(3, dtype=np.float32), b0=np.ones(3, np.float32),
                 layers=np.array(json.dumps({"activations": ["relu"], "input_shape": [3]})))
        assert for_path(path) is toy.FORMAT and can_run(path) == (True, "")
        with load(path) as session:
            np.testing.assert_array_equal(session.predict(np.array([[-2.0, 0.0, 1.0]], np.float32)), [[0, 1, 2]])
    finally:
        FORMATS.unregister("npz")
    assert for_path(path) is None


# ---- no code outside a plugin asks which format, source or target it holds ----

#: modules outside the plugins that may compare against a plugin's name, each with its reason
ALLOWED = {
    "edgeship._deps": "pip distribution names per import name (onnx, onnxruntime): packages, not formats",
    "edgeship.trainers.saving": "the Keras save format (.keras or .h5) of a trained model, not a conversion format",
}


def _plugin_names() -> set[str]:
    from edgeship.converters._source import SOURCES
    from edgeship.formats import FORMATS
    from edgeship.runtimes.targets import TARGETS

    names = set(SOURCES.names()) | set(TARGETS.names()) | {".keras", ".h5"}
    for fmt in FORMATS.all():
        names |= {fmt.name, fmt.suffix, *(r.name for r in fmt.runtimes)}
    return names


def _plugin_modules() -> set[str]:
    from edgeship.converters._source import SOURCES
    from edgeship.formats import FORMATS
    from edgeship.runtimes.targets import TARGETS

    found = {type(s).__module__ for s in SOURCES.all()} | {t.__module__ for t in TARGETS.all()}
    for fmt in FORMATS.all():
        found |= {fmt.converter, *(r.module for r in fmt.runtimes), *([fmt.doctor] if fmt.doctor else [])}
    return found


def branches(module: str, path: Path, names: set[str]) -> list[str]:
    """Comparisons of a value with a plugin's name (``fmt == "onnx"``, ``x.suffix in (".tflite", …)``,
    ``s.startswith("ssh")``) and dict literals keyed by two or more names, as ``module:line: code``."""
    import ast

    def strings(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        return [s for e in getattr(node, "elts", []) for s in strings(e)] if isinstance(node, (ast.Tuple, ast.List,
                                                                                              ast.Set)) else []

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            hit = any(s in names for part in (node.left, *node.comparators) for s in strings(part))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("startswith", "endswith", "removesuffix"):
            hit = any(s in names for a in node.args for s in strings(a))
        elif isinstance(node, ast.Dict):
            hit = sum(isinstance(k, ast.Constant) and k.value in names for k in node.keys) >= 2
        else:
            continue
        if hit:
            found.append(f"{module}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_no_code_outside_the_plugins_branches_on_a_plugin_name():
    import test_structure as structure

    names, plugins = _plugin_names(), _plugin_modules()
    skipped = plugins | set(ALLOWED) | {"edgeship.formats"}  # the registry itself holds the built-in records
    found = [hit for module, path in sorted(structure.MODULES.items()) if module not in skipped
             for hit in branches(module, path, names)]
    assert not found, "branches on a format, source or target name outside its plugin:\n" + "\n".join(found)


def test_the_scan_finds_a_planted_branch(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('def colour(fmt):\n    return "#f00" if fmt == "tflite" else "#0f0"\n'
                       'SUFFIXES = {"onnx": 1, "coreml": 2}\n')
    assert len(branches("planted", planted, _plugin_names())) == 2
