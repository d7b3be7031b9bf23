"""The embedding-table remedies of preprocessing, applied to the fitted train vocabularies.

Both are off by default (``preprocess.hash_buckets`` and ``preprocess.embedding_budget_mb`` null),
and then the vocabularies and every output stay exactly as without this module.

1. ``hash_buckets: {min_vocab: N, buckets: M}``: a raw categorical field whose vocabulary (after
   ``min_count``) holds more than N values is replaced by a :class:`~components.data.hashing.HashedField`
   of M buckets (M + 2 ids). Bucketised numeric fields are never hashed.
2. ``embedding_budget_mb: B``: the remaining vocabularies are cut at the smallest global count
   threshold ``t`` whose tables (hashed fields' included) fit B MB of fp32 weights at
   ``budget_embedding_dim`` (:func:`~components.data.embedding_memory.budget_min_count`). A field
   keeps the values counted at least ``max(its floor, t)`` times (floor: ``min_count``, or
   ``numeric_min_count`` for a bucketised numeric field), so a ``t`` at or below every floor (the
   recorded ``min_count`` is then the lowest floor) changes nothing: tables that already fit stay as
   they are. Ids stay a prefix of the unbudgeted ones (the order is by count): nothing is refitted.

Hashing is decided first (on the ``min_count`` vocabularies), so the budget sees the hashed fields as
fixed. What was chosen goes to feature_map.json's ``embedding`` record (absent when both are off).
"""

from __future__ import annotations

import polars as pl

from components.config import PreprocessParams
from components.data.embedding_memory import TRAINING_FACTOR, budget_min_count, table_mb
from components.data.hashing import HashedField, hash_kind
from components.data.vocab import Vocabulary


def apply_remedies(
    vocabs: dict[str, Vocabulary], categorical: set[str], params: PreprocessParams, staged: pl.Schema
) -> tuple[dict[str, Vocabulary | HashedField], dict | None]:
    """``vocabs`` after hashing and the budget (module docstring) and the feature map's ``embedding``
    record (None when both are off). ``categorical``: the raw categorical fields (the only ones
    hashing may take); ``staged``: the staged file's schema (the hash follows a field's staged type)."""
    hb, budget = params.hash_buckets, params.embedding_budget_mb
    if hb is None and budget is None:
        return vocabs, None
    out: dict[str, Vocabulary | HashedField] = dict(vocabs)
    record: dict = {}
    if hb is not None:
        raw_categorical = set(categorical)
        hashed = [n for n, v in vocabs.items() if n in raw_categorical and v.stats["kept"] > hb.min_vocab]
        for n in hashed:
            v = vocabs[n]
            kind = hash_kind(staged[n])
            stats = {"hash_buckets": hb.buckets, "hash": kind, "kept_before_hashing": v.stats["kept"],
                     "distinct_train_values": v.stats["distinct_train_values"],
                     "train_missing_rows": v.stats["train_missing_rows"], "min_count": v.min_count}
            out[n] = HashedField(n, hb.buckets, kind, stats)
        record["hash_buckets"] = {"min_vocab": hb.min_vocab, "buckets": hb.buckets, "fields": hashed}
    if budget is not None:
        dim = params.budget_embedding_dim
        kept = {n: v for n, v in out.items() if isinstance(v, Vocabulary)}
        fixed = sum(v.size for v in out.values() if isinstance(v, HashedField))
        before = sum(v.size for v in out.values())
        choice = budget_min_count(
            {n: v.table["count"].to_numpy() for n, v in kept.items()},
            {n: v.min_count for n, v in kept.items()},
            budget_mb=budget, embedding_dim=dim, fixed_ids=fixed)
        for n, v in kept.items():
            out[n] = v.with_min_count(max(v.min_count, choice.min_count))
        record["budget"] = {
            "budget_mb": budget, "embedding_dim": dim, "min_count": choice.min_count,
            "ids_before": before, "table_mb_before": table_mb(before, dim),
            "ids": choice.ids, "table_mb": choice.table_mb,
            "training_mb": choice.table_mb * TRAINING_FACTOR}
    return out, record
