"""A registry of plugins by name: built-ins as import strings, others from entry points or ``register``.

    >>> FORMATS = Registry("edgeship.formats", {"tflite": "edgeship.converters.tflite:FORMAT"})
    >>> FORMATS.get("tflite").suffix                                      # doctest: +SKIP
    '.tflite'

A built-in is named by ``"module:attribute"`` and imported on first use, so a registry costs no
imports until one of its entries is asked for. A name the built-ins and ``register`` do not know is
looked up among the installed distributions' entry points of the registry's group (declared in a
plugin's pyproject.toml as ``[project.entry-points."edgeship.formats"] npz = "my_pkg:FORMAT"``),
so a plugin works in every process that can import it, child processes and devices included.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterator
from typing import Generic, TypeVar

from edgeship.errors import BadInputError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Plugins of one kind by name; ``get`` imports an entry when it is first asked for."""

    def __init__(self, group: str, builtins: dict[str, str | T]) -> None:
        self.group = group
        # name -> "module:attribute", not imported yet; or the plugin itself
        self._where: dict[str, str] = {k: v for k, v in builtins.items() if isinstance(v, str)}
        self._loaded: dict[str, T] = {k: v for k, v in builtins.items() if not isinstance(v, str)}
        self._order = list(builtins)
        self._scanned = False

    def register(self, name: str, plugin: T) -> None:
        """Add (or replace) ``name`` in this process, e.g. from a test or a notebook."""
        self._loaded[name] = plugin
        self._order.append(name)

    def unregister(self, name: str) -> None:
        self._loaded.pop(name, None)
        self._where.pop(name, None)
        self._order = [n for n in self._order if n != name]

    def _scan(self) -> None:
        """The entry points of this registry's group, once per process (built-ins win on a clash)."""
        if self._scanned:
            return
        self._scanned = True
        for point in importlib.metadata.entry_points(group=self.group):
            if point.name not in self._where and point.name not in self._loaded:
                self._where[point.name] = point.value
                self._order.append(point.name)

    def names(self) -> list[str]:
        """Every name known: built-ins first, in their order, then plugins."""
        self._scan()
        return list(dict.fromkeys(self._order))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._where:
            self._scan()  # a miss: perhaps an installed plugin's
        if name not in self._where:
            raise BadInputError(f"unknown {self.group.rpartition('.')[2][:-1]} {name!r}; known: {self.names()}")
        module, _, attribute = self._where[name].partition(":")
        plugin = getattr(importlib.import_module(module), attribute)
        self._loaded[name] = plugin
        return plugin

    def all(self) -> list[T]:
        return [self.get(name) for name in self.names()]
