"""What the converters warn about while they write an artifact, kept with the artifact.

TensorFlow's converter, tf2onnx, ONNX Runtime's quantizer and coremltools report things a user
should know (an op left in float, statistics that were missing, a pre-processing step skipped)
as Python warnings, log records or native stderr lines. ``collect`` gathers all three during one
conversion; the ones that say something about the model become ``Artifact.notes``, which the
manifest keeps and the CLI prints. Start-up chatter that says nothing about the model is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

from edgeship._deps import native_is_quiet

#: the libraries whose log records can concern the model being converted
LOGGERS = ("tensorflow", "absl", "tf2onnx", "coremltools", "onnxruntime", "edgeship.converters")
#: messages that describe the host or the stack, not the model
NOISE = re.compile(
    r"has not been tested with coremltools|scikit-learn version|Failed to load _ML|deprecat|untraced function"
    r"|trackable_obj|XNNPACK delegate|absl::InitializeLog|cuda|cuInit|oneDNN|TF-TRT|This TensorFlow binary"
    r"|fully_quantize: \d|Estimated count of arithmetic ops|rewriter_config|tf\.function retracing"
    r"|Statistics for quantized inputs were expected",  # int8 I/O: the calibration supplies them
    re.IGNORECASE,
)
_NATIVE_WARNING = re.compile(r"^(W\d{4} .*?\] |.*\bwarning: )(?P<text>.+)$")
MAX_NOTES, MAX_CHARS = 20, 400


class _Records(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def collect() -> Iterator[list[str]]:
    """Gather warnings, log records and native stderr warnings; the list fills when the block ends.

    Native stderr is captured to a file for the block; outside ``quiet_native()`` (which the CLI
    enters for each command) it is written back to stderr afterwards, as it would have been.
    """
    raw: list[str] = []
    notes: list[str] = []
    handler = _Records(raw)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    # the records are the artifact's now: let warnings through a level the CLI raised, and keep
    # them off the console (convert prints them as notes)
    saved_state = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as native, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        os.dup2(native.fileno(), 2)
        try:
            yield notes
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for logger, (level, propagate) in zip(loggers, saved_state):
                logger.removeHandler(handler)
                logger.setLevel(level)
                logger.propagate = propagate
            native.seek(0)
            text = native.read().decode("utf-8", "replace")
            if text and not native_is_quiet():
                sys.stderr.write(text)
            raw += [str(w.message) for w in caught if issubclass(w.category, (UserWarning, RuntimeWarning))]
            raw += [m.group("text") for line in text.splitlines() if (m := _NATIVE_WARNING.match(line.strip()))]
            notes += _kept(raw)


def _kept(messages: list[str]) -> list[str]:
    kept: list[str] = []
    for message in messages:
        message = " ".join(message.split())
        if message and not NOISE.search(message) and message not in kept:
            kept.append(message[:MAX_CHARS])
    return kept[:MAX_NOTES]
