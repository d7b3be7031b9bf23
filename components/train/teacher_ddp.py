"""The train_teacher stage over several processes: torchrun DDP with the one-process stage's outputs.

When ``train.distributed`` asks for more than one rank (``nproc × nnodes > 1``),
:func:`components.stages.train_stage` calls :func:`train_teacher_distributed` instead of
:func:`components.train.teacher.train_teacher`. On node 0 it

1. decides what the run continues (:func:`~components.train.teacher.prepare_staged`, with the world
   size in the resume fingerprint: a one-process state is not continued by DDP, nor the reverse);
2. writes the effective params (``--set`` overrides and ``--model`` included) to a temporary YAML
   and launches torchrun (:mod:`.launch`) running :mod:`.distributed` on it, training into the
   staged ``.<out_dir>.partial`` directory (only global rank 0 writes there), its output streamed
   into the stage's log;
3. after torchrun returns, loads the best checkpoint, scores valid/test, runs the baseline gate
   and installs checkpoint, metrics and curve exactly as the one-process stage
   (:func:`~components.train.teacher.finish_teacher`); ``train.metrics`` gets a ``distributed``
   entry (world size, ranks per node, backend, threads per rank).

A failed rank raises :class:`~components.train.launch.DistributedTrainingFailed` naming it; the
earlier outputs stay as they were and the staged directory is kept only with a complete resume
state, which the rerun continues (a run killed mid-epoch restarts from its last finished epoch).

On nodes ``node_rank > 0`` the stage only runs its ranks and returns None: node 0 prepares,
scores and writes. All nodes must see the processed data and ``train.out_dir`` at the same paths
(a shared file system), since every rank reads the resume state.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import yaml

from components.config import Params, TrainParams
from components.data.feature_map import FeatureMap

from .gate import BASELINE_DIR, LOGISTIC_BASE_DIR
from .teacher import (
    TeacherResult,
    apply_first_order_l2,
    discard_incomplete,
    finish_teacher,
    fit_gate_lr,
    prepare_staged,
    staged_dir,
    teacher_hparams,
    train_batch_size,
)


def write_params_yaml(params: Params, path: Path) -> None:
    """``params`` (validated, overrides applied) as a params.yaml that loads back equal."""
    path.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))


def _fit_result(record: dict, staged: Path):
    from .loop import FitResult

    return FitResult(
        best_epoch=record["best_epoch"],
        epochs_run=record["epochs_run"],
        best_valid_auc=record["best_valid_auc"],
        history=record["history"],
        checkpoint_path=staged / "model.safetensors",
        best_valid_logloss=record.get("best_valid_logloss", math.nan),
        resumed_from_epoch=record.get("resumed_from_epoch", 0),
        best_eval=record.get("best_eval", 0),
    )


def train_teacher_distributed(params: Params, train: TrainParams | None = None, *,
                              resume: bool = True, log=print) -> TeacherResult | None:
    """Train the teacher of ``train`` (default ``params.train``) data-parallel per its ``distributed``
    settings and write the one-process stage's outputs; None on a node other than node 0."""
    from components.models import build_model

    from .checkpoint import load_model
    from .distributed import rank_batch_size, resolve_backend
    from .launch import rank_threads, run_torchrun
    from .loop import resolve_device, seed_everything

    tp = train or params.train
    dp = tp.distributed
    processed = Path(params.preprocess.out_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    rank_batch_size(train_batch_size(tp, fmap), dp.world_size)  # refuse before launching anything
    if resolve_backend(dp.backend, tp.device) == "nccl":
        import torch

        if torch.cuda.device_count() < dp.nproc:
            raise ValueError(f"train.distributed.nproc {dp.nproc} ranks with nccl need one CUDA device each; "
                             f"this machine has {torch.cuda.device_count()}")
    threads = rank_threads(tp.num_threads, dp.nproc)
    staged = staged_dir(tp.out_dir)
    module_args = ["--processed-dir", str(processed), "--out-dir", str(staged)]
    if not resume:
        module_args.append("--no-resume")

    with tempfile.TemporaryDirectory(prefix="ctrflow-torchrun-") as tmp:
        params_file, report = Path(tmp) / "params.yaml", Path(tmp) / "report"
        report.mkdir()
        write_params_yaml(params.model_copy(update={"train": tp}), params_file)
        args = ["--params", str(params_file), "--report-dir", str(report), *module_args]
        if dp.node_rank > 0:
            run_torchrun(dp, args, report_dir=report, threads=threads, log=log)
            return None

        dev = resolve_device(tp.device)
        seed_everything(tp.seed)
        hparams = teacher_hparams(tp)
        model = build_model(tp.model, fmap, **hparams)
        staged = prepare_staged(tp, model, hparams, resume=resume, log=log, world_size=dp.world_size)
        try:
            staged.mkdir(exist_ok=True)
            lr = None
            if model.logistic_base is not None:  # fitted here, before torchrun: every rank loads it
                lr = fit_gate_lr(tp.model_copy(update={"out_dir": str(staged)}), processed, fmap, dev)
                log(f"logistic base: the gate's LR fitted (best epoch {lr.best_epoch}) into {staged / BASELINE_DIR}, "
                    f"the base (its best of the first {lr.base_max_epochs} epochs: epoch {lr.base_best_epoch}) "
                    f"into {staged / LOGISTIC_BASE_DIR}")
            apply_first_order_l2(model, tp, lr, log)  # logs the decision; each rank reads it from fit.json
            started = time.perf_counter()
            run_torchrun(dp, args, report_dir=report, threads=threads, log=log)
            wall = time.perf_counter() - started
            record = json.loads((report / "result.json").read_text())
            model, _meta = load_model(staged, fmap, device=dev)
            extra = {"distributed": {"world_size": record["world_size"], "nproc": dp.nproc,
                                     "nnodes": dp.nnodes, "backend": record["backend"],
                                     "threads_per_rank": record["threads"],
                                     "rank_batch_size": train_batch_size(tp, fmap) // dp.world_size}}
            return finish_teacher(tp, processed, fmap, model, dev, _fit_result(record, staged), wall,
                                  log=log, extra=extra, lr=lr)
        except BaseException:
            discard_incomplete(staged, resume)
            raise
