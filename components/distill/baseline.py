"""The "same student without distillation" baseline: a student trained from scratch with BCE only.

:func:`run_student_baseline` builds the student from the registry (its own fresh embeddings) and
trains it with :func:`components.train.loop.fit` — the teacher recipe: BCE on the model's logit,
early stop on the block's ``monitor`` (validation AUC − LogLoss, or AUC), best checkpoint restored. KD-DAGFM students get the chain's budget:
their block's ``lr`` and ``distill_max_epochs + finetune_max_epochs`` epochs (until 2026-11-23 they
got ``finetune_lr`` / ``finetune_max_epochs``, a fraction of what the distilled student trains for,
which made "distillation helped" look larger than it is), FSDNet its ``lr`` / ``max_epochs`` with BCE on the inference output (no KL, no hint: the self-distillation
ablation). The checkpoint is ``<out_dir>/baseline/`` (resume state cleared), the metrics
``<out_dir>/metrics.json``, both swapped in only when the run succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.distill.phase import TrialCallback
from components.distill.settings import KD_STUDENTS, DistillParams
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
from components.repro import without_timings
from components.train.checkpoint import clear_train_state, count_parameters
from components.train.loop import fit, resolve_device, seed_everything

PHASE = "baseline"
DEFAULT_EMBEDDING_DIM = 16


def run_student_baseline(
    name: str,
    processed_dir: str | Path,
    settings: DistillParams,
    out_dir: str | Path,
    *,
    embedding_dim: int | None = None,
    trial_callback: TrialCallback | None = None,
    log: Callable[[str], Any] = print,
) -> dict:
    """Train student ``name`` (dagfm, kd_dagfm_plus, fsdnet) with BCE only; return the metrics.

    ``embedding_dim`` defaults to the block's (16 when a KD-DAGFM block leaves it to the teacher);
    pass the teacher's for a like-for-like comparison. ``trial_callback("baseline", epoch,
    valid_auc)`` runs per epoch.
    """
    processed = Path(processed_dir)
    block = settings.block(name)
    fmap = load_feature_map(processed)
    dev = resolve_device(settings.device)
    dim = embedding_dim or block.embedding_dim or DEFAULT_EMBEDDING_DIM
    hparams = {**block.model_hparams(), "embedding_dim": dim}
    if name in KD_STUDENTS:
        lr, max_epochs = block.lr, block.distill_max_epochs + block.finetune_max_epochs
    else:
        lr, max_epochs = block.lr, block.max_epochs

    def loader(split: str, shuffle: bool, batch_size: int):
        return student_loader(processed, fmap, split, batch_size, shuffle=shuffle, settings=settings, device=dev)

    seed_everything(settings.seed)
    model = build_model(name, fmap, **hparams)
    valid = loader("valid", False, settings.eval_batch_size)
    on_epoch = None
    if trial_callback is not None:
        def on_epoch(record: dict) -> None:
            trial_callback(PHASE, record["epoch"], record["valid_auc"])
    with staged_output(out_dir) as stage:
        params = settings.train_params(block, model=name, embedding_dim=dim, lr=lr,
                                       max_epochs=max_epochs, out_dir=stage / PHASE)
        res = fit(model, loader("train", True, block.batch_size), valid, params, stage / PHASE,
                  resume=False, log=log, progress=False, hparams=hparams, device=dev,
                  on_epoch_end=on_epoch)  # fmt: skip
        clear_train_state(stage / PHASE)
        summary = {
            "phase": PHASE,
            "best_epoch": res.best_epoch,
            "epochs": res.epochs_run,
            "best_valid_auc": res.best_valid_auc,
            "best_valid_logloss": res.best_valid_logloss,
            "checkpoint_dir": str(Path(out_dir) / PHASE),
            "history": res.history,
        }
        for split in ("valid", "test"):
            if has_rows(fmap, split):
                summary[split] = score_split(model, loader(split, False, settings.eval_batch_size),
                                             device=dev)
        metrics = {
            "student": name,
            "hparams": hparams,
            "phases": {PHASE: summary},
            "final": {k: summary.get(k) for k in ("valid", "test")},
            "parameters": count_parameters(model),
        }
        write_json(stage / METRICS_FILE, without_timings(metrics))  # a DVC out: no wall-clock fields
    return metrics
