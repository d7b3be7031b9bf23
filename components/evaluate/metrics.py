"""Evaluation of one prediction set: AUC, LogLoss, calibration (ECE, reliability curve), gAUC.

All inputs are 0/1 labels and raw **logits**; probabilities are sigmoid(logit) in float64.

- AUC and LogLoss come from :mod:`components.train.metrics` (ties count ½; LogLoss clips
  probabilities to [1e-7, 1 − 1e-7]). A label set with a single class raises ValueError.
- Calibration uses ``n_bins`` **equal-width bins on the predicted probability** over [0, 1]:
  bin k holds p with k/n ≤ p < (k+1)/n, the last bin also holds p = 1 (index = min(⌊p·n⌋, n − 1)).
  Per bin the reliability curve gives the mean predicted probability, the observed positive rate
  and the count (empty bins: count 0 and ``None`` for both means, JSON-safe).
  ECE = Σ_k (n_k / N) · |mean_predicted_k − observed_rate_k| over non-empty bins (Guo et al. 2017).
- Predicted vs observed positive rate: mean(p) and mean(y), and their ratio mean(p) / mean(y)
  (1 = calibrated in the large; > 1 over-predicts clicks).
- gAUC (when ``groups`` — e.g. user ids — is given): the AUC of each group computed on its own rows,
  averaged with **impression weights** w_g = number of rows of the group, over the groups that hold
  both classes (a one-class group has no AUC and is left out): gAUC = Σ_g w_g·AUC_g / Σ_g w_g
  (Zhu et al., "Optimized Cost per Click in Taobao Display Advertising", KDD 2017; Zhou et al., DIN,
  KDD 2018, use the same impression weighting). Groups are ranked on the logits (same order as the
  probabilities, without float64 sigmoid saturation creating ties for |z| > ~37); ties inside a group
  get mid-ranks, so a tied positive/negative pair counts ½ exactly like AUC. Computed vectorised: one
  lexsort by (group, logit), mid-ranks from run boundaries, per-group rank sums with ``bincount``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.train.metrics import auc, logloss, sigmoid


def _arrays(labels, logits) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.asarray(labels, dtype=np.float64).reshape(-1),
        np.asarray(logits, dtype=np.float64).reshape(-1),
    )


def calibration(labels, logits, n_bins: int = 15) -> dict[str, Any]:
    """ECE and the reliability curve on ``n_bins`` equal-width probability bins (module doc).

    Returns ``{"ece", "n_bins", "reliability": {"bin_lower", "bin_upper", "mean_predicted",
    "observed_rate", "count"}}`` with one list entry per bin. Labels/logits must already be valid.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(n_bins)
    y, z = _arrays(labels, logits)
    p = sigmoid(z)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    filled = count > 0
    mean_p = np.divide(sum_p, count, out=np.zeros(n_bins), where=filled)
    rate = np.divide(sum_y, count, out=np.zeros(n_bins), where=filled)
    ece = float(np.sum(count[filled] * np.abs(mean_p[filled] - rate[filled])) / y.size)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "ece": ece,
        "n_bins": n_bins,
        "reliability": {
            "bin_lower": edges[:-1].tolist(),
            "bin_upper": edges[1:].tolist(),
            "mean_predicted": [
                float(v) if f else None for v, f in zip(mean_p, filled, strict=True)
            ],
            "observed_rate": [float(v) if f else None for v, f in zip(rate, filled, strict=True)],
            "count": count.tolist(),
        },
    }


def group_auc(labels, logits, groups) -> dict[str, Any]:
    """Impression-weighted mean of per-group AUC over groups holding both classes (module doc).

    Returns ``{"gauc", "gauc_groups" (groups counted), "groups" (all groups),
    "gauc_impression_coverage" (share of rows in counted groups)}``. ValueError when no group has
    both classes or ``groups`` differs in length from the labels.
    """
    y, z = _arrays(labels, logits)
    g_raw = np.asarray(groups).reshape(-1)
    if g_raw.shape != y.shape:
        raise ValueError(f"groups and labels differ in length: {g_raw.size} vs {y.size}")
    try:
        _, g = np.unique(g_raw, return_inverse=True)
    except TypeError as e:  # e.g. None mixed with strings in an object array
        raise ValueError(f"group ids must be mutually comparable (no nulls): {e}") from e
    g = g.reshape(-1)
    n_groups = int(g.max()) + 1 if g.size else 0
    order = np.lexsort((z, g))  # by group, then by logit
    gs, zs, ys = g[order], z[order], y[order]
    n = gs.size
    # position of each row inside its group (1-based)
    size = np.bincount(gs, minlength=n_groups)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    pos = np.arange(n) - start[gs] + 1.0
    # runs of equal (group, logit) share the mean of their positions: mid-ranks
    new_run = np.empty(n, dtype=bool)
    new_run[:1] = True
    new_run[1:] = (gs[1:] != gs[:-1]) | (zs[1:] != zs[:-1])
    run = np.cumsum(new_run) - 1
    run_first = pos[new_run]
    run_last = np.concatenate((pos[np.flatnonzero(new_run)[1:] - 1], pos[-1:]))
    rank = ((run_first + run_last) / 2.0)[run]
    n_pos = np.bincount(gs, weights=ys, minlength=n_groups)
    n_neg = size - n_pos
    rank_sum_pos = np.bincount(gs, weights=rank * ys, minlength=n_groups)
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        raise ValueError(
            f"gAUC is undefined: none of the {n_groups} groups has both a positive and a negative"
        )
    np_v, nn_v = n_pos[valid], n_neg[valid]
    auc_g = (rank_sum_pos[valid] - np_v * (np_v + 1) / 2.0) / (np_v * nn_v)
    weight = size[valid].astype(np.float64)
    return {
        "gauc": float(np.sum(weight * auc_g) / weight.sum()),
        "gauc_groups": int(valid.sum()),
        "groups": n_groups,
        "gauc_impression_coverage": float(weight.sum() / n),
    }


def evaluate_predictions(labels, logits, groups=None, n_bins: int = 15) -> dict[str, Any]:
    """All evaluation metrics of one prediction set (module doc for every definition).

    Keys: ``n``, ``positives``, ``auc``, ``logloss``, ``ece``, ``n_bins``, ``reliability``,
    ``predicted_positive_rate``, ``observed_positive_rate``, ``predicted_to_observed_ratio``, and
    with ``groups``: ``gauc``, ``gauc_groups``, ``groups``, ``gauc_impression_coverage``.
    ValueError (from the AUC) when the labels hold a single class.
    """
    result: dict[str, Any] = {"auc": auc(labels, logits), "logloss": logloss(labels, logits)}
    y, z = _arrays(labels, logits)
    p = sigmoid(z)
    result.update(n=int(y.size), positives=int(y.sum()))
    result.update(calibration(y, z, n_bins))
    observed = float(y.mean())
    result.update(
        predicted_positive_rate=float(p.mean()),
        observed_positive_rate=observed,
        predicted_to_observed_ratio=float(p.mean()) / observed,
    )
    if groups is not None:
        result.update(group_auc(y, z, groups))
    return result
