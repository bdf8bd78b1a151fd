"""Atomic writes: a file or folder appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _tmp_sibling(path: Path, *, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept: readers pick a backend by it (.tflite, .keras, .mlpackage).
    prefix, suffix = f".{path.stem}.partial-", path.suffix
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
        tmp.chmod(0o777 & ~_UMASK)
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual mode
    return Path(name)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` under a temporary name, fsync, then rename."""
    path = Path(path)
    tmp = _tmp_sibling(path, directory=False)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


#: nesting deeper than any record edgeship writes (report.json reaches 6): deeper is damage or an attack
MAX_JSON_DEPTH = 64


def loads(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` (a ValueError) before the
    parser recurses, so that a hostile file is an error and not a RecursionError."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1
    return json.loads(text)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as JSON at ``path``, atomically. A figure that is not finite (NaN, Inf: a model that
    produced them, say) is written as null and said in one warning, never a crash."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default)
    except ValueError:
        where: list[str] = []
        text = json.dumps(_finite(json.loads(json.dumps(obj, default=_json_default)), "", where), indent=2)
        log.warning(
            "%s: %d figure(s) not finite, written as null: %s",
            Path(path).name,
            len(where),
            ", ".join(where[:5]) + (" …" if len(where) > 5 else ""),
        )
    return write_bytes(path, (text + "\n").encode())


def _finite(value: Any, where: str, found: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        found.append(f"{where or '.'} ({value})")
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), found) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


@contextlib.contextmanager
def staged(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, else remove it.

    Converters write into the staged path, so an interrupted conversion leaves nothing that looks
    complete under the final name.
    """
    path = Path(path)
    tmp = _tmp_sibling(path, directory=directory)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be renamed over a folder: move the old one aside first.
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# -- transactions ------------------------------------------------------------------------------
#
# A command that writes artifacts into a folder (convert, doctor) does so inside ``transaction``:
#   1. recover: temporaries (``.<name>.partial-*``, ``.<name>.old-*``) are removed, and so is every
#      name an interrupted transaction created that its record (manifest.json) does not list;
#   2. the journal ``.edgeship-journal.json`` lists the folder's names before this step;
#   3. each file is written under a temporary name, fsynced and renamed (``write_bytes``, ``staged``);
#      a record is dropped from the manifest before its file is written over, so at every moment each
#      listed file is the one recorded;
#   4. the manifest is written last; the journal is removed when the step ends, and on an error
#      what the step created but did not record is removed at once.
# A kill -9 anywhere leaves the journal, and the next command's step 1 finishes the clean-up.

JOURNAL = ".edgeship-journal.json"


def remove(path: Path) -> None:
    """Remove a file or a whole folder (a package, a staged folder); a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of edgeship's temporary names (``staged``, ``write_bytes``)."""
    return name.startswith(".") and (".partial-" in name or ".old-" in name)


def remove_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove what interrupted writes left under temporary names in ``folder`` and below; the
    relative names removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob(".*"), key=lambda p: len(p.parts)):
        if is_temporary(path.name) and (path.exists() or path.is_symlink()):
            remove(path)
            removed.append(path.relative_to(folder).as_posix())
    return removed


def recover(folder: str | os.PathLike, recorded: Callable[[], set[str]]) -> list[str]:
    """Finish the clean-up of an interrupted transaction in ``folder``: temporaries, and the names
    it created that ``recorded()`` (a set of top-level names) does not hold. The names removed."""
    folder = Path(folder)
    removed = remove_temporaries(folder)
    journal = folder / JOURNAL
    if journal.is_file():
        try:
            before = set(json.loads(journal.read_text()).get("before", []))
        except (ValueError, OSError, AttributeError):
            before = None  # a torn journal: keep every name rather than guess
        if before is not None:
            removed += _roll_back(folder, before, recorded())
        journal.unlink(missing_ok=True)
    return removed


def _roll_back(folder: Path, before: set[str], recorded: set[str]) -> list[str]:
    removed = []
    for path in sorted(folder.iterdir()):
        if path.name in before or path.name in recorded or path.name in (JOURNAL, LOCK):
            continue
        remove(path)
        removed.append(path.name)
    return removed


LOCK = ".edgeship-lock"


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder``'s lock (an flock on ``.edgeship-lock``, released by the kernel whatever ends
    the process); a second edgeship process that wants it is refused, naming the first's pid."""
    import fcntl

    from edgeship.errors import BadInputError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD:  # this process holds it already (one step inside another)
        yield
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise BadInputError(
                f"{folder} is being written by edgeship process {holder}; wait for it to finish, "
                "or use another --out folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # closing releases the lock


_HELD: set[str] = set()  # folders whose lock this process holds


def recover_unless_busy(folder: str | os.PathLike, recorded: Callable[[], set[str]]) -> list[str]:
    """``recover`` for a reader (validate): only when no other edgeship process is writing the
    folder, whose journal and temporaries are its own work in progress."""
    from edgeship.errors import BadInputError

    folder = Path(folder)
    if not (folder / JOURNAL).exists() and not any(is_temporary(p.name) for p in folder.rglob(".*")):
        return []  # nothing was interrupted here: a reader writes nothing, not even the lock
    try:
        with locked(folder):
            return recover(folder, recorded)
    except BadInputError:
        return []


@contextlib.contextmanager
def transaction(folder: str | os.PathLike, recorded: Callable[[], set[str]]) -> Iterator[list[str]]:
    """One writing step in ``folder`` (see the steps above), holding the folder's lock.
    ``recorded()`` gives the top-level names the folder's record lists; the yielded list holds
    what recovery removed first."""
    folder = Path(folder)
    with locked(folder):
        with _transaction(folder, recorded) as removed:
            yield removed


@contextlib.contextmanager
def _transaction(folder: Path, recorded: Callable[[], set[str]]) -> Iterator[list[str]]:
    removed = recover(folder, recorded)
    before = sorted(p.name for p in folder.iterdir())
    write_json(folder / JOURNAL, {"pid": os.getpid(), "before": before})
    try:
        yield removed
    except BaseException:
        _roll_back(folder, set(before), recorded())
        raise
    finally:
        (folder / JOURNAL).unlink(missing_ok=True)
