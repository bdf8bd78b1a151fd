"""The doctor's advice: what in the calibration looks wrong, with the figures that say so.

outliers           a few extreme values set a layer's range    -> Percentile / Entropy calibration
channel-outliers   a few channels dwarf the rest of a tensor   -> keep it float, int16x8, equalise
few-samples        fewer than 100 calibration samples          -> calibrate on 100-500
normalisation      calibrated input range (or the calibration  -> calibrate on inputs preprocessed
                   samples) unlike the training inputs            like the training split
ambiguity          the disagreements sit on inputs the float    -> not a layer's fault: float layers
                   model is unsure of (low top-2 margin)           will not remove them
damage             int8 flips inputs the float model is sure of -> the worst layers (above)
weights            (Core ML) an op's compressed weights hurt    -> keep its weights uncompressed, or
                   its output                                      a finer precision
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgeship.doctor.records import Advice, LayerError, Margins, Recovery
from edgeship.formats import FORMATS, Format
from edgeship.records import AccuracyDelta, Artifact

if TYPE_CHECKING:
    from edgeship.data import Dataset

#: a layer below this per-channel SQNR is harmful enough for its range to be worth explaining
HARMFUL_DB = 25.0
OUTLIER_RATIO = 10.0  # max |x| over its 99.9th percentile
CHANNEL_SPREAD = 20.0  # widest channel's peak over the median channel's
MIN_SAMPLES = 100
RANGE_RATIO = (0.5, 4.0)  # calibrated input span over the training inputs' span
#: below this agreement with float the doctor says where the disagreements sit
AGREEMENT_OK = 0.99
#: ambiguity: confident inputs agree at least this well, and this share of disagreements is unsure
CONFIDENT_AGREEMENT, UNSURE_SHARE = 0.99, 0.8


def advise(
    artifact: Artifact,
    layers: Sequence[LayerError],
    input_range: tuple[float, float] | None,
    dataset: Dataset,
    calibration: np.ndarray | Sequence[np.ndarray] | None,
    score: AccuracyDelta,
    recovery: Recovery | None,
    *,
    margins: Margins | None = None,
    baseline: AccuracyDelta | None = None,
    equalizable: bool = True,
) -> tuple[Advice, ...]:
    """Every finding, the verdict (ambiguity or damage) first, then the most specific.

    ``score`` is the artifact on test, ``baseline`` on the split recovery chose on (compared with
    the recovery's own rebuild there); ``equalizable``: whether edgeship can equalize the float
    reference (cross-layer equalization rescales tf_keras weights: a PyTorch model cannot take it)."""
    fmt = FORMATS.get(artifact.format)
    found: list[Advice] = _verdict(score, margins, layers, "compression" if fmt.weights_only else "int8")
    if fmt.weights_only:  # compressed without data: no ranges or calibration to blame
        return tuple(found + [a for layer in layers if layer.sqnr_db < HARMFUL_DB for a in _weights(layer, artifact)])
    for layer in layers:
        if layer.sqnr_db < HARMFUL_DB:
            found += _ranges(layer, fmt, equalizable=equalizable)
    found += _few_samples(artifact)
    found += _normalisation(input_range, dataset, calibration)
    found += _rebuild_gap(artifact, baseline or score, recovery, dataset)
    return tuple(found)


def ambiguous(margins: Margins) -> bool:
    """The disagreements sit on inputs the float model is unsure about, and confident ones agree."""
    total = margins.disagreements
    sure = margins.confident_agreement
    return (
        total > 0
        and margins.unsure_disagreements >= UNSURE_SHARE * total
        and (sure is None or sure >= CONFIDENT_AGREEMENT)
    )


def _verdict(
    score: AccuracyDelta, margins: Margins | None, layers: Sequence[LayerError], what: str = "int8"
) -> list[Advice]:
    """Ambiguity or damage, from where the disagreements sit by the float model's top-2 margin."""
    if margins is None or score.agreement is None or score.agreement >= AGREEMENT_OK or not margins.disagreements:
        return []
    total, unsure, edge = margins.disagreements, margins.unsure_disagreements, margins.confident_from
    sure = "—" if margins.confident_agreement is None else f"{margins.confident_agreement:.1%}"
    confident = sum(b.samples for b in margins.bins if b.low >= edge)
    evidence = {
        "agreement": score.agreement,
        "disagreements": total,
        "unsure_disagreements": unsure,
        "confident_from": edge,
        "confident_samples": confident,
        "confident_agreement": margins.confident_agreement,
        "median_margin": round(margins.median_margin, 4),
        "disagreement_median_margin": None
        if margins.disagreement_median_margin is None
        else round(margins.disagreement_median_margin, 4),
    }
    medians = (
        f"median margin {margins.disagreement_median_margin:.2f} among disagreements, "
        f"{margins.median_margin:.2f} overall"
    )
    if ambiguous(margins):
        return [
            Advice(
                kind="ambiguity",
                evidence=evidence,
                message=(
                    "ambiguity: the disagreements are on inputs the float model itself is unsure about "
                    f"(top-2 margin < {edge:g}){_moved(score)}: {unsure} of {total} disagreements; on confident "
                    f"inputs agreement is {sure} "
                    f"({confident} samples); {medians}. Keeping layers in float will not remove it: the inputs are "
                    "ambiguous or unlike the training data"
                ),
            )
        ]
    worst = ", ".join(f"{layer.name} ({layer.sqnr_db:.1f} dB)" for layer in layers[:3])
    return [
        Advice(
            kind="damage",
            layer=layers[0].name if layers else "",
            evidence=evidence,
            message=(
                f"damage: {what} flips inputs the float model is sure of (top-2 margin ≥ {edge:g}): agreement there is "
                f"{sure} ({confident} samples), {total - unsure} of {total} disagreements; {medians}. "
                f"Worst layers: {worst or 'none measured'}"
            ),
        )
    ]


def _moved(score: AccuracyDelta) -> str:
    """Said beside a verdict where accuracy did not fall: the flips are there all the same."""
    delta = score.accuracy_delta_pts
    return f" (accuracy moved {delta:+.2f} points: flips both ways)" if delta is not None and delta >= 0 else ""


def _weights(layer: LayerError, artifact: Artifact) -> list[Advice]:
    """A Core ML op whose compressed weights cost its output more than ``HARMFUL_DB``."""
    how = artifact.settings.get("compression", artifact.precision)
    return [
        Advice(
            kind="weights",
            layer=layer.name,
            evidence={
                "sqnr_db": round(layer.sqnr_db, 2),
                "tensor_sqnr_db": round(layer.tensor_sqnr_db, 2),
                "compression": how,
                "op": layer.op,
            },
            message=(
                f"{layer.name}: its {how} weights leave its output at {layer.sqnr_db:.1f} dB SQNR (median channel; "
                f"the op run on uncompressed inputs). Keep its weights uncompressed (edgeship doctor --max-drop "
                f"does, op by op) or convert with a finer precision (more palette bits, w8, per-block or grouped)"
            ),
        )
    ]


def _ranges(layer: LayerError, fmt: Format, *, equalizable: bool = True) -> list[Advice]:
    found = []
    evidence = {
        "sqnr_db": round(layer.sqnr_db, 2),
        "tensor_sqnr_db": round(layer.tensor_sqnr_db, 2),
        "range": [layer.range_min, layer.range_max],
        "scale": layer.scale,
    }
    if layer.channel_spread >= CHANNEL_SPREAD:
        found.append(
            Advice(
                kind="channel-outliers",
                layer=layer.name,
                evidence={**evidence, "channel_spread": round(layer.channel_spread, 1), "channels": layer.channels},
                message=(
                    f"{layer.name}: a few of its {layer.channels} channels peak {layer.channel_spread:.0f}x higher "
                    f"than the median channel; int8 activations share one scale per tensor, so the other channels get "
                    f"few levels (median channel SQNR {layer.sqnr_db:.1f} dB, whole tensor "
                    f"{layer.tensor_sqnr_db:.1f} dB). "
                    + (
                        "Where its channels reach the next conv/dense layer through ReLU, BatchNormalization or "
                        "pooling, cross-layer equalization evens them at no cost on the device (edgeship convert "
                        "--equalize; doctor --max-drop tries it); else use"
                        if equalizable
                        else "Use"  # edgeship equalizes Keras weights only
                    )
                    + f" int16 activations (doctor --max-drop tries them for the worst tensors) or keep {layer.name} "
                    f"and its readers in float (doctor --max-drop)"
                ),
            )
        )
    if layer.outlier_ratio >= OUTLIER_RATIO:
        others = [f.label for f in FORMATS.all() if f.calibration_methods and f is not fmt]
        how = (
            "calibrate with Percentile or Entropy instead of MinMax (edgeship convert --calibrate-method percentile)"
            if fmt.calibration_methods
            else f"{fmt.label} calibrates MinMax only: bound the activation in the model (e.g. ReLU6), "
            + (f"convert through {' or '.join(others)} with --calibrate-method percentile, " if others else "")
            + "or keep it in float (edgeship doctor --max-drop)"
        )
        found.append(
            Advice(
                kind="outliers",
                layer=layer.name,
                evidence={**evidence, "outlier_ratio": round(layer.outlier_ratio, 1), "p999_abs": layer.p999_abs},
                message=(
                    f"{layer.name}: its range is set by rare extreme values (max |x| is {layer.outlier_ratio:.0f}x "
                    f"its 99.9th percentile {layer.p999_abs:.3g}), so ordinary values share few int8 levels; {how}"
                ),
            )
        )
    return found


def _few_samples(artifact: Artifact) -> list[Advice]:
    n = artifact.settings.get("calibration_samples")
    if not isinstance(n, int) or n >= MIN_SAMPLES:
        return []
    return [
        Advice(
            kind="few-samples",
            evidence={"calibration_samples": n, "recommended": [MIN_SAMPLES, 500]},
            message=(
                f"{artifact.name} was calibrated on {n} samples: ranges from so few are noisy and miss rare "
                f"inputs; calibrate on 100-500 (edgeship convert --calibration-samples 300)"
            ),
        )
    ]


def _span(lo: float, hi: float) -> float:
    return max(hi, 0.0) - min(lo, 0.0)  # int8 ranges always hold zero


def _normalisation(
    input_range: tuple[float, float] | None, dataset: Dataset, calibration: np.ndarray | Sequence[np.ndarray] | None
) -> list[Advice]:
    """The calibrated range of the model's first input against the training inputs' (where a model
    takes several, the first: the probes report its range; the rest are compared layer by layer)."""
    x = np.asarray(dataset.inputs("train")[0], dtype=np.float64)
    first = " first" if len(dataset.inputs("train")) > 1 else ""
    lo, hi = (float(v) for v in np.percentile(x, [0.1, 99.9]))
    found = []
    if input_range is not None and _span(lo, hi) > 0:
        ratio = _span(*input_range) / _span(lo, hi)
        if not RANGE_RATIO[0] <= ratio <= RANGE_RATIO[1]:
            found.append(
                Advice(
                    kind="normalisation",
                    evidence={
                        "calibrated_input_range": [round(v, 6) for v in input_range],
                        "train_input_range": [round(lo, 6), round(hi, 6)],
                        "span_ratio": round(ratio, 4),
                    },
                    message=(
                        f"the artifact quantizes its{first} input to [{input_range[0]:.3g}, {input_range[1]:.3g}] but "
                        f"'{dataset.name}'{first} training inputs span [{lo:.3g}, {hi:.3g}] ({ratio:.2g}x): the "
                        "calibration inputs were not normalised the way training saw them. Calibrate on samples "
                        f"preprocessed exactly like the training split (edgeship convert --data {dataset.name})"
                    ),
                )
            )
    if calibration is not None:  # one array, or one per input: the first input's is compared
        first_samples = calibration[0] if isinstance(calibration, (tuple, list)) else calibration
        found += _moments(np.asarray(first_samples, dtype=np.float64), x, dataset.name)
    return found


def _moments(calibration: np.ndarray, x: np.ndarray, name: str) -> list[Advice]:
    mean_c, std_c, mean_t, std_t = calibration.mean(), calibration.std(), x.mean(), x.std()
    if std_t == 0 or (abs(mean_c - mean_t) <= std_t and 0.5 <= std_c / std_t <= 2.0):
        return []
    return [
        Advice(
            kind="normalisation",
            evidence={
                "calibration_mean": float(mean_c),
                "calibration_std": float(std_c),
                "train_mean": float(mean_t),
                "train_std": float(std_t),
            },
            message=(
                f"the calibration samples have mean {mean_c:.3g} and std {std_c:.3g}, the '{name}' training inputs "
                f"mean {mean_t:.3g} and std {std_t:.3g}: inputs not normalised the way training saw them. "
                "Apply the training preprocessing to the calibration samples"
            ),
        )
    ]


def _rebuild_gap(artifact: Artifact, score: AccuracyDelta, recovery: Recovery | None, dataset: Dataset) -> list[Advice]:
    """The doctor's all-int8 rebuild (same settings, the dataset's samples) far better than the artifact."""
    if (
        recovery is None
        or not recovery.steps
        or score.accuracy_delta_pts is None
        or recovery.steps[0].accuracy_delta_pts is None
    ):
        return []
    gain = recovery.steps[0].accuracy_delta_pts - score.accuracy_delta_pts
    if gain < max(1.0, recovery.max_drop):
        return []
    return [
        Advice(
            kind="normalisation",
            evidence={
                "artifact_delta_pts": score.accuracy_delta_pts,
                "rebuild_delta_pts": recovery.steps[0].accuracy_delta_pts,
            },
            message=(
                f"re-quantized with calibration samples from '{dataset.name}', the model scores "
                f"{recovery.steps[0].accuracy_delta_pts:+.2f} points against float where {artifact.name} scores "
                f"{score.accuracy_delta_pts:+.2f}: the artifact was calibrated on other data. Convert again with "
                f"--data {dataset.name}"
            ),
        )
    ]
