"""Score models on the challenger's test rows — the champion through its *own* vocabularies.

The challenger's test split (``data/processed/test.parquet``) holds ids of the challenger's
vocabularies, and the encoded split keeps no raw values: an id 0 (OOV) cannot be decoded, and a
bucket or a standardised float cannot be turned back into the raw value the champion's encoder
needs. Decoding ids back through the new vocabularies and re-encoding them through the champion's
would therefore score the champion on *damaged* rows (every value rare in the new training data
becomes OOV for the champion too), biased against it. What is done instead (:func:`score_champion`):

- **same feature map** (the champion was trained on a feature map with the same hash — identical
  vocabularies and statistics): the champion's checkpoint scores the processed test split
  directly (``method: same_feature_map``);
- **otherwise the raw test rows are rebuilt** (``method: raw_rows``): the raw input is read again
  with the run's params (``data.input``), checked to be the bytes the challenger was preprocessed
  from (:func:`components.data.preprocess.source_hash` equals the feature map's ``source_hash``),
  and the test rows are selected with preprocessing's own split rule recorded in the feature map
  (random: the splitmix64 hash of ``(seed, source line)``; time: the quantile cut-offs of the time
  column). These raw rows are encoded by the champion's saved encoder
  (:mod:`components.serve.encode`, exactly as ``ctrflow predict`` would serve them) and scored by
  its checkpoint. As a check, their labels must equal the processed test split's, row for row.

**Partitioned input** (the feature map records ``partitions``: name, sha256, rows, role, rows per
split of each partition of the window, in order): the raw rows are rebuilt from *those* partitions,
found by name among ``data.input``'s current partitions (whatever ``data.window`` selects now: the
window may have moved since), and each is checked before use: its sha256 must equal the recorded
one and its row count the recorded ``rows``; the format and fields read must be the feature map's.
(The whole-input ``source_hash`` is not recomputed: it would re-hash every partition of the window,
including the training ones the replay never reads.) The split is replayed as preprocessing made it
over partitions:

- ``split: partition``: only the partitions holding test rows are read (the newest
  ``holdout_partitions``); the holdout was cut in row order, valid first, so a partition's test rows
  are its last ``splits.test`` rows;
- ``split: random``: every partition of the recorded window is read, and a row's key is its line plus
  the partition's name key (:func:`components.data.preprocess._partition_keys`), as preprocessing did;
- ``split: time``: every partition is read and the time cut-offs are computed over all their rows.

When neither is possible (the input changed or is gone, a split rule this module cannot replay,
the champion was trained on another raw format or field set, or its weights no longer fit the model
this version of ctrflow builds for its feature map) :class:`Incomparable` is raised with the reason;
the promotion rule then decides (``promote.on_incomparable``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch

from components.data.feature_map import FeatureMap
from components.data.formats.base import LABEL, LINE_COLUMN
from components.data.partitioned import PARTITION_COLUMN
from components.data.preprocess import FEATURE_MAP_FILE, load_feature_map
from components.data.split import (
    SPLIT_COLUMN,
    TEST,
    random_split_expr,
    time_cutoffs,
    time_split_expr,
)
from components.train.checkpoint import feature_map_hash, load_model

SCORE_BATCH = 8192


class Incomparable(RuntimeError):
    """The champion cannot be scored on the challenger's test rows (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Scored:
    """Logits (float64) and labels (float64) of one model on the challenger's test rows."""

    logits: np.ndarray
    labels: np.ndarray
    method: str  # same_feature_map | raw_rows | processed (the challenger itself)


def test_split(processed: str | Path) -> tuple[FeatureMap, Path]:
    """The processed directory's feature map and its test split path (ValueError when empty)."""
    processed = Path(processed)
    fmap = load_feature_map(processed)
    info = fmap.splits.get("test") or {}
    if not info.get("rows"):
        raise ValueError(f"{processed / FEATURE_MAP_FILE}: the test split is absent or empty")
    return fmap, processed / info["path"]


def _load_champion(model_dir: str | Path, fmap: FeatureMap):
    """The champion's model, or :class:`Incomparable` when its weights no longer fit the model this
    code builds for its feature map (a registry version written by an older ctrflow)."""
    try:
        return load_model(model_dir, fmap)[0]
    except ValueError as e:
        raise Incomparable(f"this version of ctrflow cannot load the champion: {e}") from e


def score_processed(model_dir: str | Path, processed: str | Path, *, champion: bool = False) -> Scored:
    """A checkpoint trained on ``processed``'s feature map, scored on its test split (file order).
    ``champion``: a load failure is :class:`Incomparable` (see :func:`_load_champion`)."""
    from components.data.loader import BatchLoader
    from components.train.loop import predict

    fmap, path = test_split(processed)
    model = _load_champion(model_dir, fmap) if champion else load_model(model_dir, fmap)[0]
    # streamed: one pass in file order, memory bounded by a few row groups whatever the split's size
    # (in memory, the Kaggle-size promotion peaked at 4.2 GB); the same batches, so the same logits
    loader = BatchLoader(path, fmap, SCORE_BATCH, shuffle=False, in_memory=False)
    logits, labels = predict(model, loader)
    return Scored(logits.astype(np.float64), labels.astype(np.float64), "processed")


def processed_test_labels(processed: str | Path) -> np.ndarray:
    fmap, path = test_split(processed)
    return pq.read_table(path, columns=[fmap.label]).column(0).to_numpy().astype(np.float64)


def _split_code(lf: pl.LazyFrame, table, record: dict) -> pl.Expr:
    """Preprocessing's split code of every row of ``lf`` (the rule recorded in the feature map).

    ``table`` read from partitions (``meta["partitions"]``, every partition of the recorded window in
    order): the random split's row key adds the partition's name key, as preprocessing's does.
    """
    split = record.get("split", "random")
    ratios = record.get("split_ratios", (0.8, 0.1, 0.1))
    if split == "random":
        key = pl.col(LINE_COLUMN)
        if table.meta.get("partitions"):
            from components.data.preprocess import _partition_keys

            key = key.cast(pl.UInt64) + pl.col(PARTITION_COLUMN).replace_strict(
                _partition_keys(table), return_dtype=pl.UInt64)
        return random_split_expr(key, int(record["seed"]), ratios)
    if split == "time":
        if table.time_column is None:
            raise Incomparable("the feature map records a time split but the raw source has no time column")
        t = "__promote_time"
        cut = time_cutoffs(lf.select(pl.col(table.time_column).cast(pl.Int64).alias(t)), t, ratios)
        return time_split_expr(pl.col(table.time_column).cast(pl.Int64), cut)
    raise Incomparable(f"cannot replay preprocess.split {split!r} to find the raw test rows")


def raw_test_table(params, fmap: FeatureMap):
    """The raw input's test rows (a :class:`SourceTable` with ``LINE_COLUMN``), checked to be
    what ``fmap`` was preprocessed from (module docstring); :class:`Incomparable` otherwise."""
    from components.config import PreprocessParams
    from components.data.preprocess import source_hash
    from components.stages import read_raw

    if fmap.partitions:
        return _partitioned_test_table(params, fmap)
    try:
        table = read_raw(params)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise Incomparable(f"cannot read the raw input {params.data.input}: {e}") from e
    try:
        record = PreprocessParams.model_validate(fmap.params)
    except ValueError as e:
        raise Incomparable(f"the feature map's preprocess params do not parse: {e}") from e
    if source_hash(table, record) != fmap.source_hash:
        raise Incomparable(f"{params.data.input} is not the input the test split was preprocessed from "
                           "(its source hash differs from the feature map's)")
    lf = table.lazy
    if LINE_COLUMN not in lf.collect_schema():
        lf = lf.with_row_index(LINE_COLUMN, offset=1 + table.header_lines)
    lf = lf.with_columns(pl.col(LINE_COLUMN).cast(pl.UInt64))
    lf = lf.with_columns(_split_code(lf, table, fmap.params).alias(SPLIT_COLUMN))
    lf = lf.filter(pl.col(SPLIT_COLUMN) == TEST).drop(SPLIT_COLUMN)
    return dataclasses.replace(table, lazy=lf)


def _recorded_partitions(params, fmap: FeatureMap, needed: list[dict]) -> list:
    """The :class:`~components.data.partitions.Partition` of each record of ``needed`` (from
    ``fmap.partitions``), found by name in ``data.input`` and checked to hold the recorded bytes."""
    from components.data.partitions import discover_partitions, is_partitioned

    source = params.data.input
    if not is_partitioned(source, params.data.format):
        raise Incomparable(f"the test split was preprocessed from partitions, but data.input {source} is one file")
    try:
        found = {p.name: p for p in discover_partitions(source)}
    except (OSError, ValueError) as e:
        raise Incomparable(f"cannot list the partitions of {source}: {e}") from e
    parts = []
    for rec in needed:
        p = found.get(rec["name"])
        if p is None:
            raise Incomparable(f"partition {rec['name']} of the challenger's window is no longer in {source}")
        try:
            digest = p.sha256
        except OSError as e:
            raise Incomparable(f"cannot read partition {p.path}: {e}") from e
        if digest != rec.get("sha256"):
            raise Incomparable(f"partition {p.path} is not the file the test split was preprocessed from "
                               f"(sha256 {digest[:12]}…, recorded {str(rec.get('sha256'))[:12]}…)")
        parts.append(p)
    return parts


def _check_fields(table, fmap: FeatureMap) -> None:
    if table.format != fmap.format:
        raise Incomparable(f"the partitions read as {table.format!r}, the feature map records {fmap.format!r}")
    have = [(f.name, f.kind) for f in table.fields]
    want = [(f.name, f.source_kind) for f in fmap.source_fields]
    if have != want:
        raise Incomparable(f"the partitions read with fields {have}, not the feature map's {want}")


def _partitioned_test_table(params, fmap: FeatureMap):
    """The test rows of a partitioned input (module docstring: "Partitioned input")."""
    from components.config import PreprocessParams
    from components.data.partitioned import read_partitions

    try:
        record = PreprocessParams.model_validate(fmap.params)
    except ValueError as e:
        raise Incomparable(f"the feature map's preprocess params do not parse: {e}") from e
    recs = list(fmap.partitions)
    if record.split == "partition":
        needed = [r for r in recs if int((r.get("splits") or {}).get("test", 0)) > 0]
        if not needed:
            raise Incomparable("the feature map's partitions record no test rows")
    else:
        needed = recs
    parts = _recorded_partitions(params, fmap, needed)
    try:
        table = read_partitions(params, parts)
    except (OSError, ValueError) as e:
        raise Incomparable(f"cannot read the partitions {', '.join(p.name for p in parts)}: {e}") from e
    _check_fields(table, fmap)
    lf = table.lazy
    counts = dict(lf.group_by(PARTITION_COLUMN).agg(pl.len()).collect(engine="streaming").iter_rows())
    for i, (p, rec) in enumerate(zip(parts, needed, strict=True)):
        if counts.get(i, 0) != int(rec["rows"]):
            raise Incomparable(f"partition {p.path} now reads {counts.get(i, 0):,} rows, the feature map "
                               f"records {int(rec['rows']):,}")
    if record.split == "partition":
        # the holdout is cut in row order (valid first): a partition's test rows are its last ones
        keep = []
        for i, rec in enumerate(needed):
            n_test = int(rec["splits"]["test"])
            keep.append(lf.filter(pl.col(PARTITION_COLUMN) == i).slice(int(rec["rows"]) - n_test, n_test))
        lf = pl.concat(keep, how="vertical_relaxed")
    else:
        lf = lf.with_columns(_split_code(lf, table, fmap.params).alias(SPLIT_COLUMN))
        lf = lf.filter(pl.col(SPLIT_COLUMN) == TEST).drop(SPLIT_COLUMN)
    return dataclasses.replace(table, lazy=lf)


def _logits(model, categorical: np.ndarray, dense: np.ndarray) -> np.ndarray:
    from components.serve.predict import in_row_blocks

    def score(cat, den):
        with torch.inference_mode():
            return model(torch.from_numpy(cat), torch.from_numpy(den)).float().numpy()

    return in_row_blocks(score, categorical, dense, SCORE_BATCH)


def score_raw_rows(export_dir: str | Path, params, challenger_fmap: FeatureMap) -> Scored:
    """A self-contained export scored on the challenger's raw test rows through its own encoder."""
    from components.serve.encode import iter_encoded, load_encoder
    from components.serve.predict import resolve_model_dir

    export_dir = resolve_model_dir(export_dir)
    encoder = load_encoder(export_dir)
    table = raw_test_table(params, challenger_fmap)
    try:
        encoder.check_source(table)
    except ValueError as e:
        raise Incomparable(f"the champion reads other fields: {e}") from e
    truth = table.lazy.select(pl.col(LINE_COLUMN), pl.col(LABEL).cast(pl.Float64)).collect()
    model = _load_champion(export_dir, encoder.feature_map)
    parts, lines = [], []
    with tempfile.TemporaryDirectory(prefix="ctrflow-promote-") as work:
        for batch in iter_encoded(table, encoder, work):
            parts.append(_logits(model, batch.categorical, batch.dense))
            lines.append(batch.lines)
    logits = np.concatenate(parts).astype(np.float64) if parts else np.empty(0)
    got_lines = np.concatenate(lines) if lines else np.empty(0, np.uint64)
    if not np.array_equal(got_lines, truth[LINE_COLUMN].to_numpy()):
        raise Incomparable("the encoded raw test rows came back in another order")
    return Scored(logits, truth[LABEL].to_numpy(), "raw_rows")


def score_champion(champion_dir: str | Path, params, processed: str | Path) -> Scored:
    """The champion (a registry version directory) on the challenger's test rows (module docstring).

    The labels are checked against the processed test split's, row for row; :class:`Incomparable`
    when they differ or the rows cannot be rebuilt.
    """
    champion_dir = Path(champion_dir)
    fmap, _ = test_split(processed)
    champ_map = FeatureMap.load(champion_dir / FEATURE_MAP_FILE)
    if feature_map_hash(champ_map) == feature_map_hash(fmap):
        scored = dataclasses.replace(score_processed(champion_dir, processed, champion=True),
                                     method="same_feature_map")
    else:
        scored = score_raw_rows(champion_dir, params, fmap)
    labels = processed_test_labels(processed)
    if not np.array_equal(scored.labels, labels):
        raise Incomparable(f"the rebuilt test rows ({scored.labels.size}) do not match the processed test "
                           f"split ({labels.size} rows) label for label")
    return scored
