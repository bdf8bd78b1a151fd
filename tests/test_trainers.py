"""Training recipes on real data: float, pruning, clustering, QAT and their combinations; checkpoints and
resume; augmentation and class weights; strategy selection and MirroredStrategy on two logical CPUs;
the bad inputs. The accuracy bars of issue 3 are asserted on digits with the session fixtures of
conftest.py (digits_float_dir, digits_qat_dir, digits_pqat_dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgeship.data import load_dataset
from edgeship.errors import BadInputError, UnsupportedModelError
from edgeship.records import TrainingRecord
from edgeship.trainers import distribute, fitting
from edgeship.trainers.fitting import Augment


def _int8_tflite(folder: Path, data) -> tuple[float, bytes]:
    """Accuracy of the int8 TFLite model converted from a trained folder, and its flatbuffer."""
    from edgeship.converters import _source, tflite
    from edgeship.runtimes import load

    flatbuffer, _ = tflite.to_bytes(_source.resolve(folder), "int8", data.calibration(200))
    path = folder.parent / f"{folder.name}.int8.tflite"
    path.write_bytes(flatbuffer)
    session = load(path)
    probs = next(iter(session.run({session.inputs[0].name: data.x_test}).values()))
    return float(np.mean(probs.argmax(-1) == data.y_test)), flatbuffer


def _tflite_kernels(flatbuffer: bytes) -> list[np.ndarray]:
    """The int8 constant tensors of a TFLite model with 1024+ values (the kernels of the pruned layers)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    kernels = []
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and np.prod(detail["shape"]) >= 1024 and len(detail["shape"]) in (2, 4):
            try:
                kernels.append(interpreter.get_tensor(detail["index"]))
            except ValueError:  # activations have no data before invoke
                continue
    return kernels


# ------------------------------------------------------------------------------ digits accuracy bars


def test_float_reaches_97_percent_on_digits(digits_float_dir, digits):
    record = TrainingRecord.load(digits_float_dir)
    assert record.recipe == "float" and record.test_accuracy >= 0.97, record.stage_accuracy
    assert 0 < record.test_accuracy <= 1 and record.params == 38_282 and record.macs == 337_536
    assert record.epochs_run == len(record.history["loss"]) == len(record.history["val_loss"]) <= 30
    assert (digits_float_dir / "model.keras").is_file() and (digits_float_dir / "saved_model" / "saved_model.pb").is_file()
    assert record.sparsity == {} and record.strategy == "cpu" and record.dataset_fingerprint == digits.fingerprint


def test_early_stopping_ends_on_the_best_validation_weights(digits_float_dir, digits):
    from edgeship.trainers.saving import load_trained

    final, _, record = load_trained(digits_float_dir)
    final.compile(loss="sparse_categorical_crossentropy")
    val_loss = final.evaluate(digits.x_val, digits.y_val, verbose=0, batch_size=256)
    assert val_loss == pytest.approx(min(record.history["val_loss"]), rel=1e-3)


def test_qat_int8_tflite_within_half_a_point_of_float(digits_qat_dir, digits):
    record = TrainingRecord.load(digits_qat_dir)
    assert record.recipe == "float+qat" and record.files["model"] == "model.h5"
    int8, _ = _int8_tflite(digits_qat_dir, digits)
    assert int8 >= record.stage_accuracy["float"] - 0.005, (int8, record.stage_accuracy)


def test_prune_075_within_one_point_with_74_percent_sparsity(digits_pqat_dir, digits):
    from edgeship.trainers import compress
    from edgeship.trainers.saving import load_trained

    final, reference, record = load_trained(digits_pqat_dir)
    assert record.recipe == "float+prune+qat" and set(record.sparsity) == {"conv_2", "dense_1"}
    assert record.stage_accuracy["prune"] >= record.stage_accuracy["float"] - 0.01, record.stage_accuracy
    # measured from the saved weights: the float reference (pruned) and the QAT model (sparsity kept)
    for model in (reference, final):
        sparsity = compress.measure_sparsity(model, list(record.sparsity))
        assert min(sparsity.values()) >= 0.74, sparsity
    int8, flatbuffer = _int8_tflite(digits_pqat_dir, digits)
    kernels = _tflite_kernels(flatbuffer)
    assert len(kernels) == 2 and all(np.mean(k == 0) >= 0.74 for k in kernels)
    assert int8 >= record.stage_accuracy["float"] - 0.01


def test_cluster_preserving_qat_after_pruning_keeps_both(tmp_path, digits, digits_float_dir):
    from edgeship.trainers import train

    record = train("tiny_cnn", digits, out=tmp_path / "pcqat", start_from=digits_float_dir, prune=0.5, prune_epochs=2,
                   cluster=8, cluster_epochs=1, qat=True, qat_epochs=1)
    assert record.recipe == "float+prune+cluster+qat" and list(record.stage_accuracy) == ["float", "prune", "cluster", "qat"]
    assert record.clusters == {"conv_2": 8, "dense_1": 8}
    assert min(record.sparsity.values()) >= 0.49, record.sparsity
    int8, flatbuffer = _int8_tflite(tmp_path / "pcqat", digits)
    for kernel in _tflite_kernels(flatbuffer):  # int8 per-channel scales: at most 8 values in each channel
        assert np.mean(kernel == 0) >= 0.49
        assert max(len(np.unique(channel)) for channel in kernel) <= 8
    assert int8 >= record.stage_accuracy["float"] - 0.03


# ------------------------------------------------------------------------- other models, other data


def test_resnet8_qat_and_ds_cnn_pruning_train_on_shapes32(tmp_path):
    from edgeship.trainers import train

    data = load_dataset("shapes32", samples=300)
    record = train("resnet8", data, out=tmp_path / "resnet8", epochs=1, qat=True, qat_epochs=1)
    assert record.recipe == "float+qat" and record.params == 78_426 - 64 * 4 - 4 and record.macs > 12_000_000
    record = train("ds_cnn", data, out=tmp_path / "ds_cnn", epochs=1, prune=0.5, prune_epochs=2)
    # pruned: the stem and the four 1x1 convolutions; the 576-weight depthwise kernels and the head are kept
    assert set(record.sparsity) == {"conv_1", "conv_2", "conv_3", "conv_4", "conv_5"}
    assert min(record.sparsity.values()) >= 0.49


def test_seeded_runs_repeat_exactly_and_seeds_differ(tmp_path, digits):
    from edgeship.trainers import train

    runs = [train("mlp", digits, out=tmp_path / str(i), epochs=2, seed=seed, widths=(32,), dropout=0.1)
            for i, seed in enumerate((3, 3, 4))]
    assert runs[0].history == runs[1].history
    assert runs[0].history != runs[2].history


def test_class_weights_follow_scikit_learn_and_reach_the_batches():
    from sklearn.utils.class_weight import compute_class_weight

    data = load_dataset("breast_cancer")  # 212 malignant, 357 benign
    weights = fitting.class_weights(data)
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=data.y_train)
    assert weights == pytest.approx(dict(enumerate(expected))) and weights[0] > 1 > weights[1]
    x, y, w = next(iter(fitting.train_dataset(data, batch_size=64, seed=0, class_weights=weights)))
    np.testing.assert_allclose(w.numpy(), [weights[int(label)] for label in y.numpy()])


def test_augmentation_flips_and_shifts_reproducibly(digits):
    def first_batches(augment, skip=0, n=2):
        ds = fitting.train_dataset(digits, batch_size=64, seed=5, augment=augment, skip_epochs=skip)
        return [tuple(t.numpy() for t in batch) for batch in ds.take(n)]

    (plain_x, plain_y), _ = first_batches(None)
    (flip_x, flip_y), _ = first_batches(Augment(flip=True, shift=0.0))
    np.testing.assert_array_equal(plain_y, flip_y)  # the same samples in the same order
    same = np.all(flip_x == plain_x, axis=(1, 2, 3))
    mirrored = np.all(flip_x == plain_x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 10 < mirrored.sum() < 54
    (shift_x, _), _ = first_batches(Augment(flip=False, shift=0.25))
    assert np.mean(np.all(shift_x == plain_x, axis=(1, 2, 3))) < 0.5
    np.testing.assert_array_equal(shift_x, first_batches(Augment(flip=False, shift=0.25))[0][0])
    # skipping one epoch lands exactly where a run that went through epoch 1 is
    steps = fitting.steps_per_epoch(digits, 64)
    ds = fitting.train_dataset(digits, batch_size=64, seed=5, augment=Augment())
    straight = [b[0].numpy() for b in ds.skip(steps).take(2)]
    resumed = [b[0] for b in first_batches(Augment(), skip=1)]
    np.testing.assert_array_equal(straight[0], resumed[0])
    np.testing.assert_array_equal(straight[1], resumed[1])


@pytest.mark.parametrize("text,expected", [
    ("flip,shift", Augment(True, 0.1)), ("flip", Augment(True, 0.0)), ("shift=0.2", Augment(False, 0.2)),
    ("none", None), ("", None),
])
def test_augment_parses_the_cli_text(text, expected):
    assert Augment.parse(text) == expected


def test_augment_refuses_tabular_data(tmp_path):
    from edgeship.trainers import train

    with pytest.raises(BadInputError, match="augment takes image datasets"):
        train("mlp", "iris", out=tmp_path, epochs=1, augment=True)


# --------------------------------------------------------------------------- checkpoints and resume


class _Stop(Exception):
    pass


def _interrupt_after(epochs: int):
    from edgeship._deps import keras

    class Interrupt(keras().callbacks.Callback):
        seen = 0

        def on_epoch_end(self, epoch, logs=None):
            Interrupt.seen += 1
            if Interrupt.seen == epochs:
                raise _Stop()

    return Interrupt()


def test_resume_after_an_interruption_matches_a_straight_run(tmp_path):
    from edgeship.trainers import train
    from edgeship.trainers.saving import load_trained

    data = load_dataset("digits", samples=500)
    settings = dict(epochs=3, prune=0.5, prune_epochs=2, augment=True, batch_size=32)
    straight = train("tiny_cnn", data, out=tmp_path / "straight", **settings)
    weights = load_trained(tmp_path / "straight")[0].get_weights()
    for at in (2, 4):  # during float training; during the pruning fine-tune
        out = tmp_path / f"interrupted-{at}"
        with pytest.raises(_Stop):
            train("tiny_cnn", data, out=out, callbacks=[_interrupt_after(at)], **settings)
        state = json.loads((out / "checkpoints" / "state.json").read_text())
        assert sum(stage["epoch"] for stage in state["stages"].values()) == at
        assert not (out / "training.json").exists()
        resumed = train("tiny_cnn", data, out=out, resume=True, **settings)
        assert resumed.resumed and resumed.history == straight.history and resumed.epochs_run == 5
        for a, b in zip(load_trained(out)[0].get_weights(), weights):
            np.testing.assert_allclose(a, b, atol=1e-6)
    # the settings of a checkpoint are checked before anything trains
    with pytest.raises(BadInputError, match=r"cannot resume: .*prune: 0.5 -> 0.6") as info:
        train("tiny_cnn", data, out=tmp_path / "interrupted-2", resume=True, **{**settings, "prune": 0.6})
    assert "\n" not in str(info.value)


def test_training_without_resume_starts_over(tmp_path):
    from edgeship.trainers import train

    data = load_dataset("digits", samples=300)
    with pytest.raises(_Stop):
        train("mlp", data, out=tmp_path, epochs=3, callbacks=[_interrupt_after(1)])
    record = train("mlp", data, out=tmp_path, epochs=2)
    assert not record.resumed and record.epochs_run == 2


# ------------------------------------------------------------------------------ strategies, precision


@pytest.mark.parametrize("name,gpus,cpus,tf_config,kind,devices", [
    ("auto", [], ["C0"], None, "cpu", ("C0",)),
    ("auto", ["G0"], ["C0"], None, "gpu", ("G0",)),
    ("auto", ["G0", "G1"], ["C0"], None, "mirrored", ("G0", "G1")),
    ("auto", [], ["C0"], '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}',
     "multiworker", ("C0",)),
    ("auto", ["G0"], ["C0"], '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', "gpu", ("G0",)),
    ("cpu", ["G0", "G1"], ["C0"], None, "cpu", ("C0",)),
    ("gpu", ["G0", "G1"], ["C0"], None, "gpu", ("G0",)),
    ("mirrored", [], ["C0", "C1"], None, "mirrored", ("C0", "C1")),
    ("mirrored", ["G0", "G1"], ["C0"], None, "mirrored", ("G0", "G1")),
    ("multiworker", ["G0"], ["C0"], '{"cluster": {"worker": ["a:1"]}}', "multiworker", ("G0",)),
])
def test_strategy_selection(name, gpus, cpus, tf_config, kind, devices):
    plan = distribute.choose(name, gpus, cpus, tf_config)
    assert (plan.kind, plan.devices) == (kind, devices)


@pytest.mark.parametrize("name,gpus,tf_config,match", [
    ("gpu", [], None, "sees no GPU"),
    ("multiworker", [], None, "needs TF_CONFIG"),
    ("auto", [], "{not json", "TF_CONFIG must be JSON"),
    ("tpu", [], None, "unknown strategy 'tpu'"),
])
def test_strategy_selection_errors(name, gpus, tf_config, match):
    with pytest.raises(BadInputError, match=match):
        distribute.choose(name, gpus, ["C0"], tf_config)


_MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from edgeship.data import load_dataset
    from edgeship.trainers import train
    data = load_dataset("digits", samples=400)
    record = train("tiny_cnn", data, out=sys.argv[1], strategy="mirrored", epochs=3, qat=True, qat_epochs=1)
    print(json.dumps(record.to_dict()))
""")


def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    # Logical devices must be configured before TensorFlow initialises them: a fresh interpreter.
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    result = subprocess.run([sys.executable, "-c", _MIRRORED, str(tmp_path / "out")], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["strategy"] == "mirrored" and record["replicas"] == 2
    assert record["history"]["loss"][0] > record["history"]["loss"][2]  # it learned
    assert record["stage_accuracy"]["qat"] > 0.5 and (tmp_path / "out" / "model.h5").is_file()


def test_mixed_precision_is_refused_on_cpu_and_models_come_back_float32(caplog):
    from edgeship.trainers.zoo import build_model

    cpu = distribute.Plan("cpu", ("/device:CPU:0",), "test")
    with caplog.at_level("WARNING"), distribute.precision_policy(True, cpu) as policy:
        assert policy == "float32"
    assert "mixed precision needs a GPU" in caplog.text
    gpu = distribute.Plan("gpu", ("/device:GPU:0",), "test")
    with distribute.precision_policy(True, gpu) as policy:  # the policy alone; nothing runs on a GPU here
        mixed = build_model("resnet8", (16, 16, 3), 4)
    assert policy == "mixed_float16" and mixed.get_layer("conv_1").compute_dtype == "float16"
    assert mixed.get_layer("logits").dtype_policy.name == "float32"  # the softmax stays float32
    restored = distribute.as_float32(mixed)
    assert {layer.dtype_policy.name for layer in restored.layers} == {"float32"}
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(restored(x).numpy(), mixed(x).numpy(), atol=2e-2)


# ------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("settings,match", [
    (dict(prune=1.0), "strictly between 0 and 1"),
    (dict(prune=0.0), "strictly between 0 and 1"),
    (dict(prune=-0.5), "strictly between 0 and 1"),
    (dict(cluster=1), r"cluster is a number of weight clusters in \[2, 256\]"),
    (dict(epochs=0), "epochs must be a positive integer"),
    (dict(lr_schedule="step"), "lr_schedule must be one of"),
    (dict(dropout=1.5), "dropout must be in"),
    (dict(config=object(), epochs=3), r"pass either config= or settings, not both; received settings \['epochs'\]"),
])
def test_bad_settings_fail_before_training(tmp_path, settings, match):
    from edgeship.trainers import train

    with pytest.raises(BadInputError, match=match):
        train("tiny_cnn", "digits", out=tmp_path, **settings)
    assert not (tmp_path / "checkpoints").exists()


def test_an_unknown_setting_is_a_type_error_naming_it(tmp_path):
    from edgeship.trainers import train

    with pytest.raises(TypeError, match="optimiser"):  # train() has real keywords: Python names the stray one
        train("tiny_cnn", "digits", out=tmp_path, optimiser="sgd")


@pytest.mark.parametrize("model,data,match", [
    ("resnet9", "digits", "unknown model 'resnet9'"),
    ("ds_cnn", "wine", r"takes images .* received input shape \(13,\)"),
])
def test_unknown_model_and_unfit_dataset(tmp_path, model, data, match):
    from edgeship.trainers import train

    with pytest.raises(BadInputError, match=match):
        train(model, data, out=tmp_path, epochs=1)


def test_a_layer_qat_cannot_quantize_is_named(tmp_path):
    from edgeship._deps import keras as _keras
    from edgeship.trainers import compress, train

    keras = _keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs, name="custom")
    with pytest.raises(UnsupportedModelError, match=r"cannot quantize layer 'norm' \(LayerNormalization\).*without --qat"):
        train(model, load_dataset("digits", samples=200), out=tmp_path, epochs=1, qat=True)
    lam = keras.layers.Lambda(lambda t: t * 2, name="double")
    with pytest.raises(UnsupportedModelError, match=r"layer 'double' \(Lambda\)"):
        compress.quantize_aware(keras.Model(inputs, lam(inputs)))


def test_start_from_a_model_of_other_data_is_refused(tmp_path, digits_float_dir):
    from edgeship.trainers import train

    with pytest.raises(BadInputError, match="Start from a model trained on the same data"):
        train("tiny_cnn", load_dataset("digits", seed=1), out=tmp_path, start_from=digits_float_dir, qat=True)


# -------------------------------------------------------------------------------------------- CLI


def test_cli_train_prints_the_record_as_json(tmp_path):
    from click.testing import CliRunner

    from edgeship.cli import cli

    result = CliRunner().invoke(cli, ["train", "--model", "mlp", "--data", "wine", "--out", str(tmp_path), "--epochs",
                                      "2", "--prune", "0.5", "--prune-epochs", "2", "--widths", "32,32",
                                      "--class-weights", "--dropout", "0.1", "--l2", "1e-4", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == TrainingRecord.load(tmp_path).to_dict()
    assert record["recipe"] == "float+prune" and set(record["sparsity"]) == {"dense_2"}  # dense_1: 13x32 < 1024
    assert record["settings"]["class_weights"] and record["settings"]["model_options"]["widths"] == [32, 32]


@pytest.mark.parametrize("args,match", [
    (["--model", "nope", "--data", "digits"], "unknown model 'nope'"),
    (["--model", "mlp", "--data", "digits", "--prune", "1.5"], "strictly between 0 and 1"),
    (["--model", "mlp", "--data", "digits", "--augment", "rotate"], "augment takes flip, shift"),
    (["--model", "mlp", "--data", "digits", "--strategy", "gpu"], "sees no GPU"),
])
def test_cli_train_bad_input_is_one_line_and_exit_1(tmp_path, monkeypatch, args, match):
    import tensorflow as tf
    from click.testing import CliRunner

    from edgeship.cli import cli

    # a host without GPUs, whatever this one has: --strategy gpu must then be refused
    for lister in ("list_physical_devices", "list_logical_devices"):
        real = getattr(tf.config, lister)
        monkeypatch.setattr(tf.config, lister, lambda kind=None, real=real: [] if kind == "GPU" else real(kind))
    result = CliRunner().invoke(cli, ["train", *args, "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert match in result.output and result.output.count("error:") == 1
