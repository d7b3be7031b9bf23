"""BatchLoader: coverage per epoch, seeded shuffling, sharding, dtypes/shapes, both modes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.data.feature_map import FeatureMap, FieldInfo
from components.data.loader import Batch, BatchLoader, spread_row_groups

N = 1000
ROW_GROUP = 64


@pytest.fixture
def split(tmp_path):
    """An encoded split whose c0 column is the row number, so every row can be traced."""
    rows = np.arange(N)
    table = pa.table({
        "c0": pa.array(rows.astype(np.int32)),
        "c1": pa.array((rows % 7 + 2).astype(np.int32)),
        "d0": pa.array((rows * 0.5).astype(np.float32)),
        "label": pa.array((rows % 2).astype(np.int8)),
    })
    path = tmp_path / "train.parquet"
    pq.write_table(table, path, row_group_size=ROW_GROUP)
    fmap = FeatureMap(
        format="toy", label="label", splits={}, source_hash="", params={},
        fields=(
            FieldInfo("c0", "categorical", "categorical", vocab_size=N),
            FieldInfo("c1", "categorical", "categorical", vocab_size=9),
            FieldInfo("d0", "dense", "numeric", oov_id=None, missing_id=None),
        ),
    )
    return path, fmap


def rows_of(loader) -> list[list[int]]:
    return [b.categorical[:, 0].tolist() for b in loader]


@pytest.mark.parametrize("in_memory", [True, False])
def test_every_row_once_per_epoch_with_aligned_columns(split, in_memory):
    path, fmap = split
    loader = BatchLoader(path, fmap, 100, in_memory=in_memory, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 10
    b = batches[0]
    assert isinstance(b, Batch)
    assert b.categorical.dtype == torch.int32 and b.categorical.shape == (100, 2)
    assert b.dense.dtype == torch.float32 and b.dense.shape == (100, 1)
    assert b.label.dtype == torch.float32 and b.label.shape == (100,)
    cat = torch.cat([x.categorical for x in batches])
    dense = torch.cat([x.dense for x in batches])
    label = torch.cat([x.label for x in batches])
    assert sorted(cat[:, 0].tolist()) == list(range(N))
    assert cat[:, 0].tolist() != list(range(N))  # shuffled
    # the columns of a row stay together through the shuffle
    assert torch.equal(cat[:, 1], cat[:, 0] % 7 + 2)
    assert torch.equal(dense[:, 0], cat[:, 0].float() * 0.5)
    assert torch.equal(label, (cat[:, 0] % 2).float())


@pytest.mark.parametrize("in_memory", [True, False])
def test_epochs_differ_and_are_reproducible(split, in_memory):
    path, fmap = split
    a = BatchLoader(path, fmap, 128, in_memory=in_memory, seed=7)
    e0, e1 = rows_of(a), rows_of(a)
    assert e0 != e1 and a.epoch == 2
    b = BatchLoader(path, fmap, 128, in_memory=in_memory, seed=7)
    assert rows_of(b) == e0 and rows_of(b) == e1
    a.set_epoch(1)
    assert rows_of(a) == e1
    c = BatchLoader(path, fmap, 128, in_memory=in_memory, seed=8)
    assert rows_of(c) != e0


@pytest.mark.parametrize("in_memory", [True, False])
def test_batch_sizes_and_drop_last(split, in_memory):
    path, fmap = split
    loader = BatchLoader(path, fmap, 96, in_memory=in_memory)
    sizes = [len(b.label) for b in loader]
    assert sizes == [96] * 10 + [40] and len(loader) == 11
    dropped = BatchLoader(path, fmap, 96, in_memory=in_memory, drop_last=True)
    sizes = [len(b.label) for b in dropped]
    assert sizes == [96] * 10 and len(dropped) == 10


@pytest.mark.parametrize("in_memory", [True, False])
def test_no_shuffle_keeps_file_order(split, in_memory):
    path, fmap = split
    loader = BatchLoader(path, fmap, 300, shuffle=False, in_memory=in_memory)
    assert sum(rows_of(loader), []) == list(range(N))


@pytest.mark.parametrize("in_memory", [True, False])
def test_shards_are_disjoint_and_cover_all_rows(split, in_memory):
    path, fmap = split
    world = 3
    seen = [set(sum(rows_of(BatchLoader(path, fmap, 50, in_memory=in_memory, shard=(r, world))), []))
            for r in range(world)]
    assert sum(len(s) for s in seen) == N
    assert set().union(*seen) == set(range(N))
    if in_memory:
        assert seen[1] == set(range(1, N, 3))
    else:  # whole row groups: group g goes to rank g % 3
        assert seen[0] >= set(range(0, ROW_GROUP)) and seen[1] >= set(range(ROW_GROUP, 2 * ROW_GROUP))


def test_streaming_shuffles_within_buffers_only(split):
    path, fmap = split
    loader = BatchLoader(path, fmap, 1000, in_memory=False, shuffle_buffer=1, seed=1)
    (batch,) = list(loader)
    order = batch.categorical[:, 0]
    # with a one-group buffer, the output is the 16 row groups one after the other (each one
    # shuffled inside), in a shuffled group order
    groups = (order // ROW_GROUP).tolist()
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert sorted(runs) == list(range(16))
    assert runs != list(range(16))
    assert order.tolist() != sorted(order.tolist())


def test_batch_to_and_argument_errors(split):
    path, fmap = split
    batch = next(iter(BatchLoader(path, fmap, 8)))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.categorical, batch.categorical)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(path, fmap, 8, shard=(3, 3))
    bad = FeatureMap(format="toy", label="label", splits={}, source_hash="", params={},
                     fields=(FieldInfo("zz", "categorical", "categorical", vocab_size=5),))
    with pytest.raises(ValueError, match="not in the file"):
        BatchLoader(path, bad, 8)


def test_loads_preprocess_output(tmp_path):
    import polars as pl

    from components.config import PreprocessParams
    from components.data.formats.base import LINE_COLUMN, FieldSpec, SourceTable
    from components.data.preprocess import preprocess

    raw = tmp_path / "raw.parquet"
    pl.DataFrame({"label": [i % 2 for i in range(200)], "C": [f"v{i % 5}" for i in range(200)],
                  "I": list(range(200))}).write_parquet(raw)
    lazy = pl.scan_parquet(raw).with_row_index(LINE_COLUMN, offset=1).with_columns(pl.col("label").cast(pl.Int8))
    table = SourceTable("toy", (raw,), lazy, (FieldSpec("C", "categorical"), FieldSpec("I", "numeric")))
    fmap = preprocess(table, PreprocessParams(min_count=1, numeric="dense"), tmp_path / "out")
    loader = BatchLoader(tmp_path / "out" / "train.parquet", fmap, 32)
    batches = list(loader)
    assert sum(len(b.label) for b in batches) == fmap.splits["train"]["rows"]
    assert batches[0].categorical.shape[1] == 1 and batches[0].dense.shape[1] == 1
    assert set(torch.cat([b.categorical for b in batches]).flatten().tolist()) <= {2, 3, 4, 5, 6}


def test_spread_row_groups_picks_evenly_spaced_groups_that_fit():
    sizes = [64] * 15 + [40]  # the fixture's layout: 15 full groups and a short last one
    assert spread_row_groups(sizes, 10_000) == list(range(16))  # the file fits: every group
    assert spread_row_groups(sizes, 256) == [0, 4, 8, 12]  # 4 groups of 64 = 256 rows, one per quarter
    assert spread_row_groups(sizes, 300) == [0, 4, 8, 12]  # a 5th full group would pass 300
    assert spread_row_groups(sizes, 10) == [0]  # at least one group
    assert spread_row_groups([], 5) == []
    with pytest.raises(ValueError, match="max_rows must be positive"):
        spread_row_groups(sizes, 0)


@pytest.mark.parametrize("in_memory", [True, False])
def test_max_rows_visits_the_same_spread_groups_with_file_row_numbers(split, in_memory):
    path, fmap = split
    loader = BatchLoader(path, fmap, 50, in_memory=in_memory, seed=5, max_rows=256)
    want = {r for g in (0, 4, 8, 12) for r in range(g * ROW_GROUP, (g + 1) * ROW_GROUP)}
    assert loader.num_rows == 256 and len(loader) == 6
    for _ in range(2):  # every epoch: the same rows, each once, reshuffled
        pairs = list(loader.iter_with_rows())
        ids = torch.cat([b.categorical[:, 0] for b, _ in pairs])
        file_rows = torch.cat([r for _, r in pairs])
        assert sorted(ids.tolist()) == sorted(want)
        assert torch.equal(file_rows, ids.long())  # c0 is the row number: side data stays aligned
        label = torch.cat([b.label for b, _ in pairs])
        assert torch.equal(label, (ids % 2).float())
    # sharded under the cap: disjoint, together the capped rows
    world = 3
    seen = [set(sum(rows_of(BatchLoader(path, fmap, 50, in_memory=in_memory, shard=(r, world), max_rows=256)), []))
            for r in range(world)]
    assert sum(len(s) for s in seen) == 256 and set().union(*seen) == want


def test_streaming_gives_each_freed_buffer_back_to_the_os(split, monkeypatch):
    """components/heap.py: between two shuffle buffers the loader trims the heap (glibc
    malloc_trim), which keeps a long streaming pass's resident memory flat."""
    import platform

    import components.data.loader as loader_module
    from components.heap import trim

    if platform.libc_ver()[0] == "glibc":
        assert trim() is True  # glibc: malloc_trim exists and runs (elsewhere trim() is a no-op)
    calls = []
    monkeypatch.setattr(loader_module, "trim", lambda: calls.append(1) or True)
    path, fmap = split
    loader = BatchLoader(path, fmap, 50, in_memory=False, shuffle_buffer=3)
    rows = sum(rows_of(loader), [])
    assert sorted(rows) == list(range(N))
    assert len(calls) == -(-16 // 3) - 1  # 16 row groups in buffers of 3: a trim before each buffer but the first
    calls.clear()
    list(BatchLoader(path, fmap, 50, in_memory=True))
    assert calls == []  # in memory: nothing is re-read, nothing to trim
