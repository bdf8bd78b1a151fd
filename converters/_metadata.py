"""What an artifact carries about its inputs and outputs, in the place each format keeps metadata.

    TFLite   a model metadata entry named ``edgeship`` (a buffer of JSON)   flatbuffer_utils
    ONNX     ``metadata_props`` key ``edgeship``                             onnx
    Core ML  ``user_defined_metadata`` key ``edgeship``                      coremltools

The JSON holds the preprocessing spec (what turns stored arrays into this model's inputs), the
class names, and the task, so a file that travels alone still says how to feed it. ``embed``
rewrites the file atomically; ``read`` gives the dict back (``{}`` when there is none). Where the
text goes is the format's own: its converter's ``embed_metadata`` / ``read_metadata``
(``edgeship.formats.Converter``); a format without them carries no metadata.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgeship.formats import FORMATS

KEY = "edgeship"
log = logging.getLogger(__name__)


def embed(path: Path, fmt: str, meta: dict[str, Any]) -> None:
    """Write ``meta`` into the artifact at ``path`` (replaced atomically), where ``fmt`` keeps metadata."""
    writer = getattr(FORMATS.get(fmt).converter_module(), "embed_metadata", None)
    if writer is None:
        log.info("%s files carry no metadata; %s keeps its preprocessing in the manifest only", fmt, path.name)
        return
    writer(path, json.dumps(meta, sort_keys=True))


def read(path: Path, fmt: str) -> dict[str, Any]:
    """The metadata ``embed`` wrote, or ``{}``."""
    reader = getattr(FORMATS.get(fmt).converter_module(), "read_metadata", None)
    text = reader(path) if reader is not None else None
    return json.loads(text) if text else {}
