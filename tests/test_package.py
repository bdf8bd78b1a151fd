"""Packaging: the wheel installs and imports, the public API is complete, the runtime side is thin."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import edgeship

ROOT = Path(__file__).resolve().parents[1]


def _fresh_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.parametrize("module", ["edgeship", "edgeship.runtimes", "edgeship.runtimes.benchmark",
                                    "edgeship.data", "edgeship.datasets", "edgeship.trainers",
                                    "edgeship.converters"])
def test_light_imports_leave_tensorflow_out(module):
    loaded = _fresh_python(f"import sys, {module}; print(sorted(m for m in ('tensorflow', 'tf_keras', 'onnx', "
                           "'coremltools', 'sklearn', 'tf2onnx') if m in sys.modules))")
    assert loaded == "[]"


def test_loading_and_running_tflite_leaves_tensorflow_out(quickstart_dir):
    model = quickstart_dir / "tiny_cnn.int8.tflite"
    code = (f"import sys, numpy as np, edgeship.runtimes as rt; s = rt.load({str(model)!r}); "
            "s.run({s.inputs[0].name: np.zeros((1, 8, 8, 1), np.float32)}); "
            "print(s.runtime, 'tensorflow' in sys.modules)")
    assert _fresh_python(code) == "litert False"


def test_all_is_complete_and_importable():
    import types

    public = {n for n in dir(edgeship) if not n.startswith("_") and not isinstance(getattr(edgeship, n), types.ModuleType)}
    public.discard("annotations")
    assert public <= set(edgeship.__all__), public - set(edgeship.__all__)
    for name in edgeship.__all__:
        assert getattr(edgeship, name) is not None


def test_base_install_depends_on_numpy_only():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0].split("=")[0] for d in project["dependencies"]] == ["numpy"]
    for extra in ("litert", "onnx"):  # a device install pulls no TensorFlow
        assert not any("tensorflow" in d or "edgeship[" in d for d in project["optional-dependencies"][extra])


@pytest.mark.slow
def test_wheel_builds_installs_and_imports(tmp_path):
    # 1. build the wheel offline with the setuptools already installed, from a copy of the tree
    #    (setuptools writes egg-info and build/ into the source folder)
    import shutil

    source = shutil.copytree(ROOT, tmp_path / "src", symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ci-work"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("edgeship-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    from test_structure import MODULES

    shipped = {name.replace(".", "/") + ("/__init__.py" if path.name == "__init__.py" else ".py")
               for name, path in MODULES.items()}
    assert not shipped - names, f"modules missing from the wheel: {sorted(shipped - names)}"
    assert "edgeship/schemas/report.schema.json" in names
    # 2. a fresh venv with only the wheel; numpy and LiteRT come from this environment through a
    #    .pth line (the editable install's finder is not processed there)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([str(py), "-c", "import edgeship, edgeship.runtimes, edgeship.trainers, edgeship.converters;"
                          "import importlib.resources as r; print(edgeship.__file__);"
                          "print(r.files('edgeship').joinpath('schemas/report.schema.json').is_file())"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(site)) and out[1] == "True"
    # 3. no file twice, and the device wheel made by that regular install ships the same files
    listed = zipfile.ZipFile(wheel).namelist()
    assert len(listed) == len(set(listed)), sorted(n for n in set(listed) if listed.count(n) > 1)
    device = subprocess.run([str(py), "-c", "import sys, zipfile; from edgeship.runtimes._wheels import edgeship_wheel;"
                             f"w = edgeship_wheel({str(tmp_path / 'device')!r}); print(*zipfile.ZipFile(w).namelist())"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert len(device) == len(set(device)), sorted(n for n in set(device) if device.count(n) > 1)
    code = {n for n in names if n.startswith("edgeship/") and n.endswith((".py", ".json"))}
    assert {n for n in device if n.startswith("edgeship/")} == code
    # 4. the installed wheel runs the quickstart (briefly): every stage from the regular install
    run = subprocess.run([str(py), "-m", "edgeship.cli", "--quiet", "quickstart", "--out", str(tmp_path / "qs"),
                          "--epochs", "2", "--runs", "5", "--max-drop", "100", "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "qs" / "report.json").is_file() and (tmp_path / "qs" / "manifest.json").is_file()


def test_the_version_lives_in_one_leaf_module_that_pyproject_agrees_with():
    import tomllib

    from edgeship._version import __version__

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__ == edgeship.__version__
    assert ast_imports(ROOT / "sdk" / "_version.py") == set()
    for path in (ROOT / "sdk").rglob("*.py"):  # nothing inside the package reads it back from the facade
        assert "from edgeship import __version__" not in path.read_text(), path


def ast_imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
