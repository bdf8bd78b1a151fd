"""Wheels for a device install, built from what this host has installed, with no network.

A target gets edgeship itself as a wheel made from the code running here (so the device runs
exactly this version), and, for an offline device of the same platform, numpy and the interpreters
repacked from this host's site-packages (``pip install --no-index --find-links``).

    >>> paths = host_wheels(["numpy", "ai-edge-litert"], "wheels/")     # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import importlib.util
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

from edgeship import _io
from edgeship._layout import ROOTS
from edgeship.errors import MissingDependencyError

#: edgeship's import packages; the wheel holds them all (the heavy ones import lazily).
PACKAGES = tuple(ROOTS)
_DROP = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _entry(name: str) -> zipfile.ZipInfo:
    # a fixed date makes the same files give the same wheel, so a target can tell nothing changed
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def _write_wheel(path: Path, files: Iterable[tuple[str, bytes]], dist_info: str) -> Path:
    """Write a wheel: ``files`` (archive name, bytes), then a fresh RECORD with their hashes."""
    with _io.staged(path) as tmp:
        records = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name, data in files:
                zf.writestr(_entry(name), data)
                records.append(_record_line(name, data))
            records.append(f"{dist_info}/RECORD,,")
            zf.writestr(_entry(f"{dist_info}/RECORD"), "\n".join(records) + "\n")
    return path


def _dist(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError as exc:
        raise MissingDependencyError(
            f"cannot build a device wheel of '{name}': it is not installed on this host; "
            f"install it here (pip install {name}) or let the device install it from its index"
        ) from exc


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata(dist: metadata.Distribution) -> str:
    """Core metadata rebuilt from what importlib reads: an egg-info in a source checkout (which
    ``import`` may find first) keeps its requirements in requires.txt, not in PKG-INFO."""
    meta = dist.metadata
    lines = ["Metadata-Version: 2.1", f"Name: {meta['Name']}", f"Version: {dist.version}"]
    lines += [f"{key}: {meta[key]}" for key in ("Summary", "Requires-Python", "License") if meta[key]]
    lines += [f"Provides-Extra: {extra}" for extra in meta.get_all("Provides-Extra") or ()]
    lines += [f"Requires-Dist: {req}" for req in dist.requires or ()]
    return "\n".join(lines) + "\n"


def edgeship_wheel(out_dir: str | Path) -> Path:
    """A pure-Python wheel of the edgeship code running on this host (editable installs included)."""
    dist = _dist("edgeship")
    version = dist.version
    dist_info = f"edgeship-{version}.dist-info"
    files: dict[str, bytes] = {}  # archive name -> bytes: in a regular install edgeship/ holds the others
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(f"edgeship's package {package} is not importable here; reinstall edgeship")
        root = Path(next(iter(spec.submodule_search_locations)))
        prefix = package.replace(".", "/")
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json"):
                files.setdefault(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
    files[f"{dist_info}/METADATA"] = _metadata(dist).encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edgeship\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    out = Path(out_dir) / f"edgeship-{version}-py3-none-any.whl"
    return _write_wheel(out, sorted(files.items()), dist_info)


def host_wheel(name: str, out_dir: str | Path) -> Path:
    """Repack an installed distribution into a wheel (same platform tag as it was installed with)."""
    dist = _dist(name)
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    dist_name, version = _norm(dist.metadata["Name"]), dist.version
    dist_info = f"{dist_name}-{version}.dist-info"
    out = Path(out_dir) / f"{dist_name}-{version}-{tags[0] if tags else 'py3-none-any'}.whl"
    if out.exists():
        return out
    base = Path(str(dist.locate_file("")))
    files = []
    for entry in dist.files or ():
        parts = Path(entry).parts
        if parts[0] == ".." or "__pycache__" in parts or (parts[0].endswith(".dist-info") and parts[-1] in _DROP):
            continue
        source = base / entry
        if source.is_file():
            # installed dist-info folders may be spelled differently from the normalised name
            archive = (
                f"{dist_info}/{'/'.join(parts[1:])}" if parts[0].endswith(".dist-info") else Path(entry).as_posix()
            )
            files.append((archive, source.read_bytes()))
    return _write_wheel(out, files, dist_info)


def host_wheels(names: Iterable[str], out_dir: str | Path) -> list[Path]:
    """:func:`host_wheel` for each name (already-built wheels are reused)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return [host_wheel(name, out_dir) for name in names]
