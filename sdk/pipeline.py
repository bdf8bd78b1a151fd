"""The quickstart: all five stages on built-in data in one call.

train ──► convert ──► validate ──► benchmark ──► report
"""

from __future__ import annotations

import time
from pathlib import Path

from edgeship.progress import Progress, log_progress
from edgeship.records import Artifact, Report
from edgeship.validation import validate

QUICKSTART_TARGETS = ("tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8", "coreml:fp16")


def quickstart(
    out: str | Path = "edgeship-out",
    *,
    epochs: int = 40,
    qat_epochs: int = 3,
    runs: int = 200,
    seed: int = 0,
    max_drop: float | None = 1.0,
    progress: Progress = log_progress,
) -> Report:
    """The main job on built-in data: train a small CNN on digits (float, then a short QAT
    fine-tune), convert it to TFLite, ONNX and Core ML, validate each artifact against the float
    model, benchmark the runnable ones, and write manifest.json, report.json and bundle/.

        >>> report = quickstart("edgeship-out")                             # doctest: +SKIP
    """
    from edgeship.converters import convert
    from edgeship.data import load_dataset
    from edgeship.trainers import train

    out = Path(out)
    started = time.perf_counter()
    progress("data", "digits (scikit-learn's 8x8 handwritten digits)")
    data = load_dataset("digits", seed=seed)
    progress("train", f"tiny_cnn: float up to {epochs} epochs, then {qat_epochs} QAT epochs")
    from edgeship.trainers.fitting import progress_callback

    train(
        "tiny_cnn",
        data,
        out=out / "model",
        epochs=epochs,
        qat=True,
        qat_epochs=qat_epochs,
        seed=seed,
        callbacks=[progress_callback(progress)],
    )
    done: list[Artifact] = []

    def converted(artifact: Artifact) -> None:
        done.append(artifact)
        progress(
            "convert",
            f"{artifact.name} -> {artifact.path} ({artifact.size_bytes} bytes)",
            len(done),
            len(QUICKSTART_TARGETS),
        )

    progress("convert", ", ".join(QUICKSTART_TARGETS), 0, len(QUICKSTART_TARGETS))
    convert(out / "model", QUICKSTART_TARGETS, data=data, out=out, on_artifact=converted)
    report = validate(
        out, data=data, max_drop=max_drop, benchmark={"threads": 1, "warmup": 20, "runs": runs}, progress=progress
    )
    progress("done", f"{time.perf_counter() - started:.1f} s; report at {out / Report.file_name}")
    return report
