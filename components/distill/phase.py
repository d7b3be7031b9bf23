"""One training phase driven by an arbitrary loss (distillation, self-distillation).

:func:`components.train.loop.fit` trains with BCE on the model's logit; the distillation phases need
other objectives (α·BCE + β·logit-MSE on cached teacher logits; FSDNet's multi-head loss), so this
loop takes a ``loss_fn(model, batch) -> (loss, parts)``. Everything else is the fit loop's recipe and
helpers: :func:`seed_everything`, :func:`build_optimizer` (only parameters with ``requires_grad``, so a
frozen embedding is neither updated nor decayed), the explicit L2 penalty, gradient-norm clipping,
per-epoch reseeding, bf16 autocast on CUDA, validation after every epoch, LR × ``lr_decay`` on
an epoch without a gain in ``params.monitor`` (:func:`monitor_score`: AUC, or AUC − LogLoss), early stop after ``patience`` such epochs, the best checkpoint
(:func:`save_model`, safetensors) in ``out_dir`` and its weights loaded back at the end.

Unlike ``fit`` there is no resume state: a distillation run is restarted from its phase start
(:func:`components.distill.workspace.staged_output` keeps earlier results safe meanwhile).
``trial_callback(phase, epoch, valid_auc)`` is called after each epoch (Optuna pruning may raise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.config import TrainParams
from components.faults import pause_point
from components.train.checkpoint import feature_map_hash, load_model_weights, save_model
from components.train.loop import (
    _autocast,
    _configure_threads,
    _penalty,
    _reseed_epoch,
    _set_lr,
    _to,
    build_optimizer,
    evaluate,
    monitor_score,
    resolve_device,
    resolve_precision,
    seed_everything,
)

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]
TrialCallback = Callable[[str, int, float], Any]


@dataclass
class PhaseResult:
    """Outcome of one phase; ``history`` holds one record per epoch (mean loss parts included)."""

    phase: str
    best_epoch: int
    epochs_run: int
    best_valid_auc: float
    best_valid_logloss: float
    checkpoint_dir: Path
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready dict of the result (checkpoint directory as a string)."""
        return {
            "phase": self.phase,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs_run,
            "best_valid_auc": self.best_valid_auc,
            "best_valid_logloss": self.best_valid_logloss,
            "checkpoint_dir": str(self.checkpoint_dir),
            "history": self.history,
        }


def _train_epoch(model, loader, optimizer, params, device, epoch, loss_fn) -> tuple[dict, int, float]:
    """One pass: (sample-weighted mean of the loss and of each part, samples, seconds)."""
    model.train()
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    _reseed_epoch(params.seed, epoch, 0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    start = time.perf_counter()
    for batch in loader:
        batch = _to(batch, device)
        with _autocast(device, resolve_precision(device, params.precision)):
            loss, parts = loss_fn(model, batch)
        penalty = _penalty(model, params)
        optimizer.zero_grad(set_to_none=True)
        (loss if penalty is None else loss + penalty).backward()
        if params.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        optimizer.step()
        size = batch.label.shape[0]
        pause_point("distill.batch")  # tests: a kill mid-trial (`@n`: the n-th batch of the stage)
        for name, value in {"loss": loss, **parts}.items():
            sums[name] = sums.get(name, 0.0) + value.detach().double() * size
        seen += size
    if seen == 0:
        raise ValueError("the training loader yields no batches (empty train split)")
    means = {name: float(total) / seen for name, total in sums.items()}
    if not math.isfinite(means["loss"]):
        raise FloatingPointError(f"training diverged at epoch {epoch} (mean loss {means['loss']}); lower the lr")
    return means, seen, time.perf_counter() - start


def fit_phase(
    model: nn.Module,
    train_loader,
    valid_loader,
    params: TrainParams,
    out_dir: str | Path,
    *,
    loss_fn: LossFn,
    phase: str,
    hparams: dict,
    trial_callback: TrialCallback | None = None,
    log: Callable[[str], Any] = print,
) -> PhaseResult:
    """Train ``model`` (a CTRModel) with ``loss_fn`` under ``params``; best checkpoint in ``out_dir``.

    ``params`` supplies lr, L2, clipping, schedule, epochs, patience, seed and device (its ``model``
    and ``out_dir`` fields are ignored). ``hparams`` are the ``build_model`` arguments recorded in
    the checkpoint. Returns with the best epoch's weights loaded in ``model``.
    """
    out_dir = Path(out_dir)
    dev = resolve_device(params.device)
    _configure_threads(dev, params.num_threads, 1)
    seed_everything(params.seed)
    model.to(dev)
    optimizer = build_optimizer(model, params)
    fm_hash = feature_map_hash(model.feature_map)
    lr, bad_epochs, epoch = params.lr, 0, 0
    best_auc, best_logloss, best_epoch = -math.inf, math.nan, 0
    history: list[dict] = []
    log(f"{phase}: training {model.model_name} on {dev}, {len(train_loader)} batches/epoch, "
        f"max {params.max_epochs} epochs, patience {params.patience}")
    while epoch < params.max_epochs and bad_epochs < params.patience:
        epoch += 1
        losses, samples, secs = _train_epoch(model, train_loader, optimizer, params, dev, epoch, loss_fn)
        valid = evaluate(model, valid_loader, device=dev)
        improved = monitor_score(valid, params) > monitor_score({"auc": best_auc, "logloss": best_logloss}, params)
        used_lr = lr
        if improved:
            best_auc, best_logloss, best_epoch, bad_epochs = valid["auc"], valid["logloss"], epoch, 0
            save_model(
                model, out_dir, model_name=model.model_name, hparams=hparams, feature_map_hash=fm_hash,
                epoch=epoch, metrics={"valid_auc": valid["auc"], "valid_logloss": valid["logloss"]},
                extra={"phase": phase},
            )  # fmt: skip
        else:
            bad_epochs += 1
            lr = max(lr * params.lr_decay, min(params.min_lr, lr))
            _set_lr(optimizer, lr)
        record = {
            "epoch": epoch,
            "lr": used_lr,
            **{f"train_{k}": v for k, v in losses.items()},
            "train_samples": samples,
            "valid_auc": valid["auc"],
            "valid_logloss": valid["logloss"],
            "samples_per_s": samples / max(secs, 1e-9),
            "improved": improved,
        }
        history.append(record)
        log(f"{phase} epoch {epoch}/{params.max_epochs}: loss {losses['loss']:.6f}  valid AUC "
            f"{valid['auc']:.6f}  LogLoss {valid['logloss']:.6f}  lr {used_lr:.3g}"
            + ("  *best*" if improved else f"  (no gain {bad_epochs}/{params.patience})"))
        if trial_callback is not None:
            trial_callback(phase, epoch, valid["auc"])
    load_model_weights(model, out_dir)
    return PhaseResult(phase, best_epoch, epoch, best_auc, best_logloss, out_dir, history)
