"""Fast training batches from an encoded split (``train.parquet`` etc.).

:class:`BatchLoader` yields :class:`Batch` tuples of whole tensors — categorical ids
``int32 [B, F_cat]``, dense values ``float32 [B, F_dense]`` (``F_dense`` may be 0) and labels
``float32 [B]`` — with no per-row Python and no ``default_collate``:

- **in memory** (default): the Parquet file is read once, one whole column at a time (pyarrow →
  numpy → a column of one ``[N, F]`` tensor, so peak memory is the tensors plus one column); each epoch draws ``torch.randperm`` from a generator seeded with
  ``seed + epoch`` and slices batches by ``index_select``.
- **streaming** (``in_memory=False``, for splits larger than memory): Parquet row groups are
  visited in a per-epoch seeded order, ``shuffle_buffer`` row groups at a time are concatenated
  and shuffled together, and batches are cut from that buffer (a short remainder is carried into
  the next buffer, so every batch but the last has ``batch_size`` rows). Memory holds at most
  ``shuffle_buffer + 1`` row groups (the writer uses 65,536 rows per group); the freed buffers are
  returned to the OS before the next one is read (:func:`components.heap.trim`), so resident
  memory stays flat however many rows are streamed.

Epochs: every ``iter()`` uses the current epoch and then advances it, so successive epochs are
shuffled differently; ``set_epoch(e)`` makes the next ``iter()`` reproduce epoch ``e`` exactly
(the same seed and epoch always give the same order).

Sharding for data-parallel training, ``shard=(rank, world_size)``: in memory, rank ``r`` owns rows
``i`` with ``i % world_size == r`` (shard sizes differ by at most one row); streaming, it owns row
groups ``g`` with ``g % world_size == r``. Shards are disjoint and together cover every row once;
they may yield different numbers of batches, so DDP callers should agree on a step count.

A cap, ``max_rows=N`` (the students' ``distill.max_train_rows``): the loader then owns only row
groups spread evenly over the whole file (:func:`spread_row_groups`), in memory and streaming
alike, before sharding. Row numbers stay the file's, so per-row side data still lines up.

On a CUDA ``device`` batches are copied through pinned memory with ``non_blocking=True``.

:meth:`BatchLoader.iter_with_rows` yields the same batches (it is what ``iter()`` runs) together
with each batch's row numbers in the split's Parquet file (int64 [B], CPU), so per-row side data
(e.g. cached teacher logits) can be aligned with shuffled and sharded batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from components.data.feature_map import FeatureMap
from components.heap import trim


class Batch(NamedTuple):
    """One training batch: ids [B, F_cat] (int32), dense [B, F_dense] (float32), label [B] (float32)."""

    categorical: torch.Tensor
    dense: torch.Tensor
    label: torch.Tensor

    def to(self, device: str | torch.device, non_blocking: bool = True) -> Batch:
        """The same batch on ``device`` (pinned + asynchronous copy when ``device`` is CUDA)."""
        device = torch.device(device)
        if device.type == "cuda":
            return Batch(*(t.pin_memory().to(device, non_blocking=non_blocking) for t in self))
        return Batch(*(t.to(device) for t in self))


class _Columns(NamedTuple):
    categorical: list[str]
    dense: list[str]
    label: str


def _columns(feature_map: FeatureMap) -> _Columns:
    return _Columns(
        [f.name for f in feature_map.categorical_fields],
        [f.name for f in feature_map.dense_fields],
        feature_map.label,
    )


def _column(get: Callable[[str], pa.ChunkedArray], name: str) -> np.ndarray:
    col = get(name)
    if col.null_count:
        raise ValueError(f"column {name!r} holds {col.null_count} nulls; encoded splits never do")
    return col.to_numpy()


def _stack(get: Callable[[str], pa.ChunkedArray], n: int, names: list[str], dtype: type, rows: slice) -> torch.Tensor:
    """Columns ``names`` (fetched one at a time by ``get``) as one tensor [n, len(names)]."""
    out = np.empty((n, len(names)), dtype=dtype)
    for j, name in enumerate(names):
        out[:, j] = _column(get, name)[rows]
    return torch.from_numpy(out)


def _tensors(
    get: Callable[[str], pa.ChunkedArray], n: int, cols: _Columns, rows: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(categorical int32 [n, F_cat], dense float32 [n, F_dense], label float32 [n])."""
    cat = _stack(get, n, cols.categorical, np.int32, rows)
    dense = _stack(get, n, cols.dense, np.float32, rows)
    label = torch.from_numpy(_column(get, cols.label)[rows].astype(np.float32))
    return cat, dense, label


def spread_row_groups(sizes: list[int], max_rows: int) -> list[int]:
    """Indices of row groups spread evenly over a file with row-group ``sizes``: group
    ``floor(i·n/k)`` for ``i < k``, with ``k`` as large as fits ``max_rows`` rows (the largest such ``k``
    when the groups are of equal size, as the preprocessing writes them; at least one group; every
    group when the file fits)."""
    n, total = len(sizes), sum(sizes)
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    if n == 0 or total <= max_rows:
        return list(range(n))

    def picks(k: int) -> list[int]:
        return [i * n // k for i in range(k)]

    k = min(n, max(1, max_rows * n // total))
    while k > 1 and sum(sizes[g] for g in picks(k)) > max_rows:
        k -= 1
    while k < n and sum(sizes[g] for g in picks(k + 1)) <= max_rows:
        k += 1
    return picks(k)


def _table_tensors(table: pa.Table, cols: _Columns) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _tensors(table.column, table.num_rows, cols)


class BatchLoader:
    """Shuffled, seeded, optionally sharded batches of one encoded split (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        feature_map: FeatureMap,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        in_memory: bool = True,
        shard: tuple[int, int] = (0, 1),
        device: str | torch.device = "cpu",
        shuffle_buffer: int = 2,
        max_rows: int | None = None,
    ) -> None:
        rank, world = shard
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1 row group, got {shuffle_buffer}")
        self.path = Path(path)
        self.feature_map = feature_map
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.in_memory = in_memory
        self.rank, self.world_size = rank, world
        self.device = torch.device(device)
        self.shuffle_buffer = shuffle_buffer
        self._epoch = 0
        self._cols = _columns(feature_map)
        self._file = pq.ParquetFile(self.path)
        names = [*self._cols.categorical, *self._cols.dense, self._cols.label]
        missing = [n for n in names if n not in self._file.schema_arrow.names]
        if missing:
            raise ValueError(f"{self.path}: columns {missing} of the feature map are not in the file")
        meta = self._file.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self._group_start = [0, *np.cumsum(sizes, dtype=np.int64).tolist()]
        owned = list(range(len(sizes))) if max_rows is None else spread_row_groups(sizes, max_rows)
        self.max_rows = max_rows
        self._row_map: torch.Tensor | None = None  # file row of each in-memory row, when capped
        if in_memory:
            # one column at a time: peak memory = the [N, F] tensors + one decoded column
            if len(owned) == len(sizes):
                read = lambda name: self._file.read(columns=[name]).column(0)  # noqa: E731
                total = meta.num_rows
            else:
                read = lambda name: self._file.read_row_groups(owned, columns=[name]).column(0)  # noqa: E731
                total = sum(sizes[g] for g in owned)
                file_rows = np.concatenate([np.arange(self._group_start[g], self._group_start[g + 1]) for g in owned])
                self._row_map = torch.from_numpy(file_rows[rank::world])
            self.num_rows = len(range(rank, total, world))
            self._data = _tensors(read, self.num_rows, self._cols, slice(rank, None, world))
        else:
            self._groups = [g for i, g in enumerate(owned) if i % world == rank]
            self.num_rows = sum(sizes[g] for g in self._groups)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will produce."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch`` (its order depends on seed + epoch only)."""
        self._epoch = epoch

    def __len__(self) -> int:
        """Number of batches per epoch for this shard."""
        full, rest = divmod(self.num_rows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + epoch)

    def __iter__(self) -> Iterator[Batch]:
        for batch, _rows in self.iter_with_rows():
            yield batch

    def iter_with_rows(self) -> Iterator[tuple[Batch, torch.Tensor]]:
        """One epoch as ``iter()`` gives it, each batch paired with its file row numbers (int64 [B], CPU)."""
        epoch = self._epoch
        self._epoch += 1
        gen = self._generator(epoch)
        batches = self._iter_memory(gen) if self.in_memory else self._iter_stream(gen)
        for b, rows in batches:
            yield (b if self.device.type == "cpu" else b.to(self.device)), rows

    def _file_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Row numbers in the file of this shard's in-memory rows ``local`` (row i is file row rank + i·world,
        or, under a ``max_rows`` cap, the i-th row the shard owns)."""
        if self._row_map is not None:
            return self._row_map[local]
        return local * self.world_size + self.rank if self.world_size > 1 else local

    def _iter_memory(self, gen: torch.Generator) -> Iterator[tuple[Batch, torch.Tensor]]:
        cat, dense, label = self._data
        n, bs = self.num_rows, self.batch_size
        if self.shuffle:
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                if len(idx) < bs and self.drop_last:
                    return
                batch = Batch(cat.index_select(0, idx), dense.index_select(0, idx), label.index_select(0, idx))
                yield batch, self._file_rows(idx)
        else:
            for start in range(0, n, bs):
                stop = min(start + bs, n)
                if stop - start < bs and self.drop_last:
                    return
                batch = Batch(cat[start:stop], dense[start:stop], label[start:stop])
                yield batch, self._file_rows(torch.arange(start, stop))

    def _iter_stream(self, gen: torch.Generator) -> Iterator[tuple[Batch, torch.Tensor]]:
        groups = list(self._groups)
        if self.shuffle:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=gen).tolist()]
        names = [*self._cols.categorical, *self._cols.dense, self._cols.label]
        carry: tuple[torch.Tensor, ...] | None = None
        bs = self.batch_size
        for start in range(0, len(groups), self.shuffle_buffer):
            if start:
                trim()  # the previous buffer's arrays are free: give them back (components/heap.py)
            chunk = groups[start : start + self.shuffle_buffer]
            parts = [_table_tensors(self._file.read_row_group(g, columns=names), self._cols) for g in chunk]
            rows = torch.cat([torch.arange(self._group_start[g], self._group_start[g + 1]) for g in chunk])
            buf = (*(torch.cat([p[k] for p in parts]) for k in range(3)), rows)
            if self.shuffle:
                perm = torch.randperm(len(buf[2]), generator=gen)
                buf = tuple(t.index_select(0, perm) for t in buf)
            if carry is not None:
                buf = tuple(torch.cat([c, t]) for c, t in zip(carry, buf, strict=True))
            n_full = (len(buf[2]) // bs) * bs
            for s in range(0, n_full, bs):
                yield Batch(*(t[s : s + bs] for t in buf[:3])), buf[3][s : s + bs]
            carry = tuple(t[n_full:] for t in buf) if n_full < len(buf[2]) else None
        if carry is not None and not self.drop_last:
            yield Batch(*carry[:3]), carry[3]
