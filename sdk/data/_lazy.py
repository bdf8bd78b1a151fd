"""Arrays that stay on disk until sliced, so a test split of any size is read in bounded memory.

    Stored          the rows of one array in a file (a ``.npy`` file, or an uncompressed ``.npz``
                    member), read with plain file reads: no memory map, so nothing read stays resident
    LazyArray       a Stored array seen through a row selection (a split) and a per-sample transform
                    (preprocessing); slicing returns a numpy array, anything else stays lazy

``np.load`` reads every ``.npz`` member whole, and a memory map keeps every page it touched in the
process's resident set; validation over 50,000 CIFAR images would hold 600 MB of float32 inputs.
Here a slice reads its rows, applies the transform to them, and drops them after use.

    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
    >>> np.save(path, np.arange(12, dtype=np.uint8).reshape(6, 2))
    >>> x = LazyArray(stored(path)).map(lambda r: r / 2)
    >>> x.shape, x[1:3].tolist()
    ((6, 2), [[1.0, 1.5], [2.0, 2.5]])
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.errors import DatasetError

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

#: samples read per piece when a LazyArray is walked whole (fingerprint, checks, materializing)
CHUNK = 1024


class Stored:
    """One C-ordered array at ``offset`` bytes into ``path``; ``read`` returns fresh numpy arrays."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.path, self.offset, self.dtype, self.shape = Path(path), int(offset), np.dtype(dtype), tuple(shape)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, index: np.ndarray | slice) -> np.ndarray:
        """Rows ``index`` (a step-1 slice or integer indices), in that order."""
        if isinstance(index, slice):
            start, stop, _ = index.indices(self.shape[0])
            out = np.empty((max(stop - start, 0),) + self.shape[1:], self.dtype)
            with open(self.path, "rb") as f:
                f.seek(self.offset + start * self.row_bytes)
                self._fill(f, out)
            return out
        out = np.empty((len(index),) + self.shape[1:], self.dtype)
        with open(self.path, "rb") as f:
            for j, i in enumerate(index):  # a split's scattered rows: one small read each
                f.seek(self.offset + int(i) * self.row_bytes)
                self._fill(f, out[j : j + 1])
        return out

    def _fill(self, f: io.BufferedReader, out: np.ndarray) -> None:
        view = out.data.cast("B") if out.size else memoryview(b"")
        if f.readinto(view) != len(view):
            raise DatasetError(
                f"{self.path} ends before the array its header describes ({self.shape}, {self.dtype}); "
                "the file is truncated: write it again"
            )


def stored(path: Path, member: str | None = None) -> Stored | np.ndarray:
    """The array in ``path`` (a ``.npy`` file, or ``member`` of a ``.npz``) as a Stored array where its
    bytes can be read in place; a compressed member or a Fortran-ordered array is read whole."""
    offset = 0
    if member is not None:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member + ".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as f:  # np.savez_compressed: no place to read rows from
                    return np.lib.format.read_array(f, allow_pickle=False)
        offset = _member_offset(path, info)
    with open(path, "rb") as f:
        f.seek(offset)
        version = np.lib.format.read_magic(f)
        reader = _HEADERS.get(version)  # numpy has no public reader for 3.0 (utf-8 field names)
        # the private reader of the other versions is not in numpy's stubs
        shape, fortran, dtype = reader(f) if reader else np.lib.format._read_array_header(f, version)  # type: ignore[attr-defined]
        if dtype.hasobject:
            raise DatasetError(f"{path}{f' ({member})' if member else ''} holds Python objects; store plain arrays")
        start = f.tell()
    if fortran or not shape:
        with open(path, "rb") as f:
            f.seek(offset)
            return np.lib.format.read_array(f, allow_pickle=False)
    return Stored(path, start, dtype, shape)


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _member_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where an uncompressed member's bytes start: after its local header, whose extra field may
    differ in length from the central directory's."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    if header[:4] != b"PK\x03\x04":
        raise DatasetError(f"{path}: member {info.filename} has no local header; the .npz is damaged")
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


class LazyArray:
    """Rows of a Stored array (all of them, or ``rows``) through ``transform``, read when sliced.

    Duck-types the part of a numpy array the validate path uses: ``shape``, ``dtype``, ``ndim``,
    ``len``, slicing (returns numpy arrays), ``np.asarray`` (reads everything). Indexing with an
    integer array, ``[..., None]`` and ``map`` return new lazy views instead of reading.
    """

    def __init__(
        self,
        source: Stored,
        rows: np.ndarray | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.source, self.rows, self.transform = source, rows, transform
        n = source.shape[0] if rows is None else len(rows)
        sample = self._finish(
            source.read(slice(0, 1)) if source.shape[0] else np.zeros((1,) + source.shape[1:], source.dtype)
        )
        self.shape: tuple[int, ...] = (n,) + sample.shape[1:]
        self.dtype: np.dtype = sample.dtype

    def __repr__(self) -> str:
        return f"<LazyArray {self.shape} {self.dtype} from {self.source.path.name}>"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            index = slice(start, stop) if self.rows is None else self.rows[start:stop]
            return self._finish(self.source.read(index))
        if isinstance(key, (int, np.integer)):
            return self[int(key) : int(key) + 1][0] if key >= 0 else self[len(self) + int(key)]
        if isinstance(key, tuple) and key == (Ellipsis, None):
            return self.map(lambda r: r[..., None])
        index = np.arange(len(self))[key]  # integer arrays, masks, strided slices: a new selection
        return LazyArray(self.source, index if self.rows is None else self.rows[index], self.transform)

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> LazyArray:
        """This array with ``fn`` applied to every piece read (``fn`` must treat samples independently)."""
        inner = self.transform
        return LazyArray(self.source, self.rows, fn if inner is None else (lambda r: fn(inner(r))))

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        """The rows in order, ``size`` at a time, as numpy arrays."""
        for i in range(0, len(self), size):
            yield self[i : i + size]

    def __array__(self, dtype: DTypeLike = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        for i, piece in zip(range(0, len(self), CHUNK), self.chunks()):
            out[i : i + len(piece)] = piece
        return out if dtype is None else out.astype(dtype)

    def setflags(self, **_: object) -> None:
        """Read-only already: slices are fresh arrays, the file is never written."""

    def _finish(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.transform is None else self.transform(rows)


def chunks(array: np.ndarray | LazyArray, size: int = CHUNK) -> Iterator[np.ndarray]:
    """Pieces of ``array`` along its first axis: a LazyArray's reads, or views of a numpy array."""
    for i in range(0, len(array), size):
        yield array[i : i + size]
