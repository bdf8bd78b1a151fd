"""The records' machinery: frozen dataclasses with a JSON round trip that rejects unknown keys, and
the versioned file every record stored on its own is written as.

Every file written carries ``schema_version``; a newer version than this code knows is refused.
Nothing here imports more than the standard library.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from edgeship import _io
from edgeship.errors import BadArtifactError, BadInputError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"

__all__ = ["SCHEMA_VERSION", "MANIFEST_NAME", "REPORT_NAME", "Record", "VersionedFile"]


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a record class, worked out once per class (a cache keyed by the
    class: mypy does not take a class object for the ``Hashable`` that ``functools.cache`` asks)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any, where: str) -> Any:
    """Turn JSON ``value`` into the annotated type ``tp``, or raise BadInputError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for arg in inner:
            try:
                return _decode(arg, value, where)
            except BadInputError as exc:
                errors.append(str(exc))
        raise BadInputError(errors[0] if errors else f"{where}: received {value!r}")
    if isinstance(tp, type) and issubclass(tp, Record):
        if not isinstance(value, dict):
            raise BadInputError(f"{where}: expected an object, received {type(value).__name__}")
        return tp.from_dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BadInputError(f"{where}: expected a list, received {type(value).__name__}")
        args = typing.get_args(tp)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise BadInputError(f"{where}: expected an object, received {type(value).__name__}")
        _, item = typing.get_args(tp)
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise BadInputError(f"{where}: expected a list, received {type(value).__name__}")
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if value is None:  # a figure that was not finite is written as null (edgeship._io.write_json)
            return float("nan")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - a new annotation needs a branch above
        raise TypeError(f"records cannot decode {tp!r}")
    raise BadInputError(f"{where}: expected {tp.__name__}, received {value!r}")


class Record:
    """Mixin for the frozen dataclasses below: ``to_dict`` / ``from_dict`` with strict keys."""

    if TYPE_CHECKING:  # every record is a dataclass: the field table ``dataclasses.fields`` reads
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise BadInputError(f"{cls.__name__}: expected an object, received {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BadInputError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(names)}")
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadInputError(f"{cls.__name__}: the key '{f.name}' is missing")
        return cls(**kwargs)


class VersionedFile(Record):
    """A record stored as its own JSON file, with ``schema_version`` checked on read."""

    file_name: ClassVar[str]
    #: the command that writes this file, named when it is missing
    written_by: ClassVar[str] = ""
    #: the newest schema_version this code reads for this kind of file (a file is written with the
    #: oldest version that describes it, so older readers still read what they can)
    newest_schema: ClassVar[int] = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise BadInputError(f"{cls.__name__}: 'schema_version' must be an integer, received {version!r}")
        if version > cls.newest_schema:
            writer = data.get("edgeship_version")
            wanted = (
                f"it was written by edgeship {writer}: pip install 'edgeship>={writer}'"
                if isinstance(writer, str) and writer
                else "upgrade edgeship (pip install -U edgeship)"
            )
            raise BadInputError(
                f"{cls.__name__}: schema_version {version} is newer than this edgeship {_version()} understands "
                f"({cls.newest_schema}); {wanted}"
            )
        return super().from_dict(data)

    def save(self, folder: str | Path) -> Path:
        """Write the record as ``folder/<file_name>``, atomically."""
        return _io.write_json(Path(folder) / self.file_name, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a record from a file or from the folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / cls.file_name
        try:
            data = _io.loads(path.read_bytes())
            return cls.from_dict(data)
        except FileNotFoundError as exc:
            step = (
                f"run {cls.written_by} first (it writes {cls.file_name})"
                if cls.written_by
                else "run the step that writes it first"
            )
            raise BadArtifactError(f"no {cls.file_name} at {path}: {step}") from exc
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise BadArtifactError(f"{path} is not valid JSON ({exc}); regenerate it") from exc
        except BadInputError as exc:
            raise BadArtifactError(f"{path} is malformed: {exc}") from exc


def _version() -> str:
    from edgeship._version import __version__

    return __version__
