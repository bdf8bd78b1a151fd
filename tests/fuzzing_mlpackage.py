"""A seeded corpus of hostile .mlpackage folders, and a runner that loads and runs each one in a child process.

    .venv/bin/python tests/fuzzing_mlpackage.py PACKAGE [PACKAGE ...]   # outcomes per mutation class

A package is a folder (``Manifest.json``, ``Data/com.apple.CoreML/model.mlmodel`` and
``weights/weight.bin``), so a mutation is an edit of a copy of it: bit flips and truncation of either
file, structure-aware protobuf damage (a length claiming gigabytes, messages nested 100,000 deep,
over-long varints, absurd blob offsets and file names), damaged blob headers, manifest edits, missing,
empty and misplaced files, and symbolic links leaving the package. Each mutation is seeded, so the
corpus is the same on every run.

The runner records per package "ok" (it loaded and ran: a flipped weight bit can still be a valid
model), the EdgeshipError subclass it raised, "crash" (the child died), "hang" (no answer within the
timeout) or "other:<type>"; and, from an audit hook in the child, every file opened outside the
package while it was being loaded and run. Only "ok" or an EdgeshipError, with no file opened
outside, is acceptable.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

MODEL = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")
# the damage no valid model survives: these classes must end as BadArtifactError. (A nesting bomb in a
# field the reader skips, such as the model's metadata, leaves a model that runs.)
STRUCTURAL = ("model-truncate", "model-random", "length-bomb", "huge-varint", "shape-bomb", "blob-reference",
              "weights-truncate", "weights-header", "manifest", "missing", "empty", "dir-for-file", "symlink-escape")
_MEMORY_LIMIT = 4 << 30  # a child that tries to allocate more gets MemoryError, not the shared machine's swap


# -- the protobuf wire format, written here independently of edgeship's reader ------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while i < len(buf) and shift < 64:
        result |= (buf[i] & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if buf[i - 1] < 0x80:
            return result, i
    raise ValueError("bad varint")


def _fields(buf: bytes) -> list[tuple[int, int, int, int, Any]]:
    """(number, wire type, start, end, value) per field; ValueError unless ``buf`` is one clean message."""
    out, i = [], 0
    while i < len(buf):
        start = i
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field 0")
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire in (1, 5):
            value, i = buf[i:i + (8 if wire == 1 else 4)], i + (8 if wire == 1 else 4)
        elif wire == 2:
            size, i = _read_varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError("wire type")
        if i > len(buf):
            raise ValueError("truncated")
        out.append((number, wire, start, i, value))
    return out


def _sites(buf: bytes, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], int, int, Any]]:
    """Every field of the message tree (descending into payloads that parse as messages): (path, number,
    wire type, value), where path holds the field's index at each level."""
    for index, (number, wire, _, _, value) in enumerate(_fields(buf)):
        yield path + (index,), number, wire, value
        if wire == 2 and value and len(path) < 24:
            try:
                yield from _sites(value, path + (index,))
            except ValueError:
                pass  # bytes or a string, not a message


def _replace(buf: bytes, path: tuple[int, ...], encode: Callable[[int, int, Any], bytes]) -> bytes:
    """``buf`` with the field at ``path`` re-encoded by ``encode`` and every enclosing length fixed,
    so the damage is met where it was put, not as a truncated parent."""
    number, wire, start, end, value = _fields(buf)[path[0]]
    if len(path) == 1:
        field = encode(number, wire, value)
    else:
        inner = _replace(value, path[1:], encode)
        field = _varint(number << 3 | 2) + _varint(len(inner)) + inner
    return buf[:start] + field + buf[end:]


def _claiming(size: int) -> Callable[[int, int, Any], bytes]:
    return lambda number, wire, value: _varint(number << 3 | 2) + _varint(size) + value


def _nested(depth: int, number: int) -> bytes:
    """``depth`` messages, each the only field of the one around it (keys built inside out, joined once)."""
    key, heads, size = _varint(number << 3 | 2), [], 0
    for _ in range(depth):
        head = key + _varint(size)
        heads.append(head)
        size += len(head)
    return b"".join(reversed(heads))


def _blob_references(model: bytes) -> list[tuple[int, ...]]:
    """Paths of the program's BlobFileValue messages: {1: "@model_path/...", 2: offset}."""
    found = []
    for path, _, wire, value in _sites(model):
        if wire == 2 and value[:1] == b"\x0a" and b"@model_path/" in value[:40]:
            try:
                fields = _fields(value)
            except ValueError:
                continue
            if [f[0] for f in fields] == [1, 2] and fields[1][1] == 0:
                found.append(path)
    return found


def _blob(name: bytes, offset: int) -> bytes:
    return b"\x0a" + _varint(len(name)) + name + b"\x10" + _varint(offset)


# -- mutations: an edit of a package's copy -------------------------------------------------------
@dataclass(frozen=True)
class Mutation:
    name: str  # "<class>.<detail>"
    edit: Callable[[Path, Path], None]  # (package copy, a folder outside it) -> None

    @property
    def kind(self) -> str:
        return self.name.split(".", 1)[0]


def _write(relative: Path, data: bytes) -> Callable[[Path, Path], None]:
    return lambda package, outside: (package / relative).write_bytes(data)


def _bit_flips(data: bytes, flips: int, seed: int) -> bytes:
    rng, buf = np.random.default_rng(seed * 100 + flips), bytearray(data)
    for pos in rng.integers(0, len(buf), flips):
        buf[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _file_damage(model: bytes, weights: bytes) -> Iterator[Mutation]:
    rng = np.random.default_rng(7)
    for relative, data, prefix in ((MODEL, model, "model"), (WEIGHTS, weights, "weights")):
        for flips in (1, 8, 64):
            for seed in range(20 if prefix == "model" else 8):
                yield Mutation(f"{prefix}-bitflip.{flips}-s{seed}", _write(relative, _bit_flips(data, flips, seed)))
        for fraction in (0.005, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999):
            yield Mutation(f"{prefix}-truncate.{fraction:g}", _write(relative, data[: int(len(data) * fraction)]))
    for size in (1, 8, 64, 1024, len(model)):
        for seed in range(3):
            yield Mutation(f"model-random.{size}-s{seed}", _write(MODEL, rng.bytes(size)))


_OPERATION = (502, 2, 2, 3, 2, 3)  # program, functions["main"], block_specializations[opset], operations


def _numbered(model: bytes) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """(path, field numbers from the top, wire type) of every field of the message tree."""
    found, numbers_at = [], {(): ()}
    for path, number, wire, _ in _sites(model):
        numbers_at[path] = numbers_at[path[:-1]] + (number,)
        found.append((path, numbers_at[path], wire))
    return found


def _find(model: bytes, numbers: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Paths of the fields reached by following field ``numbers`` from the top."""
    return [path for path, at, _ in _numbered(model) if at == numbers]


def _protobuf_damage(model: bytes) -> Iterator[Mutation]:
    """Length bombs and huge varints in the program's ops (which the reader parses, unlike, say, the
    model's metadata), and nesting bombs anywhere."""
    numbered = _numbered(model)
    in_ops = [(path, wire) for path, at, wire in numbered if at[:len(_OPERATION)] == _OPERATION and len(at) > 6]
    delimited = [path for path, wire in in_ops if wire == 2 and len(path) == len(_OPERATION) + 1]
    varints = [path for path, wire in in_ops if wire == 0]
    anywhere = [path for path, _, wire in numbered if wire == 2]
    rng = np.random.default_rng(11)
    for n, claimed in enumerate([1 << 31, 1 << 33, 1 << 40, (1 << 63) - 1] * 8):
        path = delimited[int(rng.integers(len(delimited)))]
        yield Mutation(f"length-bomb.{n}-{claimed}", _write(MODEL, _replace(model, path, _claiming(claimed))))
    yield Mutation("length-bomb.top", _write(MODEL, model + _varint(502 << 3 | 2) + _varint(1 << 34)))
    for n, depth in enumerate([1_000, 100_000] * 6):
        path = anywhere[int(rng.integers(len(anywhere)))]
        bomb = _nested(depth, int(rng.choice([1, 2, 3, 502])))
        yield Mutation(f"nesting-bomb.{n}-{depth}", _write(MODEL, _replace(
            model, path, lambda number, wire, value, bomb=bomb: _varint(number << 3 | 2) + _varint(len(bomb)) + bomb)))
    yield Mutation("nesting-bomb.whole", _write(MODEL, _nested(100_000, 502)))
    overlong = [b"\x80" * 10 + b"\x00", b"\xff" * 9 + b"\x7f", b"\xff" * 10 + b"\x01", b"\xff" * 9 + b"\x02",
                b"\xff" * 20 + b"\x01"]
    for n in range(24):
        path, raw = varints[int(rng.integers(len(varints)))], overlong[n % len(overlong)]
        yield Mutation(f"huge-varint.{n}", _write(MODEL, _replace(
            model, path, lambda num, w, v, raw=raw: _varint(num << 3) + raw)))
    for n in range(4):  # the length of an op's field as a huge varint
        path, raw = delimited[int(rng.integers(len(delimited)))], overlong[1 + n % 3]
        yield Mutation(f"huge-varint.length-{n}", _write(MODEL, _replace(
            model, path, lambda num, w, v, raw=raw: _varint(num << 3 | 2) + raw + v)))
    yield Mutation("huge-varint.key", _write(MODEL, b"\xff" * 10 + b"\x01" + model))


def _op_damage(model: bytes) -> Iterator[Mutation]:
    """Ops retyped: a computing op made a const (with no value), a const made an op it cannot be."""
    types = _find(model, _OPERATION + (1,))
    rng = np.random.default_rng(13)
    for n, new_type in enumerate([b"const", b"const", b"const", b"relu", b"concat", b"conv"]):
        path = types[int(rng.integers(len(types)))]
        yield Mutation(f"op-type.{n}-{new_type.decode()}", _write(MODEL, _replace(
            model, path, lambda num, w, v, t=new_type: _varint(num << 3 | 2) + _varint(len(t)) + t)))


def _shape_damage(model: bytes) -> Iterator[Mutation]:
    """Tensor dimensions of 2^40 and more: in the described input and in the program's input type."""
    packed = lambda dims: lambda num, w, v: _varint(num << 3 | 2) + _varint(len(b"".join(map(_varint, dims)))) + \
        b"".join(map(_varint, dims))
    for path in _find(model, (2, 1, 3, 5, 1))[:1]:  # description, input, type, multiArrayType, shape
        dims = [1, 8, 8, 1]
        for n, bad in enumerate([1 << 40, 1 << 62, (1 << 64) - 2, 1 << 63, (1 << 31) + 1]):
            yield Mutation(f"shape-bomb.input-{n}", _write(MODEL, _replace(model, path, packed([1, bad, *dims[2:]]))))
        yield Mutation("shape-bomb.input-all", _write(MODEL, _replace(model, path, packed([1 << 16] * 4))))
    # the same input's shapeRange (a flexible batch): sizeRanges, one per dimension, lower and upper bound
    for n, path in enumerate(_find(model, (2, 1, 3, 5, 31, 1, 1))[1:2] + _find(model, (2, 1, 3, 5, 31, 1, 2))[1:2]):
        for m, bad in enumerate([1 << 40, (1 << 64) - 5]):
            yield Mutation(f"shape-bomb.range-{n}-{m}", _write(MODEL, _replace(
                model, path, lambda num, w, v, bad=bad: _varint(num << 3) + _varint(bad))))
    # program, function, Function, input, ValueType, TensorType, dimension, constant, size
    for n, path in enumerate(_find(model, (502, 2, 2, 1, 2, 1, 3, 1, 1))[1:3]):
        for m, bad in enumerate([1 << 40, (1 << 64) - 1]):
            yield Mutation(f"shape-bomb.program-{n}-{m}", _write(MODEL, _replace(
                model, path, lambda num, w, v, bad=bad: _varint(num << 3) + _varint(bad))))


def _blob_damage(model: bytes, weights: bytes) -> Iterator[Mutation]:
    references = _blob_references(model)
    names = [b"@model_path/../../../../../../../../etc/passwd", b"/etc/passwd", b"@model_path/weights",
             b"@model_path/weights/missing.bin", b"@model_path/../Manifest.json", b"", b"@model_path/\x00.bin",
             b"@model_path/" + b"x" * 5000, b"@model_path/weights/../../../weights/weight.bin",
             b"@model_path/../../../outside/weight.bin"]
    offsets = [len(weights) - 1, len(weights), 1 << 32, 1 << 63, (1 << 64) - 1, 65, 0]
    for n, name in enumerate(names):
        path = references[n % len(references)]
        yield Mutation(f"blob-reference.name-{n}", _write(MODEL, _replace(
            model, path, lambda num, w, v, name=name: _varint(num << 3 | 2) + _varint(len(_blob(name, 64))) + _blob(name, 64))))
    for n, offset in enumerate(offsets):
        path = references[(n * 3) % len(references)]
        blob = _blob(b"@model_path/weights/weight.bin", offset)
        yield Mutation(f"blob-reference.offset-{n}", _write(MODEL, _replace(
            model, path, lambda num, w, v, blob=blob: _varint(num << 3 | 2) + _varint(len(blob)) + blob)))
    headers = [o for o in range(64, len(weights) - 63, 64) if weights[o:o + 4] == b"\xef\xbe\xad\xde"]
    for n, (field, value) in enumerate([(8, 1 << 63), (8, (1 << 64) - 1), (8, len(weights)), (16, (1 << 64) - 8),
                                        (16, len(weights)), (16, len(weights) - 1), (0, 0x0BADBEEF), (8, 0)]):
        buf = bytearray(weights)
        offset = headers[n % len(headers)]
        size = 4 if field == 0 else 8
        buf[offset + field:offset + field + size] = value.to_bytes(size, "little")
        yield Mutation(f"weights-header.{n}", _write(WEIGHTS, bytes(buf)))


def _manifest_damage(manifest: dict[str, Any]) -> Iterator[Mutation]:
    root = manifest["rootModelIdentifier"]

    def edited(path: Any = None, drop: str | None = None, entry: str | None = None) -> bytes:
        doc = json.loads(json.dumps(manifest))
        if drop:
            doc.pop(drop)
        if entry:
            doc["rootModelIdentifier"] = entry
        if path is not None:
            doc["itemInfoEntries"][root]["path"] = path
        return json.dumps(doc).encode()

    contents = [b"", b"{", b"null", b"[1, 2]", b"\xff\xfe\x00", b'{"itemInfoEntries": 7, "rootModelIdentifier": "x"}',
                edited(drop="itemInfoEntries"), edited(drop="rootModelIdentifier"), edited(entry="nope"),
                edited(path="../../../../../../etc/passwd"), edited(path="/etc/passwd"), edited(path=7),
                edited(path=["a"]), edited(path="com.apple.CoreML/missing.mlmodel"), edited(path="com.apple.CoreML"),
                edited(path="a\x00b"), edited(path="x" * 5000), edited(path="../../outside/model.mlmodel"),
                edited(path="com.apple.CoreML/model.mlmodel/../../../Manifest.json"), edited(path=""),
                json.dumps({"rootModelIdentifier": root, "itemInfoEntries": {root: {"name": "model.mlmodel"}}}).encode()]
    for n, content in enumerate(contents):
        yield Mutation(f"manifest.{n}", _write(Path("Manifest.json"), content))


def _remove(relative: str) -> Callable[[Path, Path], None]:
    def edit(package: Path, outside: Path) -> None:
        target = package / relative
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    return edit


def _replace_with(relative: str, make: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def edit(package: Path, outside: Path) -> None:
        _remove(relative)(package, outside)
        make(package / relative, outside)
    return edit


def _link(target: Callable[[Path, Path], Path | str]) -> Callable[[Path, Path], None]:
    return lambda path, outside: path.symlink_to(target(path, outside))


def _layout_damage() -> Iterator[Mutation]:
    model, weights, folder = str(MODEL), str(WEIGHTS), "Data/com.apple.CoreML"
    for name in (model, weights, "Data/com.apple.CoreML/weights", "Data"):
        yield Mutation(f"missing.{name.replace('/', '_')}", _remove(name))
    yield Mutation("missing-manifest.Manifest.json", _remove("Manifest.json"))  # the default path is read
    for name in (model, weights, "Manifest.json"):
        yield Mutation(f"empty.{Path(name).name}", _replace_with(name, lambda p, o: p.write_bytes(b"")))
        yield Mutation(f"dir-for-file.{Path(name).name}", _replace_with(name, lambda p, o: p.mkdir()))
    outside = {  # the escaping links point at real copies: followed, they would load
        "model-passwd": (model, lambda p, o: "/etc/passwd"),
        "model-copy": (model, lambda p, o: o / "model.mlmodel"),
        "model-relative": (model, lambda p, o: os.path.relpath(o / "model.mlmodel", p.parent)),
        "weights-copy": (weights, lambda p, o: o / "weight.bin"),
        "weights-dir": ("Data/com.apple.CoreML/weights", lambda p, o: o / "weights"),
        "folder": (folder, lambda p, o: o / "com.apple.CoreML"),
        "data": ("Data", lambda p, o: o / "Data"),
        "manifest-copy": ("Manifest.json", lambda p, o: o / "Manifest.json"),
        "manifest-passwd": ("Manifest.json", lambda p, o: "/etc/passwd"),
        "model-dev": (model, lambda p, o: "/dev/zero"),
    }
    for name, (relative, target) in outside.items():
        yield Mutation(f"symlink-escape.{name}", _replace_with(relative, _link(target)))
    yield Mutation("symlink-escape.loop", _replace_with(model, _link(lambda p, o: p.name)))
    yield Mutation("symlink-escape.dangling", _replace_with(weights, _link(lambda p, o: "nowhere.bin")))
    yield Mutation("symlink-inside.model", lambda p, o: (  # a link that stays inside is followed
        (p / folder / "model-copy.mlmodel").write_bytes((p / model).read_bytes()),
        _replace_with(model, _link(lambda q, _: "model-copy.mlmodel"))(p, o)))


def mutations(package: Path) -> list[Mutation]:
    """Every mutation of one valid package, in a fixed order."""
    model, weights = (package / MODEL).read_bytes(), (package / WEIGHTS).read_bytes()
    manifest = json.loads((package / "Manifest.json").read_text())
    return [*_file_damage(model, weights), *_protobuf_damage(model), *_blob_damage(model, weights),
            *_op_damage(model), *_shape_damage(model), *_manifest_damage(manifest), *_layout_damage()]


def _outside(package: Path, folder: Path) -> Path:
    """Copies of the package's files outside it: what an escaping link or path would reach."""
    outside = folder / f"outside-{package.stem}"
    if not outside.exists():
        shutil.copytree(package / "Data", outside / "Data")
        shutil.copytree(package / "Data/com.apple.CoreML", outside / "com.apple.CoreML")
        shutil.copytree(package / "Data/com.apple.CoreML/weights", outside / "weights")
        for relative in (MODEL, WEIGHTS, Path("Manifest.json")):
            shutil.copy(package / relative, outside / relative.name)
    return outside


def write_corpus(packages: list[Path], folder: Path, sample: int | None = None, seed: int = 0,
                 include: tuple[str, ...] = ()) -> dict[Path, str]:
    """The mutated packages written under ``folder``: {package: mutation class}. ``sample`` keeps that
    many: the mutations named in ``include``, then a seeded draw round-robin over the classes."""
    folder = folder.resolve()  # links into the outside folder must not depend on the working folder
    chosen: list[tuple[Path, Mutation]] = [(p, m) for p in packages for m in mutations(p)]
    if sample is not None:
        rng = np.random.default_rng(seed)
        by_kind: dict[str, list[tuple[Path, Mutation]]] = {}
        for item in chosen:
            if item[1].name not in include:
                by_kind.setdefault(item[1].kind, []).append(item)
        pools = [[pool[i] for i in rng.permutation(len(pool))] for _, pool in sorted(by_kind.items())]
        drawn = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]
        chosen = ([item for item in chosen if item[1].name in include] + drawn)[:sample]
    corpus = {}
    for package, mutation in chosen:
        target = folder / f"{package.name.removesuffix('.mlpackage')}~{mutation.name}.mlpackage"
        shutil.copytree(package, target, symlinks=True)
        mutation.edit(target, _outside(package, folder))
        corpus[target] = mutation.kind
    return corpus


# -- the runner -----------------------------------------------------------------------------------
class _OpenWatch:
    """An audit hook that records files opened outside the package while it is armed."""

    def __init__(self) -> None:
        import edgeship

        self.package: str | None = None
        self.seen: list[str] = []
        source = Path(edgeship.__file__).resolve().parent.parent
        self.ignored = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, source)})

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or self.package is None or isinstance(args[0], int):
            return
        try:
            path = os.path.realpath(os.fsdecode(args[0]))
            if not (path + os.sep).startswith(self.package) and not path.startswith(self.ignored):
                self.seen.append(path)
        except Exception:  # never let the watch itself break an open
            self.seen.append(repr(args[0]))


def _child(listing: str) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    import edgeship.runtimes as runtimes
    from edgeship.errors import EdgeshipError
    from edgeship.runtimes import coreml, mil  # noqa: F401  imported before the watch is armed

    watch = _OpenWatch()
    sys.addaudithook(watch)
    for package in json.loads(Path(listing).read_text()):
        watch.package, watch.seen = os.path.realpath(package) + os.sep, []
        try:
            session = runtimes.load(package)
            session.run(session.sample_feeds(1))
            outcome, detail = "ok", ""
        except EdgeshipError as exc:
            outcome, detail = type(exc).__name__, str(exc)
        except BaseException as exc:  # noqa: BLE001 - what the corpus is looking for
            outcome, detail = f"other:{type(exc).__name__}", str(exc)
        watch.package = None
        print(json.dumps({"package": package, "outcome": outcome, "detail": detail[:300], "outside": watch.seen}),
              flush=True)


def _drive(packages: list[str], timeout: float) -> list[dict[str, Any]]:
    """Run ``packages`` in one child after another: a package that kills its child is a crash, one
    that gets no answer within ``timeout`` a hang; the child is replaced and the rest go on."""
    results: list[dict[str, Any]] = []
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory() as tmp:
        while len(results) < len(packages):
            rest = packages[len(results):]
            listing = Path(tmp) / "listing.json"
            listing.write_text(json.dumps(rest))
            child = subprocess.Popen([sys.executable, __file__, "--child", str(listing)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=lambda: ([lines.put(l) for l in child.stdout], lines.put(None)), daemon=True).start()
            for package in rest:
                try:
                    line = lines.get(timeout=timeout + (10 if package == rest[0] else 0))  # + the child's start
                except queue.Empty:
                    child.kill()
                    child.wait()
                    results.append({"package": package, "outcome": "hang", "detail": f"no answer in {timeout:g} s",
                                    "outside": []})
                    break
                if line is None:
                    code = child.wait()
                    results.append({"package": package, "outcome": "crash", "detail": f"child exited {code}",
                                    "outside": []})
                    break
                results.append(json.loads(line))
            child.wait()
    return results


def run_packages(packages: list[Path], workers: int = 2, timeout: float = 30.0) -> dict[Path, dict[str, Any]]:
    """{package: {"outcome", "detail", "outside"}} for every package, run by ``workers`` children at once."""
    names = [str(p) for p in packages]
    shares = [names[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        done = [r for share in pool.map(lambda s: _drive(s, timeout), shares) for r in share]
    return {Path(r["package"]): r for r in done}


def acceptable(result: dict[str, Any]) -> bool:
    from edgeship import errors

    return not result["outside"] and (result["outcome"] == "ok" or result["outcome"] in errors.__all__)


def table(corpus: dict[Path, str], results: dict[Path, dict[str, Any]]) -> str:
    """Mutation class x outcome counts, then the unacceptable outcomes."""
    counts = Counter((corpus[p], r["outcome"]) for p, r in results.items())
    outcomes = sorted({o for _, o in counts}, key=lambda o: (o != "ok", o))
    kinds = sorted({k for k, _ in counts})
    width, cell = max(map(len, kinds)) + 2, max(map(len, outcomes + ["outside reads"])) + 2
    lines = ["class".ljust(width) + "".join(o.rjust(cell) for o in [*outcomes, "outside reads"])]
    for kind in kinds:
        outside = sum(bool(r["outside"]) for p, r in results.items() if corpus[p] == kind)
        cells = [counts[kind, o] for o in outcomes] + [outside]
        lines.append(kind.ljust(width) + "".join(str(n or "").rjust(cell) for n in cells))
    totals = [sum(counts[k, o] for k in kinds) for o in outcomes] + [sum(bool(r["outside"]) for r in results.values())]
    lines.append("total".ljust(width) + "".join(str(n).rjust(cell) for n in totals))
    for path, result in sorted(results.items()):
        if not acceptable(result):
            lines.append(f"UNACCEPTABLE {path.name}: {result['outcome']} {result['detail'][:200]!r} "
                         f"outside={result['outside'][:3]}")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        _child(sys.argv[2])
        sys.exit(0)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus([Path(p) for p in sys.argv[1:]], Path(tmp))
        results = run_packages(list(corpus))
        print(f"{len(results)} hostile packages")
        print(table(corpus, results))
