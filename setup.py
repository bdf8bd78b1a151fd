"""Package discovery: pyproject.toml holds the metadata, this file finds the packages.

The import package ``edgeship`` is spread over the design card's top-level folders; every folder
below one of them that holds an ``__init__.py`` is a subpackage, so a new one ships in the wheel
without being listed anywhere.
"""

import runpy
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
ROOTS: dict[str, str] = runpy.run_path(str(HERE / "sdk" / "_layout.py"))["ROOTS"]  # the one copy of the map


def packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        for init in sorted((HERE / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(HERE / folder).parts
            found.append(".".join((name, *parts)))
    return found


setup(packages=packages(), package_dir=ROOTS)
