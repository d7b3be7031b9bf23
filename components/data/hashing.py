"""Hashed encoding of very-high-cardinality fields (``preprocess.hash_buckets``).

A categorical field whose train vocabulary (after ``min_count``) holds more than
``hash_buckets.min_vocab`` values gets no vocabulary: every present raw value is encoded as
``FIRST_VALUE_ID + h(value) mod buckets`` and a null as ``MISSING_ID``; ``OOV_ID`` (0) is never
produced (there is no "unseen" value under hashing: a value new at serving time shares a bucket).
The field's embedding table then has ``buckets + 2`` rows, whatever the cardinality, and no
``vocab/<field>.parquet`` is written (feature_map.json's field ``stats.hash_buckets`` tells the
encoder, :mod:`components.serve.encode`, to hash it the same way).

``h`` is a documented, version-independent 64-bit function (never ``pl.hash``, whose output may
change with the Polars version), chosen by the staged column's type and recorded in the field's
``stats.hash``:

- ``splitmix64`` for integer columns (Criteo's 8-hex-digit values are staged as their UInt32, so
  ``"05db9164"`` and ``"05DB9164"`` share a bucket, as they share a vocabulary id without hashing):
  the value as a two's-complement UInt64 through splitmix64, in Polars wrapping ``UInt64``
  arithmetic (:func:`components.data.split.splitmix64_expr`; the pure-Python reference
  :func:`components.data.split.splitmix64` gives the same numbers);
- ``blake2b64`` for every other column: ``hashlib.blake2b(utf8 bytes, digest_size=8)`` read as a
  little-endian unsigned integer, computed once per distinct value of a batch (vectorised over the
  batch by a join), so cost follows the batch's distinct values, not its rows.

Both are pure functions of the value: the same raw row gets the same ids in every run, process
and machine, in preprocessing and in ``ctrflow predict``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from components.data.feature_map import FIRST_VALUE_ID, MISSING_ID
from components.data.split import splitmix64_expr

HashKind = Literal["splitmix64", "blake2b64"]


def hash_kind(dtype: pl.DataType) -> HashKind:
    """The hash a staged column of ``dtype`` gets: splitmix64 for integers, blake2b64 otherwise."""
    return "splitmix64" if dtype.is_integer() else "blake2b64"


def blake2b64(value: str) -> int:
    """blake2b (8-byte digest) of the UTF-8 bytes of ``value``, as a little-endian unsigned int."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")


def _as_u64(values: pl.Series) -> pl.Series:
    """An integer series as UInt64 (negative values two's-complement wrapped)."""
    if values.dtype.is_unsigned_integer():
        return values.cast(pl.UInt64)
    return values.cast(pl.Int64).reinterpret(signed=False)


def hash_series(values: pl.Series, kind: HashKind) -> pl.Series:
    """UInt64 hash of each value of ``values`` (nulls stay null)."""
    if kind == "splitmix64":
        return pl.select(splitmix64_expr(pl.lit(_as_u64(values)))).to_series().alias(values.name)
    strings = values.cast(pl.String)
    uniq = strings.drop_nulls().unique(maintain_order=True)
    digests = pl.Series("h", np.fromiter((blake2b64(v) for v in uniq), dtype=np.uint64, count=len(uniq)))
    table = pl.DataFrame({"v": uniq, "h": digests})
    return (
        strings.to_frame("v").join(table, on="v", how="left", maintain_order="left")
        .get_column("h").alias(values.name)
    )


@dataclass(frozen=True)
class HashedField:
    """The encoder of one hashed field: ``buckets`` buckets through hash ``kind``.

    Duck-types :class:`~components.data.vocab.Vocabulary` where encoding needs it (``field``,
    ``size``, ``encode_expr``, ``encode_series``, ``save``).
    """

    field: str
    buckets: int
    kind: HashKind
    stats: dict | None = None

    @property
    def size(self) -> int:
        """Ids of the field: OOV (unused), missing, and the buckets."""
        return FIRST_VALUE_ID + self.buckets

    def encode_series(self, values: pl.Series) -> pl.Series:
        """Int32 ids: null → ``MISSING_ID``, else ``FIRST_VALUE_ID + hash mod buckets``."""
        h = hash_series(values, self.kind)
        ids = (h % self.buckets).cast(pl.Int32) + FIRST_VALUE_ID
        return ids.fill_null(MISSING_ID).cast(pl.Int32).alias(self.field)

    def encode_expr(self) -> pl.Expr:
        """:meth:`encode_series` of column ``field`` as an expression (a batch UDF)."""
        return pl.col(self.field).map_batches(self.encode_series, return_dtype=pl.Int32).alias(self.field)

    def save(self, directory) -> None:
        """Hashed fields have no vocabulary file (the feature map records the buckets)."""
        return None
