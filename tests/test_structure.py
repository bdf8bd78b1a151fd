"""The shape of the package: no import cycles, real signatures on the public API, modules of a
readable size, and every module shipped in the wheel."""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

import edgeship

ROOT = Path(__file__).resolve().parents[1]
#: import name -> folder, the map setup.py reads
from edgeship._layout import ROOTS  # noqa: E402
MAX_LINES, LONG_LINES = 500, 400


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for package, folder in ROOTS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = modules()
#: plugin registries: they sit at the bottom of the graph and name, as strings, the plugins above
#: them, which they import only when asked (``FORMATS.get("tflite").converter_module()``), never
#: at import time (test_a_registry_imports_no_plugin_until_asked): their strings are not edges
REGISTRIES = {"edgeship.formats", "edgeship.runtimes.targets", "edgeship.converters._source"}


def _resolve(name: str) -> str | None:
    """The package module a dotted name refers to: itself, or the longest module prefix."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path) -> set[str]:
    """Every package module ``module`` imports: at the top, inside functions, and by name in
    strings (``importlib.import_module`` registries, ``"module:function"`` job tables)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for n in ast.walk(block)}  # imports for annotations only: no edge at run time
    for node in (n for n in ast.walk(tree) if id(n) not in typing_only):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_resolve(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else _resolve(base)
                if target:
                    found.add(target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and module not in REGISTRIES:
            target = node.value.partition(":")[0]
            if target in MODULES:
                found.add(target)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            if node.args and isinstance(node.args[0], ast.JoinedStr):
                pytest.fail(f"{module} builds a module name at run time ({ast.unparse(node)}): name the modules "
                            "in a registry of literal strings, so the import graph can be read")
    return found


def graph() -> dict[str, set[str]]:
    edges = {}
    for module, path in MODULES.items():
        # importing a submodule imports its packages first: an edge back to one of them is no cycle
        ancestors = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
        edges[module] = {m for m in imports_of(module, path) if m != module and m not in ancestors}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert not cycles(graph())


def test_the_cycle_check_finds_a_planted_cycle():
    edges = graph()
    edges["edgeship.records._base"] = edges["edgeship.records._base"] | {"edgeship.validation"}
    assert any("edgeship.validation" in c and "edgeship.records._base" in c for c in cycles(edges))


#: the data stage (edgeship.data) imports only these from the rest of the package: it sits below the
#: stages that use it (trainers, converters, validation, doctor) and above the records, the errors and
#: the preprocessing spec (a core type: the thin runtime applies it on a device)
DATA_BELOW = ("edgeship.errors", "edgeship._deps", "edgeship.records", "edgeship.preprocess")
#: the old public paths, kept for users; the package itself imports edgeship.data
COMPATIBILITY = {"edgeship.datasets"}


def _within(module: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_data_stage_sits_between_the_stages_and_the_records():
    edges = graph()
    data = {m for m in MODULES if _within(m, ("edgeship.data",))}
    for module in sorted(data):
        above = {m for m in edges[module] - data if not _within(m, DATA_BELOW)}
        assert not above, f"{module} imports {sorted(above)}: the data stage may import only {DATA_BELOW}"
    for module in sorted(m for m in MODULES if _within(m, DATA_BELOW)):
        assert not edges[module] & data, f"{module} imports the data stage, which sits above it"
    for module in sorted(set(MODULES) - COMPATIBILITY):
        old = edges[module] & COMPATIBILITY
        assert not old, f"{module} imports {sorted(old)}: import from edgeship.data instead"


def test_function_level_and_registry_imports_are_edges():
    edges = graph()
    assert "edgeship.runtimes._profile" in edges["edgeship.runtimes.benchmark"]  # a "module:function" job table
    assert "edgeship.validation" in edges["edgeship"]  # the lazy public API
    assert "edgeship.converters.reference" in edges["edgeship.validation"]  # an import inside a function


def test_a_registry_imports_no_plugin_until_asked():
    code = ("import sys, edgeship.formats as f; f.for_path('m.tflite'); f.FORMATS.names(); "
            "print(sorted(m for m in sys.modules if m.startswith(('edgeship.converters', 'edgeship.runtimes', "
            "'edgeship.doctor'))))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def _public_functions() -> list[tuple[str, object]]:
    items = [(name, getattr(edgeship, name)) for name in edgeship.__all__]
    return [(n, f) for n, f in items if isinstance(f, types.FunctionType)]


def test_the_public_api_is_the_stage_functions_themselves():
    functions = dict(_public_functions())
    assert set(functions) == {"load_dataset", "train", "convert", "validate", "diagnose", "load", "benchmark",
                              "quickstart"}
    from edgeship.converters import convert
    from edgeship.runtimes import load

    assert functions["convert"] is convert and functions["load"] is load


@pytest.mark.parametrize("name, function", _public_functions())
def test_public_functions_have_real_typed_keyword_arguments(name, function):
    signature = inspect.signature(function)
    kinds = {p.kind for p in signature.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds, f"edgeship.{name} takes **kwargs"
    assert inspect.Parameter.VAR_POSITIONAL not in kinds, f"edgeship.{name} takes *args"
    untyped = [p.name for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
    assert not untyped, f"edgeship.{name}: parameters without a type: {untyped}"
    assert signature.return_annotation is not inspect.Signature.empty, f"edgeship.{name} has no return type"
    assert function.__doc__ and ">>>" in function.__doc__, f"edgeship.{name} has no example in its docstring"


def test_train_keywords_repeat_the_config_defaults():
    from edgeship.trainers.recipes import _DEFAULTS, train

    parameters = inspect.signature(train).parameters
    assert {name: parameters[name].default for name in _DEFAULTS} == _DEFAULTS


def test_the_data_model_classes_take_no_kwargs():
    for name in edgeship.__all__:
        value = getattr(edgeship, name)
        if isinstance(value, type) and not issubclass(value, BaseException):
            kinds = {p.kind for p in inspect.signature(value).parameters.values()}
            assert inspect.Parameter.VAR_KEYWORD not in kinds, name


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_of_a_readable_size(module):
    path = MODULES[module]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it"
    if lines > LONG_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "long" in doc.lower(), f"{path.relative_to(ROOT)} has {lines} lines; its docstring should say why"


def test_no_module_points_to_documents_outside_the_repository():
    for path in [*MODULES.values(), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]:
        if path != Path(__file__):
            assert "DESIGN" + ".md" not in path.read_text(), path
