"""Evaluation metrics, calibration, gAUC, multi-seed aggregation and agreement on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from components.evaluate import (
    aggregate_seeds,
    calibration,
    compare_runs,
    evaluate_predictions,
    group_auc,
    paired_comparison,
    prediction_agreement,
)

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------- AUC / LogLoss


def test_auc_and_logloss_hand_computed_with_a_tie():
    labels, logits = [1, 0, 1, 0], [2.0, 0.0, 0.0, -1.0]
    r = evaluate_predictions(labels, logits)
    # positives {2, 0}, negatives {0, -1}: 2>0, 2>-1, 0=0 (1/2), 0>-1 -> 3.5 of 4 pairs
    assert r["auc"] == pytest.approx(0.875)
    expected_ll = (
        -math.log(sig(2.0)) - math.log(1 - sig(0.0)) - math.log(sig(0.0)) - math.log(1 - sig(-1.0))
    ) / 4
    assert r["logloss"] == pytest.approx(expected_ll)
    assert (r["n"], r["positives"]) == (4, 2)


def test_single_class_is_a_clear_error():
    with pytest.raises(ValueError, match="only class 1"):
        evaluate_predictions([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only class 0"):
        evaluate_predictions([0, 0], [0.1, 0.2], groups=["a", "b"])


# ----------------------------------------------------------------- calibration

# probabilities 0.75, 0.75, 0.25, 0.5 with labels 1, 0, 0, 1
CAL_LABELS = [1, 0, 0, 1]
CAL_LOGITS = [LN3, LN3, -LN3, 0.0]


def test_ece_two_bins_and_left_closed_bin_edges():
    # bins [0, .5) and [.5, 1]: p = .5 goes to the upper bin.
    # bin 0: {.25} mean .25, rate 0;  bin 1: {.75, .75, .5} mean 2/3, rate 2/3
    # ECE = 1/4 * .25 + 3/4 * 0 = 0.0625
    r = calibration(CAL_LABELS, CAL_LOGITS, n_bins=2)
    assert r["ece"] == pytest.approx(0.0625)
    rel = r["reliability"]
    assert rel["count"] == [1, 3]
    assert rel["mean_predicted"] == pytest.approx([0.25, 2 / 3])
    assert rel["observed_rate"] == pytest.approx([0.0, 2 / 3])
    assert rel["bin_lower"] == [0.0, 0.5] and rel["bin_upper"] == [0.5, 1.0]


def test_reliability_curve_four_bins_with_an_empty_bin():
    # bins [0,.25) [.25,.5) [.5,.75) [.75,1]: .25 -> bin 1, .5 -> bin 2, .75 -> bin 3, bin 0 empty
    r = calibration(CAL_LABELS, CAL_LOGITS, n_bins=4)
    rel = r["reliability"]
    assert rel["count"] == [0, 1, 1, 2]
    assert rel["mean_predicted"][0] is None and rel["observed_rate"][0] is None
    assert rel["mean_predicted"][1:] == pytest.approx([0.25, 0.5, 0.75])
    assert rel["observed_rate"][1:] == pytest.approx([0.0, 1.0, 0.5])
    # ECE = 1/4·|.25−0| + 1/4·|.5−1| + 2/4·|.75−.5| = 0.3125
    assert r["ece"] == pytest.approx(0.3125)


def test_probability_one_falls_in_the_last_bin():
    # sigmoid(40) == 1.0 in float64; it must land in the last bin, not past it
    r = calibration([1, 0], [40.0, -40.0], n_bins=10)
    assert r["reliability"]["count"] == [1] + [0] * 8 + [1]
    assert r["ece"] == pytest.approx(0.0, abs=1e-15)


def test_predicted_vs_observed_rate_and_full_report():
    r = evaluate_predictions(CAL_LABELS, CAL_LOGITS, n_bins=2)
    assert r["predicted_positive_rate"] == pytest.approx((0.75 + 0.75 + 0.25 + 0.5) / 4)
    assert r["observed_positive_rate"] == pytest.approx(0.5)
    assert r["predicted_to_observed_ratio"] == pytest.approx(1.125)
    assert r["ece"] == pytest.approx(0.0625)
    assert "gauc" not in r


def test_calibration_rejects_bad_bin_count():
    with pytest.raises(ValueError, match="n_bins"):
        calibration([0, 1], [0.0, 1.0], n_bins=0)


# ----------------------------------------------------------------- gAUC

# user a: labels 1,0,0 logits .9,.1,.95 -> pos .9 beats .1, loses to .95 -> AUC 1/2, weight 3
# user b: labels 1,1,0,0 logits .6,.8,.5,.6 -> .6>.5, .6=.6 (1/2), .8>.5, .8>.6 -> 3.5/4, weight 4
# user c: two negatives -> no AUC, left out
G_LABELS = [1, 0, 0, 1, 1, 0, 0, 0, 0]
G_LOGITS = [0.9, 0.1, 0.95, 0.6, 0.8, 0.5, 0.6, 0.3, 0.2]
G_USERS = ["a", "a", "a", "b", "b", "b", "b", "c", "c"]


def test_gauc_hand_example_impression_weighted():
    r = group_auc(G_LABELS, G_LOGITS, G_USERS)
    assert r["gauc"] == pytest.approx((3 * 0.5 + 4 * 0.875) / 7)  # = 5/7
    assert r["gauc_groups"] == 2 and r["groups"] == 3
    assert r["gauc_impression_coverage"] == pytest.approx(7 / 9)


def test_gauc_row_order_does_not_matter_and_is_in_full_report():
    perm = [8, 3, 0, 5, 1, 7, 6, 2, 4]
    r = evaluate_predictions(
        np.array(G_LABELS)[perm], np.array(G_LOGITS)[perm], groups=np.array(G_USERS)[perm]
    )
    assert r["gauc"] == pytest.approx(5 / 7)


def test_gauc_matches_per_group_sklearn_on_random_ties():
    rng = np.random.default_rng(3)
    n = 3000
    g = rng.integers(0, 40, n)
    y = rng.integers(0, 2, n)
    z = np.round(rng.normal(size=n) + 0.4 * y, 1)  # rounding creates many ties
    num = den = 0.0
    for k in np.unique(g):
        m = g == k
        if len(np.unique(y[m])) == 2:
            num += m.sum() * roc_auc_score(y[m], z[m])
            den += m.sum()
    assert group_auc(y, z, g)["gauc"] == pytest.approx(num / den, rel=1e-12)
    # one group only: gAUC is the plain AUC
    assert group_auc(y, z, np.zeros(n))["gauc"] == pytest.approx(roc_auc_score(y, z))


def test_gauc_errors():
    with pytest.raises(ValueError, match="none of the 2 groups"):
        group_auc([1, 0], [0.3, 0.1], ["a", "b"])
    with pytest.raises(ValueError, match="differ in length"):
        group_auc([1, 0], [0.3, 0.1], ["a"])


# ----------------------------------------------------------------- multi-seed aggregation

STUDENT = {1: {"auc": 0.80, "logloss": 0.45}, 2: {"auc": 0.82, "logloss": 0.44},
           3: {"auc": 0.84, "logloss": 0.43}}  # fmt: skip
TEACHER = {1: {"auc": 0.81, "logloss": 0.44}, 2: {"auc": 0.81, "logloss": 0.44},
           3: {"auc": 0.82, "logloss": 0.44}}  # fmt: skip


def test_aggregate_mean_and_sample_std():
    agg = aggregate_seeds(STUDENT)
    assert agg["auc"]["mean"] == pytest.approx(0.82)
    # deviations −.02, 0, +.02 -> sum of squares 8e-4 / (3 − 1) -> std 0.02
    assert agg["auc"]["std"] == pytest.approx(0.02)
    assert agg["logloss"]["std"] == pytest.approx(0.01)
    assert agg["auc"]["values"] == [0.80, 0.82, 0.84] and agg["auc"]["seeds"] == [1, 2, 3]
    assert (agg["auc"]["min"], agg["auc"]["max"], agg["auc"]["n"]) == (0.80, 0.84, 3)


def test_aggregate_skips_non_numeric_and_flags_missing():
    runs = {0: {"auc": 0.7, "reliability": {"count": [1]}, "ok": True}, 1: {"auc": 0.9}}
    agg = aggregate_seeds(runs)
    assert set(agg) == {"auc"} and agg["auc"]["mean"] == pytest.approx(0.8)
    assert aggregate_seeds({0: {"auc": 0.7}})["auc"]["std"] is None  # one seed: std undefined
    with pytest.raises(ValueError, match="'logloss' is missing .* seed\\(s\\) \\[1\\]"):
        aggregate_seeds({0: {"auc": 0.7, "logloss": 0.4}, 1: {"auc": 0.9}})


def test_paired_comparison_hand_numbers():
    r = paired_comparison(STUDENT, TEACHER, "auc")
    assert r["differences"] == pytest.approx([-0.01, 0.01, 0.02])
    mean = 0.02 / 3
    sd = math.sqrt(((-0.01 - mean) ** 2 + (0.01 - mean) ** 2 + (0.02 - mean) ** 2) / 2)
    assert r["mean_diff"] == pytest.approx(mean)
    assert r["std_diff"] == pytest.approx(sd)
    t = mean / (sd / math.sqrt(3))
    assert r["t_statistic"] == pytest.approx(t)
    assert r["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    ll = compare_runs(STUDENT, TEACHER)["logloss"]
    assert ll["differences"] == pytest.approx([0.01, 0.0, -0.01])
    assert ll["mean_diff"] == pytest.approx(0.0)


def test_paired_comparison_degenerate_and_mismatched_seeds():
    one = paired_comparison({7: {"auc": 0.8}}, {7: {"auc": 0.7}}, "auc")
    assert one["mean_diff"] == pytest.approx(0.1) and one["std_diff"] is None
    assert one["p_value"] is None
    const = paired_comparison(
        {1: {"auc": 0.8}, 2: {"auc": 0.9}}, {1: {"auc": 0.7}, 2: {"auc": 0.8}}, "auc"
    )
    assert const["std_diff"] == pytest.approx(0.0) and const["p_value"] is None
    with pytest.raises(ValueError, match="only student: \\[3\\]"):
        paired_comparison(STUDENT, {1: TEACHER[1], 2: TEACHER[2]}, "auc")


# ----------------------------------------------------------------- student/teacher agreement


def test_prediction_agreement_exact():
    # t = s / 2: logits perfectly correlated; probabilities are 3 points symmetric about (.5, .5),
    # hence collinear -> Pearson exactly 1
    r = prediction_agreement([-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0])
    assert r["mean_abs_logit_diff"] == pytest.approx(2 / 3)
    assert r["max_abs_logit_diff"] == pytest.approx(1.0)
    assert r["rms_logit_diff"] == pytest.approx(math.sqrt(2 / 3))
    assert r["mean_abs_prob_diff"] == pytest.approx(2 * (sig(2) - sig(1)) / 3)
    assert r["pearson_logits"] == pytest.approx(1.0)
    assert r["pearson_probs"] == pytest.approx(1.0)
    flipped = prediction_agreement([-1.0, 1.0], [1.0, -1.0])
    assert flipped["pearson_logits"] == pytest.approx(-1.0)
    assert flipped["mean_abs_prob_diff"] == pytest.approx(sig(1) - sig(-1))
    constant_teacher = prediction_agreement([1.0, 2.0], [3.0, 3.0])
    assert constant_teacher["pearson_logits"] is None
    with pytest.raises(ValueError, match="differ in length"):
        prediction_agreement([1.0], [1.0, 2.0])
