"""Pruning: the configured Optuna pruner, and the per-epoch callbacks a training run calls.

Training procedures report ``cb(phase, epoch, valid_auc)`` after every validation (the
distillation runs call it through ``trial_callback=``). The callback reports the value to the
trial at a step that keeps increasing across phases (teacher epochs, then student epochs: step
0, 1, 2, … in call order), so the pruner compares trials at the same point of their schedule,
and raises :class:`optuna.TrialPruned` when the pruner says stop. The teacher's study passes
:func:`fit_pruning_callback` to :func:`components.train.loop.fit` as ``on_epoch_end``: its step is
the evaluation index of fit's record.
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


def _report(trial: optuna.Trial, value: float, step: int, where: str, attr: dict) -> None:
    """Report ``value`` at ``step``, note ``attr`` as user attr ``last_report``; prune if told."""
    value = float(value)
    trial.report(value, step)
    trial.set_user_attr("last_report", attr)
    if trial.should_prune():
        shown = "nan" if math.isnan(value) else f"{value:.6f}"
        raise optuna.TrialPruned(f"pruned at step {step} ({where}): valid AUC {shown}")


def pruning_callback(trial: optuna.Trial) -> EpochCallback:
    """A ``cb(phase, epoch, valid_auc)`` reporting to ``trial`` at steps 0, 1, 2, … (one per
    call, across phases) and raising ``optuna.TrialPruned`` when ``trial.should_prune()``.

    The last (phase, epoch, step) reported is kept in the trial's user attrs ``last_report``.
    A NaN AUC is reported as-is (the median pruner prunes a trial whose every report is NaN).
    """
    step = 0

    def report(phase: str, epoch: int, valid_auc: float) -> None:
        nonlocal step
        here = step
        step += 1
        _report(trial, valid_auc, here, f"{phase} epoch {epoch}",
                {"phase": phase, "epoch": int(epoch), "step": here})

    return report


def fit_pruning_callback(trial: optuna.Trial) -> Callable[[dict], None]:
    """An ``on_epoch_end(record)`` for :func:`components.train.loop.fit`: reports
    ``record["valid_auc"]`` to ``trial`` after every evaluation, at step ``record["eval"]`` (the
    1-based evaluation index, when fit evaluates several times per epoch) or else
    ``record["epoch"]``, and raises ``optuna.TrialPruned`` when ``trial.should_prune()``.

    User attr ``last_report`` keeps ``{"epoch", "step"}`` of the last report.
    """

    def on_epoch_end(record: dict) -> None:
        step = int(record.get("eval", record["epoch"]))
        _report(trial, record["valid_auc"], step, f"epoch {record['epoch']}",
                {"epoch": int(record["epoch"]), "step": step})

    return on_epoch_end
