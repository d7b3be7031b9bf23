"""Fixed-size row blocks and the seeded random stream of each.

Rows are generated in blocks of :data:`BLOCK_ROWS` rows; block ``b`` draws from its own
``Generator(PCG64)`` seeded by ``SeedSequence(seed, spawn_key=(format_key, ROWS_STREAM, b))``.
Write chunks are whole groups of blocks, so the bytes written never depend on the chunk size.
The hidden model and its calibration sample draw from their own streams.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

BLOCK_ROWS = 32_768

WORLD_STREAM = 0
PILOT_STREAM = 1
ROWS_STREAM = 2

FORMAT_KEYS = {"criteo": 1, "avazu": 2, "movielens": 3}


def stream_rng(seed: int, fmt: str, stream: int, index: int = 0) -> np.random.Generator:
    """The PCG64 generator of one stream (world, pilot or row block ``index``) of a format."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    ss = np.random.SeedSequence(seed, spawn_key=(FORMAT_KEYS[fmt], stream, index))
    return np.random.Generator(np.random.PCG64(ss))


def chunk_plan(rows: int, chunk_rows: int) -> Iterator[list[tuple[int, int, int]]]:
    """Yield write chunks as lists of ``(block index, first row, row count)``.

    A chunk holds ``max(1, chunk_rows // BLOCK_ROWS)`` blocks; the last block may be short.
    """
    if rows <= 0:
        raise ValueError(f"rows must be > 0, got {rows}")
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
    per_chunk = max(1, chunk_rows // BLOCK_ROWS)
    n_blocks = -(-rows // BLOCK_ROWS)
    for first in range(0, n_blocks, per_chunk):
        yield [
            (b, b * BLOCK_ROWS, min(BLOCK_ROWS, rows - b * BLOCK_ROWS))
            for b in range(first, min(first + per_chunk, n_blocks))
        ]
