"""A small PyTorch zoo in plain ``torch.nn``, and a CPU training loop, for models that start in PyTorch.

    >>> from edgeship.trainers.torch_zoo import build, fit
    >>> data = edgeship.load_dataset("digits", preprocess="layout=nchw")     # PyTorch takes NCHW
    >>> net = fit(build("resnet8", data), data, epochs=8)                  # doctest: +SKIP
    >>> edgeship.convert(net, "tflite:int8,onnx:int8", data=data, out="out")   # doctest: +SKIP

``resnet8``: a 3x3 stem, three stages of one basic residual block (16, 32, 64 channels, stride 2
between stages), global pooling and a linear head; ``mobilenet_v2``: a MobileNetV2-style net of
inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, ReLU6) at width 16-64. Both end
in softmax, as edgeship's Keras zoo does, and take any NCHW image size. Module paths are what a
PyTorch user reads (``layer2.0.conv1``). ``pip install 'edgeship[torch]'`` brings torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship._deps import require
from edgeship.errors import BadInputError

if TYPE_CHECKING:
    from edgeship.data import Dataset

MODELS = ("resnet8", "mobilenet_v2")


def _nn() -> Any:
    return require("torch", "build PyTorch models").nn


def _block(channels_in: int, channels: int, stride: int) -> Any:
    nn = _nn()

    class BasicBlock(nn.Module):  # type: ignore[name-defined]  # torch is imported at run time
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU()
            self.shortcut = (
                nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
                if stride != 1 or channels_in != channels
                else nn.Identity()
            )

        def forward(self, x: Any) -> Any:
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    return BasicBlock()


def _inverted(channels_in: int, channels: int, stride: int, expand: int) -> Any:
    nn = _nn()

    class InvertedResidual(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            wide = channels_in * expand
            self.expand = nn.Sequential(nn.Conv2d(channels_in, wide, 1, bias=False), nn.BatchNorm2d(wide), nn.ReLU6())
            self.depthwise = nn.Sequential(
                nn.Conv2d(wide, wide, 3, stride, 1, groups=wide, bias=False), nn.BatchNorm2d(wide), nn.ReLU6()
            )
            self.project = nn.Sequential(nn.Conv2d(wide, channels, 1, bias=False), nn.BatchNorm2d(channels))
            self.residual = stride == 1 and channels_in == channels

        def forward(self, x: Any) -> Any:
            y = self.project(self.depthwise(self.expand(x)))
            return x + y if self.residual else y

    return InvertedResidual()


def build(name: str, data: Dataset, *, seed: int = 0) -> Any:
    """The zoo model ``name`` for ``data``'s NCHW samples and classes, with seeded initial weights."""
    torch = require("torch", "build PyTorch models")
    nn = torch.nn
    if name not in MODELS:
        raise BadInputError(f"the PyTorch zoo has {list(MODELS)}; received {name!r}")
    shape = tuple(data.input_shape)
    if len(shape) != 3 or shape[0] > shape[-1] and shape[-1] in (1, 3):
        raise BadInputError(
            f"the PyTorch zoo takes NCHW images; dataset '{data.name}' has samples of shape {shape}: load it with "
            "preprocess='layout=nchw'"
        )
    torch.manual_seed(seed)
    channels, classes = shape[0], data.num_classes

    class Net(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            if name == "resnet8":
                self.stem = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
                self.layer1 = nn.Sequential(_block(16, 16, 1))
                self.layer2 = nn.Sequential(_block(16, 32, 2))
                self.layer3 = nn.Sequential(_block(32, 64, 2))
                width = 64
            else:
                self.stem = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
                self.layer1 = nn.Sequential(_inverted(16, 16, 1, 1), _inverted(16, 24, 2, 4))
                self.layer2 = nn.Sequential(_inverted(24, 24, 1, 4), _inverted(24, 32, 2, 4))
                self.layer3 = nn.Sequential(_inverted(32, 64, 1, 4))
                width = 64
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(width, classes)

        def forward(self, x: Any) -> Any:
            x = self.layer3(self.layer2(self.layer1(self.stem(x))))
            return torch.softmax(self.fc(torch.flatten(self.pool(x), 1)), dim=-1)

    net = Net()
    net.__class__.__name__ = name  # the name convert gives its files: resnet8.int8.tflite
    return net.eval()


def fit(net: Any, data: Dataset, *, epochs: int = 8, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> Any:
    """Train ``net`` on ``data``'s training split with Adam and cross-entropy on CPU; returns it in eval mode."""
    torch = require("torch", "train PyTorch models")
    x = torch.from_numpy(np.array(data.x_train, dtype=np.float32))  # a copy: torch writes where it may
    y = torch.from_numpy(np.array(data.y_train, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            batch = order[i : i + batch_size]
            optimizer.zero_grad()
            probs = net(x[batch])
            loss = torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-7)), y[batch])
            loss.backward()
            optimizer.step()
    return net.eval()
