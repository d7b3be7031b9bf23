"""The synthetic log's oracle on one split: AUC / LogLoss of scoring each row with its true probability.

The generator writes every row's true click probability beside the log (``<log>.proba.parquet``, one
row per line of the log, in order). The split a row went to is recomputed from its 1-based line
number with the recorded split seed and ratios (:func:`components.data.split.random_split_expr`),
and the recomputed labels must equal the split's Parquet labels, in order — otherwise the oracle
would be scored on other rows and :class:`RuntimeError` says so.

A partitioned synthetic log (``generate.partitions > 0``) has one ``<dir>.proba.parquet`` with a
``partition`` column; with ``preprocess.split: partition`` each partition's rows go, in line order,
to train, then valid, then test (the holdout's valid rows are a line prefix), so the split's rows are
taken per partition from the counts feature_map.json records. Other splits of a partitioned log
(random, time) give None: their rows cannot be recomputed from the probability file alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def oracle_on_split(raw: str | Path, processed: str | Path, split: str = "test") -> dict | None:
    """``{"auc", "logloss", "rows"}`` of the oracle on ``split``; None when it cannot be recomputed
    (no probability file, or a time split whose row order the line number does not give)."""
    import polars as pl
    import pyarrow.parquet as pq
    from sklearn.metrics import log_loss, roc_auc_score

    from components.data.split import TEST, TRAIN, VALID, random_split_expr

    proba_path = Path(f"{raw}.proba.parquet")
    processed = Path(processed)
    fmap = json.loads((processed / "feature_map.json").read_text())
    pp = fmap.get("params", {})
    if not proba_path.is_file() or split not in fmap["splits"]:
        return None
    if fmap.get("partitions") is not None:
        if pp.get("split") != "partition":
            return None
        rows = _partition_split_rows(pl.read_parquet(proba_path), fmap["partitions"], split)
        if rows is None:
            return None
    elif pp.get("split", "random") != "random":
        return None
    else:
        proba = pl.read_parquet(proba_path).with_row_index("line", offset=1)
        rows = proba.filter(random_split_expr(pl.col("line"), pp["seed"], pp["split_ratios"]) == {"train": TRAIN, "valid": VALID, "test": TEST}[split])
    labels = pq.read_table(processed / fmap["splits"][split]["path"], columns=[fmap["label"]]).column(0)
    got = labels.to_numpy().astype(np.int8)
    want = rows["label"].to_numpy().astype(np.int8)
    if got.shape != want.shape or not np.array_equal(got, want):
        raise RuntimeError(f"{processed}: recomputed {split} rows do not match {split}.parquet's labels "
                           f"({want.size} vs {got.size} rows); the oracle would be on other rows")
    p = rows["p"].to_numpy()
    return {"auc": float(roc_auc_score(want, p)),
            "logloss": float(log_loss(want, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
            "rows": int(want.size)}


def _partition_split_rows(proba, partitions: list[dict], split: str):
    """The probability rows of ``split`` under ``split: partition`` (module docstring), or None when
    the probability file has no ``partition`` column or lacks one of the partitions."""
    import polars as pl

    if "partition" not in proba.columns:
        return None
    order = ("train", "valid", "test")
    frames = []
    for part in partitions:
        rows = proba.filter(pl.col("partition") == part["name"])
        counts = part.get("splits") or {}
        if rows.height != part["rows"]:
            return None
        start = sum(counts.get(s, 0) for s in order[: order.index(split)])
        frames.append(rows.slice(start, counts.get(split, 0)))
    return pl.concat(frames)
