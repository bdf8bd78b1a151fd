"""Cross-layer equalization, and the doctor fixing a planted outlier before it keeps anything in float.

The planted model: a small digits CNN (conv ``c1`` -> ReLU -> conv ``c2`` -> ReLU -> pooling ->
softmax) whose ``c1`` output channels 0 and 3 are scaled x500 and ``c2``'s matching input weights
divided by 500: the float function is the same (ReLU is positively homogeneous), per-tensor int8
activations are not. It runs nested, as one layer behind ``Rescaling(1/255)`` on 0..255 pixels,
the way a backbone trained elsewhere is wrapped, so the doctor's layer mapping has to see inside.
Runtime about 90 s on 2 cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeship.converters.equalize import equalize, find_pairs
from edgeship.doctor import diagnose, readback
from edgeship.doctor.layers import layer_name, leaf_names
from edgeship.records import Manifest

MAX_DROP = 1.0
PLANTED = [0, 3]


def _keras():
    from edgeship._deps import keras

    return keras()


def _backbone(digits):
    keras = _keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(digits.input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x), name="backbone")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=30, batch_size=32, verbose=0)
    kernel, bias = model.get_layer("c1").get_weights()
    kernel[..., PLANTED] *= 500
    bias[PLANTED] *= 500
    model.get_layer("c1").set_weights([kernel, bias])
    kernel, bias = model.get_layer("c2").get_weights()
    kernel[:, :, PLANTED, :] /= 500
    model.get_layer("c2").set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def planted(digits):
    return _backbone(digits)


@pytest.fixture(scope="module")
def pixels(digits, tmp_path_factory):
    """digits as 0..255 pixels, as a user keeps them, loaded without preprocessing."""
    import edgeship as es

    path = tmp_path_factory.mktemp("pixels") / "digits_pixels.npz"
    np.savez(path, **{f"{a}_{s}": getattr(digits, f"{a}_{s}") * (255.0 if a == "x" else 1)
                      for a in ("x", "y") for s in ("train", "val", "test")})
    return es.load_dataset(str(path), preprocess="none")


def _nested(backbone, digits):
    keras = _keras()
    inputs = keras.Input(digits.input_shape, name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    return keras.Model(inputs, backbone(x), name="wrapped")


@pytest.fixture(scope="module")
def converted(planted, digits, pixels, tmp_path_factory) -> Path:
    """tflite:int8 and onnx:int8 of the nested planted model; read-only."""
    from edgeship.converters import convert

    out = tmp_path_factory.mktemp("planted")
    convert(_nested(planted, digits), "tflite:int8,onnx:int8", data=pixels, out=out)
    return out


def test_equalization_keeps_the_float_function_and_evens_the_planted_channels(planted, digits):
    equalized, pairs = equalize(planted)
    x = digits.x_test[:200]
    before, after = planted.predict(x, verbose=0), equalized.predict(x, verbose=0)
    assert np.abs(after - before).max() < 1e-5
    first = next(p for p in pairs if p.scaled == "c1")
    assert first.second == "c2" and first.spread_before > 100 and first.spread_after < 5, first
    assert any(p.scaled == "c2" and p.second == "head" for p in pairs)  # through the pooling
    # the caller's model is not touched
    assert np.abs(planted.get_layer("c1").get_weights()[0][..., PLANTED]).max() > 10 * np.abs(
        equalized.get_layer("c1").get_weights()[0][..., PLANTED]).max()


def test_pairs_are_found_inside_nested_models_and_not_through_clipping(planted, digits):
    keras = _keras()
    assert {(a.name, c.name) for a, _, c in find_pairs(_nested(planted, digits))} == {("c1", "c2"), ("c2", "head")}
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="a")(inputs)
    x = keras.layers.ReLU(max_value=6.0, name="relu6")(x)  # relu6(x / s) != relu6(x) / s
    x = keras.layers.Conv2D(4, 3, name="b")(x)
    y = keras.layers.Conv2D(4, 3, name="c")(inputs)
    both = keras.layers.Add(name="add")([keras.layers.Conv2D(4, 3, name="d")(y), keras.layers.Conv2D(4, 3, name="e")(y)])
    assert find_pairs(keras.Model(inputs, [x, both])) == []  # c feeds two layers: neither pair is safe


def test_layer_names_inside_a_nested_backbone():
    known = {"c1", "c2", "rescale"}
    assert layer_name("wrapped/backbone/c1/Relu;wrapped/backbone/c1/Conv2D", known) == "c1"
    assert layer_name("wrapped/backbone/c2/Conv2D__8", known) == "c2"
    assert layer_name("wrapped/backbone/c2/Conv2D") == "backbone"  # without the names: the outer layer


def test_equalization_recovers_the_nested_outlier_at_int8_size(converted, pixels, tmp_path):
    folder = Path(shutil.copytree(converted, tmp_path / "out"))
    report = diagnose(folder, data=pixels, max_drop=MAX_DROP, runs=20)
    manifest = Manifest.load(folder)
    for diagnosis in report.artifacts:
        assert diagnosis.accuracy_delta_pts < -5, (diagnosis.artifact, diagnosis.accuracy_delta_pts)
        recovery = diagnosis.recovery
        assert recovery.within_drop and recovery.method == "equalization", (diagnosis.artifact, recovery.note)
        assert recovery.test.accuracy_delta_pts >= -MAX_DROP and recovery.chosen_on == "val"
        assert recovery.size_ratio <= 1.1 and recovery.float_layers == () and not recovery.float_ops
        written = manifest.get(f"{diagnosis.artifact}-equalization")
        assert written == recovery.artifact and written.path == f"wrapped.int8-equalization{Path(written.path).suffix}"
        assert written.settings["changes"] == {"equalize": True} and written.settings["float_ops"] == 0
        # the calibration candidates came first and missed
        assert [s.method for s in recovery.steps][:2] == ["calibration", "calibration"]
        assert not any(s.within_drop for s in recovery.steps[:-1])
        verdict = next(a for a in diagnosis.advice if a.kind in ("ambiguity", "damage"))
        assert verdict.kind == "damage", verdict.message


def test_without_equalization_the_float_layers_reported_are_the_files(converted, planted, digits, pixels, tmp_path):
    folder = Path(shutil.copytree(converted, tmp_path / "out"))
    report = diagnose(folder, data=pixels, max_drop=MAX_DROP, runs=20, equalize=False, int16=False)
    known = leaf_names(_nested(planted, digits))
    for diagnosis in report.artifacts:
        recovery = diagnosis.recovery
        assert recovery.within_drop and recovery.method == "float", (diagnosis.artifact, recovery.note)
        assert "equalization" not in {s.method for s in recovery.steps}
        path = folder / recovery.artifact.path
        held = readback.read(path, known)
        assert recovery.float_layers == held.float_layers and recovery.compute_ops == held.compute_ops
        assert recovery.artifact.size_bytes == path.stat().st_size
        # the float set is a few layers of the backbone, not the backbone
        assert 0 < len(held.float_ops) < held.compute_ops / 2, held
        assert set(held.float_layers) <= {"c1", "c2", "head", "pool"}, held.float_layers
        assert recovery.artifact.path.endswith(f".int8-float{path.suffix}")


def test_convert_with_equalize_records_the_pairs_and_leaves_the_doctor_nothing_to_do(planted, digits, pixels,
                                                                                        tmp_path):
    from edgeship.converters import convert

    manifest = convert(_nested(planted, digits), "tflite:int8", data=pixels, out=tmp_path,
                       options={"tflite": {"equalize": True}})
    settings = manifest.get("tflite:int8").settings
    assert "c1->c2" in settings["equalized"] and settings["equalized_spread"]["c1"][0] > 100
    report = diagnose(tmp_path, data=pixels, max_drop=MAX_DROP, runs=5)
    recovery = report.artifacts[0].recovery
    assert report.artifacts[0].accuracy_delta_pts >= -MAX_DROP
    assert recovery.within_drop and recovery.artifact is None and "nothing to recover" in recovery.note
    assert len(Manifest.load(tmp_path).artifacts) == 1


def test_equalize_refuses_what_it_cannot_rescale(tmp_path, digits):
    from edgeship.converters import _source, equalize as eq
    from edgeship.errors import UnsupportedModelError

    onnx_like = _source.SourceModel(name="m", origin="m.onnx", input_shape=(8, 8, 1), onnx=tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError, match="rescales Keras weights.*without equalize"):
        eq.source(onnx_like, "onnx:int8")


def test_a_method_the_model_cannot_take_is_named_in_the_note(converted, pixels, tmp_path):
    folder = Path(shutil.copytree(converted, tmp_path / "out"))
    report = diagnose(folder, data=pixels, max_drop=MAX_DROP, artifact="tflite:int8", runs=5, samples=50,
                      equalize=False, max_layers=0, qat_epochs=1)
    recovery = report.artifacts[0].recovery
    assert not recovery.within_drop and "qat" not in {s.method for s in recovery.steps}
    assert "qat not tried:" in recovery.note, recovery.note  # tfmot does not wrap a model nested in another
