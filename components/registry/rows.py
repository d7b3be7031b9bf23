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

When neither is possible (the input changed or is gone, a split rule this module cannot replay,
the champion was trained on another raw format or field set) :class:`Incomparable` is raised with
the reason; the promotion rule then decides (``promote.on_incomparable``).
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


def score_processed(model_dir: str | Path, processed: str | Path) -> Scored:
    """A checkpoint trained on ``processed``'s feature map, scored on its test split (file order)."""
    from components.data.loader import BatchLoader
    from components.train.loop import predict

    fmap, path = test_split(processed)
    model, _ = load_model(model_dir, fmap)
    loader = BatchLoader(path, fmap, SCORE_BATCH, shuffle=False)
    logits, labels = predict(model, loader)
    return Scored(logits.astype(np.float64), labels.astype(np.float64), "processed")


def processed_test_labels(processed: str | Path) -> np.ndarray:
    fmap, path = test_split(processed)
    return pq.read_table(path, columns=[fmap.label]).column(0).to_numpy().astype(np.float64)


def _split_code(lf: pl.LazyFrame, table, record: dict) -> pl.Expr:
    """Preprocessing's split code of every row of ``lf`` (the rule recorded in the feature map)."""
    split = record.get("split", "random")
    ratios = record.get("split_ratios", (0.8, 0.1, 0.1))
    if split == "random":
        return random_split_expr(pl.col(LINE_COLUMN), int(record["seed"]), ratios)
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
    model, _ = load_model(export_dir, encoder.feature_map)
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
        scored = dataclasses.replace(score_processed(champion_dir, processed), method="same_feature_map")
    else:
        scored = score_raw_rows(champion_dir, params, fmap)
    labels = processed_test_labels(processed)
    if not np.array_equal(scored.labels, labels):
        raise Incomparable(f"the rebuilt test rows ({scored.labels.size}) do not match the processed test "
                           f"split ({labels.size} rows) label for label")
    return scored
