"""The hostile-input sweep: files and command-line values a careless or hostile user hands edgeship.

``cases(work, folder)`` lays out the hostile files under ``work`` and returns the command lines, each
with what must come back: exit 1 and one ``error:`` line holding the given words (or exit 0 where
the input is fine after all). ``folder`` is a converted output folder (tflite:fp32 and tflite:int8
of a digits model, validated once) that the cases copy before they damage it.
tests/test_hostile_sweep.py runs them in the suite; benchmarks/hostile_sweep.py runs them as
separate processes and prints the counts.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MARKUP = "m[/]x[red]y"


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    words: str  # in the one error line (or in the output, for exit 0)
    code: int = 1


def _copy(folder: Path, work: Path, name: str) -> Path:
    return Path(shutil.copytree(folder, work / name))


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _digits_like(rng: np.random.Generator, n: int, label_dtype: type = np.int64) -> dict[str, np.ndarray]:
    x = rng.integers(0, 17, (n, 8, 8, 1)).astype(np.uint8)
    return {"x": x, "y": rng.integers(0, 10, n).astype(label_dtype)}


def cases(work: Path, folder: Path) -> list[Case]:
    rng = np.random.default_rng(29)
    work.mkdir(parents=True, exist_ok=True)
    found: list[Case] = []

    # -- data files
    tr, te = _digits_like(rng, 300, np.float32), _digits_like(rng, 80, np.float32)
    floats = _npz(work / "float-labels.npz", x_train=tr["x"], y_train=tr["y"], x_test=te["x"], y_test=te["y"])
    found.append(Case("float labels that are class ids", ("validate", str(folder), "--data", str(floats)),
                      "look like class ids stored as floats"))
    latin = work / "latin.csv"
    latin.write_bytes(b"a,label\n" + "1,caf\xe9\n".encode("latin-1") * 20)
    binary = work / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    huge = work / "huge.csv"
    huge.write_text("a,label\n1," + "x" * (200 * 1024) + "\n" + "2,y\n" * 20)
    for path, words in ((latin, "is not UTF-8 text"), (binary, "is not UTF-8 text"), (huge, "field larger than")):
        found.append(Case(f"csv {path.name}", ("validate", str(folder), "--data", str(path)), words))
    other = _npz(work / "other-shape.npz", x_train=rng.random((50, 4, 4, 3)).astype(np.float32),
                 y_train=rng.integers(0, 3, 50), x_test=rng.random((20, 4, 4, 3)).astype(np.float32),
                 y_test=rng.integers(0, 3, 20))
    found.append(Case("data of another shape", ("validate", str(folder), "--data", str(other)),
                      "has samples of shape (4, 4, 3)"))
    pics = work / "pics"
    for cls in ("a", "b"):
        (pics / cls).mkdir(parents=True)
    (pics / "a" / "passwd.png").symlink_to("/etc/passwd")
    (pics / "b" / "zero.png").symlink_to("/dev/zero")
    found.append(Case("image folder links out", ("validate", str(folder), "--data", str(pics)), "leads outside"))

    # -- --preprocess strings
    for spec, words in (("scale=0", "scale=0 is outside"), ("scale=1e39", "is outside"), ("mean=1e308", "is outside"),
                        ("std=1e-30", "is outside"), ("std=1e-46", "is outside"), (",,,", "has an empty item"),
                        ("   ", "names no item"), ("scale=\uff11", "written in ASCII"), ("SCALE=1", "is not one of"),
                        (f"scale={MARKUP}", MARKUP)):
        found.append(Case(f"preprocess {spec!r}", ("validate", str(folder), "--data", "digits", "--preprocess", spec),
                          words))

    # -- tampered records
    deep = _copy(folder, work, "deep-manifest")
    (deep / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    found.append(Case("deeply nested manifest.json", ("validate", str(deep)), "nested deeper than 64 levels"))
    sized = _copy(folder, work, "wrong-size")
    doc = json.loads((sized / "manifest.json").read_text())
    doc["artifacts"][0]["size_bytes"] += 1
    (sized / "manifest.json").write_text(json.dumps(doc))
    found.append(Case("manifest with a wrong size", ("validate", str(sized)), "but the manifest records"))
    nan = _copy(folder, work, "nan-reference")
    for stored in (nan / "reference" / "outputs").glob("*.npz"):
        arrays = dict(np.load(stored, allow_pickle=False))
        for key in (k for k in arrays if k.startswith("test")):
            arrays[key] = arrays[key].copy()
            arrays[key][3] = np.nan
        np.savez(stored, **arrays)
    found.append(Case("NaN in stored reference outputs (ignored, computed again)", ("validate", str(nan)),
                      "tflite:int8", code=0))
    marked = _copy(folder, work, "markup-report")
    doc = json.loads((marked / "report.json").read_text())
    doc["model"], doc["notes"] = f"net{MARKUP}", [f"class [/]{MARKUP}"]
    (marked / "report.json").write_text(json.dumps(doc))
    found.append(Case("markup in report.json", ("report", str(marked)), f"net{MARKUP}", code=0))

    # -- bundles
    def bundle_copy(name: str) -> tuple[Path, dict]:
        copy = _copy(folder, work, name) / "bundle"
        return copy, json.loads((copy / "bundle.json").read_text())

    for name, target in (("passwd", "/etc/passwd"), ("dotdot", "../../manifest.json")):
        copy, doc = bundle_copy(f"bundle-{name}")
        doc["artifacts"][0]["expected"] = target
        (copy / "bundle.json").write_text(json.dumps(doc))
        found.append(Case(f"bundle expected {target}", ("device", "run", "--bundle", str(copy), "--target", "local"),
                          "not a plain path inside the bundle"))
    copy, doc = bundle_copy("bundle-stray")
    (copy / "extra.bin").write_bytes(b"x")
    found.append(Case("bundle with an unlisted file", ("device", "run", "--bundle", str(copy), "--target", "local"),
                      "which bundle.json does not list"))

    # -- target strings
    for target, words in (("ssh://-oProxyCommand=touch${IFS}x@127.0.0.1", "the user in target"),
                          ("ssh://-E/tmp/x@host", "the host in target"), ("ssh://pi@host/a;rm", "the path in target"),
                          ("ssh://pi@host:0", "a port is a number"), (f"local{MARKUP}", MARKUP),
                          ("ftp://host/x", "unknown target"), ("", "unknown target"), ("ssh://pi@[::1", "not a URL")):
        found.append(Case(f"target {target!r}", ("device", "run", "--bundle", str(folder / "bundle"), "--target", target),
                          words))
    return found


def check(case: Case, code: int, out: str, err: str) -> str | None:
    """What is wrong with one case's answer, or None."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    if "Traceback" in out + err or "MarkupError" in out + err:
        return "traceback"
    if "unexpected" in err:
        return "unexpected error"
    if code != case.code:
        return f"exit {code}, expected {case.code}: {err.strip()[-300:]}"
    if case.code == 1 and (len(lines) != 1 or case.words not in lines[0]):
        return f"not one error line with {case.words!r}: {err.strip()[-300:]}"
    if case.code == 0 and case.words not in (out + err).replace("\n", ""):
        return f"{case.words!r} not in the output"
    return None


def env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}
