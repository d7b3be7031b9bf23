"""Zipf draws over a finite vocabulary, by inverse CDF.

Value ``r`` (1-based rank, 1 = most frequent) has probability proportional to ``r ** -exponent``.
With ``head`` set, rank 1 gets exactly that share and ranks 2.. share the rest by the Zipf law:
the shape of fields with one dominant "default" value and a long tail (Avazu ``device_id``).

The inverse CDF uses a guide table (indexed search): ``guide[j]`` is the first rank whose CDF
exceeds ``j / G``, so a uniform starts at its cell's rank and steps forward the few places left.
The result equals ``searchsorted(cdf, u, side="right")`` exactly, at a fraction of the cost.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAX_GUIDE_CELLS = 2**20


class ZipfTable:
    """The cumulative distribution of a (head-weighted) Zipf law over ranks ``1..vocab``."""

    def __init__(self, vocab: int, exponent: float, head: float | None = None) -> None:
        if vocab < 1:
            raise ValueError(f"vocab must be >= 1, got {vocab}")
        if head is not None and not (0.0 < head < 1.0 and vocab >= 2):
            raise ValueError(f"head share must be in (0, 1) with vocab >= 2, got {head}, {vocab}")
        self.vocab = vocab
        self.exponent = exponent
        weights = np.arange(1, vocab + 1, dtype=np.float64) ** -exponent
        if head is not None:
            weights[0] = 0.0
            weights *= (1.0 - head) / weights.sum()
            weights[0] = head
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        self.cdf = cdf
        cells = int(min(max(256.0, np.ceil(2.0 / max(self.pmf().min(), 1e-300))), MAX_GUIDE_CELLS))
        self.cells = cells
        self.guide = np.searchsorted(cdf, np.arange(cells) / cells, side="right").astype(np.int32)

    def pmf(self) -> np.ndarray:
        """Probability of each rank (index 0 is rank 1)."""
        return np.diff(self.cdf, prepend=0.0)

    def ranks(self, u: np.ndarray) -> np.ndarray:
        """Map uniforms in [0, 1) to ranks in ``1..vocab`` (int64)."""
        cell = np.minimum((u * self.cells).astype(np.int64), self.cells - 1)
        index = self.guide[cell].astype(np.int64)
        behind = np.flatnonzero(self.cdf[index] <= u)
        while behind.size:
            index[behind] += 1
            behind = behind[self.cdf[index[behind]] <= u[behind]]
        return index + 1


@lru_cache(maxsize=128)
def zipf_table(vocab: int, exponent: float, head: float | None = None) -> ZipfTable:
    """A shared (cached) :class:`ZipfTable`: tables depend only on their shape, not the seed."""
    return ZipfTable(vocab, exponent, head)
