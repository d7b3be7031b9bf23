"""What one synthetic format provides, and helpers the formats share.

A format draws blocks of rows (:class:`Block`): the logit-field indices the hidden model scores,
plus a format-specific payload from which, once labels are drawn, it builds the frame written to
the log. Everything a format computes per row is elementwise, so concatenating block payloads
before :meth:`SyntheticFormat.frame` gives the same bytes as building each block alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from components.data.synthetic.planted import FirstOrder, Interaction

# Integer-count log buckets: 0 = missing, 1 = negative, 2 + floor(log2(v + 1)) for v >= 0.
INT_BUCKETS = 2 + 64


@dataclass
class Block:
    """One block of drawn rows: logit inputs, writer payload and the label uniforms."""

    idx: dict[str, np.ndarray]
    payload: dict[str, np.ndarray]
    u_label: np.ndarray


class SyntheticFormat(Protocol):
    """A raw log format the generator can write (criteo, avazu, movielens)."""

    name: str
    target_ctr: float
    separator: str
    header: bool
    sizes: dict[str, int]
    first_order: dict[str, FirstOrder]
    interactions: tuple[Interaction, ...]

    def sample(self, rng: np.random.Generator, positions: np.ndarray) -> Block:
        """Draw one row per entry of ``positions`` (0-based row numbers in the log, used only
        by time columns)."""
        ...

    def frame(self, payload: Mapping[str, np.ndarray], label: np.ndarray) -> pl.DataFrame:
        """The log's columns for these rows, in file order."""
        ...

    def side_frames(self) -> dict[str, pl.DataFrame]:
        """Extra '|'-separated tables written beside the log (MovieLens u.user/u.item)."""
        ...


def concat_payloads(blocks: list[Block]) -> dict[str, np.ndarray]:
    """Join the writer payloads of blocks row-wise (same keys in each)."""
    if len(blocks) == 1:
        return blocks[0].payload
    return {k: np.concatenate([b.payload[k] for b in blocks]) for k in blocks[0].payload}


def draw_null_masks(
    rng: np.random.Generator, n: int, groups: tuple[tuple[float, tuple[str, ...]], ...]
) -> dict[str, np.ndarray]:
    """One Bernoulli(rate) draw per group and row; every field of a group is missing together."""
    masks: dict[str, np.ndarray] = {}
    for rate, fields in groups:
        missing = rng.random(n) < rate
        for field in fields:
            masks[field] = missing
    return masks


def count_bucket(values: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
    """Log bucket of integer counts: 0 missing, 1 negative, ``2 + floor(log2(v + 1))`` else."""
    _, exponent = np.frexp((np.maximum(values, 0) + 1).astype(np.float64))
    bucket = np.where(values < 0, 1, 1 + exponent).astype(np.int64)
    if missing is not None:
        bucket[missing] = 0
    return bucket


INT32_MAX = 2**31 - 1


def lognormal_counts(z: np.ndarray) -> np.ndarray:
    """Non-negative integer counts ``floor(exp(z) - 1)`` for ``z >= 0`` (0 below), int64, at most
    INT32_MAX: Criteo's integer columns are 32-bit, and the validation gate rejects larger values
    (the far tail of I5, about one row in 6M, went past it in a Kaggle-size log)."""
    counts = np.floor(np.expm1(np.clip(z, 0.0, 25.0)))
    return np.minimum(counts, INT32_MAX).astype(np.int64)
