"""The Core ML reference evaluator (runtimes/coreml.py, mil.py, _mil_ops.py) against Keras and coremltools.

Every zoo model and a few functional models are converted to Core ML and run through the numpy
evaluator next to the Keras model; compressed artifacts of a trained model are validated next to
TFLite and ONNX; an over-pruned model fails the gate. Runtime: about 85 s on 2 busy cores, mostly
coremltools conversions (plus the shared ``float_model_dir`` training when no other test made it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TOLERANCES
from edgeship.errors import AccuracyGateError, BadArtifactError, UnsupportedModelError
from edgeship.runtimes import can_run, load
from edgeship.runtimes.coreml import REFERENCE_NOTE, REFERENCE_RUNTIME, ReferenceSession, has_coreml, round_fp16

COMPRESSED = ["coreml:fp16", "coreml:w8", "coreml:pal4", "coreml:pruned"]


def _keras():
    from edgeship._deps import keras

    return keras()


def _peaked(model, x: np.ndarray, seed: int = 0):
    """Random batch-norm statistics and sharper logits: outputs far from uniform, so an error shows."""
    keras, rng = _keras(), np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    for _ in range(10):
        if model.predict(x, verbose=0).max(1).mean() > 0.6:
            break
        kernel = kernel * 2
        logits.set_weights([kernel, bias])
    return model


def _check_against_keras(model, digits, tmp_path: Path) -> dict[str, set[str]]:
    from edgeship.converters import convert

    x = digits.x_test[:96]
    expected = model.predict(x, verbose=0)
    assert expected.max(1).mean() > 0.6, "the test model's outputs are too flat to show an error"
    manifest = convert(model, ["coreml:fp32", "coreml:fp16"], data=digits, out=tmp_path)
    ops = {}
    for artifact in manifest.artifacts:
        session = load(tmp_path / artifact.path, reference=True)
        assert isinstance(session, ReferenceSession) and session.dynamic_batch
        got = session.predict(x, batch_size=64).astype(np.float64)
        error = float(np.abs(got - expected).max())
        limit = 1e-4 if artifact.precision == "fp32" else 2e-2
        assert error <= limit, f"{model.name} {artifact.precision}: max abs error {error:.3g} > {limit}"
        if artifact.precision == "fp32":
            assert np.array_equal(got.argmax(1), expected.argmax(1))
        ops[artifact.precision] = set(session.evaluator.op_types)
    return ops


@pytest.mark.parametrize("name", ["mlp", "tiny_cnn", "ds_cnn", "resnet8", "mobilenet_v1"])
def test_zoo_programs_match_keras(name, digits, tmp_path):
    from edgeship.trainers.zoo import build_model

    _keras().utils.set_random_seed(1)
    model = _peaked(build_model(name, digits.input_shape, digits.num_classes), digits.x_test[:96])
    ops = _check_against_keras(model, digits, tmp_path)
    assert "cast" in ops["fp16"] and "cast" not in ops["fp32"]  # the fp16 program really is fp16


def _gated(keras):
    """Residual add, a sigmoid gate, relu6, explicit padding, depthwise x2, global max/avg pooling."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="input")
    x = layers.ReLU(max_value=6.0)(layers.Conv2D(8, 3, strides=2)(layers.ZeroPadding2D(1)(inputs)))
    y = layers.Conv2D(8, 1)(layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x))
    x = layers.Add()([x, layers.Multiply()([y, layers.Conv2D(8, 1, activation="sigmoid")(x)])])
    pooled = layers.Flatten()(layers.AveragePooling2D(2)(x))
    z = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x), pooled])
    z = layers.Activation("tanh")(layers.BatchNormalization()(layers.Dense(32)(z)))
    z = layers.Subtract()([z, layers.Dense(32, activation="relu")(z)])
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="logits")(z), name="gated")


def _normed(keras):
    """Batch norm that cannot be folded (on the input, after a residual sum, after pooling)."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="input")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.BatchNormalization()(inputs))
    x = layers.Add()([x, layers.Conv2D(8, 3, padding="same")(x)])
    x = layers.MaxPooling2D(2, padding="same")(layers.Activation("relu")(layers.BatchNormalization()(x)))
    x = layers.Permute((2, 1))(layers.Reshape((-1, 8))(x))
    x = layers.Flatten()(layers.Conv1D(8, 2, padding="same", activation="elu")(x))
    x = layers.BatchNormalization()(layers.Dense(16, activation="swish")(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="logits")(x), name="normed")


@pytest.mark.parametrize("build, expected_ops", [
    (_gated, {"add", "mul", "sigmoid", "relu6", "pad", "reduce_mean", "reduce_max", "avg_pool", "concat", "sub"}),
    (_normed, {"batch_norm", "add", "max_pool", "transpose", "reshape", "elu", "sigmoid", "mul"}),
])
def test_functional_models_match_keras(build, expected_ops, digits, tmp_path):
    _keras().utils.set_random_seed(2)
    model = _peaked(build(_keras()), digits.x_test[:96])
    ops = _check_against_keras(model, digits, tmp_path)
    assert expected_ops <= ops["fp32"], f"the program lacks {expected_ops - ops['fp32']}"


# -- compressed artifacts of a trained model, validated next to TFLite and ONNX ---------------------
@pytest.fixture(scope="module")
def coreml_dir(tmp_path_factory, float_model_dir, digits) -> Path:
    """The conversion matrix's tiny_cnn (the same trained model) converted to the targets compared
    here: its own conversion, as the matrix itself (every target of two models) takes minutes on a
    worker that does not run test_converters.py."""
    from edgeship import convert

    out = tmp_path_factory.mktemp("coreml-eval") / "out"
    convert(float_model_dir, ["tflite:fp32", "onnx:fp32", *COMPRESSED], data=digits, out=out)
    return out


def test_compressed_accuracy_in_the_validation_table(coreml_dir, digits):
    from edgeship import validate

    report = validate(coreml_dir, data=digits, artifacts=["tflite:fp32", "onnx:fp32", *COMPRESSED],
                      benchmark={"threads": 1, "warmup": 1, "runs": 3})
    rows = {e.name: e for e in report.artifacts}
    for name in COMPRESSED:
        entry = rows[name]
        assert entry.validation is not None, f"{name} was not evaluated: {entry.status}"
        if not has_coreml():
            assert entry.evaluated_with == f"{REFERENCE_RUNTIME} {REFERENCE_NOTE}"
            assert "reference evaluator (numpy), not Apple's Core ML runtime" in entry.evaluated_with
            assert entry.benchmark is None  # a reference evaluator's latency is never device latency
    assert rows["tflite:fp32"].benchmark is not None and rows["onnx:fp32"].benchmark is not None
    for name in COMPRESSED:  # the bounds the conversion matrix holds them to, benchmarked this time
        limits, v = TOLERANCES["tiny_cnn"][name], rows[name].validation
        assert v.max_abs_error <= limits.get("max_abs", 1.0) and v.agreement >= limits["min_agreement"], (name, v)
        assert -limits["max_drop"] <= v.accuracy_delta_pts <= -limits.get("min_drop", -100.0), (name, v)
    # Palettization and 50% pruning change the weights: the outputs differ from fp16's
    fp16 = rows["coreml:fp16"].validation.max_abs_error
    assert rows["coreml:pal4"].validation.max_abs_error > fp16
    assert rows["coreml:pruned"].validation.max_abs_error > fp16
    _print_table(report)


def _print_table(report) -> None:
    print(f"\nreference accuracy {report.reference_accuracy * 100:.2f}%")
    for e in report.artifacts:
        v = e.validation
        print(f"{e.name:15s} {e.size_bytes:>8d} B  acc {v.accuracy * 100:6.2f}%  Δ {v.accuracy_delta_pts:+6.2f}  "
              f"agree {v.agreement * 100:5.1f}%  max err {v.max_abs_error:.2g}  {e.evaluated_with}")


def test_over_pruned_model_collapses_and_fails_the_gate(coreml_dir, digits):
    from edgeship import validate

    with pytest.raises(AccuracyGateError) as caught:
        validate(coreml_dir, data=digits, max_drop=1.0, artifacts=["coreml:fp16", "coreml:pruned"])
    report = caught.value.report
    assert [e.name for e in report.failed] == ["coreml:pruned"]
    pruned = report.entry("coreml:pruned").validation
    # 50% magnitude pruning without fine-tuning: several points, far past the 1-point gate
    assert pruned.accuracy_delta_pts < -2.0 and pruned.agreement < 0.97, pruned
    assert "coreml:pruned" in str(caught.value)


def test_bundle_carries_coreml_and_reruns_within_tolerance(coreml_dir, digits):
    from edgeship import bundle, validate

    validate(coreml_dir, data=digits, artifacts=["coreml:fp16", "coreml:pal4"])
    manifest, (inputs,), labels = bundle.load(coreml_dir / bundle.FOLDER)
    assert {e.name for e in manifest.artifacts} == {"coreml:fp16", "coreml:pal4"}
    for entry in manifest.artifacts:
        outputs = load(coreml_dir / bundle.FOLDER / entry.path).predict(inputs)
        expected = np.load(coreml_dir / bundle.FOLDER / entry.expected)
        assert np.abs(outputs.astype(np.float64) - expected).max() <= entry.max_abs_error


def test_reader_agrees_with_coremltools_loader(coreml_dir):
    """Our protobuf and weight-blob reader against coremltools' milproto loader (docs/stack-notes.md fact 11)."""
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    for precision in ("fp16", "w8", "pal4", "pruned"):
        path = next(coreml_dir.glob(f"*.{precision}.mlpackage"))
        spec = ct.utils.load_spec(str(path))
        program = milproto_load(spec, specification_version=spec.specificationVersion,
                                file_weights_dir=str(path / "Data/com.apple.CoreML/weights"))
        theirs = list(program.functions["main"].operations)
        session = load(path, reference=True)
        ours = session.evaluator.program.ops
        # coremltools turns constexpr attributes into const ops of its own; the rest must agree
        assert [op.op_type for op in theirs if op.op_type != "const"] == [op.type for op in ours if op.type != "const"]
        constants = session.evaluator._values
        compared = 0
        for op in theirs:
            name = op.outputs[0].name
            if op.op_type.startswith("constexpr_"):
                value = op.materialized_val_inference()
            elif op.op_type == "const" and name in constants and isinstance(op.outputs[0].val, np.ndarray):
                value = op.outputs[0].val
            else:
                continue
            mine = constants[name]
            np.testing.assert_array_equal(mine, np.asarray(value, dtype=mine.dtype), err_msg=f"{precision} {name}")
            compared += op.op_type != "const"
        assert compared >= (0 if precision == "fp16" else 4)  # tiny_cnn: two conv and two dense weights


# -- ops the Keras converter does not emit, through coremltools' MIL builder ------------------------
def _mil_package(tmp_path: Path, build, shape, name: str = "ops") -> Path:
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb

    program = mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS16)(build)
    model = ct.convert(program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                       minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    path = tmp_path / f"{name}.mlpackage"
    model.save(str(path))
    return path


def test_ops_outside_the_keras_converter(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(3)
    wg, wd, bias = (rng.normal(size=s).astype(np.float32) for s in ((6, 2, 3, 3), (3, 4, 2, 3), (6,)))
    lin_w, lin_b = rng.normal(size=(5, 144)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    mean, var, gamma, beta = rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4)

    def build(x):
        return (
            mb.conv(x=x, weight=wg, bias=bias, groups=2, pad_type="same", strides=[2, 2]),  # grouped, strided
            mb.conv(x=x, weight=wd, pad_type="custom", pad=[1, 0, 2, 1], dilations=[2, 1]),
            mb.linear(x=mb.reshape(x=x, shape=[2, 144]), weight=lin_w, bias=lin_b),
            mb.batch_norm(x=x, mean=mean.astype(np.float32), variance=var.astype(np.float32),
                          gamma=gamma.astype(np.float32), beta=beta.astype(np.float32), epsilon=1e-3),
            mb.clip(x=mb.leaky_relu(x=x, alpha=0.1), alpha=-0.5, beta=0.7),
            mb.squeeze(x=mb.expand_dims(x=mb.reduce_max(x=x, axes=[2, 3], keep_dims=True), axes=[0]), axes=[0, 3, 4]),
            mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same", exclude_padding_from_average=True),
            mb.pad(x=x, pad=[1, 1, 2, 2], mode="reflect"),
            mb.cast(x=mb.cast(x=mb.mul(x=x, y=3.0), dtype="int32"), dtype="fp32"),
            mb.concat(values=[x, mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5)], axis=1, interleave=True),
        )

    x = rng.normal(size=(2, 4, 6, 6)).astype(np.float32)
    session = load(_mil_package(tmp_path, build, x.shape), reference=True)
    got = list(session.run({"x": x}).values())
    nhwc = x.transpose(0, 2, 3, 1)

    def tf_conv(inp, w, **kw):
        return tf.nn.conv2d(inp, w.transpose(2, 3, 1, 0), **kw).numpy().transpose(0, 3, 1, 2)

    shaped = (1, 4, 1, 1)
    expected = [
        tf_conv(nhwc, wg, strides=2, padding="SAME") + bias.reshape(1, 6, 1, 1),
        tf_conv(np.pad(nhwc, [(0, 0), (1, 0), (2, 1), (0, 0)]), wd, strides=1, padding="VALID", dilations=[2, 1]),
        x.reshape(2, 144) @ lin_w.T + lin_b,
        (x - mean.reshape(shaped)) / np.sqrt(var.reshape(shaped) + 1e-3) * gamma.reshape(shaped) + beta.reshape(shaped),
        np.clip(np.where(x >= 0, x, 0.1 * x), -0.5, 0.7),
        x.max(axis=(2, 3)),
        tf.nn.avg_pool2d(nhwc, 3, 2, "SAME").numpy().transpose(0, 3, 1, 2),  # TF leaves padding out of the mean
        np.pad(x, [(0, 0), (0, 0), (1, 1), (2, 2)], mode="reflect"),
        np.trunc(x * 3),
        np.stack([x, np.clip(0.2 * x + 0.5, 0, 1)], axis=2).reshape(2, 8, 6, 6),
    ]
    assert len(got) == len(expected)
    for i, (mine, theirs) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5, err_msg=f"output {i}")


def test_ios18_compressed_weights_with_sub_byte_storage(tmp_path):
    """iOS18's constexpr ops: int4 blockwise shift-scale, per-block uint4 palettes, a uint1 sparsity mask."""
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(4)
    data, offset = (rng.integers(-8, 8, s).astype(types.np_int4_dtype) for s in ((4, 8), (4, 2)))
    scale = rng.uniform(0.1, 1, (4, 2)).astype(np.float32)
    indices = rng.integers(0, 16, (4, 8)).astype(types.np_uint4_dtype)
    lut = rng.normal(size=(2, 1, 16, 1)).astype(np.float32)  # a 16-entry palette per block of two rows
    mask = (rng.random((4, 8)) > 0.5).astype(types.np_uint1_dtype)
    nonzero = rng.normal(size=int(mask.sum())).astype(np.float32)

    def build(x):
        return (mb.linear(x=x, weight=mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset)),
                mb.linear(x=x, weight=mb.constexpr_lut_to_dense(indices=indices, lut=lut)),
                mb.linear(x=x, weight=mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=mask)))

    program = mb.program(input_specs=[mb.TensorSpec(shape=(3, 8))], opset_version=ct.target.iOS18)(build)
    path = tmp_path / "ios18.mlpackage"
    ct.convert(program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
               minimum_deployment_target=ct.target.iOS18, skip_model_load=True).save(str(path))
    x = rng.normal(size=(3, 8)).astype(np.float32)
    got = list(load(path, reference=True).run({"x": x}).values())
    sparse = np.zeros((4, 8), np.float32)
    sparse[mask.astype(bool)] = nonzero
    dense = [(data.astype(np.float32) - np.repeat(offset.astype(np.float32), 4, 1)) * np.repeat(scale, 4, 1),
             np.stack([lut[row // 2, 0, indices[row].astype(int), 0] for row in range(4)]),  # two blocks of rows
             sparse]
    for mine, weight in zip(got, dense):
        np.testing.assert_allclose(mine, x @ weight.T, rtol=1e-6, atol=1e-6)


def test_unknown_op_is_refused_by_name(tmp_path):
    pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb

    path = _mil_package(tmp_path, lambda x: mb.erf(x=x), (1, 4))
    with pytest.raises(UnsupportedModelError, match="op 'erf'"):
        load(path, reference=True)


def test_damaged_package_is_a_bad_artifact(coreml_dir, tmp_path):
    path = tmp_path / "broken.mlpackage"
    shutil.copytree(next(coreml_dir.glob("*.w8.mlpackage")), path)
    weights = path / "Data/com.apple.CoreML/weights/weight.bin"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(BadArtifactError, match="weight"):
        load(path)


def test_runtime_side_imports_neither_tensorflow_nor_coremltools(coreml_dir):
    path = next(coreml_dir.glob("*.pal4.mlpackage"))
    code = (
        "import sys, numpy as np\n"
        "from edgeship.runtimes import load, can_run\n"
        f"s = load({str(path)!r}); y = s.predict(np.zeros((3, 8, 8, 1), np.float32))\n"
        "heavy = sorted(m for m in ('tensorflow', 'coremltools') if m in sys.modules)\n"
        "print(s.runtime, y.shape, can_run(s.path)[0], heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    expected = "coreml (3, 10) True" if has_coreml() else f"{REFERENCE_RUNTIME} (3, 10) True []"
    assert out.strip().startswith(expected), out


def test_fp16_rounding_is_bit_exact():
    bits = np.arange(0, 2**32, 2053, dtype=np.uint64).astype(np.uint32)  # a sweep of every exponent
    x = np.concatenate([bits.view(np.float32), np.float32([65504, 65519.99, 65520, 2**-24, 2**-25, -3 * 2**-26])])
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.astype(np.float16).astype(np.float32)
    got = round_fp16(x)
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(expected[~np.isnan(expected)]))


def test_can_run_and_load_choose_the_evaluator_off_macos(coreml_dir):
    path = next(coreml_dir.glob("*.fp16.mlpackage"))
    ok, why = can_run(path)
    session = load(path, reference=True)
    assert ok and session.reference_only and session.runtime == REFERENCE_RUNTIME
    if not has_coreml():
        assert "reference evaluator" in why and type(load(path)) is ReferenceSession


@pytest.mark.skipif(not has_coreml(), reason="Apple's Core ML runtime exists on macOS only")
def test_evaluator_matches_core_ml_on_macos(coreml_dir, digits):
    x = digits.x_test[:64]
    for path in sorted(coreml_dir.glob("*.mlpackage")):
        real, ours = load(path), load(path, reference=True)
        assert real.runtime == "coreml"
        error = np.abs(real.predict(x).astype(np.float64) - ours.predict(x)).max()
        assert error <= 2e-2, f"{path.name}: {error:.3g}"


def test_thresholded_relu_follows_the_mil_spec():
    # coremltools makes hardswish's gate of it (torchvision's MobileNetV3, any nn.Hardswish)
    from edgeship.runtimes._mil_ops import OPS

    x = np.array([-2.0, 0.5, 1.0, 3.0], np.float32)
    assert OPS["thresholded_relu"](x, alpha=1.0).tolist() == [0.0, 0.0, 1.0, 3.0]
