"""Preprocessing specs and task scoring, on arrays: every figure against numpy or scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from edgeship.errors import BadInputError
from edgeship.data import Preprocess
from edgeship.records import Gate
from edgeship.tasks import Scorer, align, detect, said, score


@pytest.mark.parametrize("spec, expected", [
    ("none", lambda x: x),
    ("unit", lambda x: x / 255),
    ("symmetric", lambda x: x / 127.5 - 1),
    ("imagenet", lambda x: (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])),
    ("scale=0.5,offset=1,mean=2/3/4,std=2", lambda x: (x * 0.5 + 1 - np.array([2, 3, 4])) / 2),
])
def test_presets_and_items_compute_what_they_say(spec, expected):
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
    got = Preprocess.parse(spec).apply(x)
    want = expected(x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.dtype == (np.uint8 if spec == "none" else np.float32)  # "none" keeps integer ids as they are


def test_layout_nchw_transposes_after_the_arithmetic():
    x = np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3)
    got = Preprocess.parse("unit,layout=nchw").apply(x)
    np.testing.assert_allclose(got, np.moveaxis(x / 255, -1, 1), rtol=1e-6)
    assert got.shape == (2, 3, 3, 4) and got.flags.c_contiguous


def test_the_canonical_spec_reloads_to_the_same_bits():
    spec = Preprocess.parse("scale=0.00392156862745098,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=nchw")
    x = np.random.default_rng(1).integers(0, 256, (3, 5, 5, 3))
    again = Preprocess.parse(spec.spec)
    assert np.array_equal(spec.apply(x), again.apply(x))


@pytest.mark.parametrize("spec, message", [
    ("unit8", "is not a preset"), ("scale=two", "takes decimal numbers"), ("std=0", "std=0 is outside"),
    ("layout=chw", "layout takes nhwc or nchw"), ("scale=1,scale=2", "names scale twice"), ("scale=1/2", "one number"),
    # the strict grammar: known keys and presets as written, ASCII finite numbers in a float32-safe range, an item
    ("scale=0", "scale=0 is outside"), ("scale=1e39", "scale=1e\\+39 is outside"), ("mean=1e308", "mean=1e\\+308 is outside"),
    ("std=1e-30", "std=1e-30 is outside"), ("std=1e-46", "std=1e-46 is outside"), (",,,", "has an empty item"),
    ("   ", "names no item"), ("", "names no item"), ("scale=\uff11", "written in ASCII"), ("SCALE=1", "'SCALE=1' is not one"),
    ("UNIT", "'UNIT' is not a preset"), ("layout=NCHW", "lower-case"), ("scale=inf", "written in ASCII"),
    ("scale=1_0", "written in ASCII"), ("scale=1,,offset=2", "has an empty item"),
])
def test_bad_specs_say_what_was_received(spec, message):
    with pytest.raises(BadInputError, match=message):
        Preprocess.parse(spec)


def test_per_channel_values_must_match_the_channels():
    with pytest.raises(BadInputError, match="3 per-channel values but the samples have 4 channels"):
        Preprocess.parse("mean=1/2/3").apply(np.zeros((1, 2, 2, 4)))


def _probs(rng, n, k):
    logits = rng.normal(size=(n, k))
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_tasks_are_detected_from_outputs_and_targets():
    x = (np.zeros((4, 3)),)
    assert detect([np.zeros((4, 5))], ("classes",), inputs=x) == ("multiclass",)
    assert detect([np.zeros((4, 1))], ("classes",), inputs=x) == ("binary",)
    assert detect([np.zeros((4, 5))], ("multilabel",), inputs=x) == ("multilabel",)
    assert detect([np.zeros((4, 1))], ("regression",), inputs=x) == ("regression",)
    assert detect([np.zeros((4, 3))], (), inputs=x) == ("autoencoder",)
    assert detect([np.zeros((4, 5)), np.zeros((4, 1))], ("classes", "classes"), inputs=x) == ("multiclass", "binary")
    assert detect([np.zeros((4, 3))], (), inputs=x, task="regression") == ("regression",)


def test_binary_multilabel_and_regression_figures_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    ref = np.clip(y * 0.6 + rng.uniform(0, 0.4, 300), 0, 1)[:, None]
    out = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1)
    b = score([ref], [out], [y], ["binary"], inputs=(np.zeros((300, 2)),))
    assert b.accuracy == pytest.approx(sk.accuracy_score(y, out[:, 0] > 0.5))
    assert b.agreement == pytest.approx(np.mean((out[:, 0] > 0.5) == (ref[:, 0] > 0.5)))
    assert b.roc_auc == pytest.approx(sk.roc_auc_score(y, out[:, 0]))
    assert b.headline.delta == pytest.approx(100 * (b.accuracy - sk.accuracy_score(y, ref[:, 0] > 0.5)))
    yl = rng.integers(0, 2, (300, 4))
    ref_l = np.clip(yl * 0.7 + rng.uniform(0, 0.3, yl.shape), 0, 1)
    out_l = np.clip(ref_l + rng.normal(0, 0.1, yl.shape), 0, 1)
    m = score([ref_l], [out_l], [yl], ["multilabel"], inputs=(np.zeros((300, 2)),))
    assert m.accuracy == pytest.approx(np.mean((out_l > 0.5) == yl))
    np.testing.assert_allclose(m.per_class["f1"], sk.f1_score(yl, out_l > 0.5, average=None, zero_division=0))
    yr = rng.normal(size=300)
    ref_r, out_r = yr + rng.normal(0, 0.1, 300), yr + rng.normal(0, 0.12, 300)
    r = score([ref_r[:, None]], [out_r[:, None]], [yr], ["regression"], inputs=(np.zeros((300, 2)),))
    mae, mae_ref = sk.mean_absolute_error(yr, out_r), sk.mean_absolute_error(yr, ref_r)
    assert r.headline.value == pytest.approx(mae) and r.headline.delta == pytest.approx(-100 * (mae - mae_ref) / mae_ref)
    assert r.accuracy is None and r.per_class == {}


def test_autoencoder_auc_is_the_auc_of_the_reconstruction_error():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16))
    labels = (np.arange(200) < 30).astype(np.int64)
    ref = x + rng.normal(0, 0.1, x.shape) * (1 + 5 * labels[:, None])
    out = ref + rng.normal(0, 0.05, x.shape)
    a = score([ref], [out], [labels], ["autoencoder"], inputs=(x,))
    assert a.roc_auc == pytest.approx(sk.roc_auc_score(labels, np.square(out - x).mean(1)))
    assert a.headline.unit == "AUC points"
    plain = score([ref], [out], [None], ["autoencoder"], inputs=(x,))
    assert plain.headline.name == "reconstruction error" and plain.headline.unit == "% error growth"


def test_the_gate_reads_each_output_in_its_unit():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    ref = _probs(rng, 200, 3)
    worse = ref.copy()
    worse[:40] = worse[:40, ::-1]  # flips some predictions: accuracy moves, and so does the regression head
    yr = rng.normal(size=200)
    delta = score([ref, yr[:, None] + 0.1], [worse, yr[:, None] + 0.2], [y, yr], ["multiclass", "regression"],
                  inputs=(np.zeros((200, 2)),), names=("cls", "value"))
    assert [o.output for o in delta.outputs] == ["cls", "value"]
    failures = Gate(max_drop=50.0).check(delta)
    assert failures == ("value: MAE rose 100.00 % error growth (max 50)",)
    # an error that grew reads as growth: "+100.00 % error growth", and one that shrank as "-…"
    assert said(delta.outputs[1]) == "MAE +100.00 % error growth"
    better = score([yr[:, None] + 0.2], [yr[:, None] + 0.1], [yr], ["regression"], inputs=(np.zeros((200, 2)),))
    assert said(better) == "MAE -50.00 % error growth" and better.headline.delta == 50.0


def test_outputs_are_aligned_by_shape_when_a_format_reorders_them():
    a, b = np.zeros((4, 10)), np.ones((4, 1))
    assert [o.shape for o in align([a, b], [b, a])] == [(4, 10), (4, 1)]
    assert align([a, a + 1], [a + 1, a])[0][0, 0] == 1  # equal shapes: order is all there is


def test_a_scorer_scores_the_float_model_perfectly():
    class Data:
        targets, classes = ("classes",), ("a", "b", "c")

        def inputs(self, split):
            return (np.zeros((50, 2)),)

        def labels(self, split):
            return (np.arange(50) % 3,)

    ref = _probs(np.random.default_rng(3), 50, 3)
    own = Scorer.for_split(Data(), ref)(ref)
    assert own.agreement == 1.0 and own.headline.delta == 0.0 and own.sqnr_db == 300.0


def test_labels_a_binary_model_cannot_predict_are_a_clear_error_not_an_index_error():
    # a sigmoid model validated on six-class data (a stranger's slip): said in one line
    out = np.random.default_rng(0).random((60, 1))
    y = np.arange(60) % 6
    with pytest.raises(BadInputError, match=r"labels run 0\.\.5, but the model's output scores 2 classes"):
        score([out], [out], [y], ["binary"], inputs=(np.zeros((60, 2)),))
