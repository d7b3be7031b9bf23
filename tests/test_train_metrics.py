"""AUC / LogLoss on logits: hand-computed values, ties, clipping, and the error cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.train.metrics import LOGLOSS_EPS, auc, evaluate_logits, logloss, sigmoid


def test_auc_counts_correctly_ordered_pairs():
    # positives at logits 0.4, 0.35; negatives at 0.1, 0.8.
    # pairs (pos > neg): (0.4>0.1) (0.4<0.8) (0.35>0.1) (0.35<0.8) -> 2 of 4 = 0.5
    assert auc([0, 1, 1, 0], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5)
    # positives {3, 1, -1}, negatives {0, -2}: 3>0, 3>-2, 1>0, 1>-2, -1<0, -1>-2 -> 5 of 6 pairs
    assert auc([1, 1, 1, 0, 0], [3, 1, -1, 0, -2]) == pytest.approx(5 / 6)


def test_auc_ties_count_one_half():
    # one positive and one negative with the same logit -> 0.5; plus a clear win -> (1 + 0.5) / 2
    assert auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)
    assert auc([1, 0, 0], [0.3, 0.3, -1.0]) == pytest.approx(0.75)


def test_auc_is_invariant_to_monotone_transform_and_uses_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    z = rng.normal(size=200)
    assert auc(y, z) == pytest.approx(auc(y, 5 * z + 3))
    assert auc(y, -z) == pytest.approx(1 - auc(y, z))


def test_logloss_hand_computed():
    # logit 0 -> p = 0.5 -> loss ln 2 whatever the label
    assert logloss([1, 0], [0.0, 0.0]) == pytest.approx(math.log(2))
    # label 1 at logit ln 3 (p = 0.75): -ln 0.75; label 0 at logit ln 3: -ln 0.25; mean
    z = math.log(3)
    assert logloss([1, 0], [z, z]) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2)


def test_logloss_clips_confident_mistakes():
    # p = sigmoid(-50) ~ 2e-22 for a positive: clipped to eps, so the loss is -ln(eps) (~16.12)
    assert logloss([1], [-50.0]) == pytest.approx(-math.log(LOGLOSS_EPS), rel=1e-9)
    assert logloss([0], [50.0]) == pytest.approx(-math.log(LOGLOSS_EPS), rel=1e-6)
    assert math.isfinite(logloss([1, 0], [-1e4, 1e4]))


def test_single_class_raises_clear_error():
    with pytest.raises(ValueError, match="AUC is undefined: the labels contain only class 1"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only class 0"):
        evaluate_logits([0, 0], [0.1, 0.2])


@pytest.mark.parametrize(
    ("labels", "logits", "message"),
    [
        ([0, 1], [0.1], "differ in length"),
        ([], [], "empty"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, float("nan")], "NaN"),
    ],
)
def test_bad_inputs_raise(labels, logits, message):
    with pytest.raises(ValueError, match=message):
        evaluate_logits(labels, logits)


def test_sigmoid_is_stable_at_extremes():
    out = sigmoid([-1000.0, 0.0, 1000.0])
    assert out.tolist() == [0.0, 0.5, 1.0]
