"""feature_map.json: the one contract between preprocessing and the models.

Written by :mod:`components.data.preprocess`, read by the batch loader and by every model's
embedding layer. Plain JSON (no pickles). Id conventions for categorical fields (also bucketised
numeric fields):

- ``oov_id`` = 0: values unseen in train or seen fewer than ``min_count`` times;
- ``missing_id`` = 1: null / empty in the raw log;
- 2 … vocab_size-1: kept values, ordered by train frequency (descending), ties by value.

Dense numeric fields (``type == "dense"``) are float32 columns; they have no vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

OOV_ID = 0
MISSING_ID = 1
FIRST_VALUE_ID = 2

FEATURE_MAP_VERSION = 1


@dataclass(frozen=True)
class FieldInfo:
    """One model input field: a column of the encoded Parquet splits."""

    name: str
    type: Literal["categorical", "dense"]
    source_kind: Literal["numeric", "categorical"]  # what the raw column was
    vocab_size: int = 0  # categorical: number of ids incl. OOV and missing; dense: 0
    oov_id: int | None = OOV_ID
    missing_id: int | None = MISSING_ID
    # categorical: train rows per kept-value count summary; dense: mean/std used to standardise
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureMap:
    format: str
    label: str
    fields: tuple[FieldInfo, ...]
    splits: dict  # {"train": {"path": "train.parquet", "rows": n, "positives": k}, ...}
    source_hash: str  # sha256 over the raw input bytes and the preprocessing params
    params: dict  # the preprocess params used (after preset expansion)
    version: int = FEATURE_MAP_VERSION
    # partitioned input only (absent from the JSON otherwise): the partitions the run read, in order,
    # each {"name", "sha256", "rows", "role": train|valid|test|valid+test, "splits": {split: rows}},
    # and data.window ({"last": N} / {"from", "to"}; None = all partitions)
    partitions: list | None = None
    window: dict | None = None
    # the embedding remedies (components/data/remedies.py), absent from the JSON when both are off:
    # {"hash_buckets": {"min_vocab", "buckets", "fields"}, "budget": {"budget_mb", "embedding_dim",
    # "min_count" (the chosen global threshold), "ids", "table_mb", "training_mb", "ids_before", ...}}.
    # A hashed field's stats hold "hash_buckets" and "hash" (components/data/hashing.py)
    embedding: dict | None = None

    @property
    def categorical_fields(self) -> list[FieldInfo]:
        return [f for f in self.fields if f.type == "categorical"]

    @property
    def dense_fields(self) -> list[FieldInfo]:
        return [f for f in self.fields if f.type == "dense"]

    @property
    def dense_copies(self) -> list[tuple[str, str]]:
        """``(name, source)`` of every dense copy of a numeric field (``preprocess.numeric_also_dense``)."""
        return [(f.name, f.stats["source"]) for f in self.dense_fields if f.stats.get("source")]

    @property
    def source_fields(self) -> list[FieldInfo]:
        """The fields that are columns of the raw input (all but the dense copies), in order."""
        return [f for f in self.fields if not (f.type == "dense" and f.stats.get("source"))]

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def vocab_sizes(self) -> list[int]:
        return [f.vocab_size for f in self.categorical_fields]

    def to_json(self) -> str:
        d = asdict(self)
        if self.partitions is None:  # single-file input: the JSON stays as it was
            del d["partitions"], d["window"]
        if self.embedding is None:  # no embedding remedy: the JSON stays as it was
            del d["embedding"]
        d["num_fields"] = self.num_fields
        d["total_vocab"] = sum(self.vocab_sizes)
        return json.dumps(d, indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        """Atomic write (temp file + rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureMap:
        if d.get("version") != FEATURE_MAP_VERSION:
            raise ValueError(f"feature_map version {d.get('version')} is not {FEATURE_MAP_VERSION}")
        fields = tuple(FieldInfo(**f) for f in d["fields"])
        keep = {k: d[k] for k in ("format", "label", "splits", "source_hash", "params", "version")}
        keep |= {k: d[k] for k in ("partitions", "window", "embedding") if k in d}
        return cls(fields=fields, **keep)

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read feature map: {e}") from e
        return cls.from_dict(d)

    @classmethod
    def toy(cls, vocab_sizes: list[int], dense: int = 0) -> FeatureMap:
        """A feature map with no data behind it, for model unit tests."""
        fields = [
            FieldInfo(name=f"c{i}", type="categorical", source_kind="categorical", vocab_size=v)
            for i, v in enumerate(vocab_sizes)
        ] + [
            FieldInfo(name=f"d{i}", type="dense", source_kind="numeric", oov_id=None, missing_id=None)
            for i in range(dense)
        ]
        return cls(format="toy", label="label", fields=tuple(fields), splits={}, source_hash="", params={})
