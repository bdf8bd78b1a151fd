"""The model zoo: compact tf_keras models that survive quantization, and a MAC counter.

Each builder takes the dataset's per-sample input shape and class count and returns an uncompiled
tf_keras model whose last layer is a softmax. ``MODELS`` is the registry; ``build_model`` is the
one entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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


def _reg(options: ModelOptions) -> Any:
    keras = _keras()
    return keras.regularizers.l2(options.l2) if options.l2 else None


def _head(x: Any, classes: int, options: ModelOptions) -> Any:
    keras = _keras()
    if options.dropout:
        x = keras.layers.Dropout(options.dropout)(x)
    return keras.layers.Dense(classes, activation="softmax", kernel_regularizer=_reg(options), name="logits")(x)


def _need_image(name: str, shape: tuple[int, ...], min_side: int) -> None:
    if len(shape) != 3 or min(shape[:2]) < min_side:
        raise BadInputError(
            f"model '{name}' takes images of at least {min_side}x{min_side}xC; received input shape {shape}. "
            "Use 'mlp' for tabular data."
        )


def mlp(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """Dense layers of ``options.widths`` with ReLU; images are flattened first."""
    keras = _keras()
    inputs = keras.Input(shape, name="input")
    x = keras.layers.Flatten()(inputs) if len(shape) > 1 else inputs
    for i, width in enumerate(options.widths):
        x = keras.layers.Dense(width, activation="relu", kernel_regularizer=_reg(options), name=f"dense_{i}")(x)
        if options.dropout:
            x = keras.layers.Dropout(options.dropout)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", kernel_regularizer=_reg(options), name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")


def tiny_cnn(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """Two 3x3 convolutions, a pooling step, and a small dense head (the quickstart's model)."""
    _need_image("tiny_cnn", shape, 4)
    keras = _keras()
    inputs = keras.Input(shape, name="input")
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_regularizer=_reg(options))(x)
        if x.shape[1] > 8:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", kernel_regularizer=_reg(options))(x)
    return keras.Model(inputs, _head(x, classes, options), name="tiny_cnn")


def _conv_bn(x: Any, filters: int, kernel: int, strides: int, options: ModelOptions, relu: bool = True) -> Any:
    keras = _keras()
    x = keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False, kernel_regularizer=_reg(options))(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x) if relu else x


def _dw_bn(x: Any, strides: int, options: ModelOptions) -> Any:
    keras = _keras()
    x = keras.layers.DepthwiseConv2D(3, strides, padding="same", use_bias=False, depthwise_regularizer=_reg(options))(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def ds_cnn(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """Depthwise-separable CNN in the MLPerf Tiny keyword-spotting shape (64 filters, 4 DS blocks)."""
    _need_image("ds_cnn", shape, 4)
    keras = _keras()
    inputs = keras.Input(shape, name="input")
    stride = 2 if min(shape[:2]) >= 16 else 1
    x = _conv_bn(inputs, 64, 3, stride, options)
    for _ in range(4):
        x = _dw_bn(x, 1, options)
        x = _conv_bn(x, 64, 1, 1, options)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(x, classes, options), name="ds_cnn")


def resnet8(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """MLPerf Tiny's image-classification ResNet: three residual stacks of 16/32/64 filters."""
    _need_image("resnet8", shape, 8)
    keras = _keras()
    inputs = keras.Input(shape, name="input")
    x = _conv_bn(inputs, 16, 3, 1, options)
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        y = _conv_bn(x, filters, 3, strides, options)
        y = _conv_bn(y, filters, 3, 1, options, relu=False)
        if strides != 1 or x.shape[-1] != filters:
            x = keras.layers.Conv2D(filters, 1, strides, padding="same", kernel_regularizer=_reg(options))(x)
        x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(x, classes, options), name="resnet8")


def mobilenet_v1(shape: tuple[int, ...], classes: int, options: ModelOptions) -> Any:
    """MobileNet v1 with width multiplier ``alpha`` (0.25: MLPerf Tiny's visual-wake-words shape)."""
    _need_image("mobilenet_v1", shape, 8)
    keras = _keras()

    def width(filters: int) -> int:
        return max(8, int(filters * options.alpha))

    inputs = keras.Input(shape, name="input")
    x = _conv_bn(inputs, width(32), 3, 2, options)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for filters, strides in plan:
        strides = strides if x.shape[1] >= 4 else 1  # small inputs keep their last few pixels
        x = _dw_bn(x, strides, options)
        x = _conv_bn(x, width(filters), 1, 1, options)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(x, classes, options), name="mobilenet_v1")


Builder = Callable[[tuple[int, ...], int, ModelOptions], Any]
MODELS: dict[str, Builder] = {
    "mlp": mlp,
    "tiny_cnn": tiny_cnn,
    "ds_cnn": ds_cnn,
    "resnet8": resnet8,
    "mobilenet_v1": mobilenet_v1,
}


def build_model(name: str, input_shape: tuple[int, ...], classes: int, options: ModelOptions | None = None) -> Any:
    """Build zoo model ``name`` for one dataset's input shape and class count."""
    if name not in MODELS:
        raise BadInputError(f"unknown model '{name}'; the zoo has {sorted(MODELS)}")
    if classes < 2:
        raise BadInputError(f"a classifier needs at least 2 classes; received {classes}")
    return MODELS[name](tuple(int(d) for d in input_shape), int(classes), options or ModelOptions())


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one inference (batch 1) in Conv2D, DepthwiseConv2D and Dense layers."""
    keras = _keras()
    macs = 0
    for layer in _leaf_layers(model):
        inner = getattr(layer, "layer", layer)  # tfmot wrappers hold the real layer
        if isinstance(inner, keras.layers.DepthwiseConv2D):
            kh, kw = inner.kernel_size
            _, oh, ow, oc = layer.output_shape
            macs += kh * kw * oh * ow * oc
        elif isinstance(inner, keras.layers.Conv2D):
            kh, kw = inner.kernel_size
            cin = layer.input_shape[-1] // inner.groups
            _, oh, ow, oc = layer.output_shape
            macs += kh * kw * cin * oh * ow * oc
        elif isinstance(inner, keras.layers.Dense):
            units_in = layer.input_shape[-1]
            positions = 1
            for d in layer.output_shape[1:-1]:
                positions *= d
            macs += units_in * inner.units * positions
    return int(macs)


def _leaf_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "layer"):
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out
