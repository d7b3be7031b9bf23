"""Generate a synthetic raw CTR log (Criteo, Avazu or MovieLens layout) with a known oracle.

Labels come from a hidden logistic model with planted 2nd- and 3rd-order interactions
(:mod:`components.data.synthetic.planted`). Beside the log the generator writes each row's true
click probability and the oracle AUC / LogLoss (score = true probability):

- criteo / avazu: ``out`` is the log file; ``<out>.proba.parquet`` and ``<out>.oracle.json``;
- movielens: ``out`` is a directory holding ``u.data``, ``u.user``, ``u.item``, ``proba.parquet``
  and ``oracle.json``.

Rows are drawn in fixed blocks, each from its own seeded stream, and written in chunks of whole
blocks, so memory is bounded by ``chunk_rows`` and the same ``(fmt, rows, seed)`` gives
byte-identical files whatever ``chunk_rows`` is. Every file is written under a temporary name and
renamed into place when complete.

**Partitioned logs** (``partitions=N > 0``, criteo and avazu): ``out`` is a directory of N
partition files ``day_0 … day_{N-1}`` (avazu: ``day_k.csv``), each of ``rows`` rows, the layout of
Criteo Terabyte's daily files; ``<out>.proba.parquet`` holds every row's true probability with its
``partition`` name (partition order, then line) and ``<out>.oracle.json`` the oracle over all rows
plus one entry per partition. The partitions share one world (value tables, planted model) and
**drift**: partition ``k`` scores rows with the bias shifted by ``k * DRIFT_BIAS`` (the CTR rises
slowly) and the planted interactions scaled by ``exp(±k * DRIFT_INTERACTION)`` (even-numbered
terms strengthen, odd-numbered ones fade). Partition ``k`` depends only on ``(fmt, rows, seed, k)``:
generating N+1 partitions leaves the first N byte-identical (a new night's log appended). The
avazu ``hour`` column spans the same ten days in every partition (the drift is in the labels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.data.synthetic.atomic import discard, publish, staging_path
from components.data.synthetic.avazu import AvazuFormat
from components.data.synthetic.base import Block, SyntheticFormat, concat_payloads
from components.data.synthetic.blocks import (
    PILOT_STREAM,
    ROWS_STREAM,
    WORLD_STREAM,
    chunk_plan,
    stream_rng,
)
from components.data.synthetic.criteo import CriteoFormat
from components.data.synthetic.movielens import MovieLensFormat
from components.data.synthetic.oracle import finite_or_none, oracle_metrics
from components.data.synthetic.planted import PlantedModel, build_planted_model
from components.faults import pause_point

FORMATS = {"criteo": CriteoFormat, "avazu": AvazuFormat, "movielens": MovieLensFormat}
PILOT_ROWS = 65_536
PROBA_SCHEMA = pa.schema([("p", pa.float64()), ("label", pa.int8())])
PARTITION_PROBA_SCHEMA = pa.schema([("p", pa.float64()), ("label", pa.int8()), ("partition", pa.string())])
DRIFT_BIAS = 0.03         # logit shift of the bias per partition
DRIFT_INTERACTION = 0.05  # log-scale change of each planted interaction per partition (sign alternates)
_PARTITION_STREAM = 1 << 32  # partition k's row blocks draw from stream indices (k + 1) * this + block


@dataclass(frozen=True)
class GeneratedLog:
    """Where a generated log was written, its size, and its oracle metrics."""

    path: Path
    proba_path: Path
    rows: int
    positives: int
    oracle_auc: float
    oracle_logloss: float
    partitions: int = 0  # > 0: ``path`` is a directory of that many partition files

    @property
    def oracle_path(self) -> Path:
        """The JSON file holding the oracle metrics and the planted interactions."""
        return self.proba_path.with_name(
            self.proba_path.name.replace("proba.parquet", "oracle.json")
        )


def build_world(fmt: str, rows: int, seed: int,
                cardinality: str = "sample") -> tuple[SyntheticFormat, PlantedModel]:
    """The format's value tables and the hidden model for ``(fmt, rows, seed)``.

    Deterministic: drawn from the world stream, centred and calibrated on the pilot stream.
    ``cardinality="kaggle"`` (criteo only) gives the largest fields the Kaggle train set's sizes.
    """
    check_arguments(fmt, rows, seed)
    world_rng = stream_rng(seed, fmt, WORLD_STREAM)
    if cardinality != "sample":
        if fmt != "criteo":
            raise ValueError(f"generate.cardinality: {cardinality!r} is defined for criteo only, not {fmt}")
        source: SyntheticFormat = FORMATS[fmt](rows, world_rng, cardinality=cardinality)
    else:
        source = FORMATS[fmt](rows, world_rng)
    positions = np.linspace(0, rows - 1, PILOT_ROWS).astype(np.int64)
    pilot = source.sample(stream_rng(seed, fmt, PILOT_STREAM), positions)
    model = build_planted_model(
        world_rng,
        source.sizes,
        source.first_order,
        source.interactions,
        pilot.idx,
        source.target_ctr,
    )
    return source, model


def check_arguments(fmt: str, rows: int, seed: int, chunk_rows: int = 1) -> None:
    """Raise ValueError naming the bad argument (format, rows, seed or chunk_rows)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r}; expected one of {sorted(FORMATS)}")
    if rows <= 0:
        raise ValueError(f"rows must be > 0, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")


def output_paths(fmt: str, out: str | Path) -> tuple[Path, Path, Path]:
    """(log, proba parquet, oracle json) paths for ``out``."""
    out = Path(out)
    if fmt == "movielens":
        return out / "u.data", out / "proba.parquet", out / "oracle.json"
    return out, Path(f"{out}.proba.parquet"), Path(f"{out}.oracle.json")


def _planted(source) -> list[dict]:
    """The planted interactions of ``source`` as the oracle report lists them."""
    return [{"fields": list(i.fields), "rank": i.rank, "scale": i.scale} for i in source.interactions]


def _publish_with_oracle(staged: dict, oracle_tmp: Path, report: dict) -> None:
    """Write the oracle report into its staged file, then rename every staged output into place."""
    oracle_tmp.write_text(json.dumps(report, indent=2) + "\n")
    for target, tmp in staged.items():
        publish(tmp, target)


def generate(
    fmt: str, rows: int, seed: int, out: str | Path, *, chunk_rows: int = 500_000,
    cardinality: str = "sample",
) -> GeneratedLog:
    """Write a synthetic ``fmt`` log of ``rows`` rows to ``out`` plus its proba/oracle files.

    Same ``(fmt, rows, seed)`` → byte-identical files, whatever ``chunk_rows`` (which only bounds
    memory). Returns the paths, the positive count and the oracle AUC / LogLoss.
    """
    check_arguments(fmt, rows, seed, chunk_rows)
    source, model = build_world(fmt, rows, seed, cardinality)
    log_path, proba_path, oracle_path = output_paths(fmt, out)
    if fmt == "movielens":
        root = Path(out)
        root.parent.mkdir(parents=True, exist_ok=True)
        stage_root = staging_path(root)
        discard(stage_root)
        stage_root.mkdir()
        staged = {root: stage_root}
        stage = {p: stage_root / p.name for p in (log_path, proba_path, oracle_path)}
    else:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stage = {p: staging_path(p) for p in (log_path, proba_path, oracle_path)}
        staged = dict(stage)
    try:
        positives = _write_rows(
            source, model, rows, seed, stage[log_path], stage[proba_path], chunk_rows
        )
        for name, frame in source.side_frames().items():
            frame.write_csv(
                stage[log_path].with_name(name),
                separator="|",
                include_header=False,
                quote_style="never",
                null_value="",
            )
        auc, logloss = oracle_metrics(stage[proba_path])
        report = {
            "format": fmt,
            "rows": rows,
            "seed": seed,
            "positives": positives,
            "ctr": positives / rows,
            "oracle_auc": finite_or_none(auc),
            "oracle_logloss": finite_or_none(logloss),
            "bias": model.bias,
            "target_ctr": source.target_ctr,
            "planted_interactions": _planted(source),
        }
        if cardinality != "sample":
            report["cardinality"] = cardinality
        _publish_with_oracle(staged, stage[oracle_path], report)
    finally:
        for tmp in staged.values():
            discard(tmp)
    return GeneratedLog(log_path, proba_path, rows, positives, auc, logloss)


def partition_name(fmt: str, k: int) -> str:
    """File name of partition ``k`` of a partitioned synthetic log."""
    return f"day_{k}" + (".csv" if fmt == "avazu" else "")


def drifted_model(model: PlantedModel, k: int) -> PlantedModel:
    """The hidden model of partition ``k`` (module docstring: bias and interaction drift)."""
    from components.data.synthetic.planted import PlantedTerm

    terms = tuple(
        PlantedTerm(t.fields, (t.factors[0] * np.exp((1 if i % 2 == 0 else -1) * DRIFT_INTERACTION * k),
                               *t.factors[1:]))
        for i, t in enumerate(model.terms)
    )
    return PlantedModel(model.bias + DRIFT_BIAS * k, model.first_order, terms)


def generate_partitions(
    fmt: str, rows: int, seed: int, out: str | Path, partitions: int, *, chunk_rows: int = 500_000,
    cardinality: str = "sample",
) -> GeneratedLog:
    """Write ``partitions`` drifting partition files of ``rows`` rows each into the directory ``out``,
    plus ``<out>.proba.parquet`` and ``<out>.oracle.json`` (module docstring). Atomic: the
    directory and both files are staged and renamed into place when all are complete."""
    check_arguments(fmt, rows, seed, chunk_rows)
    if fmt == "movielens":
        raise ValueError("generate.partitions: partitioned logs are written for criteo and avazu, not "
                         "movielens (a MovieLens input is one dataset directory)")
    if partitions <= 0:
        raise ValueError(f"partitions must be > 0, got {partitions}")
    source, model = build_world(fmt, rows, seed, cardinality)
    root = Path(out)
    _, proba_path, oracle_path = output_paths(fmt, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staged = {root: staging_path(root), proba_path: staging_path(proba_path),
              oracle_path: staging_path(oracle_path)}
    for tmp in staged.values():
        discard(tmp)
    staged[root].mkdir()
    try:
        per_partition = []
        positives = 0
        with pq.ParquetWriter(staged[proba_path], PARTITION_PROBA_SCHEMA) as writer:
            for k in range(partitions):
                name = partition_name(fmt, k)
                part_proba = staged[root] / f".{name}.proba.parquet"
                n_pos = _write_rows(source, drifted_model(model, k), rows, seed, staged[root] / name,
                                    part_proba, chunk_rows, stream_offset=(k + 1) * _PARTITION_STREAM)
                table = pq.read_table(part_proba)
                part_proba.unlink()
                writer.write_table(table.append_column("partition", pa.array([name] * table.num_rows)))
                p, label = table.column("p").to_numpy(), table.column("label").to_numpy()
                auc, logloss = _metrics(p, label)
                per_partition.append({"name": name, "rows": rows, "positives": n_pos, "ctr": n_pos / rows,
                                      "bias": model.bias + DRIFT_BIAS * k, "oracle_auc": finite_or_none(auc),
                                      "oracle_logloss": finite_or_none(logloss)})
                positives += n_pos
        auc, logloss = oracle_metrics(staged[proba_path])
        total = rows * partitions
        report = {
            "format": fmt, "rows": total, "rows_per_partition": rows, "partitions": partitions,
            "seed": seed, "positives": positives, "ctr": positives / total,
            "oracle_auc": finite_or_none(auc), "oracle_logloss": finite_or_none(logloss),
            "bias": model.bias, "target_ctr": source.target_ctr,
            "drift": {"bias_per_partition": DRIFT_BIAS, "interaction_per_partition": DRIFT_INTERACTION},
            "planted_interactions": _planted(source),
            "per_partition": per_partition,
        }
        if cardinality != "sample":
            report["cardinality"] = cardinality
        _publish_with_oracle(staged, staged[oracle_path], report)
    finally:
        for tmp in staged.values():
            discard(tmp)
    return GeneratedLog(root, proba_path, total, positives, auc, logloss, partitions)


def _metrics(p: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    auc = float(roc_auc_score(label, p)) if 0 < label.sum() < len(label) else float("nan")
    return auc, float(log_loss(label, p, labels=[0, 1]))


def _draw_block(
    source: SyntheticFormat, model: PlantedModel, seed: int, block: tuple[int, int, int],
    stream_offset: int = 0,
) -> tuple[Block, np.ndarray, np.ndarray]:
    index, first, n = block
    drawn = source.sample(
        stream_rng(seed, source.name, ROWS_STREAM, stream_offset + index),
        np.arange(first, first + n, dtype=np.int64),
    )
    p = model.proba(drawn.idx)
    return drawn, p, (drawn.u_label < p).astype(np.int8)


def _write_rows(
    source: SyntheticFormat,
    model: PlantedModel,
    rows: int,
    seed: int,
    log_tmp: Path,
    proba_tmp: Path,
    chunk_rows: int,
    stream_offset: int = 0,
) -> int:
    """Stream all rows into the log and the proba parquet; return the number of positives."""
    positives = 0
    with open(log_tmp, "wb") as fh, pq.ParquetWriter(proba_tmp, PROBA_SCHEMA) as proba_writer:
        for i, chunk in enumerate(chunk_plan(rows, chunk_rows)):
            drawn = [_draw_block(source, model, seed, block, stream_offset) for block in chunk]
            label = np.concatenate([d[2] for d in drawn])
            source.frame(concat_payloads([d[0] for d in drawn]), label).write_csv(
                fh,
                separator=source.separator,
                include_header=source.header and i == 0,
                quote_style="never",
                null_value="",
            )
            # one row group per block, so the parquet bytes do not depend on chunk_rows either
            for _, p, block_label in drawn:
                proba_writer.write_table(
                    pa.table({"p": p, "label": block_label}, schema=PROBA_SCHEMA)
                )
            positives += int(label.sum())
            pause_point("generate.write")  # tests: a kill with part of the log written
    return positives
