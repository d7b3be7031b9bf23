"""FSDNet training with its self-distillation loss, optionally plus an external teacher's logits.

Per batch (models.md §3.2, :func:`components.distill.losses.fsdnet_loss`)::

    L = μ·Σ_l BCE(z_l, y) + (1 − μ)·Σ_{l<L} KL_τ(z_L ‖ z_l) + λ·Σ_{l<L} MSE(f_L, f_l)
        + w_ext · MSE(z_target, z_T)          only when external_teacher_weight w_ext > 0

where z_target is the deepest head's logit (``external_target: deepest``) or the logit of the mean
head probability (``mean``), and z_T the external teacher's cached logit (:mod:`.logit_cache`).
w_ext = 0 is pure self-distillation. With ``distill.logistic_base`` (default) and a teacher that has a
logistic base (``train.logistic_base``), FSDNet carries a frozen copy of that LR: its logit is added
to every head's (:meth:`components.models.fsdnet.FSDNet.forward_heads`), so the network learns the
residual over LR as the teacher did (measured, 3 seeds, Δ test AUC vs the DCNv2 teacher without →
with: Criteo 117k −0.0044 → −0.0020, MovieLens-100K −0.0032 → −0.0003, Frappe unchanged; README
"Distillation"). Early stopping and model selection use
the block's ``monitor`` (AUC − LogLoss, or AUC) on the validation split of the model's inference output (``inference``: mean of heads or deepest).
The best checkpoint is ``<out_dir>/self_distill/``; ``<out_dir>/metrics.json`` is also returned.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.distill.logit_cache import TeacherLogitLoader, ensure_teacher_logits
from components.distill.losses import external_teacher_mse, fsdnet_loss
from components.distill.phase import TrialCallback, fit_phase
from components.distill.settings import DistillParams, FSDNetSettings
from components.distill.workspace import (
    METRICS_FILE,
    has_rows,
    load_feature_map,
    score_split,
    staged_output,
    student_loader,
    write_json,
)
from components.models import build_model
from components.models.fsdnet import mean_probability_logit
from components.repro import without_timings
from components.train.checkpoint import count_parameters, read_model_metadata
from components.train.loop import resolve_device, seed_everything

PHASE = "self_distill"


def fsdnet_batch_loss(
    model: nn.Module, batch, *, settings: FSDNetSettings
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FSDNet's loss on one batch (+ the external-teacher term when its weight is > 0).

    ``batch`` needs ``teacher_logit`` only when ``settings.external_teacher_weight`` > 0. Returns
    (loss, parts) with parts {"bce", "kl", "hint"} (+ "external"), unweighted and detached.
    """
    head_logits, fused = model.forward_heads(batch.categorical, batch.dense)
    head_logits = head_logits.float()
    fused = [f.float() for f in fused]
    loss, parts = fsdnet_loss(
        head_logits, fused, batch.label, settings.mu, settings.tau, settings.hint_weight,
        detach_teacher=settings.detach_teacher, hint_reduction=settings.hint_reduction,
    )  # fmt: skip
    if settings.external_teacher_weight > 0:
        target = (head_logits[:, -1] if settings.external_target == "deepest"
                  else mean_probability_logit(head_logits))  # fmt: skip
        ext = external_teacher_mse(target, batch.teacher_logit.float(), settings.external_mse_reduction)
        loss = loss + settings.external_teacher_weight * ext
        parts = {**parts, "external": ext.detach()}
    return loss, parts


def run_fsdnet(
    processed_dir: str | Path,
    settings: DistillParams,
    out_dir: str | Path,
    *,
    teacher_dir: str | Path | None = None,
    trial_callback: TrialCallback | None = None,
    log: Callable[[str], Any] = print,
) -> dict:
    """Train FSDNet with self-distillation on the processed splits; return (and write) the metrics.

    ``teacher_dir`` (a trained zoo model) is required when ``distill.fsdnet.external_teacher_weight``
    is > 0; with ``distill.logistic_base`` its logistic base (if any) is copied, frozen, into FSDNet.
    ``trial_callback("self_distill", epoch, valid_auc)`` runs per epoch.
    """
    processed = Path(processed_dir)
    block = settings.fsdnet
    fmap = load_feature_map(processed)
    dev = resolve_device(settings.device)
    hparams = block.model_hparams()
    external = block.external_teacher_weight > 0
    cache = None
    if external:
        if teacher_dir is None:
            raise ValueError("distill.fsdnet.external_teacher_weight > 0 needs a teacher_dir")
        cache = ensure_teacher_logits(
            teacher_dir, processed, settings.logit_cache_dir, batch_size=settings.eval_batch_size,
            max_rows={"train": settings.max_train_rows}, device=dev, in_memory=settings.in_memory, log=log,
        )  # fmt: skip

    def loader(split: str, shuffle: bool, batch_size: int):
        return student_loader(processed, fmap, split, batch_size, shuffle=shuffle, settings=settings, device=dev)

    teacher_base = None  # distill.logistic_base: the teacher's frozen LR, added under every head
    if settings.logistic_base and teacher_dir is not None:
        from components.train.checkpoint import load_model

        teacher_base = load_model(teacher_dir, fmap)[0].logistic_base
        if teacher_base is not None:
            hparams["logistic_base"] = True  # in the checkpoint's hparams: load_model rebuilds the base
    seed_everything(settings.seed)
    model = build_model("fsdnet", fmap, **hparams)
    if teacher_base is not None:
        model.load_logistic_base(teacher_base)
        log("fsdnet: carries the teacher's frozen logistic base (distill.logistic_base)")
    train = loader("train", True, block.batch_size)
    if cache is not None:
        train = TeacherLogitLoader(train, cache.load("train"))
    valid = loader("valid", False, settings.eval_batch_size)
    metrics: dict = {"student": "fsdnet", "hparams": hparams, "external_teacher": None}
    if cache is not None:
        tmeta = read_model_metadata(teacher_dir)
        metrics["external_teacher"] = {
            "dir": str(teacher_dir), "model": tmeta["model"], "weights_sha256": tmeta["weights_sha256"],
            "weight": block.external_teacher_weight, "target": block.external_target,
            "logit_cache": str(cache.directory),
        }  # fmt: skip
    with staged_output(out_dir) as stage:
        params = settings.train_params(block, model="fsdnet", embedding_dim=block.embedding_dim,
                                       lr=block.lr, max_epochs=block.max_epochs, out_dir=stage / PHASE)
        res = fit_phase(model, train, valid, params, stage / PHASE,
                        loss_fn=partial(fsdnet_batch_loss, settings=block), phase=PHASE,
                        hparams=hparams, trial_callback=trial_callback, log=log)  # fmt: skip
        summary = res.summary()
        summary["checkpoint_dir"] = str(Path(out_dir) / PHASE)
        for split in ("valid", "test"):
            if has_rows(fmap, split):
                teacher = cache.load(split) if cache is not None else None
                summary[split] = score_split(model, loader(split, False, settings.eval_batch_size),
                                             device=dev, teacher_logits=teacher)
        metrics["phases"] = {PHASE: summary}
        metrics["final"] = {k: summary.get(k) for k in ("valid", "test")}
        metrics["parameters"] = count_parameters(model)
        write_json(stage / METRICS_FILE, without_timings(metrics))  # a DVC out: no wall-clock fields
    return metrics
