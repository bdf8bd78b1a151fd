"""Coverage-guided fuzzing of model loading with atheris (libFuzzer), outside the CI suite.

    .venv/bin/pip install atheris
    .venv/bin/python benchmarks/fuzz_load.py SEED_MODEL [-max_total_time=600] [-runs=N] [libFuzzer flags]

SEED_MODEL is a .tflite or .onnx file (e.g. edgeship-out/tiny_cnn.int8.tflite from the
quickstart); libFuzzer mutates it, guided by coverage of edgeship's Python code and the
interpreter's, and each input goes through edgeship.runtimes.load and one run. An EdgeshipError is
the expected answer to a hostile file; any other exception is reported as a finding, and a crash
of the interpreter stops the run with the input that caused it (crash-*) in the working folder.
The fixed corpus that CI runs lives in tests/fuzzing.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import edgeship.runtimes as runtimes
    from edgeship.errors import EdgeshipError

SUFFIX = ".tflite"
WORK = Path(tempfile.mkdtemp(prefix="edgeship-fuzz-"))


def one_input(data: bytes) -> None:
    path = WORK / f"input{SUFFIX}"
    path.write_bytes(data)
    try:
        session = runtimes.load(path)
        session.run(session.sample_feeds(1))
    except EdgeshipError:
        pass  # the answer a hostile file should get


def main() -> None:
    global SUFFIX
    seed = Path(sys.argv[1])
    SUFFIX = seed.suffix
    corpus = WORK / "corpus"
    corpus.mkdir()
    (corpus / seed.name).write_bytes(seed.read_bytes())
    atheris.Setup([sys.argv[0], str(corpus), *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
