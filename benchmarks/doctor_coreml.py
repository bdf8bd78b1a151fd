"""The doctor on Core ML weight compression of a ResNet-8 at 32x32x3, raw and nested behind Rescaling.

    .venv/bin/python benchmarks/doctor_coreml.py                      # about 10 minutes on 2 cores (training 4)
    .venv/bin/python benchmarks/doctor_coreml.py --precisions pal2 --variant raw

A ResNet-8 trained ``--epochs`` (15) on the generated shapes32 (seeded; cached under ``--out``),
converted to aggressive Core ML compressions.
``nested`` puts it, as one layer, behind ``Rescaling(1/255)`` fed 0..255 pixels. For each
compression the table gives, on the test split: the plain artifact against float; the margin
verdict; the doctor's recovery (ops left with uncompressed fp16 weights or at 8 bits, or the whole
model at the next finer precision, the smallest within the drop: chosen on validation, reported
on test) and its size against the plain artifact; and, for comparison, the size and
delta of the next finer uniform precision, the fix a user would otherwise reach for. Every
figure of a recovery is checked against its file: the uncompressed ops read back from the
package and the size on disk. Core ML runs on macOS only: here every package runs on edgeship's
numpy evaluator, so no latency is given. Exits 1 when a report disagrees with its file.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgeship as es  # noqa: E402
from doctor_outliers import nested, pixels, verdict  # noqa: E402

MAX_DROP = 1.0
#: a compression and the next finer uniform one a user would try instead
FINER = {"pal2": "pal4", "pal4": "pal6", "w4-block": "w8-block", "pal4-grouped": "pal6", "pruned": "w8"}


def run(variant: str, model, data, out: Path, precisions: list[str]) -> tuple[list[str], bool]:
    from edgeship import _io
    from edgeship.doctor import diagnose, readback
    from edgeship.doctor.layers import leaf_names

    folder = out / f"coreml-{variant}"
    shutil.rmtree(folder, ignore_errors=True)
    targets = [f"coreml:{p}" for p in precisions] + [f"coreml:{FINER[p]}" for p in precisions
                                                       if FINER[p] not in precisions]
    es.convert(model, list(dict.fromkeys(targets)), data=data, out=folder)
    plain = {e.name: e.validation for e in es.validate(folder, data=data, write_bundle=False).artifacts}
    sizes = {a.name: a.size_bytes for a in es.Manifest.load(folder).artifacts}
    lines, ok = [], True
    for precision in precisions:
        name = f"coreml:{precision}"
        started = time.monotonic()
        report = diagnose(folder, data=data, max_drop=MAX_DROP, artifact=name, runs=5)
        seconds = time.monotonic() - started
        d = report.diagnosis(name)
        r = d.recovery
        finer = f"coreml:{FINER[precision]}"
        finer_cell = f"{finer}: {plain[finer].accuracy_delta_pts:+.2f}, x{sizes[finer] / sizes[name]:.2f}"
        if r.within_drop and r.artifact is None:
            fix = "already within the drop"
        elif r.artifact is None:
            fix = f"none within {MAX_DROP:g} ({r.note})"
        else:
            path = folder / r.artifact.path
            held = readback.read(path, leaf_names(model))
            on_disk = _io.size_bytes(path)
            agrees = held.float_layers == r.float_layers and on_disk == r.artifact.size_bytes
            ok &= agrees
            fix = (f"{r.method} -> {r.artifact.name}: {len(r.float_ops)}/{r.compute_ops} ops uncompressed"
                   f"{' (' + ', '.join(r.float_layers) + ')' if r.float_layers else ''}, "
                   f"{r.test.accuracy_delta_pts:+.2f} on test, x{r.size_ratio:.2f}"
                   + ("" if agrees else f" — FILE DISAGREES: {held.float_layers}, {on_disk} bytes"))
        mixed = [st for st in r.steps if st.method in ("float", "8bit") and st.within_drop]
        rebuild = r.steps[0].size_bytes if r.steps else sizes[name]
        fix += (f"; mixed: {len(mixed[0].float_layers or mixed[0].changes.get('eight_bit_layers', []))} ops "
                f"{mixed[0].method}, x{min(st.size_bytes for st in mixed) / rebuild:.2f}" if mixed else
                "; no mixed model within" if r.steps else "")
        lines.append(f"| {variant} | {name} | {plain[name].accuracy_delta_pts:+.2f}, agreement "
                     f"{plain[name].agreement:.1%} | {verdict(d)} | {fix} | {finer_cell} | {seconds:.0f} s |")
    return lines, ok


def train(out: Path, epochs: int):
    """ResNet-8 trained ``epochs`` on shapes32 (seeded), cached under ``out``."""
    from edgeship.trainers import saving

    data = es.load_dataset("shapes32")
    folder = out / f"resnet8-{epochs}"
    if not (folder / "training.json").exists():
        es.train("resnet8", data, out=folder, epochs=epochs, seed=0)
    _, reference, _ = saving.load_trained(folder)
    return data, reference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/edgeship-doctor-coreml"))
    parser.add_argument("--variant", choices=("raw", "nested", "both"), default="both")
    parser.add_argument("--precisions", default="pal2,pal4,w4-block", help="Comma-separated Core ML precisions.")
    parser.add_argument("--epochs", type=int, default=15, help="ResNet-8 training epochs.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = [p for p in precisions if p not in FINER]
    if unknown:
        parser.error(f"no finer precision known for {unknown}; choose from {sorted(FINER)}")
    data, model = train(args.out, args.epochs)
    rows, ok = [], True
    for variant in ("raw", "nested") if args.variant == "both" else (args.variant,):
        subject, subject_data = (model, data) if variant == "raw" else (nested(model), pixels(data, args.out))
        lines, fine = run(variant, subject, subject_data, args.out, precisions)
        rows += lines
        ok &= fine
    print(f"\nResNet-8 (shapes32, {args.epochs} epochs), Core ML, doctor --max-drop {MAX_DROP:g}; deltas in points against float")
    print("| variant | artifact | plain (test) | verdict | recovery (chosen on val) | next finer precision | doctor time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
