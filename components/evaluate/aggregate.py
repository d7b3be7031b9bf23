"""Multi-seed aggregation, paired student-vs-teacher comparison, and prediction agreement.

Single-run gaps between CTR models are often below seed noise (anchors.md §2: BARS reports run 1,
five-run stds of 2e-4 … 1.7e-3 AUC), so ctrflow reports the **mean over seeds** and compares a
student with its teacher **paired by seed**.

- :func:`aggregate_seeds`: per metric, mean and sample std (ddof = 1; ``None`` with one seed) over
  seeds, plus min/max and the per-seed values. Only numeric scalar metrics are aggregated (lists such
  as a reliability curve are skipped); a numeric metric missing from some seed is an error.
- :func:`paired_comparison`: per-seed differences d_s = student_s − teacher_s over the SAME seeds,
  their mean and std (ddof = 1), and a two-sided paired t-test (``scipy.stats.ttest_rel``) when
  there are ≥ 2 seeds. When every difference is equal (std ≤ 1e-12·max(1, max|d|), i.e. 0 up to
  float rounding) the t statistic is undefined and t / p are ``None``.
- :func:`prediction_agreement`: how closely a student reproduces its teacher on the same rows:
  mean / max / RMS |Δ logit|, mean |Δ probability|, and the Pearson correlation of the logits and of
  the probabilities (``None`` when either side is constant).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from scipy import stats

from components.train.metrics import sigmoid

_EQUAL_DIFF_TOL = 1e-12  # std of differences at or below this (relative) counts as 0
Runs = Mapping[Hashable, Mapping[str, Any]]  # seed → metrics of that seed's run


def _is_scalar_number(v: Any) -> bool:
    return isinstance(v, (Real, np.number)) and not isinstance(v, (bool, np.bool_))


def _metric_names(runs: Runs, metrics: Sequence[str] | None) -> list[str]:
    if not runs:
        raise ValueError("no runs to aggregate")
    if metrics is None:
        metrics = sorted({k for r in runs.values() for k, v in r.items() if _is_scalar_number(v)})
    for m in metrics:
        missing = [s for s, r in runs.items() if m not in r]
        if missing:
            raise ValueError(f"metric {m!r} is missing from the run(s) of seed(s) {missing}")
        bad = [s for s, r in runs.items() if not _is_scalar_number(r[m])]
        if bad:
            raise ValueError(f"metric {m!r} is not a number in the run(s) of seed(s) {bad}")
    return list(metrics)


def _std(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if values.size >= 2 else None


def aggregate_seeds(runs: Runs, metrics: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{metric: {"mean", "std", "min", "max", "n", "seeds", "values"}}`` over the runs' seeds.

    ``runs`` maps seed → metrics dict (e.g. :func:`evaluate_predictions` output); ``metrics``
    defaults to every numeric scalar metric found. std is the sample std (ddof = 1).
    """
    names = _metric_names(runs, metrics)
    seeds = list(runs)
    out: dict[str, dict[str, Any]] = {}
    for m in names:
        values = np.array([float(runs[s][m]) for s in seeds])
        out[m] = {
            "mean": float(values.mean()),
            "std": _std(values),
            "min": float(values.min()),
            "max": float(values.max()),
            "n": int(values.size),
            "seeds": seeds,
            "values": values.tolist(),
        }
    return out


def paired_comparison(student: Runs, teacher: Runs, metric: str) -> dict[str, Any]:
    """Student − teacher on ``metric``, paired by seed (module doc); the seed sets must match."""
    only_s = [s for s in student if s not in teacher]
    only_t = [s for s in teacher if s not in student]
    if only_s or only_t:
        raise ValueError(
            f"student and teacher must cover the same seeds; only student: {only_s}, "
            f"only teacher: {only_t}"
        )
    _metric_names(student, [metric])
    _metric_names(teacher, [metric])
    seeds = list(student)
    s = np.array([float(student[k][metric]) for k in seeds])
    t = np.array([float(teacher[k][metric]) for k in seeds])
    diff = s - t
    std = _std(diff)
    t_stat = p_value = None
    if std is not None and std > _EQUAL_DIFF_TOL * max(1.0, float(np.abs(diff).max())):
        res = stats.ttest_rel(s, t)
        t_stat, p_value = float(res.statistic), float(res.pvalue)
    return {
        "metric": metric,
        "n": int(diff.size),
        "seeds": seeds,
        "student": s.tolist(),
        "teacher": t.tolist(),
        "differences": diff.tolist(),
        "mean_diff": float(diff.mean()),
        "std_diff": std,
        "t_statistic": t_stat,
        "p_value": p_value,
    }


def compare_runs(
    student: Runs, teacher: Runs, metrics: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`paired_comparison` for every metric (default: numeric metrics present in both)."""
    if metrics is None:
        metrics = [m for m in _metric_names(student, None) if m in _metric_names(teacher, None)]
    return {m: paired_comparison(student, teacher, m) for m in metrics}


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    r = float(np.corrcoef(a, b)[0, 1])
    return r if math.isfinite(r) else None


def prediction_agreement(student_logits, teacher_logits) -> dict[str, Any]:
    """Agreement of two logit vectors on the same rows (module doc for each key)."""
    s = np.asarray(student_logits, dtype=np.float64).reshape(-1)
    t = np.asarray(teacher_logits, dtype=np.float64).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"student and teacher logits differ in length: {s.size} vs {t.size}")
    if s.size == 0:
        raise ValueError("cannot compare empty prediction sets")
    if not (np.isfinite(s).all() and np.isfinite(t).all()):
        raise ValueError("student or teacher logits contain NaN or infinite values")
    diff = np.abs(s - t)
    ps, pt = sigmoid(s), sigmoid(t)
    return {
        "n": int(s.size),
        "mean_abs_logit_diff": float(diff.mean()),
        "max_abs_logit_diff": float(diff.max()),
        "rms_logit_diff": float(np.sqrt(np.mean(diff**2))),
        "mean_abs_prob_diff": float(np.abs(ps - pt).mean()),
        "pearson_logits": _pearson(s, t),
        "pearson_probs": _pearson(ps, pt),
    }
