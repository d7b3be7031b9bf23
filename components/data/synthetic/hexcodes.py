"""Spell categorical values as 8 lowercase hex characters, like Criteo's and Avazu's hashed ids.

Value ``r`` of a field is written as ``fmix32(r ^ key)`` in hex, where ``fmix32`` is MurmurHash3's
32-bit finaliser (a bijection on uint32), so distinct values of a field never share a code.
Codes are precomputed per field as uint64 words holding the 8 ASCII bytes, and a column is built
with one gather plus a zero-copy Arrow string array.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# byte value -> its two hex characters as the 2 bytes of a uint16 (first character first in memory)
_BYTE_PAIRS = b"".join(f"{b:02x}".encode() for b in range(256))
_BYTE_HEX = np.frombuffer(_BYTE_PAIRS, dtype=np.uint8).view(np.uint16)


def fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3 finaliser on uint32 values (a bijection, wrapping arithmetic)."""
    h = x.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def hex_words(values: np.ndarray) -> np.ndarray:
    """uint64 words whose 8 bytes are the lowercase hex spelling of each uint32 value."""
    big_endian_bytes = values.astype(">u4").view(np.uint8).reshape(-1, 4)
    chars = np.ascontiguousarray(_BYTE_HEX[big_endian_bytes])
    return chars.view(np.uint64).reshape(-1)


def hex_codes(vocab: int, key: int) -> np.ndarray:
    """Hex words of values ``0..vocab`` of one field (``key`` makes fields differ)."""
    values = np.arange(vocab + 1, dtype=np.uint64).astype(np.uint32) ^ np.uint32(key)
    return hex_words(fmix32(values))


def hex_column(codes: np.ndarray, values: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """Arrow string array of ``codes[values]``; rows where ``valid`` is False are null."""
    n = len(values)
    data = np.ascontiguousarray(codes[values]).view(np.uint8)
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int64)
    bitmap = None
    null_count = 0
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        null_count = int(n - np.count_nonzero(valid))
    return pa.Array.from_buffers(
        pa.large_string(),
        n,
        [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=null_count,
    )
