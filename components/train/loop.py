"""The training loop: FuxiCTR's recipe, with exact resume and optional data parallelism.

Recipe (anchors.md §1.5): BCE on logits, Adam (or AdamW), explicit L2 on embeddings / network,
gradient-norm clipping. The model is scored on the validation set (AUC, LogLoss) every
``eval_every`` epochs (1: after each epoch; 0.25: after each quarter, see :func:`eval_boundaries`).
A gain of the monitored value (``monitor``: validation AUC, or AUC − LogLoss) saves the best
checkpoint and resets the counter of evaluations without a gain;
``patience`` and ``lr_decay`` stay in epochs: each full epoch's worth of evaluations without a gain
multiplies the LR by ``lr_decay`` (never below ``min_lr``), and training stops after ``patience``
epochs' worth (possibly inside an epoch) or after ``max_epochs``. The best weights are loaded back.
With ``restore_best_on_decay`` each LR decay also rolls the weights back to the best checkpoint (and
clears the optimiser's moments), so the lower LR continues from the best point instead of from an
epoch that already over-fitted (CTR models typically over-fit abruptly at the start of epoch 2).

Reproducibility
- :func:`seed_everything` seeds Python, NumPy and torch; call it before building the model.
- Every epoch reseeds those generators from ``(seed, epoch, rank)`` and calls the loader's
  ``set_epoch(epoch)``, so epoch *e* consumes the same random numbers whether or not the run was
  interrupted before it. The resume state (:mod:`.checkpoint`) is written at the end of every epoch
  (and where an early stop ends one); a run killed inside an epoch replays that epoch from its start;
  ``fit(..., resume=True)`` on the same ``out_dir`` continues from it and, on CPU, reaches the same
  weights and metrics as an uninterrupted run.

Devices: ``device="auto"`` → CUDA with bf16 autocast when available (non-blocking copies; pinned
memory is the loader's job), else CPU with ``torch.set_num_threads(num_threads or cores / local
ranks)``. Data parallelism plugs in through a :class:`Collective` (see :mod:`.distributed`); the
default :class:`LocalCollective` is a single process.

The AdamW choice: ``net_l2`` becomes AdamW's decoupled ``weight_decay`` on the network parameters
(embeddings get none), and ``embedding_l2`` stays an explicit penalty. With Adam both are explicit
penalties (``model.l2_penalty``). Tables trained with sparse gradients (``train.sparse_embeddings``)
get their ``embedding_l2`` from :class:`~.sparse_embeddings.LazyAdam`, on each batch's rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from components.config import TrainParams
from components.faults import pause_point
from components.progress import report as report_progress
from components.repro import without_timings

from .checkpoint import (
    MODEL_WEIGHTS,
    STATE_META,
    clear_train_state,
    count_parameters,
    feature_map_hash,
    has_train_state,
    load_model_weights,
    load_train_state,
    save_model,
    save_train_state,
)
from .metrics import evaluate_logits
from .sparse_embeddings import clip_grad_norm, enable_sparse_embeddings, wants_sparse

# TrainParams fields that shape the training trajectory: a resume state written under different
# values is refused (max_epochs / patience may change: they only move the stopping point).
TRAJECTORY_KEYS = (
    "model", "embedding_dim", "model_params", "batch_size", "optimizer", "lr", "embedding_l2",
    "net_l2", "lr_decay", "min_lr", "grad_clip", "seed", "precision", "eval_every", "restore_best_on_decay",
    "embedding_lr_scale", "monitor",
)  # fmt: skip
PROGRESS_EVERY = 20  # batches between progress-bar refreshes (each one syncs the device)


class Collective(Protocol):
    """What the loop needs from a process group (one process: :class:`LocalCollective`)."""

    rank: int
    world_size: int
    local_world_size: int

    @property
    def is_writer(self) -> bool: ...

    def common_batches(self, n: int) -> int: ...

    def all_sum(self, values: torch.Tensor) -> torch.Tensor: ...

    def gather(self, array: np.ndarray) -> np.ndarray: ...

    def barrier(self) -> None: ...


class LocalCollective:
    """The single-process collective: every operation is the identity."""

    rank = 0
    world_size = 1
    local_world_size = 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes checkpoints and logs."""
        return True

    def common_batches(self, n: int) -> int:
        """Batches every rank can run this epoch (the minimum over ranks)."""
        return n

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks."""
        return values

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Concatenation of every rank's 1-D array, in rank order."""
        return array

    def barrier(self) -> None:
        """Wait for every rank."""


@dataclass
class FitResult:
    """Outcome of :func:`fit`. ``history`` holds one dict per validation evaluation (also resumed
    ones); ``best_eval`` is the 1-based index of the best one, in epoch ``best_epoch``."""

    best_epoch: int
    epochs_run: int
    best_valid_auc: float
    history: list[dict] = field(default_factory=list)
    checkpoint_path: Path | None = None
    best_valid_logloss: float = math.nan
    resumed_from_epoch: int = 0
    best_eval: int = 0


# ---------------------------------------------------------------- setup helpers


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices); make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _reseed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed every generator from (seed, epoch, rank) so an epoch's randomness ignores the past."""
    s = int(np.random.SeedSequence([seed % 2**32, epoch, rank]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` → ``cuda`` when available else ``cpu``; ``"cuda"`` without a GPU raises."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "train.device is 'cuda' but torch sees no CUDA device (use 'auto' or 'cpu')"
        )
    return dev


def _configure_threads(device: torch.device, num_threads: int, local_world_size: int) -> None:
    if device.type == "cpu":
        torch.set_num_threads(
            num_threads or max(1, (os.cpu_count() or 1) // max(1, local_world_size))
        )


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def build_optimizer(model: nn.Module, params: TrainParams, sparse: bool = False) -> torch.optim.Optimizer:
    """Adam over all trainable parameters, or AdamW with ``net_l2`` as decoupled decay on the network.

    With ``embedding_lr_scale`` ≠ 1 the embedding parameters form their own group whose LR is
    ``lr × embedding_lr_scale`` (kept through every decay: :func:`_set_lr` scales each group).
    ``sparse``: the same groups in a :class:`~components.train.sparse_embeddings.LazyAdam` (the
    embedding tables give sparse gradients: train.sparse_embeddings).
    """
    core = _unwrap(model)
    scale = float(getattr(params, "embedding_lr_scale", 1.0))
    if params.optimizer == "adam" and scale == 1.0 and not sparse:
        return torch.optim.Adam([p for p in core.parameters() if p.requires_grad], lr=params.lr)
    emb_ids = {id(p) for p in core.embedding_parameters()}
    emb = [p for p in core.parameters() if p.requires_grad and id(p) in emb_ids]
    net = [p for p in core.parameters() if p.requires_grad and id(p) not in emb_ids]
    decay = params.net_l2 if params.optimizer == "adamw" else 0.0
    groups = [g for g in ({"params": emb, "weight_decay": 0.0, "lr": params.lr * scale, "lr_scale": scale},
                          {"params": net, "weight_decay": decay, "lr": params.lr, "lr_scale": 1.0})
              if g["params"]]  # fmt: skip
    if sparse:
        from components.train.sparse_embeddings import LazyAdam

        if params.embedding_l2 and emb:  # the vectors' embedding_l2, lazily on each batch's rows
            vec_ids = {id(p) for p in core.embedding.penalised_parameters()}
            first = [p for p in emb if id(p) not in vec_ids]  # first-order weights (unless first_order_l2): no L2
            groups = [dict(groups[0], params=[p for p in emb if id(p) in vec_ids],
                           row_l2=float(params.embedding_l2)), *([dict(groups[0], params=first)] if first else []),
                      *groups[1:]]
        return LazyAdam([g for g in groups if g["params"]], lr=params.lr, decoupled=params.optimizer == "adamw")
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=params.lr)


def _penalty(core: nn.Module, params: TrainParams, lazy: tuple[nn.Parameter, ...] = ()) -> torch.Tensor | None:
    """The loss's explicit L2; ``lazy``: sparse tables whose embedding_l2 LazyAdam applies per batch."""
    net_l2 = params.net_l2 if params.optimizer == "adam" else 0.0
    if params.embedding_l2 == 0 and net_l2 == 0:
        return None
    return core.l2_penalty(params.embedding_l2, net_l2, skip=lazy)


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for training on ``device``: ``torch.bfloat16`` or None (plain fp32).

    ``auto`` → bf16 on CUDA, and on a CPU with native bf16 matrix kernels (AVX512-BF16 / AMX:
    there a bf16 DCNv2 train step is about 3× faster than fp32); fp32 elsewhere, where emulated
    bf16 would be slower. ``bf16`` forces it (emulated on CPUs without native support), ``fp32``
    turns it off. Weights, optimizer state, the loss and gradients stay fp32 either way.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if device.type == "cuda" or (device.type == "cpu" and cpu_supports_bf16()):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None = None):
    """Mixed-precision context for a forward pass; ``dtype=None`` → plain fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _predict_autocast(device: torch.device):
    # Scoring on the CPU stays fp32: bf16 logits (8-bit mantissa) would create ties that lower AUC
    # and coarsen the cached teacher logits; inference is a small part of the time there.
    return _autocast(device, torch.bfloat16 if device.type == "cuda" else None)


def _to(batch, device: torch.device):
    if device.type == "cpu" and batch.label.device.type == "cpu":
        return batch
    return batch.to(device, non_blocking=device.type == "cuda")


# ---------------------------------------------------------------- prediction


def predict(
    model: nn.Module, loader: Iterable, *, device: torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32 [N], labels float32 [N]) over ``loader`` in eval mode; the model's mode is restored."""
    core = _unwrap(model)
    dev = device or next(core.parameters()).device
    was_training = core.training
    core.eval()
    logits, labels = [], []
    try:
        with torch.inference_mode(), _predict_autocast(dev):
            for batch in loader:
                batch = _to(batch, dev)
                logits.append(core(batch.categorical, batch.dense).float().cpu())
                labels.append(batch.label.float().cpu())
    finally:
        core.train(was_training)
    if not logits:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def predict_logits(
    model: nn.Module, loader: Iterable, *, device: torch.device | None = None
) -> np.ndarray:
    """Logits [N] (float32) of ``model`` over every batch of ``loader``, in loader order."""
    return predict(model, loader, device=device)[0]


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | None = None,
    collective: Collective | None = None,
) -> dict[str, float]:
    """``{"auc", "logloss"}`` over ``loader``; with a collective, over the union of every rank's shard."""
    coll = collective or LocalCollective()
    logits, labels = predict(model, loader, device=device)
    return evaluate_logits(coll.gather(labels), coll.gather(logits))


# ---------------------------------------------------------------- training


def eval_boundaries(n_batches: int, eval_every: float) -> list[int]:
    """Batch counts (1-based, ascending, last = ``n_batches``) after which an epoch is evaluated.

    ``eval_every`` is the fraction of an epoch between evaluations: 1 → once, at the end; 0.25 →
    after each quarter. Boundaries are rounded to whole batches and never repeat, so an epoch of
    fewer batches than evaluations is evaluated after every batch.
    """
    if not 0 < eval_every <= 1:
        raise ValueError(f"eval_every must be in (0, 1] epochs, got {eval_every}")
    k = max(1, round(1 / eval_every))
    return sorted({max(1, min(n_batches, round(n_batches * j / k))) for j in range(1, k + 1)})


def _train_epoch(
    model, core, loader, optimizer, params, device, coll, epoch, show_progress,
    after_segment: Callable[[float, int, float, int], bool] | None = None,
    pause_name: str = "train_teacher.batch",
) -> tuple[float, int, float]:
    """One pass over ``loader``: (mean BCE over all ranks' samples, global samples, seconds).

    With ``after_segment``, the epoch is cut at :func:`eval_boundaries` (``params.eval_every``);
    after each cut ``after_segment(segment mean loss, segment samples, segment seconds, batches
    done)`` runs (it evaluates; the model is put back in train mode after it) and returning True
    ends the epoch there (early stop).
    """
    model.train()
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    _reseed_epoch(params.seed, epoch, coll.rank)
    lazy = tuple(m.weight for m in core.modules() if isinstance(m, nn.Embedding) and m.sparse)
    n_batches = coll.common_batches(len(loader))
    if n_batches == 0:
        raise ValueError(
            "the training loader yields no batches (empty split, or a rank got no row groups)"
        )
    cuts = set(eval_boundaries(n_batches, getattr(params, "eval_every", 1.0))) if after_segment else set()
    trainable = [p for p in core.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    seg_loss = torch.zeros((), dtype=torch.float64, device=device)
    seg_seen, seg_secs = 0, 0.0
    bar = tqdm(
        total=n_batches,
        desc=f"epoch {epoch}",
        unit="batch",
        leave=False,
        disable=not show_progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    start = seg_start = time.perf_counter()
    train_secs = 0.0
    with bar:
        for i, batch in enumerate(itertools.islice(loader, n_batches)):
            batch = _to(batch, device)
            with _autocast(device, resolve_precision(device, params.precision)):
                logits = model(batch.categorical, batch.dense)
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch.label.float())
            penalty = _penalty(core, params, lazy)
            optimizer.zero_grad(set_to_none=True)
            (loss if penalty is None else loss + penalty).backward()
            if params.grad_clip > 0:
                clip_grad_norm(trainable, params.grad_clip)
            optimizer.step()
            size = batch.label.shape[0]
            pause_point(pause_name)  # tests: a kill mid-epoch (`@n`: the n-th batch)
            loss_sum += loss.detach().double() * size
            seg_loss += loss.detach().double() * size
            seen += size
            seg_seen += size
            bar.update(1)
            if show_progress and (i % PROGRESS_EVERY == 0 or i == n_batches - 1):
                secs = max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(
                    loss=f"{loss_sum.item() / seen:.5f}",
                    samples_s=f"{seen * coll.world_size / secs:,.0f}",
                )
            if i + 1 in cuts:
                seg_secs = time.perf_counter() - seg_start
                train_secs += seg_secs
                tot = coll.all_sum(torch.stack(
                    [seg_loss, torch.tensor(float(seg_seen), dtype=torch.float64, device=device)]))
                seg_mean = float(tot[0] / tot[1])
                if not math.isfinite(seg_mean):
                    raise FloatingPointError(
                        f"training diverged at epoch {epoch} (mean loss {seg_mean}); lower train.lr"
                    )
                stop = after_segment(seg_mean, int(tot[1]), seg_secs, i + 1)
                model.train()
                seg_loss = torch.zeros((), dtype=torch.float64, device=device)
                seg_seen = 0
                seg_start = time.perf_counter()
                if stop:
                    break
    seconds = train_secs if after_segment else time.perf_counter() - start
    totals = coll.all_sum(
        torch.stack([loss_sum, torch.tensor(float(seen), dtype=torch.float64, device=device)])
    )
    mean_loss, samples = float(totals[0] / totals[1]), int(totals[1])
    if not math.isfinite(mean_loss):
        raise FloatingPointError(
            f"training diverged at epoch {epoch} (mean loss {mean_loss}); lower train.lr"
        )
    return mean_loss, samples, seconds


def monitor_score(valid: dict, params) -> float:
    """What early stopping and checkpoint selection maximise (``train.monitor``): ``auc``, or
    ``auc_minus_logloss`` (FuxiCTR's ``{AUC: 1, logloss: -1}``: an epoch that gains AUC while its
    LogLoss degrades more is not "better"). -inf before the first evaluation."""
    if not math.isfinite(valid["auc"]):
        return -math.inf
    if getattr(params, "monitor", "auc") == "auc_minus_logloss":
        return valid["auc"] - valid["logloss"]
    return valid["auc"]


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def _fingerprint(
    params: TrainParams, model_name: str, hparams: dict, fm_hash: str, world: int, model: nn.Module
) -> dict:
    d = params.model_dump(include=set(TRAJECTORY_KEYS))
    d.update(model=model_name, hparams=hparams, feature_map_hash=fm_hash, world_size=world,
             parameters=_shapes_digest(model))
    return json_safe(d)


def _shapes_digest(model: nn.Module) -> str:
    """Digest of the model's parameter names and shapes: a state written by another version of the
    model code (same settings and data, other layer sizes) is not a state to resume."""
    shapes = [[name, list(p.shape)] for name, p in _unwrap(model).state_dict().items()]
    return hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16]


def _stored_fingerprint(out_dir: str | Path) -> dict | None:
    """The fingerprint a resume state in ``out_dir`` recorded (None when unreadable)."""
    try:
        return json.loads((Path(out_dir) / STATE_META).read_text()).get("scalars", {}).get("fingerprint")
    except (OSError, ValueError):
        return None


def resume_state_matches(out_dir: str | Path, params: TrainParams, model: nn.Module,
                         hparams: dict, world_size: int = 1) -> bool | None:
    """None when ``out_dir`` holds no resume state; else whether :func:`fit` would continue it.

    Pipeline stages use it to start afresh (instead of failing) after a parameter or data change.
    """
    meta = Path(out_dir) / STATE_META
    if not meta.exists():
        return None
    core = _unwrap(model)
    fm_hash = feature_map_hash(core.feature_map) if hasattr(core, "feature_map") else ""
    want = _fingerprint(params, getattr(core, "model_name", params.model), json_safe(hparams), fm_hash, world_size,
                        core)
    return _stored_fingerprint(out_dir) == want


def json_safe(obj: Any) -> Any:
    """Tuples → lists, recursively (what a JSON round trip gives), so fingerprints compare equal."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fit(
    model: nn.Module,
    train_loader,
    valid_loader,
    params: TrainParams,
    out_dir: str | Path,
    *,
    resume: bool = True,
    log: Callable[[str], Any] = print,
    progress: bool | None = None,
    hparams: dict | None = None,
    device: str | torch.device | None = None,
    on_epoch_end: Callable[[dict], Any] | None = None,
    collective: Collective | None = None,
    pause_name: str = "train_teacher.batch",
) -> FitResult:
    """Train ``model`` with the FuxiCTR recipe; checkpoints and resume state go to ``out_dir``.

    ``pause_name``: the test fault point hit after every batch (:func:`components.faults.pause_point`;
    the gate's LR has its own, so a kill aimed at the teacher's n-th batch is not spent on it).

    ``model`` is a CTRModel (or a DDP wrapper of one, with a matching ``collective``). ``train_loader``
    needs ``len()`` and ideally ``set_epoch``; both loaders yield batches with ``categorical``,
    ``dense``, ``label`` and ``.to(device, non_blocking=...)``. ``hparams`` are the ``build_model``
    keyword arguments recorded in the checkpoint (default: ``embedding_dim`` + ``model_params``).
    ``device`` overrides ``params.device``. ``progress`` None shows a tqdm bar only on a TTY.
    ``on_epoch_end(record)`` runs after each epoch's state is saved. With ``resume`` a state in
    ``out_dir`` written by the same configuration is continued (ValueError if the configuration
    differs); without it any old state there is deleted first.
    """
    coll = collective or LocalCollective()
    out_dir = Path(out_dir)
    say = log if coll.is_writer else (lambda _msg: None)
    show_progress = coll.is_writer and (sys.stderr.isatty() if progress is None else progress)
    dev = resolve_device(device if device is not None else params.device)
    _configure_threads(dev, params.num_threads, coll.local_world_size)
    seed_everything(params.seed)

    core = _unwrap(model)
    model.to(dev)
    total_ids = sum(core.feature_map.vocab_sizes) if hasattr(core, "feature_map") else 0
    sparse = wants_sparse(params, total_ids, distributed=coll.world_size > 1)
    enable_sparse_embeddings(core, sparse)
    if sparse:
        say(f"sparse embedding gradients + lazy Adam ({total_ids:,} ids ≥ train.sparse_min_ids)")
    optimizer = build_optimizer(core, params, sparse=sparse)
    model_name = getattr(core, "model_name", params.model)
    hp = json_safe(
        dict(hparams)
        if hparams is not None
        else {"embedding_dim": params.embedding_dim, **params.model_params}
    )
    fm_hash = feature_map_hash(core.feature_map) if hasattr(core, "feature_map") else ""
    fingerprint = _fingerprint(params, model_name, hp, fm_hash, coll.world_size, core)

    epoch, lr, bad_epochs = 0, params.lr, 0
    best_auc, best_logloss, best_epoch, best_eval = -math.inf, math.nan, 0, 0
    history: list[dict] = []
    resuming = resume and has_train_state(out_dir)
    coll.barrier()  # every rank decides before rank 0 may clear the state
    if resuming:
        # the recorded fingerprint is checked before any tensor is loaded: a state of other shapes
        # must be named as another configuration, not fail inside load_state_dict
        stored = _stored_fingerprint(out_dir)
        if stored != fingerprint:
            diff = sorted(
                k
                for k in set(fingerprint) | set(stored or {})
                if fingerprint.get(k) != (stored or {}).get(k)
            )
            raise ValueError(
                f"{out_dir / STATE_META}: resume state was written by a different configuration "
                f"(differs in: {', '.join(diff)}); train with resume=False or another out_dir"
            )
        scalars = load_train_state(out_dir, model=core, optimizer=optimizer)
        epoch, lr, bad_epochs = scalars["epoch"], scalars["lr"], scalars["bad_epochs"]
        best_auc, best_logloss, best_epoch = (
            scalars["best_auc"],
            scalars["best_logloss"],
            scalars["best_epoch"],
        )
        history = scalars["history"]
        best_eval = int(scalars.get("best_eval", best_epoch))
        _set_lr(optimizer, lr)
        say(
            f"resuming {model_name} from {out_dir / STATE_META} after epoch {epoch} "
            f"(best AUC {best_auc:.6f} at epoch {best_epoch}, lr {lr:.3g})"
        )
    elif coll.is_writer:
        clear_train_state(out_dir)
    resumed_from = epoch
    counts = count_parameters(core)
    say(
        f"training {model_name} on {dev} ×{coll.world_size}: {counts['total']:,} parameters, "
        f"{len(train_loader)} batches/epoch/rank, max {params.max_epochs} epochs, patience {params.patience}"
    )

    n_evals = len(history)
    n_batches = coll.common_batches(len(train_loader))
    per_epoch = len(eval_boundaries(n_batches, params.eval_every)) if n_batches else 1
    while epoch < params.max_epochs and bad_epochs < params.patience * per_epoch:
        epoch += 1
        t0 = time.perf_counter()

        def after_segment(seg_loss: float, seg_samples: int, seg_secs: float, done: int,
                          epoch: int = epoch) -> bool:  # called inside this epoch only
            nonlocal lr, bad_epochs, best_auc, best_logloss, best_epoch, best_eval, n_evals, t0
            valid = evaluate(core, valid_loader, device=dev, collective=coll)
            n_evals += 1
            progress = round(epoch - 1 + done / n_batches, 4)
            improved = monitor_score(valid, params) > monitor_score(
                {"auc": best_auc, "logloss": best_logloss}, params)
            used_lr = lr
            if improved:
                best_auc, best_logloss, best_epoch, best_eval, bad_epochs = (
                    valid["auc"], valid["logloss"], epoch, n_evals, 0)
                if coll.is_writer:
                    save_model(
                        core,
                        out_dir,
                        model_name=model_name,
                        hparams=hp,
                        feature_map_hash=fm_hash,
                        epoch=epoch,
                        metrics={"valid_auc": valid["auc"], "valid_logloss": valid["logloss"],
                                 "eval": n_evals, "epochs_done": progress},
                    )
            else:
                bad_epochs += 1
                if bad_epochs % per_epoch == 0:  # a whole epoch's evaluations without a gain
                    lr = max(lr * params.lr_decay, min(params.min_lr, lr))
                    if params.restore_best_on_decay and best_eval > 0:
                        coll.barrier()  # the writer's best checkpoint is on disk for every rank
                        load_model_weights(core, out_dir)
                        optimizer.state.clear()  # fresh moments for the restored weights
                    _set_lr(optimizer, lr)
            record = {
                "epoch": epoch,
                "eval": n_evals,
                "epochs_done": progress,
                "lr": used_lr,
                "train_loss": seg_loss,
                "train_samples": seg_samples,
                "valid_auc": valid["auc"],
                "valid_logloss": valid["logloss"],
                "samples_per_s": seg_samples / max(seg_secs, 1e-9),
                "seconds": time.perf_counter() - t0,
                "improved": improved,
            }
            t0 = time.perf_counter()
            history.append(record)
            if coll.is_writer:
                report_progress(model_name, "epochs", progress, params.max_epochs,
                                f"valid AUC {valid['auc']:.4f} (best {best_auc:.4f} at epoch {best_epoch})")
            say(
                f"epoch {progress:g}/{params.max_epochs}: train_loss {seg_loss:.6f}  valid AUC {valid['auc']:.6f}  "
                f"LogLoss {valid['logloss']:.6f}  lr {used_lr:.3g}  {record['samples_per_s']:,.0f} samples/s  "
                f"{record['seconds']:.1f}s"
                + ("  *best*" if improved else f"  (no gain {bad_epochs}/{params.patience * per_epoch})")
            )
            stop = bad_epochs >= params.patience * per_epoch
            if stop or done == n_batches:  # the epoch ends here: resume continues after it
                if coll.is_writer:
                    save_train_state(
                        out_dir,
                        model=core,
                        optimizer=optimizer,
                        scalars={
                            "epoch": epoch,
                            "lr": lr,
                            "bad_epochs": bad_epochs,
                            "best_auc": best_auc,
                            "best_logloss": best_logloss,
                            "best_epoch": best_epoch,
                            "best_eval": best_eval,
                            # no wall-clock fields: the resume state is part of the DVC out
                            "history": without_timings(history),
                            "fingerprint": fingerprint,
                        },
                    )
                coll.barrier()
            if on_epoch_end is not None:
                on_epoch_end(record)
            return stop

        _train_epoch(
            model, core, train_loader, optimizer, params, dev, coll, epoch, show_progress, after_segment,
            pause_name,
        )

    coll.barrier()
    meta = load_model_weights(core, out_dir)
    if meta["epoch"] != best_epoch:
        say(
            f"warning: {out_dir}/model.json is from epoch {meta['epoch']} but the resume state's best is "
            f"epoch {best_epoch} (a crash between the two writes); keeping the checkpoint on disk"
        )
    say(
        f"best epoch {best_epoch}: valid AUC {best_auc:.6f}, LogLoss {best_logloss:.6f} → {out_dir / MODEL_WEIGHTS}"
    )
    return FitResult(
        best_epoch=best_epoch,
        epochs_run=epoch,
        best_valid_auc=best_auc,
        history=history,
        checkpoint_path=out_dir / MODEL_WEIGHTS,
        best_valid_logloss=best_logloss,
        resumed_from_epoch=resumed_from,
        best_eval=best_eval,
    )


__all__ = [
    "Collective", "FitResult", "LocalCollective", "build_optimizer", "evaluate", "fit", "predict",
    "predict_logits", "resolve_device", "seed_everything",
]  # fmt: skip
