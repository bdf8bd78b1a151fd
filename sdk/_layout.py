"""The design card's top-level folders and the import packages they are: the one copy of the map.

setup.py reads this file (before edgeship is installed), the device wheel (runtimes/_wheels.py)
ships the same packages, and tests/test_structure.py walks the same folders. Every folder below one
of these that holds an ``__init__.py`` is a subpackage.
"""

ROOTS = {
    "edgeship": "sdk",
    "edgeship.trainers": "trainers",
    "edgeship.converters": "converters",
    "edgeship.runtimes": "runtimes",
}
