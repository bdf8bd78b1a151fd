"""edgeship's version, in a leaf module that imports nothing: records, bundles and the CLI read it
without importing the package facade (pyproject.toml carries the same string; a test checks)."""

__version__ = "0.1.0"
