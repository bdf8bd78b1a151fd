"""The model zoo: every model builds for its input, the MAC counter matches hand counts, bad shapes fail."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeship.errors import BadInputError
from edgeship.trainers.zoo import MODELS, REFERENCE_INPUTS, ModelOptions, build_model, count_macs, describe


@pytest.fixture(scope="module")
def keras():
    from edgeship._deps import keras

    return keras()


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_builds_for_its_reference_input(name):
    shape, classes = REFERENCE_INPUTS[name]
    model = build_model(name, shape, classes)
    assert tuple(model.input_shape[1:]) == shape and model.output_shape == (None, classes)
    probs = model(np.random.default_rng(0).random((2, *shape), dtype=np.float32)).numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)  # a softmax head
    info = describe(name)
    assert info["params"] == model.count_params() > 0 and info["macs"] == count_macs(model) > 0


@pytest.mark.parametrize("name", ["ds_cnn", "resnet8", "mobilenet_v1"])
@pytest.mark.parametrize("shape,classes", [((32, 32, 3), 6), ((8, 8, 1), 10)])
def test_image_models_adapt_to_the_dataset(name, shape, classes):
    model = build_model(name, shape, classes)
    assert tuple(model.input_shape[1:]) == shape and model.output_shape == (None, classes)


def test_resnet8_matches_the_mlperf_tiny_reference_size():
    model = build_model("resnet8", (32, 32, 3), 10)
    # MLPerf Tiny's ResNet-8 has 78,666 parameters with conv biases; ours drops the biases before BatchNorm.
    assert 77_000 <= model.count_params() <= 79_000
    assert 12_000_000 <= count_macs(model) <= 13_000_000  # docs/stack-notes.md fact 12: about 12.5 M MACs


def test_mobilenet_alpha_scales_the_model():
    small = build_model("mobilenet_v1", (96, 96, 3), 2, ModelOptions(alpha=0.25))
    large = build_model("mobilenet_v1", (96, 96, 3), 2, ModelOptions(alpha=0.5))
    assert 180_000 <= small.count_params() <= 240_000  # MLPerf Tiny's VWW model: about 208 k weights
    assert large.count_params() > 3 * small.count_params()


def test_layer_names_do_not_depend_on_what_was_built_before():
    first = [layer.name for layer in build_model("resnet8", (32, 32, 3), 10).layers]
    build_model("ds_cnn", (32, 32, 3), 10)
    assert [layer.name for layer in build_model("resnet8", (32, 32, 3), 10).layers] == first


def test_mlp_options_widths_dropout_and_l2(keras):
    model = build_model("mlp", (13,), 3, ModelOptions(widths=(16, 8, 4), dropout=0.25, l2=1e-3))
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [16, 8, 4, 3]
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 3
    assert len(model.losses) == 4  # one L2 penalty per kernel
    assert not build_model("mlp", (13,), 3).losses


def test_mac_counter_matches_hand_counts(keras):
    layers = keras.layers
    inputs = keras.Input((10, 12, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inputs)          # out 5x6x8
    x = layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2)(x)  # out 3x4x16
    x = layers.Conv2D(4, (1, 2), padding="valid")(x)                    # out 3x3x4
    x = layers.Dense(5)(x)                                               # applied at 3x3 positions
    x = layers.Flatten()(x)                                              # 45
    outputs = layers.Dense(7)(layers.BatchNormalization()(x))
    model = keras.Model(inputs, outputs)
    # per output value: kh*kw*cin for a convolution, kh*kw for a depthwise one, inputs for a dense one
    hand = 3 * 3 * 3 * (5 * 6 * 8) + 3 * 3 * (3 * 4 * 16) + 1 * 2 * 16 * (3 * 3 * 4) + 4 * (3 * 3 * 5) + 45 * 7
    assert count_macs(model) == hand == 9_855


def test_mac_counter_sees_through_qat_wrappers_and_nested_models(keras):
    import tensorflow_model_optimization as tfmot

    model = build_model("tiny_cnn", (8, 8, 1), 10)
    assert count_macs(tfmot.quantization.keras.quantize_model(model)) == count_macs(model)
    outer = keras.Sequential([keras.Input((8, 8, 1)), model])
    assert count_macs(outer) == count_macs(model)


def test_tiny_cnn_hand_count():
    # conv 3x3 1->16 at 8x8, conv 3x3 16->32 at 8x8, dense 512->64, dense 64->10
    expected = 9 * 1 * 16 * 64 + 9 * 16 * 32 * 64 + 512 * 64 + 64 * 10
    assert count_macs(build_model("tiny_cnn", (8, 8, 1), 10)) == expected


@pytest.mark.parametrize("name,shape,classes,match", [
    ("nope", (8, 8, 1), 10, "unknown model 'nope'"),
    ("resnet8", (4,), 3, r"takes images .* received input shape \(4,\)"),
    ("tiny_cnn", (13,), 3, "Use 'mlp' for tabular data"),
    ("resnet8", (4, 4, 3), 3, "at least 8x8"),
    ("mlp", (8,), 1, "at least 2 classes"),
])
def test_bad_model_requests_are_one_line_errors(name, shape, classes, match):
    with pytest.raises(BadInputError, match=match) as info:
        build_model(name, shape, classes)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options", [dict(dropout=1.0), dict(l2=-1.0), dict(widths=()), dict(alpha=0.0)])
def test_bad_model_options(options):
    with pytest.raises(BadInputError):
        ModelOptions(**options)


def test_list_models_cli_shows_the_zoo_with_params_and_macs():
    from click.testing import CliRunner

    from edgeship.cli import cli

    result = CliRunner().invoke(cli, ["list-models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert list(rows) == list(MODELS)
    assert rows["resnet8"]["input_shape"] == [32, 32, 3] and rows["resnet8"]["macs"] == describe("resnet8")["macs"]
    result = CliRunner().invoke(cli, ["list-models", "--data", "iris", "--json"])
    rows = json.loads(result.output)
    assert rows["mlp"]["input_shape"] == [4] and "error" in rows["resnet8"]
