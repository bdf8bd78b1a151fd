"""The doctor on a ResNet-8 with planted outlier channels, raw and nested behind Rescaling.

    .venv/bin/python benchmarks/doctor_outliers.py                    # both variants, about 15 minutes on 2 cores
    .venv/bin/python benchmarks/doctor_outliers.py --variant nested --out /tmp/outliers

A ResNet-8 is trained briefly on the generated 32x32x3 shapes (seeded). Four output channels of
the first block's first BatchNormalization are scaled x500 and the next convolution's matching
input weights divided by 500: ReLU is positively homogeneous, so the float model is unchanged
(the max abs difference is printed) while per-tensor int8 activations crush the other channels.
``nested`` puts that network, as one layer, behind ``Rescaling(1/255)`` and feeds it 0..255
pixels, the way a backbone trained elsewhere is wrapped.

For each variant and format (tflite:int8, onnx:int8) the table gives, on the test split:
the plain artifact; the plain TFLiteConverter with the same calibration samples (int8 I/O); the
doctor's recovery (method, accuracy delta, size against plain int8); and with equalization and
int16 switched off, the float fallback, whose float layers and size are checked against the file
it wrote. The margin verdict (ambiguity or damage) of each doctor run is printed too.
Exits 1 when a recovery misses the drop, is more than 1.1x the int8 size with equalization, or a
report disagrees with its file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeship as es
from edgeship._deps import keras as _keras

MAX_DROP = 1.0
PLANTED = (0, 3, 5, 9)
SCALE = 500.0


def train(out: Path):
    from edgeship.trainers import saving

    data = es.load_dataset("shapes32")
    if not (out / "model" / "training.json").exists():
        es.train("resnet8", data, out=out / "model", epochs=4, seed=0)
    _, reference, _ = saving.load_trained(out / "model")
    return data, reference


def plant(model):
    """A copy of ``model`` with four channels of bn_2's output x500 and conv_3's inputs /500."""
    keras = _keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    bn, conv = clone.get_layer("bn_2"), clone.get_layer("conv_3")
    gamma, beta, mean, var = bn.get_weights()
    idx = list(PLANTED)
    gamma[idx] *= SCALE
    beta[idx] *= SCALE
    bn.set_weights([gamma, beta, mean, var])
    (kernel,) = conv.get_weights()
    kernel[:, :, idx, :] /= SCALE
    conv.set_weights([kernel])
    return clone


def nested(backbone):
    keras = _keras()
    backbone._name = "backbone"
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    return keras.Model(inputs, backbone(x), name="nested_resnet8")


def pixels(data, folder: Path):
    """The shapes as 0..255 pixels (a .npz with the same splits), loaded without preprocessing."""
    path = folder / "shapes32_pixels.npz"
    np.savez(path, **{f"{a}_{s}": (getattr(data, f"{a}_{s}") * 255.0 if a == "x" else getattr(data, f"{a}_{s}"))
                      for a in ("x", "y") for s in ("train", "val", "test")})
    return es.load_dataset(str(path), preprocess="none")


def plain_converter(model, data, samples: int) -> float:
    """Agreement with float of the plain TFLiteConverter (Optimize.DEFAULT, int8 I/O, same samples)."""
    import tensorflow as tf

    from edgeship.runtimes import load

    calib = data.calibration(samples)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plain.tflite"
        path.write_bytes(converter.convert())
        outputs = load(path).predict(data.x_test)
    reference = model.predict(data.x_test, verbose=0)
    return float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))


def verdict(diagnosis) -> str:
    kinds = [a.kind for a in diagnosis.advice if a.kind in ("ambiguity", "damage")]
    return kinds[0] if kinds else "-"


def run(variant: str, model, data, out: Path) -> list[dict]:
    from edgeship.doctor import diagnose
    from edgeship.doctor import readback
    from edgeship.doctor.layers import leaf_names

    folder = out / variant
    shutil.rmtree(folder, ignore_errors=True)
    es.convert(model, "tflite:int8,onnx:int8", data=data, out=folder)
    plain = es.validate(folder, data=data, write_bundle=False)
    shutil.rmtree(out / f"{variant}-no-equalize", ignore_errors=True)
    off = Path(shutil.copytree(folder, out / f"{variant}-no-equalize"))
    rows = []
    t = time.monotonic()
    with_eq = diagnose(folder, data=data, max_drop=MAX_DROP, runs=50)
    t_eq = time.monotonic() - t
    t = time.monotonic()
    without = diagnose(off, data=data, max_drop=MAX_DROP, runs=50, equalize=False, int16=False)
    t_off = time.monotonic() - t
    from edgeship.records import Manifest

    samples = int(Manifest.load(folder).get("tflite:int8").settings["calibration_samples"])
    plain_tflite = plain_converter(model, data, samples)
    for name in ("tflite:int8", "onnx:int8"):
        entry = next(e for e in plain.artifacts if e.name == name)
        eq, fb = with_eq.diagnosis(name), without.diagnosis(name)
        r_eq, r_fb = eq.recovery, fb.recovery
        held = readback.read(off / r_fb.artifact.path, leaf_names(model)) if r_fb.artifact else None
        rows.append({
            "variant": variant, "artifact": name,
            "plain_delta": entry.validation.accuracy_delta_pts, "plain_agreement": entry.validation.agreement,
            "plain_converter_agreement": plain_tflite if name == "tflite:int8" else None,
            "verdict": verdict(eq), "margins_confident": eq.margins.confident_agreement if eq.margins else None,
            "eq_method": r_eq.method, "eq_delta": r_eq.test.accuracy_delta_pts if r_eq.test else None,
            "eq_agreement": r_eq.test.agreement if r_eq.test else None, "eq_size": r_eq.size_ratio,
            "eq_within": r_eq.within_drop, "eq_seconds": round(t_eq, 1),
            "fb_method": r_fb.method, "fb_delta": r_fb.test.accuracy_delta_pts if r_fb.test else None,
            "fb_size": r_fb.size_ratio, "fb_layers": list(r_fb.float_layers),
            "fb_requested": list(r_fb.requested_float_layers), "fb_within": r_fb.within_drop,
            "fb_file_layers": list(held.float_layers) if held else None,
            "fb_file_size": (off / r_fb.artifact.path).stat().st_size if r_fb.artifact else None,
            "fb_report_size": r_fb.artifact.size_bytes if r_fb.artifact else None,
            "fb_float_ops": f"{len(r_fb.float_ops)}/{r_fb.compute_ops}", "fb_seconds": round(t_off, 1),
        })
    return rows


def clean(model, data, out: Path) -> list[str]:
    """``convert`` with and without ``equalize`` on the network as trained (no planted outlier):
    whether equalization could be convert's default."""
    lines = []
    results = {}
    for equalize in (False, True):
        folder = out / f"clean-{'eq' if equalize else 'plain'}"
        shutil.rmtree(folder, ignore_errors=True)
        es.convert(model, "tflite:int8,onnx:int8", data=data, out=folder,
                   options={"tflite": {"equalize": equalize}, "onnx": {"equalize": equalize}})
        report = es.validate(folder, data=data, write_bundle=False)
        results[equalize] = {e.name: e.validation for e in report.artifacts if e.validation}
    plain = plain_converter(model, data, 200)
    for name in ("tflite:int8", "onnx:int8"):
        a, b = results[False][name], results[True][name]
        lines.append(f"| as trained | {name} | {a.accuracy_delta_pts:+.2f} pts, agreement {a.agreement:.1%} "
                     f"| {b.accuracy_delta_pts:+.2f} pts, agreement {b.agreement:.1%} "
                     f"| {f'{plain:.1%}' if name == 'tflite:int8' else ''} |")
    return lines


def spiky(out: Path) -> list[str]:
    """The suite's digits MLP with four 1000x channels that nothing reads (tests/test_doctor.py):
    edgeship's int8 against the plain TFLiteConverter on the same samples, and the doctor's fix."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_doctor import _spiky_model

    from edgeship.doctor import diagnose

    data = es.load_dataset("digits")
    model = _spiky_model(data)
    folder = out / "spiky"
    shutil.rmtree(folder, ignore_errors=True)
    es.convert(model, "tflite:int8,onnx:int8", data=data, out=folder)
    report = es.validate(folder, data=data, write_bundle=False)
    doctor = diagnose(folder, data=data, max_drop=MAX_DROP, runs=50)
    plain = plain_converter(model, data, 200)
    lines = []
    for e in report.artifacts:
        r = doctor.diagnosis(e.name).recovery
        lines.append(f"| spiky MLP | {e.name} | {e.validation.accuracy_delta_pts:+.2f} pts, agreement "
                     f"{e.validation.agreement:.1%} | {f'{plain:.1%}' if e.name == 'tflite:int8' else ''} "
                     f"| {verdict(doctor.diagnosis(e.name))} | {r.method}, {r.test.accuracy_delta_pts:+.2f} on test, "
                     f"x{r.size_ratio:.2f}, float {list(r.float_layers)} ({len(r.float_ops)}/{r.compute_ops} ops) |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("raw", "nested", "both"), default="both")
    parser.add_argument("--spiky", action="store_true", help="also the suite's digits MLP with spiky channels")
    parser.add_argument("--clean", action="store_true", help="also convert the unplanted network with and without "
                        "equalize")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="edgeship-outliers-"))
    out.mkdir(parents=True, exist_ok=True)
    data, reference = train(out)
    planted = plant(reference)
    x = data.x_test[:500]
    diff = float(np.abs(planted.predict(x, verbose=0) - reference.predict(x, verbose=0)).max())
    print(f"planted x{SCALE:g} on bn_2 channels {list(PLANTED)}: float max abs diff {diff:.2g}")
    rows = []
    if args.variant in ("raw", "both"):
        rows += run("raw", planted, data, out)
    if args.variant in ("nested", "both"):
        rows += run("nested", nested(plant(reference)), pixels(data, out), out)
    (out / "outliers.json").write_text(json.dumps(rows, indent=1))
    print("\n| variant | artifact | plain int8 | plain TFLiteConverter agreement | verdict | equalize on: method, "
          "delta, size | equalize off: method, delta, size, float ops, layers asked -> in the file | report = file |")
    print("|---|---|---|---|---|---|---|---|")
    failed = 0
    for r in rows:
        same = r["fb_layers"] == r["fb_file_layers"] and r["fb_file_size"] == r["fb_report_size"]
        ok = r["eq_within"] and (r["eq_size"] or 9) <= 1.1 and same
        failed += not ok
        pc = "" if r["plain_converter_agreement"] is None else f"{r['plain_converter_agreement']:.1%}"
        print(f"| {r['variant']} | {r['artifact']} | {r['plain_delta']:+.2f} pts, agreement {r['plain_agreement']:.1%} "
              f"| {pc} | {r['verdict']} | {r['eq_method']}, {r['eq_delta']:+.2f}, x{r['eq_size']:.2f} "
              f"| {r['fb_method']}, {r['fb_delta'] if r['fb_delta'] is None else format(r['fb_delta'], '+.2f')}, "
              f"x{r['fb_size'] or 0:.2f}, {r['fb_float_ops']}, {r['fb_requested']} -> {r['fb_file_layers']} "
              f"| {'yes' if same else 'NO'} |")
    print("\nseconds per doctor run (both artifacts): " + ", ".join(
        f"{r['variant']} {r['eq_seconds']} / {r['fb_seconds']}" for r in rows[::2]))
    if args.spiky:
        print("\n| network | artifact | plain int8 | plain TFLiteConverter agreement | verdict | recovery |"
              "\n|---|---|---|---|---|---|")
        print("\n".join(spiky(out)))
    if args.clean:
        print("\n| network | artifact | convert | convert --equalize | plain TFLiteConverter, same 200 samples |"
              "\n|---|---|---|---|---|")
        print("\n".join(clean(reference, data, out)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
