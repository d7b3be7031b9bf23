"""AUC and LogLoss of click predictions, computed from **logits** with scikit-learn.

Both functions take the model's raw logits (no sigmoid) and apply the sigmoid inside, in float64.

- AUC: :func:`sklearn.metrics.roc_auc_score` (ties between a positive and a negative count 1/2).
  It is undefined when the labels hold a single class; that raises a ValueError saying which class.
- LogLoss: :func:`sklearn.metrics.log_loss` on probabilities clipped to
  ``[LOGLOSS_EPS, 1 - LOGLOSS_EPS]`` with ``LOGLOSS_EPS = 1e-7`` (the ``eps`` FuxiCTR passes to
  sklearn), so one confidently wrong prediction costs at most -ln(1e-7) ≈ 16.1 instead of ∞.
  scikit-learn ≥ 1.5 dropped its own ``eps`` argument, hence the explicit clip here.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import log_loss, roc_auc_score

LOGLOSS_EPS = 1e-7


def _check(labels, logits) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if y.shape != z.shape:
        raise ValueError(f"labels and logits differ in length: {y.size} vs {z.size}")
    if y.size == 0:
        raise ValueError("cannot compute metrics on an empty set of predictions")
    if not np.isin(y, (0.0, 1.0)).all():
        bad = y[~np.isin(y, (0.0, 1.0))][0]
        raise ValueError(f"labels must be 0 or 1, found {bad!r}")
    if not np.isfinite(z).all():
        raise ValueError(f"{int((~np.isfinite(z)).sum())} logits are NaN or infinite")
    return y, z


def sigmoid(logits) -> np.ndarray:
    """Numerically stable logistic function in float64."""
    return expit(np.asarray(logits, dtype=np.float64))


def auc(labels, logits) -> float:
    """ROC AUC of ``logits`` against 0/1 ``labels``; ValueError if only one class is present."""
    y, z = _check(labels, logits)
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"AUC is undefined: the labels contain only class {int(classes[0])}")
    return float(roc_auc_score(y, sigmoid(z)))


def logloss(labels, logits) -> float:
    """Mean binary cross-entropy of sigmoid(logits), probabilities clipped to [eps, 1 - eps]."""
    y, z = _check(labels, logits)
    p = np.clip(sigmoid(z), LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
    return float(log_loss(y, p, labels=[0.0, 1.0]))


def evaluate_logits(labels, logits) -> dict[str, float]:
    """``{"auc": ..., "logloss": ...}`` for one prediction set."""
    return {"auc": auc(labels, logits), "logloss": logloss(labels, logits)}
