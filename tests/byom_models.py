"""Models built the way their owners build them, with their data in the form they keep it.

Each builder trains a small seeded tf_keras model (or writes an ONNX graph) on built-in or
generated data, saves it and its data under ``folder``, and returns a Case: the model file, the
data (a .npz or a built-in name), the preprocessing its owner used, the formats to ask for and what
edgeship should detect. ``tests/test_byom.py`` runs them through the API; ``benchmarks/byom_sweep.py``
through the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402

TARGETS = ("tflite:int8", "onnx:int8", "coreml:fp16")


@dataclass
class Case:
    name: str
    model: Path
    data: str
    preprocess: str | None
    task: str
    targets: tuple[str, ...] = TARGETS
    refused: dict[str, str] = field(default_factory=dict)  # target -> words the refusal must hold
    not_evaluated: tuple[str, ...] = ()  # targets the numpy Core ML evaluator cannot run


def _keras():
    from edgeship._deps import keras

    keras().utils.set_random_seed(0)
    return keras()


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as their owner keeps them: uint8 0..16, (N, 8, 8), a fixed split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.images.astype(np.uint8), bunch.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(x))
    train, test = idx[:1400], idx[1400:]
    return x[train], y[train], x[test], y[test]


def _fit(model, x, y, loss, epochs: int, **kw) -> None:
    model.compile("adam", loss, **kw)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)


def multiclass_cnn(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    xtr, ytr, xte, yte = _digits()
    m = k.Sequential([k.Input((8, 8, 1)), L.Conv2D(16, 3, activation="relu"), L.Flatten(),
                      L.Dense(10, activation="softmax")])
    _fit(m, xtr[..., None] / 16.0, ytr, "sparse_categorical_crossentropy", 8)
    np.savez(folder / "digits16.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    m.save(folder / "cnn.keras")
    return Case("multiclass_cnn", folder / "cnn.keras", str(folder / "digits16.npz"), "scale=0.0625", "multiclass")


def logits_head(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    xtr, ytr, xte, yte = _digits()
    m = k.Sequential([k.Input((64,)), L.Dense(32, activation="relu"), L.Dense(10)])
    _fit(m, xtr.reshape(-1, 64) / 16.0, ytr, k.losses.SparseCategoricalCrossentropy(from_logits=True), 10)
    np.savez(folder / "digits_flat.npz", x_train=xtr.reshape(-1, 64).astype(np.float32) / 16,
             y_train=ytr, x_test=xte.reshape(-1, 64).astype(np.float32) / 16, y_test=yte)
    m.save(folder / "logits.keras")
    return Case("logits_head", folder / "logits.keras", str(folder / "digits_flat.npz"), None, "multiclass")


def binary_sigmoid(folder: Path) -> Case:
    from edgeship.data import load_dataset

    k, L = _keras(), _keras().layers
    d = load_dataset("breast_cancer")
    m = k.Sequential([k.Input((30,)), L.Dense(16, activation="relu"), L.Dense(1, activation="sigmoid")])
    _fit(m, d.x_train, d.y_train, "binary_crossentropy", 15)
    m.save(folder / "binary.keras")
    return Case("binary_sigmoid", folder / "binary.keras", "breast_cancer", None, "binary")


def multilabel(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    rng = np.random.default_rng(1)
    x, xt = rng.normal(size=(800, 12)).astype(np.float32), rng.normal(size=(200, 12)).astype(np.float32)
    label = lambda a: np.stack([a[:, 0] > 0, a[:, 1] + a[:, 2] > 0, a[:, 3] > 0.5, a[:, 4] * a[:, 5] > 0], 1)  # noqa: E731
    y, yt = label(x).astype(np.int64), label(xt).astype(np.int64)
    m = k.Sequential([k.Input((12,)), L.Dense(32, activation="relu"), L.Dense(4, activation="sigmoid")])
    _fit(m, x, y, "binary_crossentropy", 20)
    np.savez(folder / "tags.npz", x_train=x, y_train=y, x_test=xt, y_test=yt, classes=np.array(["a", "b", "c", "d"]))
    m.save(folder / "multilabel.keras")
    return Case("multilabel", folder / "multilabel.keras", str(folder / "tags.npz"), None, "multilabel")


def regression(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    rng = np.random.default_rng(2)
    x, xt = rng.uniform(-1, 1, (800, 6)).astype(np.float32), rng.uniform(-1, 1, (200, 6)).astype(np.float32)
    f = lambda a: (2 * a[:, 0] - a[:, 1] ** 2 + 0.5 * a[:, 2] * a[:, 3]).astype(np.float32)  # noqa: E731
    m = k.Sequential([k.Input((6,)), L.Dense(32, activation="relu"), L.Dense(1)])
    _fit(m, x, f(x), "mse", 30)
    np.savez(folder / "regress.npz", x_train=x, y_train=f(x), x_test=xt, y_test=f(xt))
    m.save(folder / "regression.keras")
    return Case("regression", folder / "regression.keras", str(folder / "regress.npz"), None, "regression")


def autoencoder(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(4, 64)).astype(np.float32)
    normal = lambda n: (rng.normal(size=(n, 4)) @ basis).astype(np.float32)  # noqa: E731
    x, xt = normal(1000), normal(200)
    labels = np.zeros(200, np.int64)
    labels[:30] = 1
    xt[:30] += rng.normal(scale=1.0, size=(30, 64)).astype(np.float32)  # off the normal subspace
    m = k.Sequential([k.Input((64,)), L.Dense(8, activation="relu"), L.Dense(64)])
    _fit(m, x, x, "mse", 30)
    np.savez(folder / "sensor.npz", x_train=x, x_test=xt, y_test=labels)
    m.save(folder / "autoencoder.keras")
    return Case("autoencoder", folder / "autoencoder.keras", str(folder / "sensor.npz"), None, "autoencoder")


def two_outputs(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    xtr, ytr, xte, yte = _digits()
    inp = k.Input((8, 8, 1))
    h = L.Dense(32, activation="relu")(L.Flatten()(inp))
    m = k.Model(inp, [L.Dense(10, activation="softmax", name="digit")(h), L.Dense(1, activation="sigmoid", name="even")(h)])
    m.compile("adam", ["sparse_categorical_crossentropy", "binary_crossentropy"])
    m.fit(xtr[..., None] / 16.0, [ytr, (ytr % 2 == 0).astype(np.float32)], epochs=10, batch_size=32, verbose=0)
    np.savez(folder / "digits2.npz", x_train=xtr, x_test=xte, y_train_0=ytr, y_test_0=yte,
             y_train_1=(ytr % 2 == 0).astype(np.int64), y_test_1=(yte % 2 == 0).astype(np.int64))
    m.save(folder / "two_outputs.keras")
    return Case("two_outputs", folder / "two_outputs.keras", str(folder / "digits2.npz"), "scale=0.0625", "multiclass")


def token_ids(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    rng = np.random.default_rng(4)
    x, xt = rng.integers(0, 40, (800, 10)).astype(np.int32), rng.integers(0, 40, (200, 10)).astype(np.int32)
    y, yt = (x[:, :3].min(1) < 8).astype(np.int64), (xt[:, :3].min(1) < 8).astype(np.int64)
    m = k.Sequential([k.Input((10,), dtype="int32"), L.Embedding(40, 8), L.Flatten(), L.Dense(16, activation="relu"),
                      L.Dense(2, activation="softmax")])
    _fit(m, x, y, "sparse_categorical_crossentropy", 10)
    np.savez(folder / "tokens.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    m.save(folder / "tokens.keras")
    return Case("token_ids", folder / "tokens.keras", str(folder / "tokens.npz"), None, "multiclass",
                not_evaluated=("coreml:fp16",))


def gru_sequences(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    rng = np.random.default_rng(5)
    x, xt = rng.normal(size=(600, 12, 4)).astype(np.float32), rng.normal(size=(150, 12, 4)).astype(np.float32)
    y, yt = (x[:, -3:, 0].sum(1) > 0).astype(np.int64), (xt[:, -3:, 0].sum(1) > 0).astype(np.int64)
    m = k.Sequential([k.Input((12, 4)), L.GRU(16, unroll=True), L.Dense(2, activation="softmax")])
    _fit(m, x, y, "sparse_categorical_crossentropy", 8)
    np.savez(folder / "sequences.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    m.save(folder / "gru.keras")
    return Case("gru_sequences", folder / "gru.keras", str(folder / "sequences.npz"), None, "multiclass",
                refused={"coreml:fp16": "coremltools"})


def fully_convolutional(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    xtr, ytr, _, _ = _digits()
    m = k.Sequential([k.Input((None, None, 1)), L.Conv2D(32, 3, activation="relu"), L.Conv2D(32, 3, activation="relu"),
                      L.GlobalMaxPooling2D(), L.Dense(10, activation="softmax")])
    _fit(m, xtr[..., None] / 16.0, ytr, "sparse_categorical_crossentropy", 15)
    m.save(folder / "fcn.keras")
    return Case("fully_convolutional", folder / "fcn.keras", str(folder / "digits16.npz"), "scale=0.0625", "multiclass")


def nested_rescaling(folder: Path) -> Case:
    """A backbone wrapped behind Rescaling: it takes 0..255 pixels, so its data needs no scaling."""
    k, L = _keras(), _keras().layers
    xtr, ytr, xte, yte = _digits()
    backbone = k.Sequential([k.Input((8, 8, 1)), L.Conv2D(16, 3, activation="relu"), L.Flatten(),
                             L.Dense(32, activation="relu")], name="backbone")
    inp = k.Input((8, 8, 1))
    m = k.Model(inp, L.Dense(10, activation="softmax")(backbone(L.Rescaling(1 / 255)(inp))))
    pixels = lambda a: (a.astype(np.float32) * 255 / 16).round().astype(np.uint8)  # noqa: E731
    _fit(m, pixels(xtr)[..., None].astype(np.float32), ytr, "sparse_categorical_crossentropy", 10)
    np.savez(folder / "digits255.npz", x_train=pixels(xtr), y_train=ytr, x_test=pixels(xte), y_test=yte)
    m.save(folder / "nested.keras")
    return Case("nested_rescaling", folder / "nested.keras", str(folder / "digits255.npz"), "none", "multiclass")


def raw_pixels_cnn(folder: Path) -> Case:
    """A CNN trained on raw 0..255 float pixels, no Rescaling layer: its data must reach it as stored."""
    k, L = _keras(), _keras().layers
    xtr, ytr, xte, yte = _digits()
    m = k.Sequential([k.Input((8, 8, 1)), L.Conv2D(16, 3, activation="relu"), L.Flatten(),
                      L.Dense(10, activation="softmax")])
    raw = lambda a: (a.astype(np.float32) * 255 / 16).round()  # noqa: E731
    _fit(m, raw(xtr)[..., None], ytr, "sparse_categorical_crossentropy", 8)
    np.savez(folder / "digits255f.npz", x_train=raw(xtr), y_train=ytr, x_test=raw(xte), y_test=yte)
    m.save(folder / "raw255.keras")
    return Case("raw_pixels_cnn", folder / "raw255.keras", str(folder / "digits255f.npz"), None, "multiclass")


def two_inputs(folder: Path) -> Case:
    k, L = _keras(), _keras().layers
    xtr, ytr, xte, yte = _digits()
    image, side = k.Input((8, 8, 1)), k.Input((2,))
    h = L.Concatenate()([L.Flatten()(image), side])
    m = k.Model([image, side], L.Dense(10, activation="softmax")(L.Dense(32, activation="relu")(h)))
    rng = np.random.default_rng(6)
    s, st = rng.normal(size=(len(xtr), 2)).astype(np.float32), rng.normal(size=(len(xte), 2)).astype(np.float32)
    _fit(m, [xtr[..., None] / 16.0, s], ytr, "sparse_categorical_crossentropy", 8)
    np.savez(folder / "two_inputs.npz", x_train_0=xtr.astype(np.float32)[..., None] / 16, x_train_1=s, y_train=ytr,
             x_test_0=xte.astype(np.float32)[..., None] / 16, x_test_1=st, y_test=yte)
    m.save(folder / "two_inputs.keras")
    return Case("two_inputs", folder / "two_inputs.keras", str(folder / "two_inputs.npz"), None, "multiclass")


def nchw_onnx(folder: Path) -> Case:
    """A channels-first ONNX classifier, as PyTorch exports them: Conv (NCHW) -> ReLU -> Flatten ->
    Gemm -> Softmax, with weights trained in Keras and transposed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, L = _keras(), _keras().layers
    xtr, ytr, _, _ = _digits()
    m = k.Sequential([k.Input((8, 8, 1)), L.Conv2D(16, 3, activation="relu"), L.Flatten(),
                      L.Dense(10, activation="softmax")])
    _fit(m, xtr[..., None] / 16.0, ytr, "sparse_categorical_crossentropy", 8)
    (kernel, bias), (dense, dense_bias) = m.layers[0].get_weights(), m.layers[2].get_weights()
    # NCHW flattens (C, H, W) where Keras flattened (H, W, C): reorder the dense rows to match
    dense = dense.reshape(6, 6, 16, 10).transpose(2, 0, 1, 3).reshape(-1, 10)
    weights = [numpy_helper.from_array(kernel.transpose(3, 2, 0, 1).copy(), "conv_w"),
               numpy_helper.from_array(bias, "conv_b"), numpy_helper.from_array(dense.T.copy(), "fc_w"),
               numpy_helper.from_array(dense_bias, "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "nchw", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch-like")
    model.ir_version = 8
    onnx.save(model, folder / "nchw.onnx")
    refusal = "ONNX model; edgeship converts ONNX to onnx:int8/onnx:dynamic only"
    return Case("nchw_onnx", folder / "nchw.onnx", str(folder / "digits16.npz"), "scale=0.0625,layout=nchw",
                "multiclass", targets=("onnx:int8", "onnx:dynamic", "tflite:int8", "coreml:fp16"),
                refused={"tflite:int8": refusal, "coreml:fp16": "ONNX"})


#: every case, in an order where the .npz files a later case reuses are written first
BUILDERS: tuple[Callable[[Path], Case], ...] = (
    multiclass_cnn, logits_head, binary_sigmoid, multilabel, regression, autoencoder, two_outputs, token_ids,
    gru_sequences, fully_convolutional, nested_rescaling, raw_pixels_cnn, two_inputs, nchw_onnx,
)
