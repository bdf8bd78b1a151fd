"""Hostile .mlpackage folders: the reader and evaluator answer with an EdgeshipError, never a traceback,
a hang or a read outside the package. A seeded sample of tests/fuzzing_mlpackage.py's corpus runs in
child processes; the unit tests below pin each class of check (benchmarks/fuzz_mlpackage.py runs all of it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeship.errors import BadArtifactError
from edgeship.runtimes import _protobuf, load, mil

sys.path.insert(0, str(Path(__file__).parent))
import fuzzing_mlpackage as fuzz  # noqa: E402

PACKAGE = "tiny_cnn.fp16.mlpackage"
# damage that must be refused by name, whatever the seeded draw picks
MUST_REFUSE = ("symlink-escape.manifest-passwd", "symlink-escape.model-copy", "symlink-escape.weights-dir",
               "symlink-escape.loop", "blob-reference.name-0", "length-bomb.top", "nesting-bomb.whole",
               "huge-varint.key", "manifest.9")


@pytest.fixture(scope="module")
def package(quickstart_dir) -> Path:
    return quickstart_dir / PACKAGE


@pytest.fixture(scope="module")
def sample(package, tmp_path_factory) -> tuple[dict[Path, str], dict[Path, dict]]:
    corpus = fuzz.write_corpus([package], tmp_path_factory.mktemp("mlpackages"), sample=44, include=MUST_REFUSE)
    return corpus, fuzz.run_packages(list(corpus), workers=2, timeout=60)


def test_hostile_packages_end_as_an_edgeship_error_or_a_valid_model(sample):
    corpus, results = sample
    assert len(results) == len(corpus) == 44
    assert len(set(corpus.values())) >= 18, "the sample covers every mutation class"
    bad = {p.name: (r["outcome"], r["detail"], r["outside"]) for p, r in results.items() if not fuzz.acceptable(r)}
    assert not bad, bad


def test_structural_damage_is_always_a_bad_artifact_error(sample):
    corpus, results = sample
    structural = {p: r for p, r in results.items() if corpus[p] in fuzz.STRUCTURAL}
    assert len(structural) >= 30
    wrong = {p.name: (r["outcome"], r["detail"]) for p, r in structural.items() if r["outcome"] != "BadArtifactError"}
    assert not wrong, wrong


def test_nothing_outside_the_package_is_opened(sample):
    corpus, results = sample
    escapes = [p for p in results if corpus[p] == "symlink-escape"]
    assert len(escapes) >= 4
    assert not {p.name: r["outside"] for p, r in results.items() if r["outside"]}


def test_the_open_watch_sees_a_read_outside_the_package(tmp_path):
    """The zero above means something: the child's audit hook does record a read outside."""
    (tmp_path / "in.mlpackage").mkdir()
    (tmp_path / "secret").write_text("x")
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import fuzzing_mlpackage as f\n"
              f"w = f._OpenWatch(); sys.addaudithook(w); w.package = {str(tmp_path / 'in.mlpackage')!r} + '/'\n"
              f"open({str(tmp_path / 'secret')!r}).read(); print(w.seen)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert str(tmp_path / "secret") in out.stdout


# -- the protobuf reader: bounded --------------------------------------------------------------------
@pytest.mark.parametrize("data, words", [
    (b"\x08" + b"\xff" * 9 + b"\x7f", "longer than 64 bits"),  # a varint above 2^64
    (b"\x08" + b"\x80" * 10 + b"\x00", "longer than 64 bits"),  # 11 bytes
    (b"\x08\xff\xff", "ends inside a varint at byte 1"),
    (b"\x12\x80\x80\x80\x80\x20abc", "claims 8589934592 bytes; 3 remain"),  # a length bomb: 8 GB
    (b"\x09\x01\x02", "claims 8 bytes; 2 remain"),  # a truncated fixed64
    (b"\x02\x01a", "field number 0"),
    (b"\x0b", "wire type 3"),
])
def test_protobuf_fields_are_bounded(data, words):
    with pytest.raises(BadArtifactError, match=words):
        _protobuf._fields(memoryview(data))


def test_protobuf_still_reads_ten_byte_negatives_and_refuses_numbers_as_bytes():
    assert _protobuf._varints([memoryview(b"\xff" * 9 + b"\x01")]) == [-1]
    with pytest.raises(BadArtifactError, match="number 1099511627776 where bytes belong"):
        _protobuf._str(1 << 40)  # bytes(n) would allocate a terabyte
    with pytest.raises(BadArtifactError, match="not UTF-8"):
        _protobuf._str(memoryview(b"\xff\xfe"))


def _mutated(package: Path, tmp_path: Path, name: str) -> Path:
    mutation = next(m for m in fuzz.mutations(package) if m.name == name)
    target = Path(shutil.copytree(package, tmp_path / f"{name}.mlpackage", symlinks=True))
    mutation.edit(target, fuzz._outside(package, tmp_path))
    return target


def test_a_package_must_have_its_manifest_and_every_item_it_names(package, tmp_path):
    with pytest.raises(BadArtifactError, match="has no Manifest.json"):
        mil.read(_mutated(package, tmp_path, "missing-manifest.Manifest.json"))
    missing = Path(shutil.copytree(package, tmp_path / "no-weights.mlpackage"))
    shutil.rmtree(missing / "Data" / "com.apple.CoreML" / "weights")
    with pytest.raises(BadArtifactError, match="item 'com.apple.CoreML/weights' of no-weights.mlpackage is not a file"):
        mil.read(missing)
    deep = Path(shutil.copytree(package, tmp_path / "deep.mlpackage"))
    (deep / "Manifest.json").write_text("[" * 50 + "]" * 50)
    with pytest.raises(BadArtifactError, match="not a valid .mlpackage manifest .*nested deeper"):
        mil.read(deep)


def test_a_nesting_bomb_is_refused_quickly(package, tmp_path):
    target = _mutated(package, tmp_path, "nesting-bomb.whole")  # 100,000 nested messages
    start = time.perf_counter()
    with pytest.raises(BadArtifactError, match="no 'main' function"):
        mil.read(target)
    assert time.perf_counter() - start < 2


# -- paths: nothing outside the package --------------------------------------------------------------
@pytest.mark.parametrize("name, words", [
    ("manifest.9", "not a file inside"),  # ../../../../../../etc/passwd
    ("manifest.10", "not a file inside"),  # /etc/passwd
    ("manifest.11", "gives the model's path as 7"),
    ("manifest.15", "not a path inside the package"),  # an embedded NUL
    ("manifest.16", "cannot be found inside the package"),  # a name too long for the file system
    ("manifest.4", "not a valid .mlpackage manifest"),
    ("symlink-escape.manifest-passwd", "Manifest.json is not a file inside"),
    ("symlink-escape.manifest-copy", "Manifest.json is not a file inside"),
    ("symlink-escape.model-copy", "model file .* is not a file inside"),  # followed, it would load
    ("symlink-escape.model-relative", "not a file inside"),
    ("symlink-escape.data", "not a file inside"),
    ("symlink-escape.weights-dir", "item .com.apple.CoreML/weights. of .* is not a file inside"),
    ("symlink-escape.loop", "cannot be found inside the package"),
    ("dir-for-file.Manifest.json", "Manifest.json is not a file inside"),
    ("empty.model.mlmodel", "is empty"),
    ("blob-reference.name-0", "weight file '@model_path/../../.*' is not a file inside"),
    ("blob-reference.name-1", "weight file '/etc/passwd' is not a file inside"),
    ("blob-reference.name-6", "not a path inside the package"),
    ("blob-reference.name-7", "cannot be found inside the package"),
])
def test_paths_and_links_leaving_the_package_are_refused(package, tmp_path, name, words):
    with pytest.raises(BadArtifactError, match=words):
        load(_mutated(package, tmp_path, name))


def test_a_link_that_stays_inside_the_package_is_followed(package, tmp_path):
    session = load(_mutated(package, tmp_path, "symlink-inside.model"))
    assert session.run(session.sample_feeds(1))


# -- shapes, types and ops: a corrupt program is a BadArtifactError, not a traceback -----------------
@pytest.mark.parametrize("name, words", [
    ("shape-bomb.input-0", r"declares the shape \[1, 1099511627776, 8, 1\]"),
    ("shape-bomb.input-3", "declares the shape"),  # 2^63 reads as a negative size
    ("shape-bomb.range-1-1", "declares the dimension ranges"),
    ("shape-bomb.program-0-0", "described with shape .* but the program declares"),
])
def test_absurd_shapes_are_refused_before_anything_is_allocated(package, tmp_path, name, words):
    with pytest.raises(BadArtifactError, match=words):
        load(_mutated(package, tmp_path, name))


def _value_at(buf: bytes, path: tuple[int, ...]) -> bytes:
    for index in path:
        buf = fuzz._fields(buf)[index][4]
    return buf


def _edit_op(package: Path, tmp_path: Path, numbers: tuple[int, ...], field: bytes) -> Path:
    """A copy of ``package`` whose first op field at ``numbers`` (below an operation) that is not a
    const's type is replaced by ``field``."""
    target = Path(shutil.copytree(package, tmp_path / "edited.mlpackage"))
    model = (target / fuzz.MODEL).read_bytes()
    path = next(p for p in fuzz._find(model, fuzz._OPERATION + numbers) if _value_at(model, p) != b"const")
    (target / fuzz.MODEL).write_bytes(fuzz._replace(
        model, path, lambda num, w, v: fuzz._varint(num << 3 | 2) + fuzz._varint(len(field)) + field))
    return target


def test_an_argument_without_a_value_is_refused(package, tmp_path):
    # inputs map entry -> Argument: an Argument with no binding
    target = _edit_op(package, tmp_path, (2, 2), b"")
    with pytest.raises(BadArtifactError, match="binds no value"):
        load(target)


def test_a_tensor_type_without_a_data_type_is_refused(package, tmp_path):
    # outputs -> NamedValueType.type -> ValueType.tensorType: empty, so no data type
    target = _edit_op(package, tmp_path, (3, 2), b"\x0a\x00")
    with pytest.raises(BadArtifactError, match="has no data type"):
        load(target)


def test_a_const_without_a_value_is_refused(package, tmp_path):
    target = _edit_op(package, tmp_path, (1,), b"const")  # the first op that is not a const becomes one
    with pytest.raises(BadArtifactError, match="a const holds one value 'val'"):
        load(target)
