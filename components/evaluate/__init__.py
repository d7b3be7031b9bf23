"""Evaluation: per-prediction-set metrics (AUC, LogLoss, calibration, gAUC) and multi-seed statistics.

- :mod:`.metrics`: :func:`evaluate_predictions`, :func:`calibration`, :func:`group_auc`
- :mod:`.aggregate`: :func:`aggregate_seeds`, :func:`paired_comparison`, :func:`compare_runs`,
  :func:`prediction_agreement`
"""

from .aggregate import aggregate_seeds, compare_runs, paired_comparison, prediction_agreement
from .metrics import calibration, evaluate_predictions, group_auc

__all__ = [
    "aggregate_seeds",
    "calibration",
    "compare_runs",
    "evaluate_predictions",
    "group_auc",
    "paired_comparison",
    "prediction_agreement",
]
