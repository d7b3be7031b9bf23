"""The baseline gate of the train_teacher stage: a teacher must beat LR and the constant predictor.

A teacher that loses to logistic regression, or whose LogLoss is worse than predicting the training
CTR for every row, is not worth distilling: every student would be measured against the wrong
reference. Every train_teacher run therefore also

- fits **LR** (the zoo's ``lr``: one weight per categorical id and dense field) on the same split
  with the teacher's batch size and seed and the gate's own optimiser settings
  (``train.gate.baseline_*``: params.yaml's Adam 1e-3, up to 100 epochs, patience 2 — a higher
  rate overfits Criteo; at 20 epochs LR was still improving on MovieLens-100K, Frappe and Avazu 10k,
  it converges at epochs 57–61 there: benchmarks/results/quality.md, observation 10). With
  ``train.logistic_base`` the teacher's frozen base comes from the same fit, stopped earlier
  (``train.logistic_base_max_epochs``, 20): over the converged LR DCNv2 collapses onto it on
  MovieLens-100K. So the gate compares with the converged LR, the network learns over the early one;
- scores the **constant predictor** (the training split's CTR for every row).

The teacher passes when its valid AUC exceeds LR's by at least ``train.gate.min_auc_gain`` *and*
its valid LogLoss is below the constant predictor's. The verdict, the numbers on both splits and a
message stating them land in ``metrics/teacher.json`` under ``gate``; ``train.gate.on_fail``
decides what a failed gate does: ``fail`` raises :class:`GateFailed` from the stage (the flow stops
before distillation), ``warn`` lets the run go on with the warning in the log, the report and the
flow's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from components.data.feature_map import FeatureMap

BASELINE_DIR = "baseline_lr"
"""Subdirectory of ``train.out_dir`` holding the gate's LR checkpoint."""

LOGISTIC_BASE_DIR = "logistic_base"
"""Subdirectory of ``train.out_dir`` holding the teacher's frozen logistic base: the gate LR's best
weights of its first ``train.logistic_base_max_epochs`` epochs (components/train/teacher.py)."""


class GateFailed(RuntimeError):
    """The teacher did not beat the baselines and ``train.gate.on_fail`` is ``fail``."""


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    message: str
    record: dict


def _labels(processed: Path, fmap: FeatureMap, split: str) -> np.ndarray:
    path = processed / fmap.splits[split]["path"]
    return pq.read_table(path, columns=[fmap.label]).column(0).to_numpy().astype(np.float64)


def constant_logloss(train_ctr: float, labels: np.ndarray) -> float:
    """LogLoss of predicting ``train_ctr`` for every row of ``labels`` (clipped like sklearn's)."""
    p = min(max(train_ctr, 1e-7), 1 - 1e-7)
    y = labels.astype(np.float64)
    return float(-(y * math.log(p) + (1 - y) * math.log(1 - p)).mean()) if y.size else math.nan


def constant_predictor(processed: str | Path, fmap: FeatureMap) -> dict:
    """The constant predictor (train CTR) scored on valid and test: AUC 0.5 by definition."""
    processed = Path(processed)
    ctr = float(_labels(processed, fmap, "train").mean())
    out: dict = {"ctr": ctr}
    for split in ("valid", "test"):
        if split in fmap.splits and fmap.splits[split].get("rows", 1) > 0:
            out[split] = {"auc": 0.5, "logloss": constant_logloss(ctr, _labels(processed, fmap, split))}
    return out


def baseline_params(params):
    """The TrainParams of the gate's LR: the teacher's data/seed/device settings, LR's own optimiser."""
    g = params.gate
    return params.model_copy(update={
        "model": "lr", "model_params": {}, "lr": g.baseline_lr, "max_epochs": g.baseline_max_epochs,
        "patience": g.baseline_patience, "lr_decay": 0.1, "embedding_l2": 0.0, "net_l2": 0.0,
        "eval_every": 1.0, "embedding_lr_scale": 1.0, "restore_best_on_decay": False, "monitor": "auc",
        "out_dir": str(Path(params.out_dir) / BASELINE_DIR),
    })


def judge(teacher_valid: dict, lr_valid: dict, constant_valid: dict, *, min_auc_gain: float,
          on_fail: str) -> GateVerdict:
    """Compare the teacher's valid metrics with LR's and the constant predictor's."""
    gain = teacher_valid["auc"] - lr_valid["auc"]
    beats_lr = gain >= min_auc_gain
    beats_constant = teacher_valid["logloss"] < constant_valid["logloss"]
    passed = beats_lr and beats_constant
    facts = (f"teacher valid AUC {teacher_valid['auc']:.4f} vs LR {lr_valid['auc']:.4f} "
             f"(gain {gain:+.4f}, required ≥ {min_auc_gain:+.4f}); teacher valid LogLoss "
             f"{teacher_valid['logloss']:.4f} vs constant predictor {constant_valid['logloss']:.4f}")
    if passed:
        message = f"baseline gate passed: {facts}"
    else:
        broken = [r for r, ok in (("it does not beat LR by train.gate.min_auc_gain", beats_lr),
                                   ("its LogLoss is not below the constant predictor's", beats_constant))
                  if not ok]
        message = f"baseline gate FAILED ({'; '.join(broken)}): {facts}"
    record = {"passed": passed, "beats_lr": beats_lr, "beats_constant": beats_constant,
              "auc_gain_over_lr": gain, "min_auc_gain": min_auc_gain, "on_fail": on_fail,
              "message": message}
    return GateVerdict(passed, message, record)
