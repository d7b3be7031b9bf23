"""Teacher logits computed once per (teacher, data), cached as Parquet, and aligned with batches.

Layout: ``<cache_dir>/<key[:32]>/{train,valid,test}.parquet`` (one float32 column ``logit``, row i = row
i of the split's processed Parquet file) plus ``meta.json`` (key, teacher model and weights SHA-256,
feature-map hash, and per split: file, rows, SHA-256 of the logit file).

The key is SHA-256 of "<teacher weights SHA-256>:<feature-map hash>" (the weights hash is read from
the teacher's ``model.json``), so retraining the teacher or re-preprocessing the data gives a new
key and thus new logits; a directory whose ``meta.json`` does not match its key, misses a split, or
whose files fail their row count or hash is rebuilt. A build writes into a temporary directory that
is renamed into place, so a crash never leaves a half-written cache that looks valid. Builds are
serialised by an exclusive ``flock`` on the cache directory (threads and processes, e.g. several tuning
workers on one checkout starting at the same moment): the first computes, the others then reuse it.

Logits come from :func:`components.train.loop.predict` in eval mode, in file order (unshuffled,
unsharded loader). On CUDA ``predict`` runs under bf16 autocast, so cached logits then carry bf16
precision.

:class:`TeacherLogitLoader` wraps a :class:`~components.data.loader.BatchLoader` and yields
:class:`DistillBatch` (the batch + the cached teacher logit of each of its rows), using the row
numbers that :meth:`BatchLoader.iter_with_rows` reports, so alignment holds under shuffling,
sharding and streaming.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from components.atomic_dir import replace_dir
from components.data.feature_map import FeatureMap
from components.data.loader import BatchLoader
from components.train.checkpoint import (
    feature_map_hash,
    file_sha256,
    load_model,
    read_model_metadata,
)
from components.train.loop import predict_logits, resolve_device

LOGIT_COLUMN = "logit"
CACHE_META = "meta.json"
CACHE_FORMAT = "ctrflow-teacher-logits"
CACHE_VERSION = 1
DEFAULT_SPLITS = ("train", "valid", "test")


def teacher_cache_key(teacher_dir: str | Path, feature_map: FeatureMap) -> str:
    """SHA-256 of the teacher's weights hash and the feature-map hash (ValueError if they mismatch)."""
    meta = read_model_metadata(teacher_dir)
    fm_hash = feature_map_hash(feature_map)
    if meta["feature_map_hash"] != fm_hash:
        raise ValueError(
            f"{Path(teacher_dir) / 'model.json'}: the teacher was trained on feature map "
            f"{meta['feature_map_hash'][:12]}…, the processed data hashes to {fm_hash[:12]}… "
            "(retrain the teacher after preprocessing changes)"
        )
    return hashlib.sha256(f"{meta['weights_sha256']}:{fm_hash}".encode()).hexdigest()


def compute_logits(model: nn.Module, loader: BatchLoader, device: torch.device) -> np.ndarray:
    """The teacher's logits (float32 [N]) over an unshuffled loader, in file order."""
    return predict_logits(model, loader, device=device)


@dataclass(frozen=True)
class TeacherLogitCache:
    """A valid cache directory: ``load(split)`` gives the logits of one split as a float32 tensor."""

    directory: Path
    key: str
    rows: dict[str, int]
    reused: bool
    teacher_model: str

    def path(self, split: str) -> Path:
        """The Parquet file of ``split`` (KeyError naming the cached splits if absent)."""
        if split not in self.rows:
            raise KeyError(f"{self.directory}: no cached teacher logits for split {split!r} "
                           f"(cached: {sorted(self.rows)})")
        return self.directory / f"{split}.parquet"

    def load(self, split: str) -> torch.Tensor:
        """Teacher logits of ``split``: float32 [rows], row-aligned with the split's Parquet file."""
        col = pq.read_table(self.path(split), columns=[LOGIT_COLUMN]).column(0)
        values = torch.from_numpy(np.array(col.to_numpy(), dtype=np.float32))
        if values.shape[0] != self.rows[split]:
            raise ValueError(f"{self.path(split)}: {values.shape[0]} rows, meta.json says {self.rows[split]}")
        return values


def _split_rows(processed: Path, feature_map: FeatureMap, split: str) -> int:
    return pq.read_metadata(processed / feature_map.splits[split]["path"]).num_rows


def _read_valid_meta(directory: Path, key: str, expected_rows: dict[str, int]) -> dict | None:
    """The cache's meta.json when it matches ``key`` and every split file checks out, else None."""
    try:
        meta = json.loads((directory / CACHE_META).read_text())
    except (OSError, ValueError):
        return None
    if (meta.get("format"), meta.get("version"), meta.get("key")) != (CACHE_FORMAT, CACHE_VERSION, key):
        return None
    for split, rows in expected_rows.items():
        entry = meta.get("splits", {}).get(split)
        path = directory / f"{split}.parquet"
        if entry is None or entry.get("rows") != rows or not path.exists():
            return None
        if file_sha256(path) != entry.get("sha256"):
            return None
    return meta


def _write_logits(path: Path, logits: np.ndarray) -> str:
    table = pa.table({LOGIT_COLUMN: pa.array(np.asarray(logits, dtype=np.float32))})
    pq.write_table(table, path)
    return file_sha256(path)


def ensure_teacher_logits(
    teacher_dir: str | Path,
    processed_dir: str | Path,
    cache_dir: str | Path,
    *,
    splits: Sequence[str] | None = None,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
    in_memory: bool = True,
    log: Callable[[str], Any] = print,
) -> TeacherLogitCache:
    """Return the cached teacher logits of ``splits``, computing and caching them first if needed.

    ``splits`` defaults to those of train/valid/test present in the feature map. The teacher is
    loaded from its checkpoint (``teacher_dir``) only when the cache has to be (re)built.
    """
    processed = Path(processed_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    wanted = [s for s in DEFAULT_SPLITS if s in fmap.splits] if splits is None else list(splits)
    missing = [s for s in wanted if s not in fmap.splits]
    if missing:
        raise ValueError(f"{processed / 'feature_map.json'}: no split(s) {missing} (has {sorted(fmap.splits)})")
    key = teacher_cache_key(teacher_dir, fmap)
    teacher_meta = read_model_metadata(teacher_dir)
    rows = {s: _split_rows(processed, fmap, s) for s in wanted}
    final = Path(cache_dir) / key[:32]
    # students distilled in parallel threads, and tuning workers in parallel processes on one checkout
    # (components/tune/worker.py), build it once: the others wait, then reuse it
    with _BUILD_LOCK, _directory_lock(Path(cache_dir)):
        return _ensure(teacher_dir, processed, fmap, wanted, key, teacher_meta, rows, final,
                       batch_size=batch_size, device=device, in_memory=in_memory, log=log)


_BUILD_LOCK = threading.Lock()


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory`` itself (no lock file inside a DVC output) for the
    block. Where the filesystem has no flock (some network mounts) the block runs unlocked: a build
    is still renamed into place whole, and a valid cache another process put there first is kept."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ensure(teacher_dir, processed: Path, fmap: FeatureMap, wanted: list[str], key: str, teacher_meta: dict,
            rows: dict[str, int], final: Path, *, batch_size: int, device, in_memory: bool,
            log: Callable[[str], Any]) -> TeacherLogitCache:
    meta = _read_valid_meta(final, key, rows)
    if meta is not None:
        log(f"teacher logits: reusing {final} ({teacher_meta['model']}, key {key[:12]}…)")
        return TeacherLogitCache(final, key, rows, True, teacher_meta["model"])

    dev = resolve_device(device)
    log(f"teacher logits: computing {', '.join(wanted)} with {teacher_meta['model']} → {final}")
    teacher, _ = load_model(teacher_dir, fmap, device=dev)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        entries = {}
        for split in wanted:
            loader = BatchLoader(processed / fmap.splits[split]["path"], fmap, batch_size,
                                 shuffle=False, in_memory=in_memory, device=dev)
            logits = compute_logits(teacher, loader, dev)
            if logits.shape != (rows[split],):
                raise RuntimeError(f"teacher produced {logits.shape[0]} logits for {rows[split]} rows of {split}")
            digest = _write_logits(tmp / f"{split}.parquet", logits)
            entries[split] = {"file": f"{split}.parquet", "rows": rows[split], "sha256": digest}
        meta = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "key": key,
            "teacher_dir": str(teacher_dir),
            "teacher_model": teacher_meta["model"],
            "teacher_weights_sha256": teacher_meta["weights_sha256"],
            "feature_map_hash": teacher_meta["feature_map_hash"],
            "splits": entries,
        }
        (tmp / CACHE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if _read_valid_meta(final, key, rows) is not None:
            # another process (unlocked filesystem) finished first: keep its cache, readers may use it
            return TeacherLogitCache(final, key, rows, True, teacher_meta["model"])
        try:
            replace_dir(tmp, final)
        except OSError:
            # another process renamed a complete cache into place first: use it if it is valid
            if _read_valid_meta(final, key, rows) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TeacherLogitCache(final, key, rows, False, teacher_meta["model"])


class DistillBatch(NamedTuple):
    """A training batch plus the cached teacher logit of each row (float32 [B])."""

    categorical: torch.Tensor
    dense: torch.Tensor
    label: torch.Tensor
    teacher_logit: torch.Tensor

    def to(self, device: str | torch.device, non_blocking: bool = True) -> DistillBatch:
        """The same batch on ``device`` (pinned + asynchronous copy when ``device`` is CUDA)."""
        device = torch.device(device)
        if device.type == "cuda":
            return DistillBatch(*(t.pin_memory().to(device, non_blocking=non_blocking) for t in self))
        return DistillBatch(*(t.to(device) for t in self))


class TeacherLogitLoader:
    """A BatchLoader whose batches carry the teacher logits of their rows (:class:`DistillBatch`).

    ``logits`` must hold one value per row of the loader's Parquet file (all shards together); it
    stays on the CPU and is indexed with each batch's file row numbers, then moved to the batch's
    device. ``len()``, ``set_epoch`` and ``epoch`` are the wrapped loader's.
    """

    def __init__(self, loader: BatchLoader, logits: torch.Tensor) -> None:
        file_rows = pq.read_metadata(loader.path).num_rows
        if logits.dim() != 1 or logits.shape[0] != file_rows:
            raise ValueError(
                f"{loader.path}: {file_rows} rows but {list(logits.shape)} teacher logits "
                "(the cache does not belong to this split)"
            )
        self.loader = loader
        self.logits = logits.detach().to("cpu", torch.float32)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will produce."""
        return self.loader.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch`` of the wrapped loader."""
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches per epoch (the wrapped loader's)."""
        return len(self.loader)

    def __iter__(self) -> Iterator[DistillBatch]:
        for batch, rows in self.loader.iter_with_rows():
            teacher = self.logits.index_select(0, rows)
            if batch.label.device.type != "cpu":
                teacher = teacher.to(batch.label.device, non_blocking=True)
            yield DistillBatch(*batch, teacher)
