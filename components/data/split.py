"""Deterministic train / valid / test assignment as Polars expressions.

Two strategies, both streaming-friendly (no row ever has to be collected to decide its split):

- **random**: each row's split is a pure function of ``(seed, row index)``. The row index is hashed
  with splitmix64 written in Polars ``UInt64`` wrapping arithmetic (not ``pl.hash``, whose output is
  not stable across Polars versions), and the top 53 bits are compared with integer cut-offs
  derived from the ratios. The result does not depend on chunking, batch sizes or thread count, and
  a row keeps its split when rows are appended after it.
- **time**: cut-offs are computed from the distribution of the time column alone (a streaming
  ``group_by`` over its distinct values, so memory scales with the number of distinct times, not
  rows): train = the earliest ``ratios[0]`` of rows, test = the latest. Rows sharing a timestamp
  always land in the same split, so a split may be slightly larger than its ratio; rows are never
  reordered.

Split codes: :data:`TRAIN` = 0, :data:`VALID` = 1, :data:`TEST` = 2 (column :data:`SPLIT_COLUMN`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

SPLIT_COLUMN = "__split"
TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_UNIT_BITS = 53  # the hash's top 53 bits form the uniform draw in [0, 2**53)


def splitmix64(x: int) -> int:
    """The splitmix64 output for state ``x`` (pure Python; reference for the Polars version)."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _u64(v: int) -> pl.Expr:
    return pl.lit(v, dtype=pl.UInt64)


def splitmix64_expr(state: pl.Expr) -> pl.Expr:
    """splitmix64 of a ``UInt64`` expression, with wrapping arithmetic (shifts as divisions)."""
    z = state.cast(pl.UInt64) + _u64(_GOLDEN)
    z = (z ^ (z // _u64(1 << 30))) * _u64(_MIX1)
    z = (z ^ (z // _u64(1 << 27))) * _u64(_MIX2)
    return z ^ (z // _u64(1 << 31))


def _cutoffs(ratios: Sequence[float]) -> tuple[int, int]:
    """Integer thresholds on the 53-bit draw for train and train+valid."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    scale = 1 << _UNIT_BITS
    c1 = round(ratios[0] * scale)
    c2 = round((ratios[0] + ratios[1]) * scale)
    return min(c1, scale), min(c2, scale)


def random_split_expr(row_index: pl.Expr, seed: int, ratios: Sequence[float]) -> pl.Expr:
    """Split code (UInt8) of each row from its 0-based ``row_index`` and ``seed``.

    State = splitmix64(seed) + row_index · golden (mod 2**64), hashed once more with splitmix64;
    the top 53 bits ``u`` give train when ``u < ratios[0]·2**53``, valid when below
    ``(ratios[0]+ratios[1])·2**53``, test otherwise.
    """
    c1, c2 = _cutoffs(ratios)
    key = splitmix64(seed & _MASK64)
    state = _u64(key) + row_index.cast(pl.UInt64) * _u64(_GOLDEN)
    u = splitmix64_expr(state) // _u64(1 << (64 - _UNIT_BITS))
    return (
        pl.when(u < _u64(c1))
        .then(pl.lit(TRAIN, dtype=pl.UInt8))
        .when(u < _u64(c2))
        .then(pl.lit(VALID, dtype=pl.UInt8))
        .otherwise(pl.lit(TEST, dtype=pl.UInt8))
        .alias(SPLIT_COLUMN)
    )


@dataclass(frozen=True)
class TimeCutoffs:
    """Time split boundaries: train = t <= train_end, valid = train_end < t <= valid_end, test = rest."""

    train_end: int
    valid_end: int
    rows: int


def time_cutoffs(lazy: pl.LazyFrame, time_column: str, ratios: Sequence[float]) -> TimeCutoffs:
    """Cut-offs at the ``ratios`` quantiles of ``time_column`` (ties never straddle a boundary).

    ``train_end`` is the smallest time whose cumulative row count reaches ``ratios[0]·N``;
    ``valid_end`` likewise for ``ratios[0]+ratios[1]``. Computed from a streaming count per distinct
    time. Raises ``ValueError`` if the column has no rows or holds nulls (the caller names the line).
    """
    _cutoffs(ratios)
    counts = lazy.group_by(time_column).agg(pl.len().alias("n")).collect(engine="streaming")
    return time_cutoffs_from_counts(counts, time_column, ratios)


def time_cutoffs_from_counts(counts: pl.DataFrame, time_column: str, ratios: Sequence[float]) -> TimeCutoffs:
    """:func:`time_cutoffs` from the rows per distinct time (columns ``time_column`` and ``n``, any
    order; a time may appear more than once, e.g. one count per partition: they are summed)."""
    _cutoffs(ratios)
    counts = counts.group_by(time_column).agg(pl.col("n").cast(pl.Int64).sum()).sort(time_column)
    if counts.height == 0:
        raise ValueError("time split of an empty table")
    if counts[time_column].null_count():
        raise ValueError(f"time column {time_column!r} holds nulls")
    cum = counts["n"].cum_sum()
    total = int(cum[-1])
    times = counts[time_column]

    def first_reaching(fraction: float) -> int:
        target = fraction * total
        # smallest time whose cumulative count reaches the target (tolerance for float ratios)
        idx = int((cum < target - 1e-9).sum())
        return int(times[min(idx, len(times) - 1)])

    train_end = first_reaching(ratios[0])
    valid_end = first_reaching(ratios[0] + ratios[1]) if ratios[2] > 0 else int(times[-1])
    if ratios[1] == 0:
        valid_end = train_end
    return TimeCutoffs(train_end=train_end, valid_end=max(valid_end, train_end), rows=total)


def time_split_expr(time: pl.Expr, cutoffs: TimeCutoffs) -> pl.Expr:
    """Split code (UInt8) of each row from its time and precomputed :class:`TimeCutoffs`."""
    return (
        pl.when(time <= cutoffs.train_end)
        .then(pl.lit(TRAIN, dtype=pl.UInt8))
        .when(time <= cutoffs.valid_end)
        .then(pl.lit(VALID, dtype=pl.UInt8))
        .otherwise(pl.lit(TEST, dtype=pl.UInt8))
        .alias(SPLIT_COLUMN)
    )
