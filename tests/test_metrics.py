"""Accuracy figures in numpy, checked against scikit-learn on real predictions."""

from __future__ import annotations

import numpy as np
import pytest

from edgeship import metrics
from edgeship.errors import BadInputError


def _outputs(seed: int, n: int = 300, classes: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    ref = rng.random((n, classes)) + np.eye(classes)[labels] * 0.8
    noisy = ref + rng.normal(0, 0.3, ref.shape)
    return ref, noisy, labels


def test_per_class_and_confusion_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    ref, actual, labels = _outputs(0)
    delta = metrics.compare(ref, actual, labels)
    pred = actual.argmax(1)
    p, r, f, s = sk.precision_recall_fscore_support(labels, pred, labels=range(4), zero_division=0)
    np.testing.assert_allclose(delta.per_class["precision"], p)
    np.testing.assert_allclose(delta.per_class["recall"], r)
    np.testing.assert_allclose(delta.per_class["f1"], f)
    np.testing.assert_array_equal(delta.confusion_matrix, sk.confusion_matrix(labels, pred, labels=range(4)))
    assert delta.accuracy == pytest.approx(sk.accuracy_score(labels, pred))


def test_roc_auc_matches_scikit_learn_with_ties():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) * 0.5 + labels * 0.3, 2)  # rounding makes ties
    assert metrics.roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores))
    assert metrics.roc_auc(np.zeros(5, int), scores[:5]) is None


def test_delta_agreement_and_error_figures():
    ref, actual, labels = _outputs(2)
    exact = metrics.compare(ref, ref, labels)
    assert exact.agreement == 1.0 and exact.max_abs_error == 0 and exact.sqnr_db == metrics.SQNR_EXACT_DB
    noisy = metrics.compare(ref, actual, labels)
    assert noisy.accuracy_delta_pts == pytest.approx((noisy.accuracy - noisy.reference_accuracy) * 100)
    assert 0 < noisy.sqnr_db < 40 and noisy.agreement < 1
    assert noisy.cosine_similarity == pytest.approx(
        float(np.sum(ref * actual) / np.linalg.norm(ref) / np.linalg.norm(actual)))


def test_sqnr_is_signal_over_noise_in_db():
    ref = np.ones((10, 2))
    assert metrics.sqnr_db(ref, ref + 0.1) == pytest.approx(20.0)


def test_mismatched_shapes_are_refused():
    with pytest.raises(BadInputError, match="received reference"):
        metrics.compare(np.zeros((3, 2)), np.zeros((3, 3)), np.zeros(3, int))


def test_accuracy_is_the_one_definition_every_figure_uses():
    sk = pytest.importorskip("sklearn.metrics")
    ref, actual, labels = _outputs(3)
    pred = actual.argmax(1)
    assert metrics.accuracy(pred, labels) == pytest.approx(sk.accuracy_score(labels, pred))
    assert metrics.compare(ref, actual, labels).accuracy == metrics.accuracy(pred, labels)
    # 0/1 label matrices: the fraction of entries right (label accuracy), not whole rows
    assert metrics.accuracy(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [1, 1]])) == 0.75
