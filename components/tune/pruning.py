"""Pruning: the configured Optuna pruner, and the per-epoch callback a training run calls.

Training procedures report ``cb(phase, epoch, valid_auc)`` after every validation (the
distillation runs call it through ``trial_callback=``). The callback reports the value to the
trial at a step that keeps increasing across phases (teacher epochs, then student epochs: step
0, 1, 2, … in call order), so the pruner compares trials at the same point of their schedule,
and raises :class:`optuna.TrialPruned` when the pruner says stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna

from components.tune.settings import PrunerParams

EpochCallback = Callable[[str, int, float], None]
"""``cb(phase, epoch, valid_auc)``, called once per validated epoch."""


def make_pruner(params: PrunerParams) -> optuna.pruners.BasePruner:
    """MedianPruner(n_startup_trials, n_warmup_steps) for ``median``, NopPruner for ``none``.

    Pruners are not stored with the study, so this is built again on every create/resume.
    """
    if params.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=params.n_startup_trials,
                                           n_warmup_steps=params.n_warmup_steps)
    return optuna.pruners.NopPruner()


def pruning_callback(trial: optuna.Trial) -> EpochCallback:
    """A ``cb(phase, epoch, valid_auc)`` reporting to ``trial`` at steps 0, 1, 2, … (one per
    call, across phases) and raising ``optuna.TrialPruned`` when ``trial.should_prune()``.

    The last (phase, epoch, step) reported is kept in the trial's user attrs ``last_report``.
    A NaN AUC is reported as-is (the median pruner prunes a trial whose every report is NaN).
    """
    step = 0

    def report(phase: str, epoch: int, valid_auc: float) -> None:
        nonlocal step
        value = float(valid_auc)
        trial.report(value, step)
        trial.set_user_attr("last_report", {"phase": phase, "epoch": int(epoch), "step": step})
        here = step
        step += 1
        if trial.should_prune():
            shown = "nan" if math.isnan(value) else f"{value:.6f}"
            raise optuna.TrialPruned(f"pruned at step {here} ({phase} epoch {epoch}): "
                                     f"valid AUC {shown}")

    return report
