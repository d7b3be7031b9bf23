"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- :func:`pareto_png`: test AUC vs FLOPs per sample (log x), one labelled point per model;
- :func:`roc_png`: ROC curves of every model with the chance diagonal;
- :func:`reliability_png`: observed click rate vs mean predicted probability per non-empty bin;
- :func:`curve_png`: the teacher's per-epoch validation AUC and training loss.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _style(name: str) -> dict:
    if name == "teacher":
        return {"color": "black", "linewidth": 2.0}
    return {"linestyle": "--"} if name.startswith("baseline_") else {}


def pareto_png(points: Sequence[tuple[str, float, float]]) -> bytes:
    """Scatter of (name, flops_per_sample, auc) with log-scaled FLOPs."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    for name, flops, auc in points:
        marker = "s" if name == "teacher" else "^" if name.startswith("baseline_") else "o"
        ax.scatter([flops], [auc], marker=marker, s=50, color="black" if name == "teacher" else None)
        ax.annotate(name, (flops, auc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per sample (log scale)")
    ax.set_ylabel("test AUC")
    ax.set_title("Accuracy vs inference cost")
    ax.grid(True, which="both", alpha=0.3)
    return _png(fig)


def roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], aucs: dict[str, float]) -> bytes:
    """ROC curves (fpr, tpr) by model name; the legend shows each model's AUC when known."""
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    for name, (fpr, tpr) in curves.items():
        label = f"{name} (AUC {aucs[name]:.4f})" if name in aucs else name
        ax.plot(fpr, tpr, label=label, **_style(name))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def reliability_png(curves: dict[str, tuple[list, list]]) -> bytes:
    """Observed rate vs mean predicted probability per model (``None`` entries = empty bins)."""
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    top = 0.0
    for name, (pred, obs) in curves.items():
        p = np.array([np.nan if v is None else v for v in pred], dtype=float)
        o = np.array([np.nan if v is None else v for v in obs], dtype=float)
        keep = ~(np.isnan(p) | np.isnan(o))
        ax.plot(p[keep], o[keep], marker="o", markersize=3, label=name, **_style(name))
        if keep.any():
            top = max(top, float(np.max(p[keep])), float(np.max(o[keep])))
    lim = min(1.0, top * 1.05) if top > 0 else 1.0
    ax.plot([0, lim], [0, lim], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed click rate")
    ax.set_title("Reliability")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def curve_png(rows: Sequence[dict[str, float]]) -> bytes:
    """Teacher training curve: validation AUC and training loss per epoch (two panels)."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(9.0, 3.6))
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r.get("valid_auc", np.nan) for r in rows], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("validation AUC")
    right.plot(epochs, [r.get("train_loss", np.nan) for r in rows], marker="o", label="train loss")
    if any("valid_logloss" in r for r in rows):
        right.plot(epochs, [r.get("valid_logloss", np.nan) for r in rows], marker="o",
                   label="valid LogLoss")
    right.set_xlabel("epoch")
    right.set_ylabel("loss")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Teacher training curve")
    return _png(fig)
