"""The doctor's margin strata and its verdict: ambiguity (int8 flips inputs the float model is
unsure about) against damage (it flips confident ones).

The ambiguous case: a healthy MLP on digits, validated and tested on the blends of two digits of
different classes the float model is least sure about (labelled by its own top-1), so many samples
sit near a decision boundary; plain int8 flips some of those and none of the clear ones. About
25 s on 2 cores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgeship.doctor import diagnose
from edgeship.doctor.margins import CONFIDENT, EDGES, strata, top2_margin


def _hand_strata(ref: np.ndarray, out: np.ndarray) -> list[tuple[int, float | None]]:
    probs = np.exp(ref - ref.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = np.sort(probs, 1)
    margin = top[:, -1] - top[:, -2]
    agree = ref.argmax(1) == out.argmax(1)
    found = []
    for i, (low, high) in enumerate(zip(EDGES[:-1], EDGES[1:])):
        inside = (margin >= low) & ((margin < high) if i < len(EDGES) - 2 else (margin <= high))
        found.append((int(inside.sum()), float(agree[inside].mean()) if inside.any() else None))
    return found


def test_strata_count_every_sample_and_agree_with_a_hand_count():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10)) * rng.uniform(0.1, 4.0, size=(500, 1))  # near-ties to sure ones
    noisy = logits + rng.normal(scale=0.3, size=logits.shape)
    m = strata([logits], [noisy], "multiclass", "test")
    assert sum(b.samples for b in m.bins) == 500 and m.split == "test"
    assert [(b.samples, b.agreement) for b in m.bins] == [
        (n, pytest.approx(a) if a is not None else None) for n, a in _hand_strata(logits, noisy)]
    # logits and the probabilities they stand for give the same strata
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    same = strata([probs], [np.exp(noisy) / np.exp(noisy).sum(1, keepdims=True)], "multiclass", "test")
    assert [b.samples for b in same.bins] == [b.samples for b in m.bins]
    assert m.disagreements == sum(b.samples - b.agreed for b in m.bins) > 0
    # one sigmoid: the margin of p against 1 - p; logits through a sigmoid first
    assert top2_margin(np.array([[0.9], [0.5], [0.2]]), "binary") == pytest.approx([0.8, 0.0, 0.6])
    assert top2_margin(np.array([[0.0], [10.0]]), "binary") == pytest.approx([0.0, 1.0], abs=1e-4)
    assert strata([np.zeros((4, 3))], [np.zeros((4, 3))], "regression", "test") is None


def _blends(digits, model, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: a quarter clean test digits, the rest the blends of two digits of different
    classes that the float model is least sure about (of 10x as many drawn)."""
    rng = np.random.default_rng(seed)
    x, y = digits.x_test, digits.y_test
    first, second = rng.integers(0, len(x), size=(2, 20 * n))
    keep = y[first] != y[second]
    first, second = first[keep], second[keep]
    weight = rng.uniform(0.3, 0.7, size=(len(first),) + (1,) * (x.ndim - 1)).astype(x.dtype)
    mixed = weight * x[first] + (1 - weight) * x[second]
    unsure = np.argsort(top2_margin(model.predict(mixed, verbose=0), "multiclass"))[: 3 * n // 4]
    inputs = np.concatenate([x[rng.choice(len(x), n - len(unsure), replace=False)], mixed[unsure]]).astype(x.dtype)
    return inputs, model.predict(inputs, verbose=0).argmax(1).astype(y.dtype)


@pytest.fixture(scope="module")
def ambiguous_dir(tmp_path_factory, digits) -> tuple[Path, object]:
    """A healthy MLP's tflite:int8-float-io, with val and test splits of blended digits."""
    from edgeship._deps import keras as _keras
    from edgeship.converters import convert

    keras = _keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(digits.input_shape, name="input")
    x = keras.layers.Dense(64, activation="relu", name="hidden")(keras.layers.Flatten(name="flatten")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="logits")(x), name="blend_mlp")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=30, batch_size=32, verbose=0)
    x_val, y_val = _blends(digits, model, 300, seed=1)
    x_test, y_test = _blends(digits, model, 400, seed=2)
    data = dataclasses.replace(digits, name="digits-blends", x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    out = tmp_path_factory.mktemp("ambiguous")
    convert(model, ["tflite:int8-float-io"], data=data, out=out)
    return out, data


def test_ambiguity_is_named_and_float_layers_are_not_the_advice(ambiguous_dir):
    folder, data = ambiguous_dir
    report = diagnose(folder, data=data, max_drop=0.1, max_layers=1, samples=50, runs=5)
    (d,) = report.artifacts
    m = d.margins
    assert sum(b.samples for b in m.bins) == len(data.x_test)
    assert d.agreement < 0.99 and m.confident_agreement >= 0.99, m
    kinds = [a.kind for a in d.advice]
    assert kinds[0] == "ambiguity" and "damage" not in kinds, d.advice
    ambiguity = d.advice[0]
    assert f"{m.unsure_disagreements} of {m.disagreements} disagreements" in ambiguity.message
    assert f"top-2 margin < {CONFIDENT:g}" in ambiguity.message
    said = " ".join(a.message for a in d.advice) + (d.recovery.note if d.recovery else "")
    assert "max_layers" not in said and "max-layers" not in said
