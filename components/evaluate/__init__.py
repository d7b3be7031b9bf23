"""Evaluation: per-prediction-set metrics (AUC, LogLoss, calibration, gAUC) and multi-seed statistics.

- :mod:`.metrics`: :func:`evaluate_predictions`, :func:`calibration`, :func:`group_auc`
- :mod:`.aggregate`: :func:`aggregate_seeds`, :func:`paired_comparison`, :func:`compare_runs`,
  :func:`prediction_agreement`

The names load their module (scikit-learn, scipy) on first use, not on import of the package: the
settings module (:mod:`.settings`, read by ``components.config``) must stay light.
"""

from __future__ import annotations

from components.lazy_exports import lazy_exports

_HOMES = {
    "aggregate_seeds": "aggregate",
    "compare_runs": "aggregate",
    "paired_comparison": "aggregate",
    "prediction_agreement": "aggregate",
    "calibration": "metrics",
    "evaluate_predictions": "metrics",
    "group_auc": "metrics",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
