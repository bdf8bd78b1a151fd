"""The protobuf wire format, read with the standard library: enough to walk a model file's
messages (Core ML's model.mlmodel, an ONNX ModelProto) without protobuf or the framework."""

from __future__ import annotations

from typing import Any, Iterator

from edgeship.errors import BadArtifactError


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise BadArtifactError("malformed varint in the model protobuf")


def _fields(buf: memoryview) -> dict[int, list[Any]]:
    """Field number -> values in order: ints for varints, memoryviews for everything else."""
    buf = memoryview(buf)
    out: dict[int, list[Any]] = {}
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, i = buf[i:i + width], i + width
        else:
            raise BadArtifactError(f"unsupported protobuf wire type {wire} in the model file")
        out.setdefault(key >> 3, []).append(value)
    if i != end:
        raise BadArtifactError("the model protobuf is truncated")
    return out


def _str(value: memoryview) -> str:
    return bytes(value).decode("utf-8")


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
