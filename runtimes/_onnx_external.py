"""ONNX external data must stay inside the model's folder (CVE-2024-27318: a `location` of
'../../etc/passwd' or an absolute path made the loader read any file).

The ModelProto is walked with the wire-format reader, so this works with onnxruntime alone, before
any loader sees the file: graph initializers, sparse initializers, and tensors and subgraphs held
in node attributes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from edgeship.errors import BadArtifactError
from edgeship.runtimes._protobuf import _fields, _map, _str

# field numbers of onnx.proto3
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE, _FUNCTION_NODE = 5, 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_EXTERNAL = 1


def _tensor(buf: memoryview) -> Iterator[tuple[str, str]]:
    fields = _fields(buf)
    if fields.get(_TENSOR_LOCATION, [0])[0] == _EXTERNAL or _TENSOR_EXTERNAL in fields:
        name = _str(fields[_TENSOR_NAME][0]) if _TENSOR_NAME in fields else "?"
        for key, value in _map(fields.get(_TENSOR_EXTERNAL, [])):
            if key == "location":
                yield name, _str(value)


def _sparse(buf: memoryview) -> Iterator[tuple[str, str]]:
    fields = _fields(buf)
    for part in fields.get(_SPARSE_VALUES, []) + fields.get(_SPARSE_INDICES, []):
        yield from _tensor(part)


def _nodes(nodes: list[memoryview], depth: int) -> Iterator[tuple[str, str]]:
    for node in nodes:
        for attr in _fields(node).get(_NODE_ATTRIBUTE, []):
            fields = _fields(attr)
            for tensor in fields.get(_ATTR_T, []) + fields.get(_ATTR_TENSORS, []):
                yield from _tensor(tensor)
            for sparse in fields.get(_ATTR_SPARSE, []) + fields.get(_ATTR_SPARSES, []):
                yield from _sparse(sparse)
            for graph in fields.get(_ATTR_G, []) + fields.get(_ATTR_GRAPHS, []):
                yield from _graph(graph, depth + 1)


def _graph(buf: memoryview, depth: int = 0) -> Iterator[tuple[str, str]]:
    if depth > 64:
        raise BadArtifactError("ONNX subgraphs nest more than 64 deep; refusing the model")
    fields = _fields(buf)
    for tensor in fields.get(_GRAPH_INITIALIZER, []):
        yield from _tensor(tensor)
    for sparse in fields.get(_GRAPH_SPARSE, []):
        yield from _sparse(sparse)
    yield from _nodes(fields.get(_GRAPH_NODE, []), depth)


def external_locations(data: bytes) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor whose data lives in another file."""
    try:
        model = _fields(memoryview(data))
        found = [loc for graph in model.get(_MODEL_GRAPH, []) for loc in _graph(graph)]
        for function in model.get(_MODEL_FUNCTIONS, []):
            found += list(_nodes(_fields(function).get(_FUNCTION_NODE, []), 0))
        return found
    except (BadArtifactError, IndexError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise BadArtifactError(f"the protobuf is malformed ({exc})") from exc


def check(path: Path) -> None:
    """Refuse ``path`` when it is no ONNX protobuf, or any external data location leaves its folder."""
    folder = path.parent.resolve()
    try:
        locations = external_locations(path.read_bytes())
    except BadArtifactError as exc:
        raise BadArtifactError(
            f"{path} is not a valid ONNX model: {exc}; re-export it or check the file was copied whole"
        ) from exc
    for tensor, location in locations:
        pure = PurePosixPath(location)
        escapes = (
            pure.is_absolute()
            or PureWindowsPath(location).is_absolute()
            or ".." in pure.parts
            or not (folder / location).resolve().is_relative_to(folder)
        )
        if escapes:
            raise BadArtifactError(
                f"{path.name}: tensor '{tensor}' keeps its data at '{location}', outside the model's folder; "
                "refusing it (a model may only read files beside it). Re-export the model with its external "
                "data in the same folder"
            )
