"""Validation at dataset scale: inputs read from disk in pieces, the float outputs stored by convert
and read by validate (no TensorFlow), and never used for other data or another model file.

The timing and memory targets live in benchmarks/validate_scale.py; here, small data and a tiny
CNN with random weights (what is checked does not depend on what the weights learned)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeship.converters import reference
from edgeship.data import load_dataset
from edgeship.errors import DatasetError
from edgeship.records import Manifest
from edgeship.validation import validate

pytest.importorskip("onnxruntime")


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (240, 8, 8, 1), dtype=np.uint8), "y_train": rng.integers(0, 10, 240),
            "x_test": rng.integers(0, 256, (150, 8, 8, 1), dtype=np.uint8), "y_test": rng.integers(0, 10, 150)}


def _model(seed: int):
    from edgeship._deps import tensorflow
    from edgeship.trainers.zoo import build_model

    tensorflow().keras.utils.set_random_seed(seed)
    return build_model("tiny_cnn", (8, 8, 1), 10)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """tiny_cnn (random weights) converted to tflite:int8 and onnx:int8 with an uncompressed .npz;
    read-only: copy it before writing."""
    from edgeship.converters import convert

    root = tmp_path_factory.mktemp("scale")
    np.savez(root / "pixels.npz", **_arrays())
    convert(_model(0), "tflite:int8,onnx:int8", data=str(root / "pixels.npz"), out=root / "out", name="tiny_cnn")
    return root


def _copy(converted: Path, tmp_path: Path) -> Path:
    shutil.copytree(converted, tmp_path / "c")
    return tmp_path / "c" / "out"


def _stored(folder: Path) -> list[Path]:
    return sorted((folder / reference.FOLDER / reference.OUTPUTS).glob("*.npz"))


def test_convert_stores_the_float_outputs_and_validate_reads_them_without_tensorflow(converted, tmp_path):
    folder = _copy(converted, tmp_path)
    (path,) = _stored(folder)
    with np.load(path) as archive:
        record = json.loads(str(archive["__record__"]))
        assert archive["test_0"].shape == (150, 10) and len(archive["val_0"]) == record["splits"]["val"]
    assert record["reference_sha256"] == Manifest.load(folder).reference.sha256
    code = ("import json, sys, edgeship\n"
            f"report = edgeship.validate({str(folder)!r}, write_bundle=True)\n"
            "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'keras': 'tf_keras' in sys.modules,\n"
            "                  'acc': {e.name: e.accuracy for e in report.artifacts}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["tf"] is False and found["keras"] is False
    assert set(found["acc"]) == {"tflite:int8", "onnx:int8"}


def test_stored_outputs_equal_the_reference_run_whole(converted, tmp_path, monkeypatch):
    folder = _copy(converted, tmp_path)
    dataset = load_dataset(tmp_path / "c" / "pixels.npz", lazy=True)
    stored = reference.stored_outputs(folder, Manifest.load(folder), dataset, "test")
    whole = reference.predictor(folder, Manifest.load(folder))(np.asarray(dataset.x_test))
    monkeypatch.setattr(reference, "CHUNK", 7)  # pieces that do not divide the split
    pieces = reference.compute_outputs(folder, Manifest.load(folder), dataset, "test")
    np.testing.assert_allclose(stored[0], whole[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pieces[0], whole[0], rtol=1e-5, atol=1e-6)


def test_lazy_inputs_give_the_outputs_and_figures_of_arrays_in_memory(converted, tmp_path):
    from edgeship.runtimes import load

    folder = _copy(converted, tmp_path)
    data = tmp_path / "c" / "pixels.npz"
    lazy, eager = load_dataset(data, lazy=True), load_dataset(data)
    assert type(lazy.x_test).__name__ == "LazyArray" and lazy.fingerprint == eager.fingerprint
    for artifact in Manifest.load(folder).artifacts:
        with load(folder / artifact.path) as session:
            batched = session.predict(lazy.x_test, batch_size=64)
            one_by_one = session.predict(np.asarray(eager.x_test), batch_size=1)
        np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)
    from_disk = validate(folder, data=lazy, write_bundle=False)
    in_memory = validate(folder, data=eager, write_bundle=False)
    for a, b in zip(from_disk.artifacts, in_memory.artifacts):
        assert a.validation.to_dict() == b.validation.to_dict()


def test_other_data_runs_the_reference_and_stores_its_outputs_beside(converted, tmp_path, caplog):
    folder = _copy(converted, tmp_path)
    other = tmp_path / "other.npz"
    np.savez(other, **_arrays(seed=1))
    said: list[str] = []
    with caplog.at_level(logging.INFO, logger="edgeship.converters.reference"):
        validate(folder, data=str(other), write_bundle=False, progress=lambda stage, msg, *a: said.append(msg))
    assert any("no stored float outputs" in r.message for r in caplog.records)
    assert any("running it (none stored" in m for m in said), said  # the progress line says which it did
    assert len(_stored(folder)) == 2  # one per data fingerprint
    said.clear()
    validate(folder, data=str(other), write_bundle=False, progress=lambda stage, msg, *a: said.append(msg))
    assert any("outputs on 150 test samples: read from reference/outputs" in m for m in said), said
    dataset = load_dataset(other, lazy=True)
    stored = reference.stored_outputs(folder, Manifest.load(folder), dataset, "test")
    np.testing.assert_allclose(stored[0], reference.predictor(folder, Manifest.load(folder))(np.asarray(dataset.x_test))[0],
                               rtol=1e-5, atol=1e-6)


def test_outputs_of_another_model_are_not_used_and_are_removed(converted, tmp_path):
    from edgeship.converters import convert

    folder = _copy(converted, tmp_path)
    (before,) = _stored(folder)
    dataset = load_dataset(tmp_path / "c" / "pixels.npz", lazy=True)
    old = reference.stored_outputs(folder, Manifest.load(folder), dataset, "test")
    convert(_model(1), "tflite:fp32", data=str(tmp_path / "c" / "pixels.npz"), out=folder, name="tiny_cnn")
    (after,) = _stored(folder)
    assert after.name != before.name and after.name.startswith(dataset.fingerprint[:16])
    new = reference.stored_outputs(folder, Manifest.load(folder), dataset, "test")
    assert not np.allclose(old[0], new[0])


def test_a_record_that_does_not_match_is_ignored_and_a_damaged_file_recomputed(converted, tmp_path, caplog):
    folder = _copy(converted, tmp_path)
    (path,) = _stored(folder)
    manifest, dataset = Manifest.load(folder), load_dataset(tmp_path / "c" / "pixels.npz", lazy=True)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    record = json.loads(str(arrays.pop("__record__")))
    np.savez(path, __record__=np.array(json.dumps({**record, "dataset_fingerprint": "0" * 64})), **arrays)
    assert reference.stored_outputs(folder, manifest, dataset, "test") is None
    path.write_bytes(b"not an npz")
    with caplog.at_level(logging.WARNING):
        outputs = reference.outputs(folder, manifest, dataset)
    assert "unreadable" in caplog.text and outputs[0].shape == (150, 10)
    assert reference.stored_outputs(folder, manifest, dataset, "test") is not None  # written again


def test_a_folder_of_npy_files_loads_like_the_npz(tmp_path):
    arrays = _arrays()
    (tmp_path / "npy").mkdir()
    for name, array in arrays.items():
        np.save(tmp_path / "npy" / f"{name}.npy", array)
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    np.savez(tmp_path / "plain.npz", **arrays)
    eager = load_dataset(tmp_path / "plain.npz", preprocess="symmetric")
    for source in ("npy", "packed.npz", "plain.npz"):
        for lazy in (True, False):
            dataset = load_dataset(tmp_path / source, preprocess="symmetric", lazy=lazy)
            assert dataset.fingerprint == eager.fingerprint, (source, lazy)
            np.testing.assert_array_equal(dataset.x_test[17:99], eager.x_test[17:99])
            np.testing.assert_array_equal(np.asarray(dataset.x_train), eager.x_train)


def test_a_bad_npy_folder_is_refused_in_one_clear_line(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "x_test.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(DatasetError, match=r"without x_train\.npy.*Received: \['x_test\.npy'\]"):
        load_dataset(folder)
    np.save(folder / "x_train.npy", np.zeros((40, 2), np.float32))
    (folder / "x_test.npy").write_bytes((folder / "x_test.npy").read_bytes()[:-8])  # truncated
    with pytest.raises(DatasetError, match="truncated"):
        np.asarray(load_dataset(folder, lazy=True).x_test)
    (folder / "x_test.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match=r"x_test\.npy is not a readable \.npy array"):
        load_dataset(folder, lazy=True)
    np.save(folder / "x_test.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="x_test"):
        load_dataset(folder, lazy=True)
