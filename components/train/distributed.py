"""Data-parallel training with torch DDP, one process per device, launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m components.train.distributed --params params.yaml

The pipeline's train_teacher stage runs this for you when ``train.distributed`` asks for more than
one rank (:mod:`.launch`, :mod:`.teacher_ddp`); by hand it trains into ``train.out_dir`` directly.

- Backend ``train.distributed.backend``: auto → NCCL when training on CUDA (rank r uses
  ``cuda:LOCAL_RANK``), gloo on CPU.
- Each rank reads its own shard of the rows (``BatchLoader(shard=(rank, world))``) for both splits.
  ``train.batch_size`` is the GLOBAL batch: every rank takes ``batch_size / world`` rows a step
  (:func:`rank_batch_size`; it must divide evenly) and DDP averages the gradients, so a step sees as
  many rows as a one-process step and lr / steps per epoch stay those of the one-process run. Ranks
  whose shards hold different numbers of batches all run the smallest count (the surplus batches of
  an epoch are skipped, so no rank waits on a missing all-reduce).
- Validation: every rank scores its shard, the logits and labels are all-gathered, and every rank
  computes the same AUC / LogLoss on the full validation set, hence takes the same LR and
  early-stopping decisions.
- Only rank 0 writes checkpoints and logs; the resume state holds rank 0's weights and optimizer
  state, which DDP keeps identical on every rank. Restarting the same command resumes.
- Each rank dies with its torchrun agent (``PR_SET_PDEATHSIG``): a killed stage leaves no rank
  running on (and writing into) the staged directory the rerun continues.

The loop itself is :func:`components.train.loop.fit`; this module supplies the process group
(:class:`TorchCollective`) and the wiring from params.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from components.config import Params, load_params

from .loop import FitResult, fit, seed_everything


class TorchCollective:
    """:class:`~components.train.loop.Collective` over the default ``torch.distributed`` group."""

    def __init__(self) -> None:
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised (call init_distributed first)")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        nccl = dist.get_backend() == "nccl"
        self.comm_device = (
            torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        )

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes checkpoints and logs."""
        return self.rank == 0

    def common_batches(self, n: int) -> int:
        """The smallest per-rank batch count (every rank runs exactly this many steps)."""
        t = torch.tensor([n], dtype=torch.int64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (returned on the input's device)."""
        t = values.detach().to(self.comm_device).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.to(values.device)

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Concatenate every rank's 1-D array in rank order (shards may differ in length, even be empty)."""
        local = torch.from_numpy(np.ascontiguousarray(array).reshape(-1)).to(self.comm_device)
        sizes = [
            torch.zeros(1, dtype=torch.int64, device=self.comm_device)
            for _ in range(self.world_size)
        ]
        dist.all_gather(
            sizes, torch.tensor([local.numel()], dtype=torch.int64, device=self.comm_device)
        )
        longest = max(int(s.item()) for s in sizes)
        padded = torch.zeros(longest, dtype=local.dtype, device=self.comm_device)
        padded[: local.numel()] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return (
            torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)]).cpu().numpy()
        )

    def barrier(self) -> None:
        """Wait for every rank."""
        dist.barrier()


def init_distributed(
    backend: str | None = None,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> TorchCollective:
    """Join (or create) the default process group and return its collective.

    Under ``torchrun`` the arguments can be left out (rank, world size and address come from the
    environment). ``backend`` defaults to NCCL with CUDA, gloo otherwise; with NCCL the process binds
    to ``cuda:LOCAL_RANK``.
    """
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)))
        kwargs = (
            {}
            if init_method is None
            else {"init_method": init_method, "rank": rank, "world_size": world_size}
        )
        dist.init_process_group(backend, **kwargs)
    return TorchCollective()


def fit_ddp(
    model: torch.nn.Module,
    train_loader,
    valid_loader,
    params,
    out_dir,
    *,
    collective: TorchCollective,
    **fit_kwargs,
) -> FitResult:
    """Wrap ``model`` in DistributedDataParallel and run :func:`~components.train.loop.fit` on it.

    Every rank must pass a model built from the same seed; DDP also broadcasts rank 0's weights.
    ``fit_kwargs`` go to ``fit``; the device is this rank's (``cuda:LOCAL_RANK`` with NCCL, else CPU).
    """
    cuda = collective.comm_device.type == "cuda"
    device = collective.comm_device if cuda else torch.device("cpu")
    fit_kwargs.pop("device", None)
    model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    return fit(
        ddp,
        train_loader,
        valid_loader,
        params,
        out_dir,
        device=device,
        collective=collective,
        **fit_kwargs,
    )


def rank_batch_size(global_batch: int, world_size: int) -> int:
    """Rows per rank and step for a global batch of ``global_batch`` rows over ``world_size`` ranks."""
    per_rank, rest = divmod(global_batch, world_size)
    if rest or per_rank < 1:
        raise ValueError(
            f"train.batch_size (global batch {global_batch}) must be a multiple of the {world_size} ranks "
            f"of train.distributed (nproc x nnodes): each rank takes batch_size / ranks rows a step; set "
            f"train.batch_size to a multiple of {world_size}")
    return per_rank


def resolve_backend(backend: str, device: str) -> str:
    """``train.distributed.backend``: ``auto`` → nccl when ``train.device`` resolves to CUDA, else gloo."""
    if backend != "auto":
        return backend
    from .loop import resolve_device

    return "nccl" if resolve_device(device).type == "cuda" else "gloo"


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere); exit at once when
    the parent is already gone. Keeps a killed launcher from leaving orphaned ranks behind."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def train_from_params(
    params: Params,
    collective: TorchCollective,
    *,
    processed_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    shuffle: bool = True,
    log=print,
) -> FitResult:
    """Read the processed splits named by ``params``, build the model, train it data-parallel.

    Reads ``<processed_dir>/feature_map.json`` (default ``preprocess.out_dir``) and the ``train`` /
    ``valid`` splits it lists, each rank taking its shard of row groups.
    """
    from components.data.feature_map import FeatureMap
    from components.data.loader import BatchLoader
    from components.models import build_model

    tp = params.train
    processed = Path(processed_dir or params.preprocess.out_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    shard = (collective.rank, collective.world_size)
    device = "cpu" if collective.comm_device.type == "cpu" else str(collective.comm_device)

    def split_path(name: str) -> Path:
        if name not in fmap.splits:
            raise ValueError(
                f"{processed / 'feature_map.json'}: no {name!r} split (has {sorted(fmap.splits)})"
            )
        return processed / fmap.splits[name]["path"]

    from components.train.teacher import train_batch_size

    batch_size = rank_batch_size(train_batch_size(tp, fmap), collective.world_size)
    train = BatchLoader(
        split_path("train"),
        fmap,
        batch_size,
        shuffle=shuffle,
        seed=tp.seed,
        in_memory=tp.in_memory,
        shard=shard,
        device=device,
    )
    valid = BatchLoader(
        split_path("valid"),
        fmap,
        batch_size,
        shuffle=False,
        seed=tp.seed,
        in_memory=tp.in_memory,
        shard=shard,
        device=device,
    )
    seed_everything(tp.seed)
    from components.train.gate import BASELINE_DIR, LOGISTIC_BASE_DIR
    from components.train.teacher import (
        apply_first_order_l2,
        install_logistic_base,
        read_fitted_lr,
        teacher_hparams,
    )

    hparams = teacher_hparams(tp)
    model = build_model(tp.model, fmap, **hparams)
    fitted = None
    if model.logistic_base is not None:  # the coordinator fitted the gate's LR before torchrun
        base_dir = Path(out_dir or tp.out_dir) / LOGISTIC_BASE_DIR
        if not (base_dir / "model.json").is_file():
            raise FileNotFoundError(
                f"{base_dir}: no fitted LR for train.logistic_base (the train_teacher stage fits it before "
                f"launching the ranks; by hand, run the stage or set train.logistic_base: false)")
        install_logistic_base(model, base_dir)
        fitted = read_fitted_lr(Path(out_dir or tp.out_dir) / BASELINE_DIR)
    apply_first_order_l2(model, tp, fitted, log=lambda _m: None)  # every rank alike (the coordinator logs)
    return fit_ddp(
        model,
        train,
        valid,
        tp,
        out_dir or tp.out_dir,
        collective=collective,
        resume=resume,
        hparams=hparams,
        log=log,
    )


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def result_record(result: FitResult, collective: TorchCollective, backend: str, seconds: float) -> dict:
    """What rank 0 reports to the launching stage (``--report-dir``/result.json): the FitResult
    (history with its timings) and how it ran."""
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_valid_auc": result.best_valid_auc,
        "best_valid_logloss": result.best_valid_logloss,
        "best_eval": result.best_eval,
        "resumed_from_epoch": result.resumed_from_epoch,
        "history": result.history,
        "world_size": collective.world_size,
        "local_world_size": collective.local_world_size,
        "backend": backend,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
    }


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (run under torchrun): train from params.yaml, print rank 0's summary."""
    ap = argparse.ArgumentParser(
        prog="python -m components.train.distributed", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--params", default="params.yaml", help="params.yaml to read (default: %(default)s)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted params key, e.g. train.lr=0.01 (repeatable)",
    )
    ap.add_argument(
        "--processed-dir", default=None, help="processed splits (default: preprocess.out_dir)"
    )
    ap.add_argument("--out-dir", default=None, help="checkpoint directory (default: train.out_dir)")
    ap.add_argument(
        "--no-resume", action="store_true", help="ignore (and delete) an existing resume state"
    )
    ap.add_argument(
        "--no-shuffle", action="store_true", help="keep each shard's row order (debugging)"
    )
    ap.add_argument(
        "--report-dir",
        default=None,
        help="an existing directory (the launching stage's, outside every output): rank 0 writes "
        "result.json there, a failing rank r its error to rank-<r>.error",
    )
    args = ap.parse_args(argv)
    die_with_parent()
    report = Path(args.report_dir) if args.report_dir else None
    rank = int(os.environ.get("RANK", "0"))
    try:
        params = load_params(args.params, _parse_set(args.set))
        backend = resolve_backend(params.train.distributed.backend, params.train.device)
        coll = init_distributed(backend)
        try:
            started = time.perf_counter()
            result = train_from_params(
                params,
                coll,
                processed_dir=args.processed_dir,
                out_dir=args.out_dir,
                resume=not args.no_resume,
                shuffle=not args.no_shuffle,
            )
            if coll.is_writer:
                if report is not None:
                    _write_json(
                        report / "result.json",
                        result_record(result, coll, backend, time.perf_counter() - started),
                    )
                print(
                    f"best epoch {result.best_epoch} of {result.epochs_run}: valid AUC "
                    f"{result.best_valid_auc:.6f} → {result.checkpoint_path}",
                    flush=True,
                )
        finally:
            dist.destroy_process_group()
    except BaseException as e:
        if report is not None and not isinstance(e, KeyboardInterrupt):
            (report / f"rank-{rank}.error").write_text(
                f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}"
            )
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
