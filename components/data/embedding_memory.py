"""Embedding-table memory: what the teacher's tables hold, and the ``min_count`` a budget allows.

The teacher (every model of the zoo) holds one fp32 row of ``embedding_dim`` floats per id of every
categorical field (:class:`components.models.embedding.FeatureEmbedding`), so a field of
``vocab_size`` ids costs ``vocab_size × embedding_dim × 4`` bytes. ``MB`` here is 2**20 bytes.
Models with a first-order term (LR, FM, DeepFM, ...) add one more float per id, not counted.

- :func:`table_memory`: per-field ids and MB and the total for a feature map (the preprocess
  stage summary and the report print it; "the memory of the default teacher's tables");
- :func:`budget_min_count` (``preprocess.embedding_budget_mb``): the smallest global frequency
  threshold whose vocabularies fit a budget.

The budget counts the **weights only** (what a served model holds). Training with Adam holds the
weights, a dense gradient of the same size (``nn.Embedding`` with ``sparse=False``) and the two
moments: :data:`TRAINING_FACTOR` × the table memory, reported as ``training_mb``.

Why one global threshold rather than one per field: every kept id costs the same bytes whatever
its field, so for a given number of ids, keeping the most frequent values across all fields keeps
the most train occurrences on their own embedding — a single count threshold over all fields does
exactly that (up to ties at the threshold), and it stays one interpretable number. A field's own
floor (``min_count`` or ``numeric_min_count``) still applies: its threshold is
``max(floor, chosen)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from components.data.feature_map import FIRST_VALUE_ID, FeatureMap

MB = 1 << 20
FP32_BYTES = 4
TRAINING_FACTOR = 4  # weights + dense gradient + Adam's two moments


def table_mb(ids: int, embedding_dim: int) -> float:
    """MB of ``ids`` fp32 rows of ``embedding_dim`` floats (exact in binary: a multiple of 2**-20)."""
    return ids * embedding_dim * FP32_BYTES / MB


@dataclass(frozen=True)
class TableMemory:
    """Embedding-table memory of one feature map at one ``embedding_dim``."""

    embedding_dim: int
    fields: tuple[tuple[str, int, float], ...]  # (field, ids, MB), feature-map order
    total_ids: int
    total_mb: float

    @property
    def training_mb(self) -> float:
        """Weights + gradient + Adam moments while training (:data:`TRAINING_FACTOR` ×)."""
        return self.total_mb * TRAINING_FACTOR

    def largest(self, n: int = 5) -> list[tuple[str, int, float]]:
        """The ``n`` largest fields by ids (ties by name)."""
        return sorted(self.fields, key=lambda f: (-f[1], f[0]))[:n]

    def summary(self) -> str:
        """One line: total MB at dim d and the largest fields."""
        top = ", ".join(f"{name} {mb:.2f}" for name, _, mb in self.largest(3))
        return (f"embedding tables {self.total_mb:.2f} MB at dim {self.embedding_dim} "
                f"({self.training_mb:.1f} MB training with Adam; largest: {top} MB)")

    def as_dict(self) -> dict:
        return {"embedding_dim": self.embedding_dim, "total_ids": self.total_ids,
                "table_mb": round(self.total_mb, 6), "training_mb": round(self.training_mb, 6),
                "fields": {name: {"ids": ids, "mb": round(mb, 6)} for name, ids, mb in self.fields}}


def table_memory(fmap: FeatureMap, embedding_dim: int) -> TableMemory:
    """Per-field ids and MB of ``fmap``'s categorical fields at ``embedding_dim`` (module docstring)."""
    fields = tuple((f.name, f.vocab_size, table_mb(f.vocab_size, embedding_dim)) for f in fmap.categorical_fields)
    total = sum(f[1] for f in fields)
    return TableMemory(embedding_dim, fields, total, table_mb(total, embedding_dim))


@dataclass(frozen=True)
class BudgetChoice:
    """The threshold :func:`budget_min_count` chose and what the tables then hold."""

    min_count: int
    ids: int
    table_mb: float


def budget_min_count(
    value_counts: Mapping[str, Sequence[int] | np.ndarray],
    floors: Mapping[str, int],
    *,
    budget_mb: float,
    embedding_dim: int,
    start: int = 1,
    fixed_ids: int = 0,
) -> BudgetChoice:
    """The smallest threshold ``t >= start`` whose tables fit ``budget_mb``.

    ``value_counts``: per vocabulary field, the train count of each of its values (values under the
    field's floor may be included; they are never kept). Field ``f`` keeps the values counted at
    least ``max(floors[f], t)`` times, plus its OOV and missing ids; ``fixed_ids`` (hashed fields'
    ids) is added as is. Raises ``ValueError`` naming ``preprocess.embedding_budget_mb`` when even
    dropping every value does not fit.
    """
    hists = {}
    for name, counts in value_counts.items():
        c = np.asarray(counts, dtype=np.int64)
        c = c[c >= floors.get(name, 1)]
        uniq, n = np.unique(c, return_counts=True)
        # kept(t) = values with count >= t = suffix sums of n over uniq >= t
        hists[name] = (uniq, np.concatenate([np.cumsum(n[::-1])[::-1], [0]]))
    base = fixed_ids + FIRST_VALUE_ID * len(hists)
    budget_bytes = budget_mb * MB
    per_id = embedding_dim * FP32_BYTES

    def ids_at(t: int) -> int:
        return base + sum(int(suffix[np.searchsorted(uniq, t, side="left")]) for uniq, suffix in hists.values())

    hi = max([start] + [int(u[-1]) + 1 for u, _ in hists.values() if len(u)])
    if ids_at(hi) * per_id > budget_bytes:
        raise ValueError(
            f"preprocess.embedding_budget_mb: {budget_mb} MB cannot hold even the fixed ids: {ids_at(hi):,} ids "
            f"(OOV + missing of {len(hists)} vocabulary fields + {fixed_ids:,} hashed ids) × dim {embedding_dim} "
            f"× 4 bytes = {table_mb(ids_at(hi), embedding_dim):.3f} MB")
    lo = start
    while lo < hi:  # ids_at is non-increasing in t: find the first t that fits
        mid = (lo + hi) // 2
        if ids_at(mid) * per_id <= budget_bytes:
            hi = mid
        else:
            lo = mid + 1
    ids = ids_at(lo)
    return BudgetChoice(lo, ids, table_mb(ids, embedding_dim))
