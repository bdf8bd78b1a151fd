"""What an artifact carries about its inputs and outputs, in the place each format keeps metadata.

    TFLite   a model metadata entry named ``edgeship`` (a buffer of JSON)   flatbuffer_utils
    ONNX     ``metadata_props`` key ``edgeship``                             onnx
    Core ML  ``user_defined_metadata`` key ``edgeship``                      coremltools

The JSON holds the preprocessing spec (what turns stored arrays into this model's inputs), the
class names, and the task, so a file that travels alone still says how to feed it. ``embed``
rewrites the file atomically; ``read`` gives the dict back (``{}`` when there is none).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgeship import _io
from edgeship._deps import require

KEY = "edgeship"


def embed(path: Path, fmt: str, meta: dict[str, Any]) -> None:
    """Write ``meta`` into the artifact at ``path`` (replaced atomically)."""
    text = json.dumps(meta, sort_keys=True)
    if fmt == "tflite":
        utils = require("tensorflow.lite.tools.flatbuffer_utils", "write TFLite metadata")
        schema = require("tensorflow.lite.python.schema_py_generated", "write TFLite metadata")
        model = utils.read_model_from_bytearray(bytearray(path.read_bytes()))
        buffer = schema.BufferT()
        buffer.data = list(text.encode())
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = KEY, len(model.buffers) - 1
        model.metadata = [m for m in (model.metadata or []) if _name(m) != KEY] + [entry]
        _io.write_bytes(path, utils.convert_object_to_bytearray(model))
    elif fmt == "onnx":
        onnx = require("onnx", "write ONNX metadata")
        model = onnx.load(str(path))
        kept = [p for p in model.metadata_props if p.key != KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=KEY, value=text)
        _io.write_bytes(path, model.SerializeToString())
    elif fmt == "coreml":
        ct = require("coremltools", "write Core ML metadata")
        model = ct.models.MLModel(str(path), skip_model_load=True)
        model.user_defined_metadata[KEY] = text
        with _io.staged(path, directory=True) as tmp:
            shutil.rmtree(tmp, ignore_errors=True)
            model.save(str(tmp))


def read(path: Path, fmt: str) -> dict[str, Any]:
    """The metadata ``embed`` wrote, or ``{}``."""
    if fmt == "tflite":
        utils = require("tensorflow.lite.tools.flatbuffer_utils", "read TFLite metadata")
        model = utils.read_model_from_bytearray(bytearray(path.read_bytes()))
        for entry in model.metadata or []:
            if _name(entry) == KEY:
                return json.loads(bytes(model.buffers[entry.buffer].data).decode())
        return {}
    if fmt == "onnx":
        onnx = require("onnx", "read ONNX metadata")
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props[KEY]) if KEY in props else {}
    ct = require("coremltools", "read Core ML metadata")
    text = ct.models.MLModel(str(path), skip_model_load=True).user_defined_metadata.get(KEY)
    return json.loads(text) if text else {}


def _name(entry: Any) -> str:
    name = entry.name
    return name.decode() if isinstance(name, bytes) else str(name)
