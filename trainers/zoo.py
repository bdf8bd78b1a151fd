"""The model zoo: compact tf_keras models that survive quantization, and a MAC counter.

Each builder takes the dataset's per-sample input shape and class count and returns an uncompiled
tf_keras model whose last layer is a softmax. ``MODELS`` is the registry; ``build_model`` is the
one entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeship._deps import keras as _keras
from edgeship.errors import BadInputError


@dataclass(frozen=True)
class ModelOptions:
    """Options every builder understands; a builder ignores what does not apply to it."""

    dropout: float = 0.0
    l2: float = 0.0
    widths: tuple[int, ...] = (64, 32)
    alpha: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise BadInputError(f"dropout must be in [0, 1); received {self.dropout}")
        if self.l2 < 0:
            raise BadInputError(f"l2 must be >= 0; received {self.l2}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise BadInputError(f"widths must be positive integers; received {self.widths}")
        if not 0 < self.alpha <= 1:
            raise BadInputError(f"alpha (width multiplier) must be in (0, 1]; received {self.alpha}")


# Keras' 0.99 lets BatchNormalization's moving statistics lag a few hundred steps behind the weights; on
# datasets of a few thousand samples that is most of a short run, and validation sits at chance meanwhile.
_BN_MOMENTUM = 0.9


def _reg(options: ModelOptions) -> Any:
    keras = _keras()
    return keras.regularizers.l2(options.l2) if options.l2 else None


class _Names:
    """Stable layer names (``conv_1``, ``conv_2`` …): sparsity and cluster reports are keyed by them, so they
    must not depend on how many models this process built before (Keras' own names do)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{kind}_{self.counts[kind]}"


def _head(x: Any, classes: int, options: ModelOptions) -> Any:
    keras = _keras()
    if options.dropout:
        x = keras.layers.Dropout(options.dropout, name="head_dropout")(x)
    # float32 even under a mixed-precision policy: a float16 softmax loses small probabilities.
    return keras.layers.Dense(
        classes, activation="softmax", kernel_regularizer=_reg(options), name="logits", dtype="float32"
    )(x)


def _need_image(name: str, shape: tuple[int, ...], min_side: int) -> None:
    if len(shape) != 3 or min(shape[:2]) < min_side:
        raise BadInputError(
            f"model '{name}' takes images (H, W, C) of at least {min_side}x{min_side}; received input shape "
            f"{shape}. Use 'mlp' for tabular data or a dataset with larger images."
        )


def mlp(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """Dense layers of ``options.widths`` with ReLU, dropout and L2 (tabular data; images are flattened)."""
    keras = _keras()
    inputs = keras.Input(shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(shape) > 1 else inputs
    for i, width in enumerate(options.widths, start=1):
        x = keras.layers.Dense(width, activation="relu", kernel_regularizer=_reg(options), name=f"dense_{i}")(x)
        if options.dropout:
            x = keras.layers.Dropout(options.dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(
        classes, activation="softmax", kernel_regularizer=_reg(options), name="logits", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name="mlp")


def tiny_cnn(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """Two 3x3 convolutions, pooling and a 64-unit dense head (the quickstart's model)."""
    _need_image("tiny_cnn", shape, 4)
    keras = _keras()
    names = _Names()
    inputs = keras.Input(shape, name="input")
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", kernel_regularizer=_reg(options), name=names("conv")
        )(x)
        if x.shape[1] > 8:
            x = keras.layers.MaxPooling2D(name=names("pool"))(x)
    x = keras.layers.MaxPooling2D(name=names("pool"))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", kernel_regularizer=_reg(options), name="dense_1")(x)
    return keras.Model(inputs, _head(x, classes, options), name="tiny_cnn")


def _conv_bn(
    x: Any, filters: int, kernel: Any, strides: int, options: ModelOptions, names: _Names, relu: bool = True
) -> Any:
    keras = _keras()
    x = keras.layers.Conv2D(
        filters, kernel, strides, padding="same", use_bias=False, kernel_regularizer=_reg(options), name=names("conv")
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=names("bn"))(x)
    return keras.layers.ReLU(name=names("relu"))(x) if relu else x


def _dw_bn(x: Any, strides: int, options: ModelOptions, names: _Names) -> Any:
    keras = _keras()
    x = keras.layers.DepthwiseConv2D(
        3, strides, padding="same", use_bias=False, depthwise_regularizer=_reg(options), name=names("dwconv")
    )(x)
    x = keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, name=names("bn"))(x)
    return keras.layers.ReLU(name=names("relu"))(x)


def ds_cnn(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """Depthwise-separable CNN in the MLPerf Tiny keyword-spotting shape (64 filters, 4 DS blocks)."""
    _need_image("ds_cnn", shape, 4)
    keras = _keras()
    names = _Names()
    inputs = keras.Input(shape, name="input")
    # MLPerf's 10x4 stem is for 49x10 MFCC spectrograms; square images get a 3x3 one.
    kernel = (10, 4) if shape[0] >= 3 * shape[1] else (3, 3)
    x = _conv_bn(inputs, 64, kernel, 2 if min(shape[:2]) >= 8 else 1, options, names)
    for _ in range(4):
        x = _dw_bn(x, 1, options, names)
        x = _conv_bn(x, 64, 1, 1, options, names)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _head(x, classes, options), name="ds_cnn")


def resnet8(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """MLPerf Tiny's image-classification ResNet-8: three residual stacks of 16/32/64 filters."""
    _need_image("resnet8", shape, 8)
    keras = _keras()
    names = _Names()
    inputs = keras.Input(shape, name="input")
    x = _conv_bn(inputs, 16, 3, 1, options, names)
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        y = _conv_bn(x, filters, 3, strides, options, names)
        y = _conv_bn(y, filters, 3, 1, options, names, relu=False)
        if strides != 1 or x.shape[-1] != filters:
            x = keras.layers.Conv2D(
                filters, 1, strides, padding="same", kernel_regularizer=_reg(options), name=names("shortcut")
            )(x)
        x = keras.layers.ReLU(name=names("relu"))(keras.layers.Add(name=names("add"))([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _head(x, classes, options), name="resnet8")


def mobilenet_v1(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """MobileNet v1 with width multiplier ``alpha`` (0.25: MLPerf Tiny's visual-wake-words shape)."""
    _need_image("mobilenet_v1", shape, 8)
    keras = _keras()
    names = _Names()

    def width(filters: int) -> int:
        return max(8, int(filters * options.alpha))

    inputs = keras.Input(shape, name="input")
    x = _conv_bn(inputs, width(32), 3, 2, options, names)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for filters, strides in plan:
        strides = strides if x.shape[1] >= 4 else 1  # small inputs keep their last few pixels
        x = _dw_bn(x, strides, options, names)
        x = _conv_bn(x, width(filters), 1, 1, options, names)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _head(x, classes, options), name="mobilenet_v1")


Builder = Callable[[tuple[int, ...], int, ModelOptions], Any]
MODELS: dict[str, Builder] = {
    "mlp": mlp,
    "tiny_cnn": tiny_cnn,
    "ds_cnn": ds_cnn,
    "resnet8": resnet8,
    "mobilenet_v1": mobilenet_v1,
}

# The input each model was designed for (MLPerf Tiny's for the last three), used by ``describe``.
REFERENCE_INPUTS: dict[str, tuple[tuple[int, ...], int]] = {
    "mlp": ((8, 8, 1), 10),
    "tiny_cnn": ((8, 8, 1), 10),
    "ds_cnn": ((49, 10, 1), 12),
    "resnet8": ((32, 32, 3), 10),
    "mobilenet_v1": ((96, 96, 3), 2),
}


def build_model(name: str, input_shape: tuple[int, ...], classes: int, options: ModelOptions | None = None) -> Any:
    """Build zoo model ``name`` for one dataset's input shape and class count.

    >>> build_model("resnet8", (32, 32, 3), 10).count_params()      # doctest: +SKIP
    78426
    """
    if name not in MODELS:
        raise BadInputError(f"unknown model '{name}'; the zoo has {', '.join(MODELS)} (see 'edgeship list-models')")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise BadInputError(f"a classifier needs at least 2 classes; received {classes!r}")
    return MODELS[name](tuple(int(d) for d in input_shape), int(classes), options or ModelOptions())


def describe(name: str, input_shape: tuple[int, ...] | None = None, classes: int | None = None) -> dict[str, Any]:
    """Name, one-line description, input, parameters and MACs of zoo model ``name``.

    Without ``input_shape``/``classes`` the model's reference input (``REFERENCE_INPUTS``) is used.
    """
    if name not in MODELS:
        raise BadInputError(f"unknown model '{name}'; the zoo has {', '.join(MODELS)}")
    ref_shape, ref_classes = REFERENCE_INPUTS[name]
    shape, classes = tuple(input_shape or ref_shape), int(classes or ref_classes)
    model = build_model(name, shape, classes)
    return {
        "name": name,
        "description": (MODELS[name].__doc__ or "").strip().splitlines()[0].replace("``", ""),
        "input_shape": list(shape),
        "classes": classes,
        "params": int(model.count_params()),
        "macs": count_macs(model),
    }


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one inference (batch 1) in Conv2D, DepthwiseConv2D and Dense layers.

    Other layers (pooling, BatchNormalization, activations, adds) are not counted: on the models of
    the zoo they are under 2% of the work. tfmot wrappers (pruning, clustering, QAT) count as their layer.
    """
    keras = _keras()
    macs = 0
    for layer in _leaf_layers(model):
        inner = getattr(layer, "layer", layer)  # tfmot wrappers hold the real layer
        if not isinstance(inner, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            continue
        try:
            in_shape, out_shape = layer.input_shape, layer.output_shape
        except (AttributeError, RuntimeError) as exc:
            raise BadInputError(
                f"count_macs needs a built model with one input node per layer; layer '{layer.name}' has no single "
                f"input/output shape ({exc}). Build the model on an input shape first"
            ) from exc
        macs += _layer_macs(keras, inner, in_shape, out_shape)
    return int(macs)


def _layer_macs(keras: Any, layer: Any, in_shape: tuple, out_shape: tuple) -> int:
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # one kh*kw filter per output channel
        kh, kw = layer.kernel_size
        return kh * kw * out_shape[1] * out_shape[2] * out_shape[3]
    if isinstance(layer, keras.layers.Conv2DTranspose):  # every input pixel scatters a kh*kw*cout patch
        kh, kw = layer.kernel_size
        return kh * kw * in_shape[1] * in_shape[2] * in_shape[3] * out_shape[3]
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = in_shape[-1] // layer.groups
        return kh * kw * cin * out_shape[1] * out_shape[2] * out_shape[3]
    positions = 1  # Dense on a (batch, ..., features) tensor applies at every leading position
    for d in out_shape[1:-1]:
        positions *= d
    return in_shape[-1] * layer.units * positions


def _leaf_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "layer"):
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out
