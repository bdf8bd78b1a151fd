"""Coverage-guided fuzzing of the .mlpackage reader with atheris (libFuzzer), outside the CI suite.

    .venv/bin/pip install atheris
    .venv/bin/python benchmarks/fuzz_mlpackage_atheris.py SEED.mlpackage [-max_total_time=600] [libFuzzer flags]

libFuzzer mutates the seed package's model.mlmodel (the ML Program protobuf), guided by coverage of
edgeship's reader and evaluator; each input is written into a copy of the package (its Manifest.json
and weights kept) and goes through edgeship.runtimes.load and one run. An EdgeshipError is the
expected answer; any other exception is a finding and stops the run with the input that caused it
(crash-*) in the working folder. benchmarks/fuzz_load.py does the same for .tflite and .onnx files;
the fixed corpus of damaged packages is tests/fuzzing_mlpackage.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():  # the backend is imported here, not on first load, to be instrumented
    import edgeship.runtimes as runtimes
    from edgeship.errors import EdgeshipError
    from edgeship.runtimes import _mil_ops, _protobuf, coreml, mil  # noqa: F401

MODEL = Path("Data/com.apple.CoreML/model.mlmodel")
PACKAGE = Path(tempfile.mkdtemp(prefix="edgeship-fuzz-")) / "input.mlpackage"


def one_input(data: bytes) -> None:
    (PACKAGE / MODEL).write_bytes(data)
    try:
        session = runtimes.load(PACKAGE)
        session.run(session.sample_feeds(1))
    except EdgeshipError:
        pass  # the answer a hostile file should get


def main() -> None:
    seed = Path(sys.argv[1])
    shutil.copytree(seed, PACKAGE)
    corpus = PACKAGE.parent / "corpus"
    corpus.mkdir()
    (corpus / "model.mlmodel").write_bytes((seed / MODEL).read_bytes())
    atheris.Setup([sys.argv[0], str(corpus), *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
