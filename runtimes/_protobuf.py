"""The protobuf wire format, read with the standard library: enough to walk a model file's
messages (Core ML's model.mlmodel, an ONNX ModelProto) without protobuf or the framework.

Model files can be hostile, so reading is bounded: a varint is at most 10 bytes and 64 bits, a
length or fixed-width field must fit in the bytes that remain, and a read past the end is a
BadArtifactError naming the byte. ``_fields`` reads one level and never recurses: callers descend
only along the schema they know, so a message nested 100,000 deep costs one level's scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgeship.errors import BadArtifactError


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    start = i
    try:
        while True:
            byte = buf[i]
            i += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80 and (shift < 63 or byte < 2):
                return result, i
            shift += 7
            if shift > 63:
                break
    except IndexError:
        raise BadArtifactError(
            f"the model protobuf ends inside a varint at byte {start} of {len(buf)}: the file is "
            "truncated or corrupt; convert again or copy the whole package"
        ) from None
    raise BadArtifactError(
        f"the varint at byte {start} of the model protobuf is longer than 64 bits (received "
        f"{bytes(buf[start : start + 11]).hex()}): the file is corrupt or hostile"
    )


def _fields(buf: memoryview) -> dict[int, list[Any]]:
    """Field number -> values in order: ints for varints, memoryviews for everything else."""
    if isinstance(buf, int):
        raise BadArtifactError(
            f"the model protobuf holds the number {buf} where a message belongs: the file is corrupt"
        )
    buf = memoryview(buf)
    out: dict[int, list[Any]] = {}
    value: int | memoryview
    i, end = 0, len(buf)
    while i < end:
        start = i
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        else:
            if wire == 2:
                size, i = _varint(buf, i)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
            else:
                raise BadArtifactError(
                    f"unsupported protobuf wire type {wire} at byte {start} of the model file: "
                    "the file is corrupt or not a model"
                )
            if size > end - i:
                raise BadArtifactError(
                    f"field {key >> 3} at byte {start} of a {end}-byte protobuf message claims "
                    f"{size} bytes; {end - i} remain: the model file is truncated or corrupt"
                )
            value, i = buf[i : i + size], i + size
        if key < 8:
            raise BadArtifactError(f"field number 0 at byte {start} of the model protobuf: the file is corrupt")
        out.setdefault(key >> 3, []).append(value)
    return out


def _bytes(value: memoryview | int) -> bytes:
    if isinstance(value, int):  # bytes(n) would allocate n zero bytes
        raise BadArtifactError(f"the model protobuf holds the number {value} where bytes belong: the file is corrupt")
    return bytes(value)


def _str(value: memoryview) -> str:
    try:
        return _bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadArtifactError(
            f"a string in the model protobuf is not UTF-8 text (received {bytes(value[:40])!r}): the file is corrupt"
        ) from exc


def _varints(values: list[Any]) -> list[int]:
    """A repeated integer field, packed or not; int32/int64 negatives come back negative."""
    out: list[int] = []
    for value in values:
        if isinstance(value, int):
            out.append(value)
            continue
        i = 0
        while i < len(value):
            number, i = _varint(value, i)
            out.append(number)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in out]


def _map(entries: list[memoryview]) -> Iterator[tuple[str, memoryview]]:
    for entry in entries:
        fields = _fields(entry)
        yield _str(fields.get(1, [b""])[0]), fields.get(2, [b""])[0]
