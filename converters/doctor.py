"""The quantization doctor: which layers int8 hurts, why, and a mixed-precision artifact that fits.

    >>> report = diagnose("out", data="digits", max_drop=1.0)             # doctest: +SKIP
    >>> [(l.name, round(l.sqnr_db, 1)) for l in report.artifacts[0].layers[:3]]  # doctest: +SKIP

For each int8 artifact of a converted folder:

1. **per-layer error** — the float and the int8 model run side by side on test samples, layer by
   layer (TFLite's QuantizationDebugger; intermediate outputs of the ONNX QDQ model), and every
   quantized tensor is scored by SQNR, worst first (``_debug_tflite``, ``_debug_onnx``);
2. **advice** — outlier-dominated ranges, too few calibration samples, calibration inputs that do
   not look like the training inputs (``_doctor_advice``);
3. **recovery** (with ``max_drop``) — the worst layers are kept in float one at a time, each alone
   or with the layers that read its output, until the accuracy drop against the float reference
   fits; that artifact is written beside the others and registered in manifest.json
   (``_doctor_recovery``).

Everything lands in ``doctor.json`` (a DoctorReport).
"""

from __future__ import annotations

import datetime
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from edgeship import metrics
from edgeship._deps import quiet_native_stderr
from edgeship.errors import BadInputError
from edgeship.records import SCHEMA_VERSION, Artifact, Gate, Manifest, Record, _VersionedFile, verified_path

log = logging.getLogger(__name__)

__all__ = ["diagnose", "DoctorReport", "Diagnosis", "LayerError", "Advice", "Recovery", "RecoveryStep", "DOCTORED"]

#: the int8 artifacts the doctor examines, and the backend module that probes each format
DOCTORED = {("tflite", "int8"), ("tflite", "int8-float-io"), ("onnx", "int8")}
_PROBES = {"tflite": "edgeship.converters._debug_tflite", "onnx": "edgeship.converters._debug_onnx"}
MIXED = "-mixed"

Progress = Callable[[str, str], None]


def _noop(stage: str, detail: str) -> None:
    log.info("%s: %s", stage, detail)


# ------------------------------------------------------------------------------ data model

@dataclass(frozen=True)
class LayerError(Record):
    """One quantized tensor: how far its int8 values sit from float, and what its range looks like.

    ``sqnr_db`` (the ranking figure) is the median over channels of each channel's SQNR: a
    tensor-wide SQNR is dominated by its largest channels and hides the ones int8 crushed.
    ``tensor_sqnr_db`` is the tensor-wide figure and ``model_sqnr_db`` the same tensor against the
    all-float model (errors accumulated from every layer before it). All three are local to this
    layer's own quantization except ``model_sqnr_db``. ``outlier_ratio`` is max |x| over its
    99.9th percentile; ``channel_spread`` the widest channel's peak over the median channel's.
    """

    name: str
    op: str
    tensor: str
    sqnr_db: float
    tensor_sqnr_db: float
    model_sqnr_db: float | None = None
    rel_error: float = 0.0
    max_abs_error: float = 0.0
    range_min: float = 0.0
    range_max: float = 0.0
    p999_abs: float = 0.0
    outlier_ratio: float = 1.0
    channel_spread: float = 1.0
    channels: int = 1
    scale: float | None = None
    zero_point: int | None = None
    readers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Advice(Record):
    """One finding about calibration: ``kind`` is outliers, channel-outliers, few-samples or normalisation."""

    kind: str
    message: str
    layer: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoveryStep(Record):
    """One model tried: these layers in float, the rest int8, scored on the test split."""

    float_layers: tuple[str, ...]
    accuracy: float
    accuracy_delta_pts: float
    agreement: float
    sqnr_db: float
    size_bytes: int
    within_drop: bool


@dataclass(frozen=True)
class Recovery(Record):
    """The search for a mixed-precision artifact within ``max_drop`` points, and what it cost.

    ``steps[0]`` is the doctor's own all-int8 rebuild (same settings, the dataset's calibration
    samples); ratios compare the written artifact with the original int8 one (p50 latency timed
    interleaved, one thread)."""

    max_drop: float
    within_drop: bool
    steps: tuple[RecoveryStep, ...] = ()
    float_layers: tuple[str, ...] = ()
    artifact: Artifact | None = None
    size_ratio: float | None = None
    p50_ratio: float | None = None
    p50_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Diagnosis(Record):
    """One int8 artifact: its accuracy as it is, its layers worst first, advice and recovery."""

    artifact: str
    path: str
    analysed_with: str
    samples: int
    accuracy: float
    reference_accuracy: float
    accuracy_delta_pts: float
    agreement: float
    sqnr_db: float
    layers: tuple[LayerError, ...] = ()
    advice: tuple[Advice, ...] = ()
    recovery: Recovery | None = None


@dataclass(frozen=True)
class DoctorReport(_VersionedFile):
    """What ``edgeship doctor`` found (``doctor.json``)."""

    file_name: ClassVar[str] = "doctor.json"

    schema_version: int = SCHEMA_VERSION
    edgeship_version: str = ""
    created: str = ""
    model: str = ""
    dataset: str = ""
    dataset_fingerprint: str = ""
    max_drop: float | None = None
    artifacts: tuple[Diagnosis, ...] = ()

    def diagnosis(self, name: str) -> Diagnosis:
        for item in self.artifacts:
            if item.artifact == name:
                return item
        raise BadInputError(f"no diagnosis for '{name}'; doctor.json holds {[d.artifact for d in self.artifacts]}")


# ------------------------------------------------------------------------------ per-layer figures

def layer_name(tensor: str) -> str:
    """The Keras layer a converter-made tensor or node name belongs to.

    ``model/conv_1/Conv2D;model/conv_1/Relu`` -> ``conv_1``; ``model/dense/MatMul/MatMulAddFusion``
    -> ``dense``; a name without ``/`` is its own layer.
    """
    first = tensor.split(";")[0].split(":")[0]
    parts = [p for p in first.split("/") if p and "PartitionedCall" not in p]
    if len(parts) >= 3:
        return parts[1]
    if len(parts) == 2:
        return parts[0] if parts[1][:1].isupper() else parts[1]
    return parts[0] if parts else tensor


def _db(signal: float, noise: float) -> float:
    """SQNR in dB from summed squares, with the same limits as ``edgeship.metrics.sqnr_db``."""
    if noise == 0:
        return metrics.SQNR_EXACT_DB
    if signal == 0:
        return -metrics.SQNR_EXACT_DB
    return float(min(metrics.SQNR_EXACT_DB, 10 * np.log10(signal / noise)))


class LayerTrace:
    """Running sums for one quantized tensor over batches of (float, dequantized int8) values."""

    _KEEP = 200_000  # |x| values kept for the percentile

    def __init__(self, name: str, op: str, tensor: str, *, channel_axis: int = -1,
                 scale: float | None = None, zero_point: int | None = None) -> None:
        self.name, self.op, self.tensor, self.axis = name, op, tensor, channel_axis
        self.layer = name  # the Keras layer; ``name`` may gain a suffix to stay unique
        self.scale, self.zero_point = scale, zero_point
        self.readers: tuple[str, ...] = ()
        self.signal = self.noise = self.peak = None
        self.lo, self.hi, self.max_err = np.inf, -np.inf, 0.0
        self.model_signal = self.model_noise = 0.0
        self.model_seen = False
        self._abs: list[np.ndarray] = []

    def _channels(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 2:
            return x.reshape(-1, 1)
        x = np.moveaxis(x, self.axis, -1)
        return x.reshape(-1, x.shape[-1])

    def add(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        """One batch of this layer's float output and its dequantized int8 output."""
        f, q = self._channels(reference), self._channels(quantized)
        err = q - f
        if self.signal is None:
            self.signal, self.noise, self.peak = (np.zeros(f.shape[1]) for _ in range(3))
        self.signal += np.square(f).sum(0)
        self.noise += np.square(err).sum(0)
        self.peak = np.maximum(self.peak, np.abs(f).max(0, initial=0.0))
        self.lo, self.hi = min(self.lo, float(f.min(initial=np.inf))), max(self.hi, float(f.max(initial=-np.inf)))
        self.max_err = max(self.max_err, float(np.abs(err).max(initial=0.0)))
        flat = np.abs(f).ravel()
        self._abs.append(flat[:: max(1, flat.size // (self._KEEP // 16))])

    def add_model(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        """One batch of the all-float model's value of this tensor and the int8 model's."""
        f = np.asarray(reference, np.float64)
        self.model_signal += float(np.square(f).sum())
        self.model_noise += float(np.square(np.asarray(quantized, np.float64) - f).sum())
        self.model_seen = True

    def result(self) -> LayerError:
        if self.signal is None:  # never fed: nothing measured, nothing to blame
            self.add(np.zeros(1), np.zeros(1))
        signal, noise, peak = self.signal, self.noise, self.peak
        live = signal > 0
        per_channel = [_db(s, n) for s, n in zip(signal[live], noise[live])]
        total_s, total_n = float(signal.sum()), float(noise.sum())
        values = np.concatenate(self._abs)
        p999 = float(np.percentile(values, 99.9)) if values.size else 0.0
        top = float(peak.max(initial=0.0))
        median_peak = float(np.median(peak[peak > 0])) if np.any(peak > 0) else 0.0
        return LayerError(
            name=self.name, op=self.op, tensor=self.tensor,
            sqnr_db=float(np.median(per_channel)) if per_channel else _db(total_s, total_n),
            tensor_sqnr_db=_db(total_s, total_n),
            model_sqnr_db=_db(self.model_signal, self.model_noise) if self.model_seen else None,
            rel_error=float(np.sqrt(total_n / total_s)) if total_s > 0 else 0.0,
            max_abs_error=self.max_err, range_min=float(self.lo), range_max=float(self.hi), p999_abs=p999,
            outlier_ratio=top / p999 if p999 > 0 else 1.0,
            channel_spread=top / median_peak if median_peak > 0 else 1.0,
            channels=int(len(peak)), scale=self.scale, zero_point=self.zero_point, readers=self.readers,
        )


def unique_names(traces: Sequence[LayerTrace]) -> None:
    """Rename repeats (two tensors of one Keras layer) to ``layer:op`` so every name is a key."""
    seen: set[str] = set()
    for trace in traces:
        name = trace.name
        if name in seen:
            name = f"{trace.name}:{trace.op.lower()}"
            n = 2
            while name in seen:
                name, n = f"{trace.name}:{trace.op.lower()}{n}", n + 1
        trace.name = name
        seen.add(name)


def ranked(layers: Iterable[LayerError]) -> tuple[LayerError, ...]:
    """Worst first: lowest per-channel SQNR, then lowest tensor-wide SQNR."""
    return tuple(sorted(layers, key=lambda l: (l.sqnr_db, l.tensor_sqnr_db)))


@dataclass
class Probe:
    """What a backend's debugger hands back: the layers, and a builder of mixed-precision models.

    ``build(float_layers)`` returns the model bytes with those layers (LayerError names) in float
    and the rest quantized as the artifact was; ``build(())`` is the all-int8 rebuild.
    ``input_range`` is the float input range the *artifact* was calibrated to, when it says.
    """

    layers: list[LayerError]
    build: Callable[[Sequence[str]], bytes]
    suffix: str
    analysed_with: str
    input_range: tuple[float, float] | None = None
    close: Callable[[], None] = lambda: None


# ------------------------------------------------------------------------------ the flow

def diagnose(
    folder: str | Path,
    *,
    data: Any = None,
    max_drop: float | None = None,
    artifact: str | None = None,
    calibration: np.ndarray | None = None,
    samples: int = 200,
    max_layers: int = 8,
    runs: int = 200,
    progress: Progress = _noop,
) -> DoctorReport:
    """Diagnose the int8 artifacts of ``folder`` (written by ``edgeship.convert``) and, with
    ``max_drop`` (accuracy points), write a mixed-precision artifact within it.

        >>> report = diagnose("out", data="digits", max_drop=1.0)         # doctest: +SKIP
        >>> report.artifacts[0].recovery.float_layers                      # doctest: +SKIP

    ``artifact`` picks one artifact by name; ``calibration`` (the samples the artifacts were
    calibrated with, when known) sharpens the normalisation check; ``samples`` test samples feed
    the per-layer comparison; at most ``max_layers`` layers are tried in float; ``runs`` timed
    runs measure the latency cost. Writes ``folder/doctor.json`` and returns the report.
    """
    from edgeship import __version__
    from edgeship.converters import reference as _reference
    from edgeship.datasets import Dataset, load_dataset

    folder = Path(folder)
    gate = Gate(max_drop=max_drop)  # validates max_drop before any work
    _check_counts(samples=samples, max_layers=max_layers, runs=runs)
    manifest = Manifest.load(folder)
    chosen = _choose(manifest, artifact)
    dataset = data if isinstance(data, Dataset) else load_dataset(data or manifest.dataset or _no_dataset(folder))
    progress("doctor", f"float reference on {len(dataset.x_test)} test samples")
    reference_out = _reference.predictor(folder, manifest)(dataset.x_test)
    context = _Context(folder, manifest, dataset, reference_out, gate, calibration, samples, max_layers, runs, progress)
    diagnoses = tuple(_diagnose_one(context, a) for a in chosen)
    report = DoctorReport(
        edgeship_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        model=manifest.model, dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
        max_drop=max_drop, artifacts=diagnoses,
    )
    report.save(folder)
    return report


def _check_counts(**counts: Any) -> None:
    for name, value in counts.items():
        least = 0 if name == "max_layers" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise BadInputError(f"{name} must be an integer of at least {least}; received {value!r}")


def _no_dataset(folder: Path) -> str:
    raise BadInputError(f"{folder}/manifest.json names no dataset; pass data= (e.g. 'digits' or a .npz file)")


def _choose(manifest: Manifest, name: str | None) -> tuple[Artifact, ...]:
    doctored = tuple(a for a in manifest.artifacts if (a.format, a.precision) in DOCTORED)
    if name is not None:
        chosen = manifest.get(name)
        if chosen not in doctored:
            raise BadInputError(
                f"the doctor examines int8 artifacts ({', '.join(sorted(f'{f}:{p}' for f, p in DOCTORED))}); "
                f"received '{name}' ({chosen.format}:{chosen.precision})"
            )
        return (chosen,)
    if not doctored:
        raise BadInputError(
            f"the folder holds no int8 artifact to examine (artifacts: {[a.name for a in manifest.artifacts]}); "
            "convert with --to tflite:int8,onnx:int8 first"
        )
    return doctored


@dataclass
class _Context:
    folder: Path
    manifest: Manifest
    dataset: Any
    reference_out: np.ndarray
    gate: Gate
    calibration: np.ndarray | None
    samples: int
    max_layers: int
    runs: int
    progress: Progress


def _diagnose_one(ctx: _Context, artifact: Artifact) -> Diagnosis:
    from edgeship.converters._doctor_advice import advise
    from edgeship.converters._doctor_recovery import recover
    from edgeship.converters._source import resolve
    from edgeship.runtimes import load

    path = verified_path(ctx.folder, artifact)
    with quiet_native_stderr():
        outputs = load(path).predict(ctx.dataset.x_test)
    score = metrics.compare(ctx.reference_out, outputs, ctx.dataset.y_test)
    ctx.progress("doctor", f"{artifact.name}: {score.accuracy_delta_pts:+.2f} points; comparing layers")
    source = resolve(ctx.folder / ctx.manifest.reference.path, ctx.manifest.model)
    x = ctx.dataset.x_test[: ctx.samples]
    backend = importlib.import_module(_PROBES[artifact.format])
    probe = backend.probe(source, artifact, path, x, ctx.dataset)
    try:
        layers = ranked(probe.layers)
        recovery = None
        if ctx.gate.max_drop is not None and not ctx.gate.check(score):
            recovery = Recovery(max_drop=float(ctx.gate.max_drop), within_drop=True,
                                note=f"{artifact.name} is already within {ctx.gate.max_drop:g} points; nothing to recover")
        elif ctx.gate.max_drop is not None:
            recovery = recover(ctx, artifact, path, source, probe, layers)
    finally:
        probe.close()
    advice = advise(artifact, layers, probe.input_range, ctx.dataset, ctx.calibration, score, recovery)
    return Diagnosis(
        artifact=artifact.name, path=artifact.path, analysed_with=probe.analysed_with, samples=len(x),
        accuracy=score.accuracy, reference_accuracy=score.reference_accuracy,
        accuracy_delta_pts=score.accuracy_delta_pts, agreement=score.agreement, sqnr_db=score.sqnr_db,
        layers=layers, advice=advice, recovery=recovery,
    )
