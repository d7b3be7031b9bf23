"""Oracle metrics: AUC and LogLoss when the score is the true click probability.

No model can beat them on average; they are the ceiling that benchmark results are read against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import log_loss, roc_auc_score


def oracle_metrics(proba_path: str | Path) -> tuple[float, float]:
    """(AUC, LogLoss) of score = ``p`` against ``label`` in a proba parquet file (sklearn).

    AUC is NaN when the file holds only one class.
    """
    table = pq.read_table(proba_path, columns=["p", "label"])
    p = table.column("p").to_numpy()
    label = table.column("label").to_numpy()
    auc = float(roc_auc_score(label, p)) if 0 < label.sum() < len(label) else float("nan")
    return auc, float(log_loss(label, p, labels=[0, 1]))


def finite_or_none(x: float) -> float | None:
    """``x``, or None when it is NaN/inf (JSON has no NaN)."""
    return x if np.isfinite(x) else None
