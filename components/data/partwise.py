"""Preprocessing as steps over units: per-unit value counts → one merge → per-unit encoding → finish.

:func:`components.data.preprocess.preprocess` and the partition-parallel paths (a process pool, a
Dask cluster, Prefect tasks: flows/preprocess.py) run the same steps, so they write the same bytes.
A **unit** is one partition of a partitioned input (components/data/partitions.py) or the whole of a
single-file input. Every step is a pure function of the work directory (plus the unit's position),
so it can run in any process that sees that directory; steps hand each other paths, never frames.

The work directory is the temp directory of the run: ``<out_dir's parent>/.<out_dir name>.tmp-<id>``
(what a killed run's sweep removes). Its ``.scratch/`` holds the job (``job.json``: the effective
preprocess params, the units — name, absolute path, sha256 — and, when the units can be reopened in
another process, the params their reader needs) and one ``unit-<k>/`` per unit:

1. :func:`count_partition` (per unit) — **stage** the unit: read it with its format's reader
   (:func:`components.data.partitioned.open_partition` for a partition), parse Criteo's 8-hex-digit
   values, attach the split code (random) or time (time split), and sink the typed rows to
   ``stage.arrow`` (numeric fields raw: every later read applies the numeric transform and derives
   the dense copies, :func:`_scan_staged`); reject a bad hex value, a null time or a bad label there,
   naming the unit's file, line and column. Then **count** each field's values over the unit's train rows
   (``counts/<field>.parquet``) and the dense fields' partial statistics (``dense.json``). A unit's train
   rows are known at once under ``split: random`` (a per-row hash) and ``split: partition`` (its
   position), not under ``split: time``: there the first pass only stages and histograms the times,
   :func:`plan_splits` cuts them and a second pass counts.
2. :func:`merge_counts` (once) — the split plan (:func:`plan_splits`), then each field's counts summed
   over the units into the global vocabulary (:func:`components.data.vocab.vocab_from_counts`: the same
   min-count/OOV rules, ids and order as one pass over all rows) → ``vocab/<field>.parquet``; the dense
   statistics merged (Chan et al.'s pairwise update, in unit order; rounded to 12 significant digits
   like before, so floating summation order cannot reach the bytes).
3. :func:`encode_partition` (per unit) — the unit's staged rows encoded batch by batch into
   ``<split>.arrow`` part files (plus rows and positives per split); its ``stage.arrow`` is deleted
   once encoded (at Kaggle size 7 × 1.4 GB of page cache freed as the step goes, not at the end).
4. :func:`finish` (once) — the parts appended in unit order to ``train/valid/test.parquet`` through the
   one writer that fixes row groups at :data:`~components.data.preprocess.ROW_GROUP_ROWS` rows, so
   the files do not depend on how rows were batched or where they were encoded; then
   ``feature_map.json``, and the temp directory renamed to ``out_dir`` (a failure anywhere leaves the
   previous outputs untouched: :func:`abort` removes the temp directory).

:func:`run` drives the steps: in this process (units staged and counted :data:`COUNT_THREADS` at a
time in threads, then encoded one after the other straight into the final writers, no part files), or through a ``concurrent.futures`` executor (a process pool, a Dask
client's executor) that runs the per-unit steps in parallel. :func:`digest_inputs` (the input files'
sha256 for the feature map's ``source_hash``) runs beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from components.atomic_dir import replace_dir
from components.config import PreprocessParams
from components.data.errors import DataFormatError
from components.data.feature_map import FeatureMap, FieldInfo
from components.data.formats.base import LABEL, LINE_COLUMN, FieldSpec, SourceTable
from components.data.hashing import HashedField
from components.data.remedies import apply_remedies
from components.data.split import (
    SPLIT_COLUMN,
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VALID,
    TimeCutoffs,
    random_split_expr,
    time_cutoffs_from_counts,
    time_split_expr,
)
from components.data.vocab import (
    DENSE_COPY_KIND,
    VOCAB_DIR,
    DenseStats,
    Vocabulary,
    count_values,
    dense_copies,
    dense_copy_expr,
    dense_partials,
    encode_frame,
    hex8_expr,
    merge_dense_partials,
    numeric_transform_expr,
    vocab_from_counts,
)
from components.faults import pause_point

JOB_VERSION = 1
SCRATCH = ".scratch"
JOB_FILE = "job.json"
PLAN_FILE = "plan.json"
ENCODERS_FILE = "encoders.json"
STAGE_FILE = "stage.arrow"
STAGED_FILE = "staged.json"    # the unit's stage summary; written last, so its presence means staged
COUNTED_FILE = "counted.json"
ENCODED_FILE = "encoded.json"
_BAD_HEX = "__bad_hex"
_TIME_COLUMN = "__time"


# ---------------------------------------------------------------------------------------------
# the job


@dataclass(frozen=True)
class Unit:
    """One unit of work: a partition (name, absolute path, sha256) or the single input file."""

    name: str
    path: str
    sha256: str | None = None


@dataclass(frozen=True)
class Job:
    """What every step reads from ``<work>/.scratch/job.json``."""

    work: Path
    out_dir: Path
    params: PreprocessParams          # effective (presets expanded)
    format: str
    units: tuple[Unit, ...]
    partitioned: bool
    window: dict | None
    inputs: tuple[str, ...]           # the files hashed into source_hash, in order
    source: dict | None               # Params (JSON) to reopen a unit in any process; None: in-process only

    @property
    def scratch(self) -> Path:
        return self.work / SCRATCH

    def unit_dir(self, k: int) -> Path:
        return self.scratch / f"unit-{k:05d}"

    def file_of(self, k: int) -> str:
        return self.units[k].path


def work_dir_for(out_dir: str | Path) -> Path:
    """The temp directory a run builds ``out_dir`` in (a sibling, so the final rename is atomic)."""
    out_dir = Path(out_dir).absolute()
    return out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"


def prepare(out_dir: str | Path, params: PreprocessParams, fmt: str, units: Sequence[Unit], *,
            partitioned: bool, inputs: Sequence[str | Path], window: dict | None = None,
            source: dict | None = None) -> Path:
    """Create the work directory and its ``job.json``; returns the work directory.

    ``params`` must be effective (presets expanded). Rejects at once what no unit could fix: a
    partition split of one file, fewer partitions than ``holdout_partitions`` + 1, no valid + test share.
    """
    if params.split == "partition":
        if not partitioned:
            raise ValueError("preprocess.split is 'partition' but data.input is one file; point data.input at "
                             "a directory or glob of partitions (or use split: random | time)")
        k = params.holdout_partitions
        if len(units) <= k:
            raise ValueError(f"preprocess.split: partition needs more partitions in the window than "
                             f"preprocess.holdout_partitions ({k}) to train on; the window holds {len(units)}")
        if params.split_ratios[1] + params.split_ratios[2] <= 0:
            raise ValueError("preprocess.split: partition needs split_ratios[1] + split_ratios[2] > 0 "
                             "(the valid : test cut of the holdout partitions)")
    out_dir = Path(out_dir).absolute()
    work = work_dir_for(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if work.exists():
        shutil.rmtree(work)
    job = {
        "version": JOB_VERSION, "out_dir": str(out_dir), "params": params.model_dump(mode="json"),
        "format": fmt, "units": [asdict(u) for u in units], "partitioned": partitioned, "window": window,
        "inputs": [str(p) for p in inputs], "source": source,
    }
    try:
        (work / SCRATCH).mkdir(parents=True)
        _write_json(work / SCRATCH / JOB_FILE, job)
    except BaseException:
        abort(work)
        raise
    return work


def load_job(work: str | Path) -> Job:
    work = Path(work)
    d = json.loads((work / SCRATCH / JOB_FILE).read_text())
    if d.get("version") != JOB_VERSION:
        raise ValueError(f"{work / SCRATCH / JOB_FILE}: job version {d.get('version')} is not {JOB_VERSION}")
    return Job(work=work, out_dir=Path(d["out_dir"]), params=PreprocessParams.model_validate(d["params"]),
               format=d["format"], units=tuple(Unit(**u) for u in d["units"]), partitioned=d["partitioned"],
               window=d["window"], inputs=tuple(d["inputs"]), source=d["source"])


def abort(work: str | Path) -> None:
    """Remove the work directory of a failed run (the previous outputs were never touched)."""
    shutil.rmtree(work, ignore_errors=True)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique across worker machines
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _read_json(path: Path):
    return json.loads(path.read_text())


def _open_unit(job: Job, k: int) -> SourceTable:
    """Unit k read afresh through its format's reader (any process that sees the paths)."""
    if job.source is None:
        raise RuntimeError(f"unit {k} ({job.file_of(k)}) can only be read in the process that started the "
                           "job (it was given as an in-memory table)")
    from components.config import Params
    from components.data.partitioned import open_partition
    from components.data.partitions import Partition

    params = Params.model_validate(job.source)
    work_dir = job.unit_dir(k) / "raw"  # decompressed copies: removed once the unit is staged
    unit = job.units[k]
    return open_partition(params, Partition(unit.name, Path(unit.path)), work_dir=work_dir)


# ---------------------------------------------------------------------------------------------
# step 1: stage + count (per unit)


def count_partition(work: str | Path, k: int, table: SourceTable | None = None) -> dict:
    """Stage unit ``k`` (unless done) and count its train rows' values when its split is known.

    ``table``: the unit's table in this process (else it is opened from the job). Returns the unit's
    stage summary plus ``counted`` (False only in the first pass of a time split). Raises
    :class:`DataFormatError` naming the unit's file, line and column on a bad value.
    """
    job = load_job(work)
    udir = job.unit_dir(k)
    if not (udir / STAGED_FILE).is_file():
        _stage_unit(job, k, table if table is not None else _open_unit(job, k))
    summary = _read_json(udir / STAGED_FILE)
    plan = _read_json(job.scratch / PLAN_FILE) if (job.scratch / PLAN_FILE).is_file() else None
    train = _train_rows(job, k, summary, plan)
    if train is None:
        return {**summary, "counted": False}
    min_counts = _min_counts(summary["fields"], job.params)
    cdir = udir / "counts"
    cdir.mkdir(exist_ok=True)
    for name, counts in count_values(train, list(min_counts)).items():
        counts.write_parquet(cdir / f"{name}.parquet", statistics=False)
    _write_json(udir / COUNTED_FILE, {"dense": dense_partials(train, _dense_fields(summary["fields"], job.params))})
    return {**summary, "counted": True}


def _stage_unit(job: Job, k: int, table: SourceTable) -> None:
    """Stream unit k's typed, transformed rows (+ line, split or time) to its ``stage.arrow`` and check
    them; write its summary (``staged.json``) last."""
    from components.data.preprocess import _check_columns, hex8_fields, partition_key

    params, udir = job.params, job.unit_dir(k)
    udir.mkdir(parents=True, exist_ok=True)
    for f in table.fields:
        if "/" in f.name or f.name.startswith(".") or f.name in (LABEL, SPLIT_COLUMN):
            raise ValueError(f"field name {f.name!r} cannot name a column/vocabulary file")
    file = job.file_of(k)
    lf = table.lazy
    schema = lf.collect_schema()
    _check_columns(table, schema)
    if LINE_COLUMN not in schema:
        lf = lf.with_row_index(LINE_COLUMN, offset=1 + table.header_lines)
    hexes = hex8_fields(table)
    if hexes:
        lf = lf.with_columns(hex8_expr(pl.col(c)).alias(f"__hex_{c}") for c in sorted(hexes))
    cols: list[pl.Expr] = [pl.col(LINE_COLUMN).cast(pl.UInt64), pl.col(LABEL)]
    if params.split == "random":
        # the row key is the line number; with partitions plus a key of the partition's name in the
        # high bits (a row keeps its split when the window moves)
        key = pl.col(LINE_COLUMN)
        if job.partitioned:
            key = key.cast(pl.UInt64) + pl.lit(partition_key(job.units[k].name), dtype=pl.UInt64)
        cols.append(random_split_expr(key, params.seed, params.split_ratios))
    elif params.split == "time":
        if table.time_column is None:
            raise ValueError(f"preprocess.split is 'time' but the {table.format} source has no time column")
        cols.append(pl.col(table.time_column).cast(pl.Int64).alias(_TIME_COLUMN))
    for f in table.fields:
        if f.kind == "numeric":
            cols.append(pl.col(f.name))  # raw: transformed, and its dense copy derived, when read (_scan_staged)
        elif f.name in hexes:
            cols.append(pl.col(f"__hex_{f.name}").alias(f.name))
        else:
            cols.append(pl.col(f.name))
    copies = dense_copies(table.fields, params.dense_copies)
    if hexes:
        bad = [pl.col(c).is_not_null() & pl.col(f"__hex_{c}").is_null() for c in sorted(hexes)]
        cols.append(pl.any_horizontal(bad).alias(_BAD_HEX))
    stage = udir / STAGE_FILE
    lf.select(cols).sink_ipc(stage, compression="uncompressed", engine="streaming")

    staged = pl.scan_ipc(stage)
    if hexes:
        line = _first_line(staged, pl.col(_BAD_HEX))
        if line is not None:
            _raise_bad_hex(lf, table.categorical, file, line)
    if params.split == "time":
        line = _first_line(staged, pl.col(_TIME_COLUMN).is_null())
        if line is not None:
            raise DataFormatError(file, "time_not_null", "time split needs a time on every row",
                                  line=line, column=table.time_column)
    line = _first_line(staged, pl.col(LABEL).is_null() | ~pl.col(LABEL).is_in([0, 1]))
    if line is not None:
        raise DataFormatError(file, "label", "label must be 0 or 1 (not null)", line=line, column=LABEL)
    rows = staged.select(pl.len()).collect().item()
    if params.split == "time":
        (staged.group_by(_TIME_COLUMN).agg(pl.len().cast(pl.Int64).alias("n")).collect(engine="streaming")
         .write_parquet(udir / "times.parquet", statistics=False))
    shutil.rmtree(udir / "raw", ignore_errors=True)
    _write_json(udir / STAGED_FILE, {
        "rows": int(rows), "format": table.format,
        "fields": [[f.name, f.kind] for f in table.fields] + [[name, DENSE_COPY_KIND] for name, _ in copies],
        "time_column": table.time_column, "hex8": sorted(hexes),
    })


def _first_line(staged: pl.LazyFrame, predicate: pl.Expr) -> int | None:
    """Line of the first staged row matching ``predicate``."""
    hit = staged.filter(predicate).select(LINE_COLUMN).head(1).collect(engine="streaming")
    return int(hit.item()) if hit.height else None


def _raise_bad_hex(lf: pl.LazyFrame, categorical: list[str], file: str, line: int) -> None:
    """Name the first non-hex8 value on ``line`` (rescans the unit: error path only)."""
    from components.data.preprocess import HEX8_PATTERN

    row = lf.filter(pl.col(LINE_COLUMN) == line).select(categorical).head(1).collect()
    for name in categorical:
        value = row[name][0] if row.height else None
        if value is not None and not HEX8_PATTERN.fullmatch(value):
            raise DataFormatError(file, "hex8", f"expected 8 hex digits, found {value!r}", line=line, column=name)
    raise DataFormatError(file, "hex8", "expected 8 hex digits", line=line)


def _min_counts(fields: list, params: PreprocessParams) -> dict[str, int]:
    """Field → min_count of every field that gets a vocabulary (all but the dense ones)."""
    dense = set(_dense_fields(fields, params))
    return {name: params.min_count if kind == "categorical" else params.numeric_min_count
            for name, kind in fields if name not in dense}


def _dense_fields(fields: list, params: PreprocessParams) -> list[str]:
    """The dense fields of a stage summary's ``[name, kind]`` list: the numeric ones under
    ``numeric: dense``, the dense copies (``numeric_also_dense``) otherwise."""
    return [name for name, kind in fields
            if kind == DENSE_COPY_KIND or (kind == "numeric" and params.numeric == "dense")]


def _scan_staged(job: Job, k: int, summary: dict | None = None) -> pl.LazyFrame:
    """Unit k's staged rows as the later steps see them: numeric fields transformed
    (``preprocess.numeric``) and their dense copies derived from the raw values. The stage file holds
    the raw numerics only: 13 Float64 copies fewer on Criteo, a third of its bytes (at Kaggle size
    4.8 GB less scratch written and read back, page cache that the raw files keep)."""
    summary = summary or _read_json(job.unit_dir(k) / STAGED_FILE)
    fields = [FieldSpec(n, kind) for n, kind in summary["fields"] if kind != DENSE_COPY_KIND]
    exprs = [numeric_transform_expr(f.name, job.params.numeric) for f in fields if f.kind == "numeric"]
    exprs += [dense_copy_expr(name, source) for name, source in dense_copies(fields, job.params.dense_copies)]
    staged = pl.scan_ipc(job.unit_dir(k) / STAGE_FILE)
    return staged.with_columns(exprs) if exprs else staged  # one with_columns: copies read the raw values


def _train_rows(job: Job, k: int, summary: dict, plan: dict | None) -> pl.LazyFrame | None:
    """Unit k's staged train rows, or None while the split still needs the plan (time split)."""
    staged = _scan_staged(job, k, summary)
    split = job.params.split
    if split == "partition":
        return staged if k < len(job.units) - job.params.holdout_partitions else staged.clear()
    if split == "time" and plan is None:
        return None
    return staged.filter(_split_expr(job, k, plan) == TRAIN)


def _split_expr(job: Job, k: int, plan: dict | None) -> pl.Expr:
    """Unit k's split code (UInt8, :data:`SPLIT_COLUMN`) over its staged rows."""
    split = job.params.split
    if split == "random":
        return pl.col(SPLIT_COLUMN)
    if split == "time":
        cut = plan["time"]
        return time_split_expr(pl.col(_TIME_COLUMN), TimeCutoffs(cut["train_end"], cut["valid_end"], cut["rows"]))
    n_train = len(job.units) - job.params.holdout_partitions
    if k < n_train:
        return pl.lit(TRAIN, dtype=pl.UInt8).alias(SPLIT_COLUMN)
    cut = plan["holdout"][str(k)]
    if cut["take"] == 0:
        return pl.lit(TEST, dtype=pl.UInt8).alias(SPLIT_COLUMN)
    if cut["take"] == cut["rows"]:
        return pl.lit(VALID, dtype=pl.UInt8).alias(SPLIT_COLUMN)
    return (pl.when(pl.col(LINE_COLUMN) < cut["cut_line"]).then(pl.lit(VALID, dtype=pl.UInt8))
            .otherwise(pl.lit(TEST, dtype=pl.UInt8)).alias(SPLIT_COLUMN))


# ---------------------------------------------------------------------------------------------
# step 2: plan + merge (once)


def _summaries(job: Job, name: str = STAGED_FILE) -> list[dict]:
    out = []
    for k in range(len(job.units)):
        path = job.unit_dir(k) / name
        if not path.is_file():
            raise RuntimeError(f"{job.file_of(k)}: unit {k} has no {name} yet (its step did not complete)")
        out.append(_read_json(path))
    return out


def plan_splits(work: str | Path) -> dict:
    """The split decisions that need every unit's rows (``plan.json``): under ``split: time`` the
    cut-offs of the time distribution of all units; under ``split: partition`` how many rows of each
    holdout partition are valid (the first ``ratios[1] / (ratios[1] + ratios[2])`` of the holdout rows,
    in partition then line order) and the line of its first test row."""
    job = load_job(work)
    staged = _summaries(job)
    p = job.params
    plan: dict = {"split": p.split}
    if p.split == "time":
        counts = pl.concat([pl.read_parquet(job.unit_dir(k) / "times.parquet") for k in range(len(job.units))])
        cut = time_cutoffs_from_counts(counts, _TIME_COLUMN, p.split_ratios)
        plan["time"] = {"train_end": cut.train_end, "valid_end": cut.valid_end, "rows": cut.rows}
    elif p.split == "partition":
        n_parts, k = len(job.units), p.holdout_partitions
        r_valid, r_test = p.split_ratios[1], p.split_ratios[2]
        hold = list(range(n_parts - k, n_parts))
        total = sum(staged[i]["rows"] for i in hold)
        n_valid = round(total * r_valid / (r_valid + r_test))
        before = 0
        plan["holdout"] = {}
        for i in hold:
            rows = staged[i]["rows"]
            take = min(max(n_valid - before, 0), rows)
            before += rows
            cut_line = None
            if 0 < take < rows:  # the line of the partition's first test row (rows are in line order)
                cut_line = int(pl.scan_ipc(job.unit_dir(i) / STAGE_FILE).select(LINE_COLUMN)
                               .slice(take, 1).collect().item())
            plan["holdout"][str(i)] = {"rows": rows, "take": take, "cut_line": cut_line}
    _write_json(job.scratch / PLAN_FILE, plan)
    return plan


def merge_counts(work: str | Path) -> dict:
    """Merge every unit's counts into the vocabularies (``vocab/``) and dense statistics; write the
    encoders the encode steps read (``.scratch/encoders/``, ``encoders.json``). Returns a summary."""
    from components.data.preprocess import _field_encoders, _round_sig

    job = load_job(work)
    if not (job.scratch / PLAN_FILE).is_file():
        plan_splits(work)
    staged = _summaries(job)
    counted = _summaries(job, COUNTED_FILE)
    first = staged[0]
    for k, s in enumerate(staged[1:], 1):
        if s["fields"] != first["fields"]:
            raise DataFormatError(job.file_of(k), "same_fields", f"fields {[n for n, _ in s['fields']]} differ "
                                  f"from those of {job.file_of(0)}: {[n for n, _ in first['fields']]}")
    fields = [FieldSpec(n, kind) for n, kind in first["fields"]]
    hexes = set(first["hex8"])
    vocabs = {}
    for name, min_count in _min_counts(first["fields"], job.params).items():
        files = [job.unit_dir(k) / "counts" / f"{name}.parquet" for k in range(len(job.units))]
        counts = (pl.scan_parquet(files, hive_partitioning=False).group_by(name)
                  .agg(pl.col("count").sum()).collect(engine="streaming"))
        vocabs[name] = vocab_from_counts(name, counts, min_count, hex8=name in hexes)
    dense_stats = {}
    sources = dict(dense_copies([f for f in fields if f.kind != DENSE_COPY_KIND], job.params.dense_copies))
    for name in _dense_fields(first["fields"], job.params):
        s = merge_dense_partials(name, [c["dense"][name] for c in counted])
        dense_stats[name] = DenseStats(name, _round_sig(s.mean), _round_sig(s.std), s.train_missing_rows,
                                       sources.get(name))
    staged_schema = _scan_staged(job, 0, first).collect_schema()
    vocabs, embedding = apply_remedies(vocabs, {f.name for f in fields if f.kind == "categorical"},
                                       job.params, staged_schema)
    (job.work / VOCAB_DIR).mkdir(exist_ok=True)
    infos, _, _ = _field_encoders(fields, vocabs, dense_stats, job.work / VOCAB_DIR)
    enc_dir = job.scratch / "encoders"
    enc_dir.mkdir(exist_ok=True)
    for name, v in vocabs.items():
        if isinstance(v, Vocabulary):  # a hashed field needs no table: its FieldInfo stats say how
            v.table.write_parquet(enc_dir / f"{name}.parquet", statistics=False)
    _write_json(job.scratch / ENCODERS_FILE, {"fields": [asdict(f) for f in infos], "hex8": sorted(hexes),
                                              "time_column": first["time_column"], "format": first["format"],
                                              "embedding": embedding})
    return {"fields": len(infos), "ids": sum(f.vocab_size for f in infos)}


def _load_encoders(job: Job) -> tuple[list[FieldInfo], list[Vocabulary | DenseStats], pa.Schema]:
    from components.data.preprocess import output_schema

    d = _read_json(job.scratch / ENCODERS_FILE)
    infos = [FieldInfo(**f) for f in d["fields"]]
    encoders: list[Vocabulary | DenseStats] = []
    for f in infos:
        if f.type == "categorical" and "hash_buckets" in f.stats:
            encoders.append(HashedField(f.name, int(f.stats["hash_buckets"]), f.stats["hash"], dict(f.stats)))
        elif f.type == "categorical":
            table = pl.read_parquet(job.scratch / "encoders" / f"{f.name}.parquet")
            encoders.append(Vocabulary(f.name, table, f.stats["min_count"], hex8=f.name in d["hex8"]))
        else:
            encoders.append(DenseStats(f.name, f.stats["mean"], f.stats["std"], f.stats["train_missing_rows"]))
    return infos, encoders, output_schema(infos)


# ---------------------------------------------------------------------------------------------
# step 3: encode (per unit)


def _unit_batches(job: Job, k: int, encoders: list, schema: pa.Schema) -> Iterator[list[pa.Table]]:
    """Unit k's staged rows encoded, ``batch_rows`` at a time: per batch one table per split (in
    :data:`SPLIT_NAMES` order; rows in input order). Tallies rows and positives per split into
    ``<unit>/encoded.json`` once every batch has been produced."""
    plan = _read_json(job.scratch / PLAN_FILE)
    split_expr = _split_expr(job, k, plan)
    summary = _read_json(job.unit_dir(k) / STAGED_FILE)
    staged = _scan_staged(job, k, summary)
    total = summary["rows"]
    tally = {name: [0, 0] for name in SPLIT_NAMES}
    for offset in range(0, total, job.params.batch_rows):
        df = staged.slice(offset, job.params.batch_rows).collect()
        encoded = encode_frame(df, encoders).with_columns(df.select(pl.col(LABEL).cast(pl.Int8), split_expr))
        by_code = encoded.partition_by(SPLIT_COLUMN, as_dict=True, include_key=False, maintain_order=True)
        parts = []
        for code, name in enumerate(SPLIT_NAMES):
            part = by_code.get((code,), encoded.clear().drop(SPLIT_COLUMN))
            tally[name][0] += part.height
            tally[name][1] += int(part.get_column(LABEL).cast(pl.Int64).sum())
            parts.append(part.to_arrow().cast(schema))
        yield parts
    _write_json(job.unit_dir(k) / ENCODED_FILE, {name: {"rows": r, "positives": p} for name, (r, p) in tally.items()})


def encode_partition(work: str | Path, k: int, table: SourceTable | None = None) -> dict:
    """Encode unit k's staged rows into its part files ``<unit>/<split>.arrow`` (uncompressed Arrow
    IPC with the output schema). ``table`` is ignored (the staged file is read); it keeps the signature
    of :func:`count_partition`. Returns rows and positives per split."""
    job = load_job(work)
    _, encoders, schema = _load_encoders(job)
    udir = job.unit_dir(k)
    writers = {name: pa.ipc.new_file(udir / f"{name}.arrow", schema) for name in SPLIT_NAMES}
    try:
        for parts in _unit_batches(job, k, encoders, schema):
            for name, part in zip(SPLIT_NAMES, parts, strict=True):
                if part.num_rows:
                    writers[name].write_table(part)
    finally:
        for w in writers.values():
            w.close()
    (udir / STAGE_FILE).unlink(missing_ok=True)  # encoded: no step reads it again
    return _read_json(udir / ENCODED_FILE)


def _encode_direct(job: Job) -> None:
    """Encode every unit in order straight into the split files (the in-process path: no part files);
    batch b is written by a second thread while batch b+1 is encoded."""
    from components.data.preprocess import _SplitWriter

    _, encoders, schema = _load_encoders(job)
    writers = {name: _SplitWriter(job.work / f"{name}.parquet", schema) for name in SPLIT_NAMES}

    def write(parts: list[pa.Table]) -> None:
        for name, part in zip(SPLIT_NAMES, parts, strict=True):
            writers[name].write(part)

    pending: Future | None = None
    try:
        with ThreadPoolExecutor(max_workers=1) as writer_thread:
            for k in range(len(job.units)):
                for parts in _unit_batches(job, k, encoders, schema):
                    if pending is not None:
                        pending.result()  # at most one batch in flight: memory stays ~2 batches
                    pending = writer_thread.submit(write, parts)
                (job.unit_dir(k) / STAGE_FILE).unlink(missing_ok=True)  # encoded: no step reads it again
            if pending is not None:
                pending.result()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()


def _assemble(job: Job, schema: pa.Schema) -> None:
    """Append every unit's part files, in unit order, to the split files (one writer per split, in
    its own thread: Parquet encoding is the serial part of the parallel path)."""
    from components.data.preprocess import _SplitWriter

    def one(name: str) -> None:
        writer = _SplitWriter(job.work / f"{name}.parquet", schema)
        try:
            for k in range(len(job.units)):
                with pa.memory_map(str(job.unit_dir(k) / f"{name}.arrow")) as source:
                    reader = pa.ipc.open_file(source)
                    for i in range(reader.num_record_batches):
                        writer.write(pa.Table.from_batches([reader.get_batch(i)], schema=schema))
        except BaseException:
            writer.abort()
            raise
        writer.close()

    with ThreadPoolExecutor(max_workers=len(SPLIT_NAMES)) as pool:
        for f in [pool.submit(one, name) for name in SPLIT_NAMES]:
            f.result()


# ---------------------------------------------------------------------------------------------
# step 4: finish (once)


def digest_inputs(work: str | Path) -> str:
    """sha256 over the input files' sizes and sha256s (the part of ``source_hash`` that reads data; a
    partition's sha256 is the one recorded in the job, the bytes are not read again)."""
    from components.data.preprocess import _hash_files

    job = load_job(work)
    return _hash_files([Path(p) for p in job.inputs], {u.path: u.sha256 for u in job.units if u.sha256})


def finish(work: str | Path, files_digest: str | None = None) -> FeatureMap:
    """Assemble the split files from the units' parts (unless the in-process path wrote them), write
    ``feature_map.json`` and rename the work directory to ``out_dir``. Returns the feature map."""
    from components.data.preprocess import (
        FEATURE_MAP_FILE,
        ROW_GROUP_ROWS,
        combine_hash,
        params_record,
    )

    job = load_job(work)
    infos, _, schema = _load_encoders(job)
    encoded = _summaries(job, ENCODED_FILE)
    if not all((job.work / f"{name}.parquet").is_file() for name in SPLIT_NAMES):
        _assemble(job, schema)
    splits = {
        name: {"path": f"{name}.parquet", "rows": sum(e[name]["rows"] for e in encoded),
               "positives": sum(e[name]["positives"] for e in encoded), "row_group_rows": ROW_GROUP_ROWS}
        for name in SPLIT_NAMES
    }
    partitions = None
    if job.partitioned:
        partitions = []
        for unit, e in zip(job.units, encoded, strict=True):
            rows = {name: e[name]["rows"] for name in SPLIT_NAMES}
            roles = [name for name in SPLIT_NAMES if rows[name]]
            partitions.append({"name": unit.name, "sha256": unit.sha256, "rows": sum(rows.values()),
                               "role": "+".join(roles) or "empty", "splits": rows})
    enc = _read_json(job.scratch / ENCODERS_FILE)
    digest = combine_hash(files_digest if files_digest is not None else digest_inputs(work),
                          fmt=enc["format"], fields=[[f.name, f.source_kind] for f in infos],
                          time_column=enc["time_column"], params=job.params,
                          partitions=[u.name for u in job.units] if job.partitioned else None)
    fmap = FeatureMap(format=enc["format"], label=LABEL, fields=tuple(infos), splits=splits, source_hash=digest,
                      params=params_record(job.params), partitions=partitions,
                      window=job.window if partitions is not None else None, embedding=enc.get("embedding"))
    shutil.rmtree(job.scratch)
    fmap.save(job.work / FEATURE_MAP_FILE)
    pause_point("preprocess.write")  # tests: a kill with the splits written to the temp dir
    replace_dir(job.work, job.out_dir)
    return fmap


# ---------------------------------------------------------------------------------------------
# the driver

#: in-process runs stage and count this many units at once, in threads (Polars releases the GIL; a
#: unit's parse and group-bys leave one of two cores idle part of the time). Kaggle-size Criteo, 7 units,
#: 2 cores: preprocess 130 s (2 runs) against 145 s one unit at a time, peak RSS 2.0 GB against 1.7 GB.
COUNT_THREADS = 2


def run(work: str | Path, tables: Sequence[SourceTable] | None = None,
        executor: Executor | None = None) -> FeatureMap:
    """Run every step of the job in ``work``; returns the feature map (module docstring).

    ``executor`` None: in this process (``tables``: the units' tables, if already open; else each is
    opened where it is staged, :data:`COUNT_THREADS` units at a time), encoding unit after unit
    straight into the split files. An executor (process
    pool, Dask client executor): the per-unit steps are submitted to it, units reopened where they run;
    the first failing unit in unit order is the error raised, after every submitted step has ended.
    On any failure the work directory is removed and the previous outputs stay.
    """
    def fan_out(step: Callable) -> list:
        n = len(job.units)
        if executor is None and tables is None and n > 1 and COUNT_THREADS > 1:
            with ThreadPoolExecutor(max_workers=COUNT_THREADS) as pool:
                return map_units(pool, step, str(work), n)
        if executor is None:
            return [step(str(work), k, tables[k] if tables is not None else None) for k in range(n)]
        return map_units(executor, step, str(work), n)

    try:
        job = load_job(work)
        with ThreadPoolExecutor(max_workers=1) as hasher:
            digest = hasher.submit(digest_inputs, work)
            fan_out(count_partition)
            if job.params.split == "time":  # the first pass staged; the cut-offs decide the train rows
                plan_splits(work)
                fan_out(count_partition)
            merge_counts(work)
            if executor is None:
                _encode_direct(job)
            else:
                fan_out(encode_partition)
            return finish(work, digest.result())
    except BaseException:
        abort(work)
        raise


def map_units(executor: Executor, step: Callable, work: str, n: int) -> list:
    """``step(work, k)`` for every unit through ``executor``; results in unit order. On a failure the
    steps not started are cancelled and the running ones awaited (nothing keeps writing into the work
    directory), then the first failure in unit order is raised."""
    futures = [executor.submit(step, work, k) for k in range(n)]
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        wait(futures)
        raise

