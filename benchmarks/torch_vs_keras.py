"""PyTorch models through every format, beside the same network from Keras, on digits.

    .venv/bin/python benchmarks/torch_vs_keras.py [--epochs 4] [--runs 300]

Trains edgeship's torch zoo ResNet-8 and MobileNetV2-style net (plain torch.nn, NCHW) and the Keras
zoo ResNet-8 on the built-in digits, converts each to tflite fp32/fp16/int8, onnx fp32/int8 and coreml
fp16/w8, validates on the held-out test split and prints per file: seconds to convert, size, max abs
error against the float model, int8 agreement with float and accuracy. Then the int8 TFLite and
ONNX files of the two ResNet-8s are timed interleaved in one run (``runtimes.benchmark.compare``):
p50 and the torch/Keras ratio.

``--torchvision`` adds torchvision's ``mobilenet_v3_small`` (random weights, no download; a softmax
head appended), trained ``--epochs`` on the built-in shapes32 (32x32x3), through the same targets.
PyPI's torchvision 0.28 (the release for torch 2.13) is built against the CUDA torch: with the CPU
build its C++ ops (nms, roi_align, …) do not load and its import fails declaring a fake kernel for
``torchvision::nms``. The network uses none of them, so the two schemas that import needs are
declared here first. Install it beside the environment, not in it (transformers, which litert-torch
imports, would import it too):

    pip install --no-deps --target /tmp/tv torchvision==0.28.0
    PYTHONPATH=/tmp/tv .venv/bin/python benchmarks/torch_vs_keras.py --torchvision
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import edgeship as es
from edgeship.runtimes.benchmark import compare

TARGETS = "tflite:fp32,tflite:fp16,tflite:int8,onnx:fp32,onnx:int8,coreml:fp16,coreml:w8"


def _converted(model: object, data: es.Dataset, out: Path) -> dict[str, float]:
    """Convert to every target; seconds each took (from the previous one's end)."""
    seconds: dict[str, float] = {}
    last = time.perf_counter()

    def mark(artifact: es.Artifact) -> None:
        nonlocal last
        now = time.perf_counter()
        seconds[artifact.name] = now - last
        last = now

    es.convert(model, TARGETS, data=data, out=out, on_artifact=mark)
    return seconds


def _rows(title: str, out: Path, seconds: dict[str, float]) -> None:
    report = es.validate(out, write_bundle=False)
    print(f"\n{title}: float accuracy {report.reference_accuracy * 100:.2f}%")
    print(f"{'artifact':<14}{'convert s':>10}{'size KiB':>10}{'max err':>10}{'agree':>8}{'accuracy':>10}")
    for e in report.artifacts:
        v = e.validation
        if v is None:  # not measured here: the report says why
            print(f"{e.name:<14}{seconds.get(e.name, 0):>10.1f}{e.size_bytes / 1024:>10.1f}  {e.status}")
            continue
        print(f"{e.name:<14}{seconds.get(e.name, 0):>10.1f}{e.size_bytes / 1024:>10.1f}{v.max_abs_error:>10.2e}"
              f"{v.agreement * 100:>7.1f}%{v.accuracy * 100:>9.2f}%")


def _mobilenet_v3_small(classes: int) -> object:
    """torchvision's mobilenet_v3_small with random weights and a softmax head (edgeship's zoo ends in one)."""
    import torch

    lib = torch.library.Library("torchvision", "DEF")  # see the module docstring
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=classes)
    print(f"\ntorchvision {torchvision.__version__} mobilenet_v3_small: {sum(p.numel() for p in net.parameters())} "
          "parameters")
    return torch.nn.Sequential(net, torch.nn.Softmax(dim=1))


def main(epochs: int = 4, runs: int = 300, torchvision: bool = False) -> None:
    from edgeship.trainers.torch_zoo import build, fit

    nchw = es.load_dataset("digits", preprocess="layout=nchw")
    nhwc = es.load_dataset("digits")
    with tempfile.TemporaryDirectory(prefix="edgeship-torch-bench-") as tmp:
        root = Path(tmp)
        for name in ("resnet8", "mobilenet_v2"):
            net = fit(build(name, nchw), nchw, epochs=epochs)
            _rows(f"torch {name}", root / name, _converted(net, nchw, root / name))
        if torchvision:
            shapes = es.load_dataset("shapes32", preprocess="layout=nchw")
            net = fit(_mobilenet_v3_small(len(shapes.classes)), shapes, epochs=epochs)
            out = root / "mobilenet_v3_small"
            _rows("torchvision mobilenet_v3_small", out, _converted(net, shapes, out))
        es.train("resnet8", nhwc, out=root / "keras-model", epochs=epochs * 5)
        _rows("keras resnet8", root / "keras", _converted(root / "keras-model", nhwc, root / "keras"))
        print(f"\nint8 p50, interleaved in one run ({runs} runs each, 1 thread)")
        for suffix in ("int8.tflite", "int8.onnx"):
            torch_file, keras_file = root / "resnet8" / f"resnet8.{suffix}", root / "keras" / f"resnet8.{suffix}"
            t, k = compare([torch_file, keras_file], threads=1, runs=runs, warmup=20)
            print(f"{suffix:<12} torch {t.p50_ms * 1000:8.1f} us   keras {k.p50_ms * 1000:8.1f} us   "
                  f"torch/keras {t.p50_ms / k.p50_ms:5.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--torchvision", action="store_true", help="add torchvision's mobilenet_v3_small")
    args = parser.parse_args()
    from edgeship._deps import quiet_native

    with quiet_native():
        main(args.epochs, args.runs, args.torchvision)
