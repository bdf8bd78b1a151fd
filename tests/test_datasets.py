"""edgeship.data: every loader, the split, the fingerprint and calibration. Offline and fast."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeship.data import Dataset, list_datasets, load_dataset
from edgeship.errors import BadInputError, DatasetError, MissingDependencyError

# name -> (kind, per-sample shape, classes, total samples)
BUILTINS = {
    "digits": ("image", (8, 8, 1), 10, 1797),
    "iris": ("tabular", (4,), 3, 150),
    "wine": ("tabular", (13,), 3, 178),
    "breast_cancer": ("tabular", (30,), 2, 569),
    "shapes32": ("image", (32, 32, 3), 6, 3000),
}


def _sizes(data: Dataset) -> tuple[int, int, int]:
    return len(data.y_train), len(data.y_val), len(data.y_test)


def _rows(x: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(x)]


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


# ------------------------------------------------------------------------------------------ built-ins


def test_list_datasets_names_every_builtin() -> None:
    assert set(list_datasets()) == set(BUILTINS) | {"mnist", "fashion_mnist", "cifar10"}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_shapes_dtypes_and_ranges(name: str) -> None:
    kind, shape, classes, total = BUILTINS[name]
    data = load_dataset(name)
    assert (data.name, data.kind, data.input_shape, data.num_classes) == (name, kind, shape, classes)
    assert sum(_sizes(data)) == total
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape[1:] == shape
        assert set(np.unique(y).tolist()) == set(range(classes)), f"{split} lacks a class"
    if kind == "image":
        assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
        assert data.x_train.max() > 0.9  # scaled to [0, 1], not left at [0, 1/255]
    else:
        np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_split_is_deterministic_per_seed(name: str) -> None:
    a, b, c = load_dataset(name, seed=3), load_dataset(name, seed=3), load_dataset(name, seed=4)
    assert a.fingerprint == b.fingerprint and a.seed == 3
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert c.fingerprint != a.fingerprint
    assert _sizes(c) == _sizes(a)


def test_split_is_stratified_and_val_comes_from_the_rest(digits: Dataset) -> None:
    counts = np.bincount(np.concatenate([digits.y_train, digits.y_val, digits.y_test]))
    np.testing.assert_array_less(np.abs(np.bincount(digits.y_test) - 0.2 * counts), 1.0)
    rest = np.bincount(digits.y_train) + np.bincount(digits.y_val)
    np.testing.assert_array_less(np.abs(np.bincount(digits.y_val) - 0.15 * rest), 1.0)


def test_splits_are_disjoint() -> None:
    data = load_dataset("shapes32", samples=600)  # noise makes every image unique
    rows = [_rows(x) for x in (data.x_train, data.x_val, data.x_test)]
    assert len(set().union(*rows)) == sum(len(r) for r in rows) == 600


def test_fractions_change_the_split_sizes() -> None:
    data = load_dataset("iris", val_fraction=0.5, test_fraction=0.4)
    assert _sizes(data) == (45, 45, 60)


def test_digits_are_sixteenths(digits: Dataset) -> None:
    assert digits.preprocessing == {"scale": 1 / 16}
    np.testing.assert_array_equal(digits.x_train * 16, np.round(digits.x_train * 16))


def test_tabular_standardized_with_train_statistics_only() -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    data = load_dataset("wine", seed=1)
    stats = data.preprocessing["standardize"]
    mean, std = np.array(stats["mean"]), np.array(stats["std"])
    original = {tuple(np.round(r, 3)) for r in sklearn_datasets.load_wine().data}
    train = data.x_train.astype(np.float64) * std + mean
    test = data.x_test.astype(np.float64) * std + mean
    assert all(tuple(np.round(r, 3)) in original for r in np.concatenate([train, test]))
    np.testing.assert_allclose(train.mean(axis=0), mean, rtol=1e-5)
    assert not np.allclose(test.mean(axis=0), mean, rtol=1e-3)  # test did not feed the statistics


def test_constant_feature_keeps_std_one() -> None:
    from edgeship.data._split import _standardize

    train = np.stack([np.arange(20.0), np.full(20, 5.0)], 1)
    (scaled, test), stats = _standardize(train, train[:4])
    assert stats["std"][1] == 1.0
    assert np.all(scaled[:, 1] == 0.0) and np.isfinite(test).all()


def test_importing_datasets_imports_nothing_heavy() -> None:
    code = "import sys, edgeship.data; print([m for m in ('tensorflow', 'sklearn', 'PIL') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_sklearn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingDependencyError, match="scikit-learn"):
        load_dataset("iris")


# ------------------------------------------------------------------------------------------- shapes32


def test_shapes32_is_balanced_and_fixed() -> None:
    data = load_dataset("shapes32")
    assert data.num_classes >= 6 and len(set(data.classes)) == data.num_classes
    counts = np.bincount(np.concatenate([data.y_train, data.y_val, data.y_test]))
    assert counts.max() - counts.min() <= 1
    # the images are fixed; only the split follows the seed
    other = load_dataset("shapes32", seed=9)
    every = lambda d: sorted(_rows(np.concatenate([d.x_train, d.x_val, d.x_test])))  # noqa: E731
    assert every(other) == every(data) and other.fingerprint != data.fingerprint
    assert _flat(data.x_train).std(axis=0).mean() > 0.2  # position, size and colours vary


def test_shapes32_samples_sets_the_count() -> None:
    assert sum(_sizes(load_dataset("shapes32", samples=240))) == 240


def test_shapes32_defeats_a_linear_model(digits: Dataset) -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")

    def score(data: Dataset) -> float:
        model = linear_model.RidgeClassifier(alpha=1.0).fit(_flat(data.x_train), data.y_train)
        return model.score(_flat(data.x_test), data.y_test)

    assert score(digits) > 0.85  # the same probe does solve an easy image set
    assert score(load_dataset("shapes32", samples=1000)) < 0.45


# ---------------------------------------------------------------------------------------------- .npz


def _labelled_images(n: int, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel is 50 x their label's index, so a wrong mapping shows."""
    index = np.arange(n) % len(labels)
    x = np.repeat((index * 50).astype(np.uint8)[:, None, None], 6, axis=1).repeat(5, axis=2)
    return x, np.array(labels)[index]


def test_npz_round_trip(tmp_path: Path) -> None:
    x_train, y_train = _labelled_images(60, ["eel", "cat", "dog"])
    x_test, y_test = _labelled_images(15, ["eel", "cat", "dog"])
    np.savez(tmp_path / "pets.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_dataset(str(tmp_path / "pets.npz"))
    assert (data.name, data.kind, data.classes, data.input_shape) == ("pets", "image", ("cat", "dog", "eel"), (6, 5, 1))
    assert len(data.y_test) == 15 and len(data.y_train) + len(data.y_val) == 60  # the file's test split is kept
    names = np.array(data.classes)[data.y_train]
    expected = np.array([["eel", "cat", "dog"].index(n) * 50 / 255 for n in names], np.float32)
    np.testing.assert_allclose(data.x_train[:, 0, 0, 0], expected, rtol=1e-6)
    assert data.preprocessing["preprocess"] == "unit" and str(tmp_path) in data.source  # integer pixels: x/255


def test_npz_own_validation_split_is_kept_whole_and_in_order(tmp_path: Path) -> None:
    x_train, y_train = _labelled_images(60, ["eel", "cat", "dog"])
    x_val, y_val = _labelled_images(12, ["eel", "cat", "dog"])
    x_test, y_test = _labelled_images(15, ["eel", "cat", "dog"])
    np.savez(tmp_path / "pets.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
             y_test=y_test)
    data = load_dataset(str(tmp_path / "pets.npz"))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (60, 12, 15)  # train loses nothing to val
    assert list(np.array(data.classes)[data.y_val]) == list(y_val)  # labels encoded with train's, order kept
    np.testing.assert_allclose(data.x_val[..., 0], x_val / 255.0, rtol=1e-6)  # preprocessed like train
    subset = load_dataset(str(tmp_path / "pets.npz"), samples=29)
    assert (len(subset.y_train), len(subset.y_val), len(subset.y_test)) == (20, 4, 5)  # each split its share
    np.savez(tmp_path / "half.npz", x_train=x_train, y_train=y_train, x_val=x_val, x_test=x_test, y_test=y_test)
    with pytest.raises(DatasetError, match="one y_val per output"):
        load_dataset(tmp_path / "half.npz")
    np.savez(tmp_path / "shape.npz", x_train=x_train, y_train=y_train, x_val=x_val[:, :3], y_val=y_val, x_test=x_test,
             y_test=y_test)
    with pytest.raises(DatasetError, match="in val"):
        load_dataset(tmp_path / "shape.npz")


def test_npz_classes_key_names_integer_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x_train=rng.normal(size=(40, 3)), y_train=np.arange(40) % 2,
             x_test=rng.normal(size=(10, 3)), y_test=np.arange(10) % 2, classes=np.array(["no", "yes"]))
    data = load_dataset(tmp_path / "t.npz")
    assert data.kind == "tabular" and data.classes == ("no", "yes") and data.input_shape == (3,)
    assert "standardize" not in data.preprocessing and data.preprocessing["preprocess"] == "none"  # as stored


def _good_arrays() -> dict[str, np.ndarray]:
    x, y = _labelled_images(20, ["a", "b"])
    return {"x_train": x, "y_train": y, "x_test": x[:6], "y_test": y[:6]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("y_test"), "y_test"),
        (lambda a: a.update(x_train=a["x_train"] / 255.0 * np.where(np.arange(20) == 3, np.nan, 1)[:, None, None]),
         "NaN"),
        (lambda a: a.update(x_train=np.full((20, 4), np.inf)), "NaN or infinite"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "has 19"),
        (lambda a: a.pop("x_test"), "needs inputs as x_train and x_test"),
        (lambda a: a.update(x_test=np.zeros((0, 6, 5), np.uint8), y_test=np.array([], str)), "non-empty"),
        (lambda a: a.update(x_train=np.array([["1", "2"]] * 20)), "real numbers"),
        (lambda a: a.update(y_train=np.arange(20) % 2, y_test=np.arange(6) % 2, classes=np.array(["x"])),
         "not among"),
        (lambda a: a.update(y_test=np.arange(6) % 2), "must both be integers or both strings"),
    ],
    ids=["missing-key", "nan", "inf", "lengths", "missing-input", "empty", "strings", "label-range", "mixed-labels"],
)
def test_malformed_npz(tmp_path: Path, change, message: str) -> None:
    arrays = _good_arrays()
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(tmp_path / "bad.npz")
    assert "bad.npz" in str(err.value)


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DatasetError, match="not a readable .npz") as err:
        load_dataset(tmp_path / "x.npz")
    assert str(tmp_path / "x.npz") in str(err.value)


def test_npz_with_objects_is_refused(tmp_path: Path) -> None:
    arrays = _good_arrays()
    arrays["y_train"] = np.array(list(arrays["y_train"]), dtype=object)
    np.savez(tmp_path / "o.npz", **arrays)
    with pytest.raises(DatasetError, match="o.npz"):
        load_dataset(tmp_path / "o.npz")


# ----------------------------------------------------------------------------------------------- CSV


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_loads_and_sorts_numeric_labels_numerically(tmp_path: Path) -> None:
    rows = [f"{i},{i * 0.5},{[2, 10][i % 2]}" for i in range(40)]
    data = load_dataset(_write_csv(tmp_path / "m.csv", "f1,f2,label", rows))
    assert (data.name, data.kind, data.input_shape, data.classes) == ("m", "tabular", (2,), ("2", "10"))
    assert sum(_sizes(data)) == 40 and "standardize" not in data.preprocessing  # a user's file reaches the model as stored


def test_csv_label_column_option(tmp_path: Path) -> None:
    rows = [f"{['x', 'y'][i % 2]},{i}" for i in range(30)]
    path = _write_csv(tmp_path / "o.csv", "kind,value", rows)
    with pytest.raises(DatasetError, match="no column 'label'.*kind"):
        load_dataset(path)
    assert load_dataset(path, label_column="kind").classes == ("x", "y")


def test_csv_non_numeric_cell_names_line_and_column(tmp_path: Path) -> None:
    rows = [f"{i},{i},{i % 2}" for i in range(10)]
    rows[4] = "4,four,0"
    with pytest.raises(DatasetError, match="line 6, column 'b': 'four'"):
        load_dataset(_write_csv(tmp_path / "n.csv", "a,b,label", rows))


def test_csv_too_small_to_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="too small"):
        load_dataset(_write_csv(tmp_path / "s.csv", "a,label", ["1,x", "2,y"]))


def test_csv_that_is_not_utf8_text_or_has_a_huge_field_is_one_clear_error(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,label\n".encode() + "1,caf\xe9\n".encode("latin-1") * 10)
    with pytest.raises(DatasetError, match=r"latin.csv is not UTF-8 text \(byte 0xe9 at offset"):
        load_dataset(latin)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match="binary.csv is not UTF-8 text"):
        load_dataset(binary)
    huge = _write_csv(tmp_path / "huge.csv", "a,label", ["1," + "x" * (200 * 1024)] + ["2,y"] * 10)
    with pytest.raises(DatasetError, match="huge.csv is not a CSV file edgeship reads .*field larger than field limit"):
        load_dataset(huge)


# ------------------------------------------------------------------------------------- image folders


def _image_folder(root: Path, sizes: dict[str, tuple[int, int]], per_class: int = 4) -> Path:
    image = pytest.importorskip("PIL.Image")
    for index, (name, size) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True)
        mode = "L" if index == 0 else "RGB"  # grayscale files must come out RGB too
        colour = 60 * (index + 1) if mode == "L" else (60 * (index + 1), 0, 255)
        for i in range(per_class):
            image.new(mode, size, colour).save(root / name / f"{i}.png")
    return root


def test_image_folder_loads_rgb_scaled(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "pics", {"ant": (5, 7), "bee": (5, 7), "cow": (5, 7)}, per_class=6)
    data = load_dataset(folder)
    assert (data.name, data.kind, data.classes, data.input_shape) == ("pics", "image", ("ant", "bee", "cow"), (7, 5, 3))
    red = np.round(data.x_train[:, 0, 0, 0] * 255)
    np.testing.assert_array_equal(red, 60 * (data.y_train + 1))
    np.testing.assert_allclose(data.x_train[data.y_train == 2, 0, 0, 2], 1.0)
    assert sum(_sizes(data)) == 18


def test_image_folder_mismatched_sizes(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "p", {"a": (4, 4), "b": (6, 3)})
    with pytest.raises(DatasetError, match=r"\(4, 4\).*\(6, 3\) in .*0\.png"):
        load_dataset(folder)


def test_image_folder_needs_two_classes_with_images(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least 2"):
        load_dataset(_image_folder(tmp_path / "one", {"a": (4, 4)}))
    folder = _image_folder(tmp_path / "two", {"a": (4, 4), "b": (4, 4)})
    (folder / "c").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_dataset(folder)


def test_image_folder_unreadable_image(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "p", {"a": (4, 4), "b": (4, 4)})
    (folder / "b" / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="junk.png"):
        load_dataset(folder)


# ---------------------------------------------------------------------------------------- Keras cache


@pytest.fixture()
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras" / "datasets").mkdir(parents=True)
    return tmp_path / "keras" / "datasets"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("mnist", "mnist.npz"), ("fashion_mnist", "fashion-mnist/train-images-idx3-ubyte.gz"),
     ("cifar10", "cifar-10-batches-py/data_batch_1")],
)
def test_keras_cache_missing_file_names_the_path(keras_home: Path, name: str, expected: str) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(name)
    assert str(keras_home / expected) in str(err.value) and "download" in str(err.value).lower()


def test_keras_cache_defaults_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match=str(tmp_path / ".keras" / "datasets" / "mnist.npz")):
        load_dataset("mnist")


def _digit_images(n: int, side: int = 28) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(n) % 10).astype(np.uint8)
    return np.random.default_rng(n).integers(0, 256, (n, side, side), dtype=np.uint8), y


def test_mnist_from_cache(keras_home: Path) -> None:
    (x_train, y_train), (x_test, y_test) = _digit_images(100), _digit_images(30)
    np.savez(keras_home / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_dataset("mnist")
    assert data.input_shape == (28, 28, 1) and data.classes == tuple("0123456789")
    assert len(data.y_test) == 30 and len(data.y_train) + len(data.y_val) == 100
    np.testing.assert_allclose(np.sort(data.x_test.ravel()), np.sort(x_test.ravel() / 255), rtol=1e-6)
    assert str(keras_home) in data.source


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_cache(keras_home: Path) -> None:
    (keras_home / "fashion-mnist").mkdir()
    for part, n in (("train", 80), ("t10k", 20)):
        x, y = _digit_images(n)
        _write_idx(keras_home / "fashion-mnist" / f"{part}-images-idx3-ubyte.gz", x)
        _write_idx(keras_home / "fashion-mnist" / f"{part}-labels-idx1-ubyte.gz", y)
    data = load_dataset("fashion_mnist")
    assert data.input_shape == (28, 28, 1) and data.num_classes == 10 and data.classes[9] == "Ankle boot"
    assert len(data.y_test) == 20 and len(data.y_train) + len(data.y_val) == 80
    assert load_dataset("fashion-mnist").fingerprint == data.fingerprint  # the file-style name works too


def test_fashion_mnist_truncated_idx(keras_home: Path) -> None:
    (keras_home / "fashion-mnist").mkdir()
    for part in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            _write_idx(keras_home / "fashion-mnist" / f"{part}-{kind}-ubyte.gz", np.zeros((10, 4), np.uint8))
    path = keras_home / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("fashion_mnist")


def _write_cifar(folder: Path, batch: int = 20) -> None:
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        chw = np.zeros((batch, 3, 32, 32), np.uint8)
        chw[:, 0], chw[:, 2] = 255, 128  # red plane full, blue half: shows whether CHW became HWC
        content = {b"data": chw.reshape(batch, 3072), b"labels": [i % 10 for i in range(batch)]}
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))


def test_cifar10_from_cache(keras_home: Path) -> None:
    _write_cifar(keras_home / "cifar-10-batches-py")
    data = load_dataset("cifar10")
    assert data.input_shape == (32, 32, 3) and data.classes[0] == "airplane" and data.num_classes == 10
    assert len(data.y_test) == 20 and len(data.y_train) + len(data.y_val) == 100
    np.testing.assert_allclose(data.x_train[:, 5, 7], np.broadcast_to([1.0, 0.0, 128 / 255], (len(data.x_train), 3)))


class _Hostile:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_pickle_may_not_call_code(keras_home: Path) -> None:
    _write_cifar(keras_home / "cifar-10-batches-py")
    (keras_home / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _Hostile()}))
    with pytest.raises(DatasetError, match="refusing to load.*getcwd"):
        load_dataset("cifar10")


def test_samples_keeps_a_balanced_subset_of_file_splits(keras_home: Path) -> None:
    (x_train, y_train), (x_test, y_test) = _digit_images(200), _digit_images(50)
    np.savez(keras_home / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_dataset("mnist", samples=100)
    assert sum(_sizes(data)) == 100 and len(data.y_test) == 20
    assert np.bincount(np.concatenate([data.y_train, data.y_val])).tolist() == [8] * 10


# ------------------------------------------------------------------------------------ calibration & co


def test_calibration_is_a_balanced_deterministic_subset(digits: Dataset) -> None:
    batch = digits.calibration(100)
    assert batch.shape == (100, 8, 8, 1) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, digits.calibration(100))
    label_of = dict(zip(_rows(digits.x_train), digits.y_train.tolist()))
    assert all(row in label_of for row in _rows(batch))
    labels = [label_of[row] for row in _rows(batch)]
    assert np.bincount(labels, minlength=10).tolist() == [10] * 10
    assert not np.array_equal(load_dataset("digits", seed=1).calibration(100), batch)


def test_calibration_size_limits(digits: Dataset) -> None:
    assert len(digits.calibration(10**6)) == len(digits.x_train)
    assert len(digits.calibration()) == 200
    for bad in (0, -3, 2.5, True):
        with pytest.raises(BadInputError, match="calibration"):
            digits.calibration(bad)


def test_describe_is_json_and_complete(digits: Dataset) -> None:
    info = json.loads(json.dumps(digits.describe()))
    assert info["sizes"] == dict(zip(("train", "val", "test"), _sizes(digits)))
    assert info["fingerprint"] == digits.fingerprint and len(info["fingerprint"]) == 64
    assert info["input_shape"] == [8, 8, 1] and info["classes"] == list("0123456789")
    assert info["source"] == "scikit-learn load_digits" and info["preprocessing"] == {"scale": 0.0625}


def test_dataset_is_frozen_and_fingerprint_covers_classes(digits: Dataset) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        digits.x_train[0, 0, 0, 0] = 1.0
    fields = {f.name: getattr(digits, f.name) for f in dataclasses.fields(Dataset) if f.init}
    renamed = Dataset(**{**fields, "classes": tuple(f"c{i}" for i in range(10))})
    assert renamed.fingerprint != digits.fingerprint
    assert Dataset(**fields).fingerprint == digits.fingerprint


# -------------------------------------------------------------------------------------- bad arguments


def test_unknown_name_lists_builtins_and_file_types(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="digits.*shapes32.*\\.npz.*\\.csv.*folder"):
        load_dataset("imagenet")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(DatasetError, match="not supported"):
        load_dataset(tmp_path / "d.json")


@pytest.mark.parametrize(
    "options",
    [{"val_fraction": 0}, {"val_fraction": 1.0}, {"test_fraction": 1.5}, {"test_fraction": -0.1},
     {"seed": "1"}, {"samples": 0}, {"label_column": ""}],
)
def test_bad_arguments(options: dict) -> None:
    with pytest.raises(BadInputError, match="Received"):
        load_dataset("iris", **options)


def test_image_folder_never_reads_through_a_link_out_of_the_folder(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "p", {"a": (4, 4), "b": (4, 4)})
    outside = _image_folder(tmp_path / "elsewhere", {"x": (4, 4), "y": (4, 4)})
    inside_link = folder / "b" / "again.png"
    inside_link.symlink_to(folder / "a" / "0.png")  # a link that stays inside is an ordinary file
    assert sum(_sizes(load_dataset(folder))) == 9
    for name, target in (("passwd.png", Path("/etc/passwd")), ("zero.png", Path("/dev/zero")),
                         ("other.png", outside / "x" / "0.png")):
        link = folder / "a" / name
        link.symlink_to(target)
        with pytest.raises(DatasetError, match=f"{name} leads outside .*p"):
            load_dataset(folder)
        link.unlink()
    (folder / "c").symlink_to(outside / "y", target_is_directory=True)  # a whole class folder from elsewhere
    with pytest.raises(DatasetError, match="c leads outside"):
        load_dataset(folder)


def test_npy_folder_never_reads_through_a_link_out_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "arrays"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        np.save(folder / f"x_{split}.npy", rng.random((n, 5)).astype(np.float32))
        np.save(folder / f"y_{split}.npy", rng.integers(0, 2, n))
    outside = tmp_path / "secret.npy"
    np.save(outside, np.zeros((12, 5), np.float32))
    (folder / "x_test.npy").unlink()
    (folder / "x_test.npy").symlink_to(outside)
    with pytest.raises(DatasetError, match="x_test.npy leads outside"):
        load_dataset(folder)
