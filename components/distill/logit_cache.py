"""Teacher logits computed once per (teacher, data), cached as Parquet, and aligned with batches.

Layout: ``<cache_dir>/<key[:32]>/{train,valid,test}.parquet`` (one float32 column ``logit``, row i = row
i of the split's processed Parquet file) plus ``meta.json`` (key, teacher model and weights SHA-256,
feature-map hash, and per split: file, rows, SHA-256 of the logit file).

Capped splits (``max_rows``, the students' ``distill.max_train_rows``): a student loader under a cap
only visits the row groups :func:`~components.data.loader.spread_row_groups` picks, so only those
rows are scored (at Kaggle size 4.2M of 36.7M training rows instead of all of them). The split's
file then holds the logits of those rows in file order and its meta entry lists their file row
ranges (``scored``: ``[[start, stop], ...]``; absent = every row). :meth:`TeacherLogitCache.load`
still returns one value per row of the split, NaN where a row was not scored, and
:class:`TeacherLogitLoader` refuses a batch that reaches such a row. A cached split is reused when
its scored rows cover those asked for; otherwise that split alone is recomputed and the others are
carried over.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from components.atomic_dir import replace_dir
from components.data.feature_map import FeatureMap
from components.data.loader import BatchLoader, spread_row_groups
from components.train.checkpoint import (
    check_feature_map,
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
    meta = check_feature_map(teacher_dir, feature_map)
    return hashlib.sha256(f"{meta['weights_sha256']}:{meta['feature_map_hash']}".encode()).hexdigest()


def compute_logits(model: nn.Module, loader: BatchLoader, device: torch.device) -> np.ndarray:
    """The teacher's logits (float32 [N]) over an unshuffled loader, in file order."""
    return predict_logits(model, loader, device=device)


Ranges = list[list[int]]  # file row ranges [[start, stop], ...] of a split, ascending


@dataclass(frozen=True)
class TeacherLogitCache:
    """A valid cache directory: ``load(split)`` gives the logits of one split as a float32 tensor.

    ``scored[split]`` is None when every row of the split was scored, else the file row ranges
    that were (a capped split, see the module docstring)."""

    directory: Path
    key: str
    rows: dict[str, int]
    reused: bool
    teacher_model: str
    scored: dict[str, Ranges | None] = field(default_factory=dict)

    def path(self, split: str) -> Path:
        """The Parquet file of ``split`` (KeyError naming the cached splits if absent)."""
        if split not in self.rows:
            raise KeyError(f"{self.directory}: no cached teacher logits for split {split!r} "
                           f"(cached: {sorted(self.rows)})")
        return self.directory / f"{split}.parquet"

    def load(self, split: str) -> torch.Tensor:
        """Teacher logits of ``split``: float32 [rows], row-aligned with the split's Parquet file
        (NaN at the rows a capped split did not score)."""
        col = pq.read_table(self.path(split), columns=[LOGIT_COLUMN]).column(0)
        values = torch.from_numpy(np.array(col.to_numpy(), dtype=np.float32))
        ranges = self.scored.get(split)
        expected = self.rows[split] if ranges is None else sum(stop - start for start, stop in ranges)
        if values.shape[0] != expected:
            raise ValueError(f"{self.path(split)}: {values.shape[0]} logits, meta.json says {expected}")
        if ranges is None:
            return values
        full = torch.full((self.rows[split],), float("nan"), dtype=torch.float32)
        at = 0
        for start, stop in ranges:
            full[start:stop] = values[at : at + stop - start]
            at += stop - start
        return full


def _split_path(processed: Path, feature_map: FeatureMap, split: str) -> Path:
    return processed / feature_map.splits[split]["path"]


def scored_ranges(path: str | Path, max_rows: int | None) -> Ranges | None:
    """The file row ranges a loader capped at ``max_rows`` visits in the Parquet file ``path``
    (:func:`~components.data.loader.spread_row_groups`); None when it visits every row."""
    if max_rows is None:
        return None
    meta = pq.read_metadata(path)
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    groups = spread_row_groups(sizes, max_rows)
    if len(groups) == len(sizes):
        return None
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return [[int(starts[g]), int(starts[g + 1])] for g in groups]


def _covers(cached: Ranges | None, wanted: Ranges | None) -> bool:
    if cached is None:
        return True
    if wanted is None:
        return False
    have = {tuple(r) for r in cached}
    return all(tuple(r) in have for r in wanted)


def _read_meta(directory: Path, key: str) -> dict | None:
    try:
        meta = json.loads((directory / CACHE_META).read_text())
    except (OSError, ValueError):
        return None
    if (meta.get("format"), meta.get("version"), meta.get("key")) != (CACHE_FORMAT, CACHE_VERSION, key):
        return None
    return meta


def _valid_entries(directory: Path, key: str, rows: dict[str, int]) -> dict[str, dict]:
    """The split entries of the cache's meta.json (matching ``key``) whose file exists, has the
    hash the entry records and belongs to a split of ``rows`` rows; {} when meta.json is unusable."""
    meta = _read_meta(directory, key)
    if meta is None:
        return {}
    valid = {}
    for split, entry in meta.get("splits", {}).items():
        path = directory / f"{split}.parquet"
        if split not in rows or entry.get("rows") != rows[split] or not path.exists():
            continue
        if file_sha256(path) != entry.get("sha256"):
            continue
        valid[split] = entry
    return valid


def _usable(entries: dict[str, dict], wanted: dict[str, Ranges | None]) -> bool:
    return all(s in entries and _covers(entries[s].get("scored"), r) for s, r in wanted.items())


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
    max_rows: Mapping[str, int | None] | None = None,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
    in_memory: bool = True,
    log: Callable[[str], Any] = print,
) -> TeacherLogitCache:
    """Return the cached teacher logits of ``splits``, computing and caching them first if needed.

    ``splits`` defaults to those of train/valid/test present in the feature map. ``max_rows``
    ({split: cap}) scores a split only over the rows a loader capped at that many rows visits
    (module docstring). The teacher is loaded from its checkpoint (``teacher_dir``) only when a
    split has to be (re)computed.
    """
    processed = Path(processed_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    wanted = [s for s in DEFAULT_SPLITS if s in fmap.splits] if splits is None else list(splits)
    missing = [s for s in wanted if s not in fmap.splits]
    if missing:
        raise ValueError(f"{processed / 'feature_map.json'}: no split(s) {missing} (has {sorted(fmap.splits)})")
    key = teacher_cache_key(teacher_dir, fmap)
    teacher_meta = read_model_metadata(teacher_dir)
    rows = {s: pq.read_metadata(_split_path(processed, fmap, s)).num_rows
            for s in fmap.splits if s in wanted or _split_path(processed, fmap, s).is_file()}
    caps = dict(max_rows or {})
    needed = {s: scored_ranges(_split_path(processed, fmap, s), caps.get(s)) for s in wanted}
    final = Path(cache_dir) / key[:32]
    # students distilled in parallel threads, and tuning workers in parallel processes on one checkout
    # (components/tune/worker.py), build it once: the others wait, then reuse it
    with _BUILD_LOCK, _directory_lock(Path(cache_dir)):
        return _ensure(teacher_dir, processed, fmap, needed, key, teacher_meta, rows, final, caps,
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


def _cache(final: Path, key: str, rows: dict[str, int], entries: dict[str, dict], reused: bool,
           teacher_meta: dict) -> TeacherLogitCache:
    return TeacherLogitCache(final, key, {s: rows[s] for s in entries}, reused, teacher_meta["model"],
                             {s: e.get("scored") for s, e in entries.items()})


def _ensure(teacher_dir, processed: Path, fmap: FeatureMap, needed: dict[str, Ranges | None], key: str,
            teacher_meta: dict, rows: dict[str, int], final: Path, caps: dict[str, int | None], *,
            batch_size: int, device, in_memory: bool, log: Callable[[str], Any]) -> TeacherLogitCache:
    entries = _valid_entries(final, key, rows)
    if _usable(entries, needed):
        log(f"teacher logits: reusing {final} ({teacher_meta['model']}, key {key[:12]}…)")
        return _cache(final, key, rows, entries, True, teacher_meta)

    todo = [s for s, r in needed.items() if not _usable(entries, {s: r})]
    dev = resolve_device(device)

    def describe(split: str) -> str:
        ranges = needed[split]
        if ranges is None:
            return split
        scored = sum(stop - start for start, stop in ranges)
        return f"{split} ({scored:,} of {rows[split]:,} rows: capped at {caps[split]:,})"

    log(f"teacher logits: computing {', '.join(map(describe, todo))} with {teacher_meta['model']} → {final}")
    teacher, _ = load_model(teacher_dir, fmap, device=dev)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        kept = {s: e for s, e in entries.items() if s not in todo}
        for split in kept:  # still valid: carried over, not recomputed
            shutil.copy2(final / f"{split}.parquet", tmp / f"{split}.parquet")
        for split in todo:
            loader = BatchLoader(_split_path(processed, fmap, split), fmap, batch_size, shuffle=False,
                                 in_memory=in_memory, device=dev, max_rows=caps.get(split) if needed[split] else None)
            logits = compute_logits(teacher, loader, dev)
            ranges = needed[split]
            scored = rows[split] if ranges is None else sum(stop - start for start, stop in ranges)
            if logits.shape != (scored,):
                raise RuntimeError(f"teacher produced {logits.shape[0]} logits for {scored} rows of {split}")
            digest = _write_logits(tmp / f"{split}.parquet", logits)
            kept[split] = {"file": f"{split}.parquet", "rows": rows[split], "sha256": digest}
            if ranges is not None:
                kept[split]["scored"] = ranges
        meta = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "key": key,
            "teacher_dir": str(teacher_dir),
            "teacher_model": teacher_meta["model"],
            "teacher_weights_sha256": teacher_meta["weights_sha256"],
            "feature_map_hash": teacher_meta["feature_map_hash"],
            "splits": dict(sorted(kept.items())),
        }
        (tmp / CACHE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        theirs = _valid_entries(final, key, rows)
        if _usable(theirs, needed):
            # another process (unlocked filesystem) finished first: keep its cache, readers may use it
            return _cache(final, key, rows, theirs, True, teacher_meta)
        try:
            replace_dir(tmp, final)
        except OSError:
            # another process renamed a complete cache into place first: use it if it is usable
            theirs = _valid_entries(final, key, rows)
            if not _usable(theirs, needed):
                raise
            return _cache(final, key, rows, theirs, True, teacher_meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _cache(final, key, rows, kept, False, teacher_meta)


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
            if torch.isnan(teacher).any():
                raise ValueError(
                    f"{self.loader.path}: the cached teacher logits do not cover row "
                    f"{int(rows[torch.isnan(teacher)][0])} that this loader visits (they were scored "
                    "under another distill.max_train_rows cap)"
                )
            if batch.label.device.type != "cpu":
                teacher = teacher.to(batch.label.device, non_blocking=True)
            yield DistillBatch(*batch, teacher)
