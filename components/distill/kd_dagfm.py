"""The KD-DAGFM procedure (models.md §2.2): teacher → distillation → finetuning, chained by directory.

1. **teacher**: the checkpoint the ``train_teacher`` stage wrote (``teacher_dir``), any zoo model.
2. **distillation** (``<out_dir>/distill/``): the student's embedding module is initialised from the
   teacher's (same ``embedding_dim`` required; optionally rescaled by one scalar to the block's
   ``teacher_embedding_rms``, see :func:`rescale_embedding`) and FROZEN (``requires_grad`` False, so it is not in
   the optimizer and no L2 touches it); only the DAG (and MLP) parameters learn, with
   ``α·BCE(σ(z_S), y) + β·MSE(z_T, z_S)`` on logits (:func:`kd_dagfm_loss`). z_T are the teacher's
   logits from the Parquet cache (:mod:`.logit_cache`), so the teacher is never run during training.
3. **finetuning** (``<out_dir>/finetune/``): the distilled student, embeddings trainable again, BCE
   only, trained by :func:`components.train.loop.fit` (resume state cleared afterwards). With the
   block's ``finetune_must_improve`` (default False, the reference procedure) a finetuning phase
   whose best validation score (the block's ``monitor``) does not beat the distilled student's is discarded: ``finetune/`` then
   holds the distilled weights (``epoch`` 0, ``extra.kept`` = "distill"), so the chain's output is
   never worse on validation than its distillation phase.

Each phase keeps its best checkpoint by the block's ``monitor`` (valid AUC − LogLoss by default, or AUC;
early stop with the block's ``patience``) in its
own subdirectory; the next phase starts from those best weights. ``<out_dir>/metrics.json`` (also
returned) holds per phase the training summary and history, valid/test AUC and LogLoss, and the
student-vs-teacher logit MSE/MAE on the test split, plus the teacher's own scores from its cached
logits. The whole ``out_dir`` is built in a staging directory and swapped in on success.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from components.distill.logit_cache import DistillBatch, TeacherLogitLoader, ensure_teacher_logits
from components.distill.losses import kd_dagfm_loss
from components.distill.phase import TrialCallback, fit_phase
from components.distill.settings import KD_STUDENTS, DistillParams
from components.distill.workspace import (
    METRICS_FILE,
    has_rows,
    load_feature_map,
    score_split,
    split_labels,
    split_loader,
    staged_output,
    student_loader,
    write_json,
)
from components.models import build_model
from components.repro import without_timings
from components.train.checkpoint import (
    clear_train_state,
    count_parameters,
    load_model,
    load_model_weights,
    save_model,
)
from components.train.loop import fit, monitor_score, resolve_device, seed_everything
from components.train.metrics import evaluate_logits


def student_hparams(student: str, settings: DistillParams, embedding_dim: int) -> dict:
    """``build_model`` keyword arguments of a KD-DAGFM student (``dagfm`` or ``kd_dagfm_plus``)."""
    if student not in KD_STUDENTS:
        raise ValueError(f"KD-DAGFM students are {list(KD_STUDENTS)}, got {student!r}")
    return {"embedding_dim": embedding_dim, **settings.block(student).model_hparams()}


def copy_teacher_embedding(student: nn.Module, teacher: nn.Module) -> None:
    """Load the teacher's embedding tensors into the student's embedding module (in place).

    Every tensor of the student's embedding must exist in the teacher's with the same shape (the
    teacher may hold more, e.g. first-order tables); ValueError naming the difference otherwise.
    """
    src = teacher.embedding.state_dict()
    dst = student.embedding.state_dict()
    missing = [k for k in dst if k not in src]
    wrong = [f"{k}: teacher {list(src[k].shape)} vs student {list(v.shape)}"
             for k, v in dst.items() if k in src and src[k].shape != v.shape]  # fmt: skip
    if missing or wrong:
        raise ValueError(
            f"the teacher's embedding cannot initialise the student's: missing {missing}, "
            f"shape mismatch {wrong}"
        )
    student.embedding.load_state_dict({k: src[k] for k in dst})


def rescale_embedding(model: nn.Module, target_rms: float) -> float:
    """Multiply the model's embedding vectors (tables and dense projections) by one scalar so their
    root-mean-square becomes ``target_rms``; returns the factor (1.0 when the tables are all zero).

    One global scalar keeps the teacher's geometry (every distance and angle between embedding
    vectors is scaled alike); a DAGFM is equivariant to it up to its learnable weights. It exists
    because a FuxiCTR-initialised teacher (N(0, 1e-4²) embeddings) leaves embeddings so small that
    the frozen student's order-k products start near zero and the distillation phase barely moves.
    """
    if target_rms <= 0:
        raise ValueError(f"target_rms must be > 0, got {target_rms}")
    params = [p for name, p in model.embedding.named_parameters()
              if p.dim() >= 2 and not name.startswith("first_order")]  # fmt: skip
    if not params:
        return 1.0
    with torch.no_grad():
        sq = sum(float(p.double().pow(2).sum()) for p in params)
        n = sum(p.numel() for p in params)
        rms = (sq / n) ** 0.5
        if rms == 0:
            return 1.0
        factor = target_rms / rms
        for p in params:
            p.mul_(factor)
    return factor


def set_embedding_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of the model's embedding module."""
    for p in model.embedding_parameters():
        p.requires_grad_(trainable)


def kd_batch_loss(
    model: nn.Module, batch: DistillBatch, *, alpha: float, beta: float, mse_reduction: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """α·BCE + β·MSE(z_T, z_S) of ``model`` on one batch with cached teacher logits.

    Returns (loss, parts) with parts {"bce", "mse"}: the unweighted terms, detached.
    """
    logits = model(batch.categorical, batch.dense).float()
    teacher = batch.teacher_logit.float()
    loss = kd_dagfm_loss(logits, teacher, batch.label, alpha, beta, mse_reduction)
    with torch.no_grad():
        bce = F.binary_cross_entropy_with_logits(logits, batch.label.float())
        sq = (teacher - logits).pow(2)
        mse = sq.sum() if mse_reduction == "sum" else sq.mean()
    return loss, {"bce": bce, "mse": mse}


def _scores(model, processed, fmap, settings, dev, cache) -> dict:
    out = {}
    for split in ("valid", "test"):
        if has_rows(fmap, split):
            loader = split_loader(processed, fmap, split, settings.eval_batch_size, shuffle=False,
                                  in_memory=settings.in_memory, device=dev)
            out[split] = score_split(model, loader, device=dev, teacher_logits=cache.load(split))
    return out


def run_kd_dagfm(
    teacher_dir: str | Path,
    processed_dir: str | Path,
    settings: DistillParams,
    out_dir: str | Path,
    student: str = "dagfm",
    *,
    trial_callback: TrialCallback | None = None,
    log: Callable[[str], Any] = print,
) -> dict:
    """Distil the teacher in ``teacher_dir`` into ``student``, then finetune it; return the metrics.

    ``trial_callback(phase, epoch, valid_auc)`` runs after every epoch of both phases ("distill",
    "finetune"). Raises ValueError when the teacher's embedding_dim differs from the student's.
    """
    processed = Path(processed_dir)
    block = settings.block(student)
    fmap = load_feature_map(processed)
    dev = resolve_device(settings.device)
    teacher, teacher_meta = load_model(teacher_dir, fmap)
    dim = teacher.embedding_dim
    if block.embedding_dim is not None and block.embedding_dim != dim:
        raise ValueError(
            f"{Path(teacher_dir) / 'model.json'}: the teacher ({teacher_meta['model']}) has embedding_dim "
            f"{dim} but distill.{student}.embedding_dim is {block.embedding_dim}; KD-DAGFM initialises "
            f"the student's embeddings from the teacher's, so set it to {dim} (or null)"
        )
    hparams = student_hparams(student, settings, dim)
    cache = ensure_teacher_logits(
        teacher_dir, processed, settings.logit_cache_dir, batch_size=settings.eval_batch_size,
        max_rows={"train": settings.max_train_rows}, device=dev, in_memory=settings.in_memory, log=log,
    )  # fmt: skip
    if settings.logistic_base and teacher.logistic_base is not None:
        hparams["logistic_base"] = True
    seed_everything(settings.seed)
    model = build_model(student, fmap, **hparams)
    copy_teacher_embedding(model, teacher)
    if model.logistic_base is not None:  # the teacher's frozen LR, as is (components/models/base.py)
        model.load_logistic_base(teacher.logistic_base)
        log(f"{student}: carries the teacher's frozen logistic base (distill.logistic_base)")
    del teacher
    if block.teacher_embedding_rms is not None:
        factor = rescale_embedding(model, block.teacher_embedding_rms)
        log(f"{student}: teacher embeddings rescaled ×{factor:.4g} to RMS {block.teacher_embedding_rms}")

    def loader(split: str, shuffle: bool, batch_size: int):
        return student_loader(processed, fmap, split, batch_size, shuffle=shuffle, settings=settings, device=dev)

    valid = loader("valid", False, settings.eval_batch_size)
    metrics: dict = {
        "student": student,
        "hparams": hparams,
        "teacher": {
            "dir": str(teacher_dir),
            "model": teacher_meta["model"],
            "weights_sha256": teacher_meta["weights_sha256"],
            "logit_cache": str(cache.directory),
            **{s: evaluate_logits(split_labels(processed, fmap, s), cache.load(s).numpy())
               for s in ("valid", "test") if has_rows(fmap, s)},
        },
        "phases": {},
    }
    with staged_output(out_dir) as stage:
        # phase 2: distillation on frozen teacher embeddings
        set_embedding_trainable(model, False)
        params = settings.train_params(block, model=student, embedding_dim=dim, lr=block.lr,
                                       max_epochs=block.distill_max_epochs, out_dir=stage / "distill")
        train = TeacherLogitLoader(loader("train", True, block.batch_size), cache.load("train"))
        loss_fn = partial(kd_batch_loss, alpha=block.alpha, beta=block.beta,
                          mse_reduction=block.mse_reduction)
        res = fit_phase(model, train, valid, params, stage / "distill", loss_fn=loss_fn,
                        phase="distill", hparams=hparams, trial_callback=trial_callback, log=log)
        summary = res.summary()
        summary["checkpoint_dir"] = str(Path(out_dir) / "distill")
        metrics["phases"]["distill"] = {**summary, **_scores(model, processed, fmap, settings, dev, cache)}

        # phase 3: finetuning, BCE only, embeddings trainable
        set_embedding_trainable(model, True)
        params = settings.train_params(block, model=student, embedding_dim=dim, lr=block.finetune_lr,
                                       max_epochs=block.finetune_max_epochs, out_dir=stage / "finetune")
        on_epoch = None
        if trial_callback is not None:
            def on_epoch(record: dict) -> None:
                trial_callback("finetune", record["epoch"], record["valid_auc"])
        ft = fit(model, loader("train", True, block.batch_size), valid, params, stage / "finetune",
                 resume=False, log=log, progress=False, hparams=hparams, device=dev,
                 on_epoch_end=on_epoch)  # fmt: skip
        clear_train_state(stage / "finetune")
        best_epoch, best_auc, best_logloss = ft.best_epoch, ft.best_valid_auc, ft.best_valid_logloss
        finetuned = {"auc": ft.best_valid_auc, "logloss": ft.best_valid_logloss}
        distilled = {"auc": summary["best_valid_auc"], "logloss": summary["best_valid_logloss"]}
        kept_distilled = block.finetune_must_improve and not monitor_score(finetuned, params) > monitor_score(
            distilled, params)
        if kept_distilled:
            meta = load_model_weights(model, stage / "distill")
            save_model(model, stage / "finetune", model_name=meta["model"], hparams=meta["hparams"],
                       feature_map_hash=meta["feature_map_hash"], epoch=0, metrics=meta["metrics"],
                       extra={"phase": "finetune", "kept": "distill"})
            best_epoch, best_auc = 0, summary["best_valid_auc"]
            best_logloss = summary.get("best_valid_logloss")
            log(f"{student}: finetuning's best valid {params.monitor} {monitor_score(finetuned, params):.6f} does "
                f"not beat the distilled student's {monitor_score(distilled, params):.6f}; kept the distilled "
                f"weights (finetune_must_improve)")
        metrics["phases"]["finetune"] = {
            "phase": "finetune",
            "best_epoch": best_epoch,
            "epochs": ft.epochs_run,
            "best_valid_auc": best_auc,
            "best_valid_logloss": best_logloss,
            "kept_distilled": kept_distilled,
            "checkpoint_dir": str(Path(out_dir) / "finetune"),
            "history": ft.history,
            **_scores(model, processed, fmap, settings, dev, cache),
        }
        metrics["final"] = {k: metrics["phases"]["finetune"].get(k) for k in ("valid", "test")}
        metrics["parameters"] = count_parameters(model)
        write_json(stage / METRICS_FILE, without_timings(metrics))  # a DVC out: no wall-clock fields
    return metrics

