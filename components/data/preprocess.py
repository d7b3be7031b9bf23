"""Raw SourceTable → encoded train/valid/test Parquet + feature_map.json, out of core.

``preprocess(table, params, out_dir)`` runs three phases whose peak memory is set by the
vocabulary sizes and ``params.batch_rows``, never by the row count (toolchain.md §5):

1. **stage** (streaming): scan the raw table, apply the numeric transform, attach the split
   (random: splitmix64 of ``(seed, LINE_COLUMN)`` — the source line number is the row index, so
   a row's split never depends on chunking or on other rows; time: the time column is kept and
   split by its quantiles) and ``sink_ipc`` the typed rows to an uncompressed Arrow IPC scratch
   file (measured at 2M Criteo rows: 1.2 CPU-s less than an uncompressed Parquet sink, whose
   encoding cost more than the bytes it saved; the later phases read it at least as fast).
   Criteo's 8-hex-digit categorical hashes are parsed to UInt32 here (:data:`HEX8_FORMATS`):
   ~17 % less CPU over the whole run and integer keys for the group-bys and lookups; a value that
   is not 8 hex digits raises ``DataFormatError(rule="hex8")`` with its line and column;
2. **fit** (streaming): vocabularies (and dense statistics) from the train rows of that file,
   one streaming ``group_by`` per field (:mod:`components.data.vocab`), then the embedding-table
   remedies when set (``hash_buckets``, ``embedding_budget_mb``: :mod:`components.data.remedies`);
   label check and split sizes from the same file;
3. **encode** (batched): slices of ``batch_rows`` rows of the staged file (``scan_ipc(...)
   .slice(offset, batch_rows).collect()``) → eager :func:`~components.data.vocab.encode_frame`
   (``replace_strict``, or a hash join for large vocabularies) → split by ``partition_by`` → one pyarrow
   ``ParquetWriter`` per split, in row groups of exactly :data:`ROW_GROUP_ROWS` rows (the last one
   shorter), so the layout does not depend on ``batch_rows``. (Measured at 10M Criteo-like rows:
   pyarrow ``iter_batches`` + ``pl.from_arrow`` alone grew to 1.9 GB RSS, Polars slices stay
   at 0.85 GB including the encode.)

Outputs in ``out_dir``: ``train.parquet``, ``valid.parquet``, ``test.parquet`` (one Int32 column
per categorical or bucketised field, Float32 per dense field, ``label`` as Int8 0/1 — the loader
turns it into float32), ``feature_map.json`` and ``vocab/<field>.parquet``. Rows keep their input
order within a split. Everything is written to a hidden temp directory beside ``out_dir`` and
renamed into place at the end, so a failure leaves the previous outputs untouched. The same input
and parameters give byte-identical files (no timestamps; dense statistics rounded to 12
significant digits so floating summation order cannot leak into the bytes).

``feature_map.params`` records the effective parameters after preset expansion, minus
``out_dir`` and ``batch_rows`` (they do not change the result); ``source_hash`` is a sha256 over
the input files' bytes, that record, the format, the field list and :data:`PREPROCESS_VERSION`,
so :func:`is_up_to_date` can detect a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from components.atomic_dir import replace_dir
from components.config import PreprocessParams
from components.data.errors import DataFormatError
from components.data.feature_map import FeatureMap, FieldInfo
from components.data.formats.base import LABEL, LINE_COLUMN, SourceTable
from components.data.hashing import HashedField
from components.data.partitioned import PARTITION_COLUMN
from components.data.remedies import apply_remedies
from components.data.split import (
    SPLIT_COLUMN,
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VALID,
    random_split_expr,
    time_cutoffs,
    time_split_expr,
)
from components.data.vocab import (
    VOCAB_DIR,
    DenseStats,
    Vocabulary,
    encode_frame,
    fit_dense_stats,
    fit_vocabularies,
    hex8_expr,
    numeric_transform_expr,
)
from components.faults import pause_point

PREPROCESS_VERSION = 1  # bump when an algorithm change alters outputs: invalidates caches
ROW_GROUP_ROWS = 65_536  # rows per Parquet row group of the encoded splits (streaming loader unit)
FEATURE_MAP_FILE = "feature_map.json"
HEX8_FORMATS = frozenset({"criteo"})  # formats whose categorical values are 8-hex-digit hashes
_BAD_HEX = "__bad_hex"
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_TIME_COLUMN = "__time"
_NOT_RECORDED = {"out_dir", "batch_rows"}  # params that do not change the outputs
_HASH_CHUNK = 1 << 20

_RATIOS_811 = (0.8, 0.1, 0.1)
PRESETS: dict[str, dict[str, dict]] = {
    # KD-DAGFM code (models.md §5.1): shuffle with seed 2022, 8:1:1; Criteo count < 8 → OOV and
    # ceil(ln(v)² + 1) buckets with every bucket kept; Avazu count < 5; MovieLens no threshold.
    # Differences kept on purpose: our split is a per-row hash, not Python's random.shuffle, and
    # missing values get their own id (1) where the DAGFM code maps them to the OOV id. MovieLens
    # rating_threshold / drop_neutral_rating are applied by the MovieLens reader (it reads them
    # from params.preprocess); they are recorded here so the cache key covers them.
    "dagfm": {
        "criteo": dict(split="random", split_ratios=_RATIOS_811, seed=2022, min_count=8,
                       numeric="log2_bucket_dagfm", numeric_min_count=1),
        "avazu": dict(split="random", split_ratios=_RATIOS_811, seed=2022, min_count=5,
                      numeric_min_count=5),
        "movielens": dict(split="random", split_ratios=_RATIOS_811, seed=2022, min_count=1,
                          numeric_min_count=1, rating_threshold=4, drop_neutral_rating=True),
    },
    # BARS/FuxiCTR x4_001 (models.md §5.3): random 8:1:1; Criteo min count 10 on every field
    # (the bucketised ints are categorical features there too) with floor(ln(v)²); Avazu 2.
    # The published x4 split files come from AutoInt's script; our seed does not reproduce them.
    # FuxiCTR fills missing ints with 0 before bucketing; we keep them apart as the missing id.
    "bars_x4_001": {
        "criteo": dict(split="random", split_ratios=_RATIOS_811, min_count=10,
                       numeric="log2_bucket", numeric_min_count=10),
        "avazu": dict(split="random", split_ratios=_RATIOS_811, min_count=2, numeric_min_count=2),
    },
}


def effective_params(params: PreprocessParams, fmt: str) -> PreprocessParams:
    """``params`` with ``params.preset`` expanded for source format ``fmt`` (``none``: unchanged).

    Raises ``ValueError`` when the preset does not define ``fmt``.
    """
    if params.preset == "none":
        return params
    by_format = PRESETS[params.preset]
    if fmt not in by_format:
        raise ValueError(
            f"preprocess.preset {params.preset!r} defines formats {sorted(by_format)}, not {fmt!r}; "
            "use preset: none and set the keys explicitly"
        )
    return params.model_copy(update=by_format[fmt])


def params_record(params: PreprocessParams) -> dict:
    """The JSON-ready parameters that determine the outputs (recorded in the feature map).

    ``holdout_partitions`` only with ``split: partition`` (it changes nothing otherwise, and the
    records, hence the cache keys, of the other splits stay as they were before it existed).
    """
    skip = _NOT_RECORDED | ({"holdout_partitions"} if params.split != "partition" else set())
    # the embedding remedies only when on: with both off the record (hence the cache key and the
    # feature map's bytes) is what it was before they existed
    if params.hash_buckets is None:
        skip |= {"hash_buckets"}
    if params.embedding_budget_mb is None:
        skip |= {"embedding_budget_mb", "budget_embedding_dim"}
    return params.model_dump(mode="json", exclude=skip)


def _input_files(table: SourceTable) -> list[Path]:
    files: list[Path] = []
    for f in table.files:
        p = Path(f)
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return files


def _hash_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size
        h.update(f"file:{size}\n".encode())
        with open(p, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _combine_hash(files_digest: str, table: SourceTable, params: PreprocessParams) -> str:
    meta = {
        "version": PREPROCESS_VERSION,
        "format": table.format,
        "fields": [[f.name, f.kind] for f in table.fields],
        "time_column": table.time_column,
        "params": params_record(params),
    }
    if table.meta.get("partitions"):  # partitioned input: the order (hence each one's role) counts
        meta["partitions"] = [p.name for p in table.meta["partitions"]]
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    h.update(files_digest.encode())
    return h.hexdigest()


def source_hash(table: SourceTable, params: PreprocessParams) -> str:
    """sha256 over the input files' bytes (streamed), the effective params, format and fields."""
    eff = effective_params(params, table.format)
    return _combine_hash(_hash_files(_input_files(table)), table, eff)


def is_up_to_date(out_dir: str | Path, table: SourceTable, params: PreprocessParams) -> bool:
    """True when ``out_dir`` holds a complete preprocessing of exactly this input and params."""
    out_dir = Path(out_dir)
    try:
        fmap = FeatureMap.load(out_dir / FEATURE_MAP_FILE)
    except (ValueError, TypeError, KeyError):
        return False
    expected = [out_dir / s["path"] for s in fmap.splits.values()]
    if not expected or not all(p.is_file() for p in expected):
        return False
    return fmap.source_hash == source_hash(table, params)


# ---------------------------------------------------------------------------------------------
# phase 1: stage


def _check_columns(table: SourceTable, schema: pl.Schema) -> None:
    for name in [LABEL, *(f.name for f in table.fields)]:
        if name not in schema:
            raise DataFormatError(table.main_file, "missing_column", f"no column {name!r} in the source", column=name)
    for name in table.numeric:
        if not schema[name].is_numeric():
            raise DataFormatError(
                table.main_file, "numeric_type", f"numeric field {name!r} has dtype {schema[name]}", column=name
            )
    if table.time_column is not None and table.time_column not in schema:
        raise DataFormatError(table.main_file, "missing_column", "time column absent", column=table.time_column)


def hex8_fields(table: SourceTable) -> frozenset[str]:
    """Categorical fields staged as UInt32 parsed from 8 hex digits (all of a Criteo table's)."""
    return frozenset(table.categorical) if table.format in HEX8_FORMATS else frozenset()


def _stage(table: SourceTable, params: PreprocessParams, path: Path) -> None:
    """Stream the typed, transformed rows (+ line, split or time) to ``path``."""
    lf = table.lazy
    schema = lf.collect_schema()
    _check_columns(table, schema)
    if LINE_COLUMN not in schema:
        lf = lf.with_row_index(LINE_COLUMN, offset=1 + table.header_lines)
    hexes = hex8_fields(table)
    if hexes:
        lf = lf.with_columns(hex8_expr(pl.col(c)).alias(f"__hex_{c}") for c in sorted(hexes))
    cols: list[pl.Expr] = [pl.col(LINE_COLUMN).cast(pl.UInt64), pl.col(LABEL)]
    partitioned = PARTITION_COLUMN in schema
    if partitioned:
        cols.append(pl.col(PARTITION_COLUMN).cast(pl.UInt32))
    elif params.split == "partition":
        raise ValueError("preprocess.split is 'partition' but data.input is one file; point data.input at "
                         "a directory or glob of partitions (or use split: random | time)")
    if params.split == "random":
        # the row key is the source line number: a per-row index that needs no extra pass; with
        # partitions, plus a key of the partition's name in the high bits (stable when the window moves)
        key = pl.col(LINE_COLUMN)
        if partitioned:
            key = key.cast(pl.UInt64) + pl.col(PARTITION_COLUMN).replace_strict(
                _partition_keys(table), return_dtype=pl.UInt64)
        cols.append(random_split_expr(key, params.seed, params.split_ratios))
    elif params.split == "partition":
        pass  # decided in _check_staged, from the rows per partition
    else:
        if table.time_column is None:
            raise ValueError(f"preprocess.split is 'time' but the {table.format} source has no time column")
        cols.append(pl.col(table.time_column).cast(pl.Int64).alias(_TIME_COLUMN))
    for f in table.fields:
        if f.kind == "numeric":
            cols.append(numeric_transform_expr(f.name, params.numeric))
        elif f.name in hexes:
            cols.append(pl.col(f"__hex_{f.name}").alias(f.name))
        else:
            cols.append(pl.col(f.name))
    if hexes:
        bad = [pl.col(c).is_not_null() & pl.col(f"__hex_{c}").is_null() for c in sorted(hexes)]
        cols.append(pl.any_horizontal(bad).alias(_BAD_HEX))
    lf.select(cols).sink_ipc(path, compression="uncompressed", engine="streaming")


def _partition_keys(table: SourceTable) -> dict[int, int]:
    """Partition position → its random-split key offset: 24 bits of sha256(name), shifted past
    any line number (2**40)."""
    return {i: int(hashlib.sha256(p.name.encode()).hexdigest()[:6], 16) << 40
            for i, p in enumerate(table.meta["partitions"])}


def _scan_stage(path: Path) -> pl.LazyFrame:
    """Lazy frame of the staged rows (an uncompressed Arrow IPC file)."""
    return pl.scan_ipc(path)


def _raise_bad_hex(table: SourceTable, line: int, part: int | None = None) -> None:
    """Name the first non-hex8 value on ``line`` (rescans the source: error path only)."""
    where = pl.col(LINE_COLUMN) == line
    if part is not None:
        where = where & (pl.col(PARTITION_COLUMN) == part)
    row = table.lazy.filter(where).select(table.categorical).head(1).collect()
    file = _file_of(table, part)
    for name in table.categorical:
        value = row[name][0] if row.height else None
        if value is not None and not _HEX8.fullmatch(value):
            raise DataFormatError(file, "hex8", f"expected 8 hex digits, found {value!r}",
                                  line=line, column=name)
    raise DataFormatError(file, "hex8", "expected 8 hex digits", line=line)


def _first_hit(staged: pl.LazyFrame, predicate: pl.Expr) -> tuple[int, int | None] | None:
    """(line, partition position or None) of the first staged row matching ``predicate``."""
    cols = [LINE_COLUMN] + ([PARTITION_COLUMN] if PARTITION_COLUMN in staged.collect_schema() else [])
    hit = staged.filter(predicate).select(cols).head(1).collect(engine="streaming")
    if not hit.height:
        return None
    row = hit.row(0)
    return int(row[0]), (int(row[1]) if len(row) > 1 else None)


def _first_line(staged: pl.LazyFrame, predicate: pl.Expr) -> int | None:
    hit = _first_hit(staged, predicate)
    return hit[0] if hit else None


def _file_of(table: SourceTable, part: int | None) -> Path:
    """The file a staged row came from: its partition's, else the table's main file."""
    return table.meta["partitions"][part].path if part is not None else table.main_file


# ---------------------------------------------------------------------------------------------
# phase 3: encode


class _SplitWriter:
    """Writes one split in row groups of exactly ROW_GROUP_ROWS rows, whatever the batch sizes."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, compression="zstd", write_statistics=True)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0
        self.positives = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            merged = pa.concat_tables(self.pending).combine_chunks()
            full = (merged.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
            for start in range(0, full, ROW_GROUP_ROWS):
                self._flush(merged.slice(start, ROW_GROUP_ROWS))
            rest = merged.slice(full)
            self.pending = [rest] if rest.num_rows else []
            self.pending_rows = rest.num_rows

    def _flush(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def abort(self) -> None:
        """Close the file after a failure (its content is discarded with the temp dir)."""
        self.pending = []
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - already failing; the original error matters
            pass

    def close(self) -> None:
        if self.pending_rows:
            self._flush(pa.concat_tables(self.pending).combine_chunks())
        self.pending = []
        self.writer.close()


def _encode(
    stage: Path,
    split_expr: pl.Expr,
    encoders: list[Vocabulary | DenseStats],
    schema: pa.Schema,
    out_dir: Path,
    batch_rows: int,
) -> dict[str, _SplitWriter]:
    """Encode the staged rows batch by batch; batch k is written while batch k+1 is encoded."""
    writers = {name: _SplitWriter(out_dir / f"{name}.parquet", schema) for name in SPLIT_NAMES}

    def write(parts: list[pa.Table]) -> None:
        for name, part in zip(SPLIT_NAMES, parts, strict=True):
            writers[name].write(part)

    pending: Future | None = None
    try:
        with ThreadPoolExecutor(max_workers=1) as writer_thread:
            staged = _scan_stage(stage)
            total = staged.select(pl.len()).collect().item()
            for offset in range(0, total, batch_rows):
                df = staged.slice(offset, batch_rows).collect()
                encoded = encode_frame(df, encoders).with_columns(
                    df.select(pl.col(LABEL).cast(pl.Int8), split_expr)
                )
                by_code = encoded.partition_by(SPLIT_COLUMN, as_dict=True, include_key=False, maintain_order=True)
                parts = [
                    by_code.get((code,), encoded.clear().drop(SPLIT_COLUMN)).to_arrow().cast(schema)
                    for code in range(len(SPLIT_NAMES))
                ]
                if pending is not None:
                    pending.result()  # at most one batch in flight: memory stays ~2 batches
                pending = writer_thread.submit(write, parts)
            if pending is not None:
                pending.result()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()
    return writers


# ---------------------------------------------------------------------------------------------
# the whole run


def _round_sig(x: float, digits: int = 12) -> float:
    return float(f"{x:.{digits}g}")


def preprocess(table: SourceTable, params: PreprocessParams, out_dir: str | Path) -> FeatureMap:
    """Split, fit vocabularies on train and encode ``table`` into ``out_dir``; returns the map.

    See the module docstring for the phases, outputs and guarantees. Raises
    :class:`DataFormatError` (file, line, column) on a null or non-0/1 label, a null time under a
    time split, a missing or mistyped column; ``ValueError`` on an unusable preset.
    """
    out_dir = Path(out_dir)
    params = effective_params(params, table.format)
    for f in table.fields:
        if "/" in f.name or f.name.startswith(".") or f.name in (LABEL, SPLIT_COLUMN):
            raise ValueError(f"field name {f.name!r} cannot name a column/vocabulary file")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            files_digest = pool.submit(_hash_files, _input_files(table))
            fmap = _run(table, params, tmp)
            digest = _combine_hash(files_digest.result(), table, params)
        fmap = FeatureMap(
            format=fmap.format, label=fmap.label, fields=fmap.fields, splits=fmap.splits,
            source_hash=digest, params=fmap.params, partitions=fmap.partitions, window=fmap.window,
            embedding=fmap.embedding,
        )
        fmap.save(tmp / FEATURE_MAP_FILE)
        pause_point("preprocess.write")  # tests: a kill with the splits written to the temp dir
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fmap


def _run(table: SourceTable, params: PreprocessParams, tmp: Path) -> FeatureMap:
    """The three phases into ``tmp`` (scratch removed at the end); source_hash left empty."""
    scratch = tmp / ".scratch"
    scratch.mkdir()
    stage = scratch / "stage.arrow"
    _stage(table, params, stage)
    split_expr = _check_staged(table, params, stage)
    staged = _scan_stage(stage).with_columns(split_expr)
    train = staged.filter(pl.col(SPLIT_COLUMN) == 0)

    dense = params.numeric == "dense"
    min_counts = {
        f.name: params.min_count if f.kind == "categorical" else params.numeric_min_count
        for f in table.fields
        if f.kind == "categorical" or not dense
    }
    vocabs = fit_vocabularies(train, min_counts, hex8=hex8_fields(table))
    vocabs, embedding = apply_remedies(vocabs, table, params, _scan_stage(stage).collect_schema())
    dense_stats = {
        n: DenseStats(n, _round_sig(s.mean), _round_sig(s.std), s.train_missing_rows)
        for n, s in (fit_dense_stats(train, table.numeric) if dense else {}).items()
    }
    (tmp / VOCAB_DIR).mkdir()
    fields, encoders, schema = _field_encoders(table, vocabs, dense_stats, tmp / VOCAB_DIR)
    _encode(stage, split_expr, encoders, schema, tmp, params.batch_rows)
    splits = _split_sizes(staged)
    partitions = _partition_records(table, staged) if table.meta.get("partitions") else None
    shutil.rmtree(scratch)
    return FeatureMap(format=table.format, label=LABEL, fields=tuple(fields), splits=splits,
                      source_hash="", params=params_record(params), partitions=partitions,
                      window=table.meta.get("window") if partitions is not None else None,
                      embedding=embedding)


def _check_staged(table: SourceTable, params: PreprocessParams, stage: Path) -> pl.Expr:
    """Reject bad hex / null time / bad label rows of the staged file; return the split expression."""
    staged = _scan_stage(stage)
    if hex8_fields(table):
        hit = _first_hit(staged, pl.col(_BAD_HEX))
        if hit is not None:
            _raise_bad_hex(table, *hit)
    if params.split == "random":
        split_expr = pl.col(SPLIT_COLUMN)
    elif params.split == "partition":
        split_expr = partition_split_expr(staged, len(table.meta["partitions"]), params)
    else:
        hit = _first_hit(staged, pl.col(_TIME_COLUMN).is_null())
        if hit is not None:
            raise DataFormatError(_file_of(table, hit[1]), "time_not_null", "time split needs a time on every row",
                                  line=hit[0], column=table.time_column)
        split_expr = time_split_expr(pl.col(_TIME_COLUMN), time_cutoffs(staged, _TIME_COLUMN, params.split_ratios))
    hit = _first_hit(staged, pl.col(LABEL).is_null() | ~pl.col(LABEL).is_in([0, 1]))
    if hit is not None:
        raise DataFormatError(_file_of(table, hit[1]), "label", "label must be 0 or 1 (not null)",
                              line=hit[0], column=LABEL)
    return split_expr


def partition_split_expr(staged: pl.LazyFrame, n_parts: int, params: PreprocessParams) -> pl.Expr:
    """``split: partition``: train = every partition of the window but the newest
    ``holdout_partitions``; those (the holdout) are cut in row order (partition order, then line):
    the first ``ratios[1] / (ratios[1] + ratios[2])`` of their rows are valid, the rest test.

    With the default ratios (0.8, 0.1, 0.1) and one holdout partition, the newest partition's first
    half (by line) is valid and its second half test; with two equal-sized holdout partitions, the
    older is valid and the newest test (the Criteo-1TB protocol: test on the last day).
    ``ratios[0]`` is not used: the train share is what the older partitions hold.
    """
    k = params.holdout_partitions
    if n_parts <= k:
        raise ValueError(f"preprocess.split: partition needs more partitions in the window than "
                         f"preprocess.holdout_partitions ({k}) to train on; the window holds {n_parts}")
    r_valid, r_test = params.split_ratios[1], params.split_ratios[2]
    if r_valid + r_test <= 0:
        raise ValueError("preprocess.split: partition needs split_ratios[1] + split_ratios[2] > 0 "
                         "(the valid : test cut of the holdout partitions)")
    counts = dict(staged.group_by(PARTITION_COLUMN).agg(pl.len()).collect(engine="streaming").iter_rows())
    hold = list(range(n_parts - k, n_parts))
    total = sum(counts.get(i, 0) for i in hold)
    n_valid = round(total * r_valid / (r_valid + r_test))
    part, line = pl.col(PARTITION_COLUMN), pl.col(LINE_COLUMN)
    expr = pl.when(part < n_parts - k).then(pl.lit(TRAIN, dtype=pl.UInt8))
    before = 0
    for i in hold:
        rows = counts.get(i, 0)
        take = min(max(n_valid - before, 0), rows)
        before += rows
        if take == 0:
            code = pl.lit(TEST, dtype=pl.UInt8)
        elif take == rows:
            code = pl.lit(VALID, dtype=pl.UInt8)
        else:  # the line of the partition's first test row (rows are in line order)
            cut = (staged.filter(part == i).select(LINE_COLUMN).slice(take, 1)
                   .collect(engine="streaming").item())
            code = pl.when(line < cut).then(pl.lit(VALID, dtype=pl.UInt8)).otherwise(pl.lit(TEST, dtype=pl.UInt8))
        expr = expr.when(part == i).then(code)
    return expr.otherwise(pl.lit(TEST, dtype=pl.UInt8)).alias(SPLIT_COLUMN)


def _partition_records(table: SourceTable, staged: pl.LazyFrame) -> list[dict]:
    """feature_map ``partitions``: name, sha256, rows, role and rows per split of each partition."""
    counts = (staged.group_by(PARTITION_COLUMN, SPLIT_COLUMN).agg(pl.len().alias("rows"))
              .collect(engine="streaming"))
    per: dict[int, dict[str, int]] = {}
    for part, code, rows in counts.iter_rows():
        per.setdefault(int(part), {})[SPLIT_NAMES[int(code)]] = int(rows)
    out = []
    for i, p in enumerate(table.meta["partitions"]):
        splits = {name: per.get(i, {}).get(name, 0) for name in SPLIT_NAMES}
        roles = [name for name in SPLIT_NAMES if splits[name]]
        out.append({"name": p.name, "sha256": p.sha256, "rows": sum(splits.values()),
                    "role": "+".join(roles) or "empty", "splits": splits})
    return out


def _field_encoders(
    table: SourceTable, vocabs: dict, dense_stats: dict, vocab_dir: Path
) -> tuple[list[FieldInfo], list[Vocabulary | DenseStats], pa.Schema]:
    """Per field (source order): its FieldInfo, its encoder and the output schema."""
    fields: list[FieldInfo] = []
    encoders: list[Vocabulary | HashedField | DenseStats] = []
    arrow_fields: list[pa.Field] = []
    for f in table.fields:
        if f.name in vocabs:
            v = vocabs[f.name]
            v.save(vocab_dir)
            stats = dict(v.stats) if isinstance(v, HashedField) else {**v.stats, "min_count": v.min_count}
            fields.append(FieldInfo(name=f.name, type="categorical", source_kind=f.kind, vocab_size=v.size,
                                    stats=stats))
            arrow_fields.append(pa.field(f.name, pa.int32()))
        else:
            v = dense_stats[f.name]
            fields.append(FieldInfo(name=f.name, type="dense", source_kind=f.kind, vocab_size=0,
                                    oov_id=None, missing_id=None, stats=v.as_dict()))
            arrow_fields.append(pa.field(f.name, pa.float32()))
        encoders.append(v)
    arrow_fields.append(pa.field(LABEL, pa.int8()))
    return fields, encoders, pa.schema(arrow_fields)


def _split_sizes(staged: pl.LazyFrame) -> dict:
    """feature_map ``splits``: path, rows, positives and row-group size of each split."""
    counts = (
        staged.group_by(SPLIT_COLUMN)
        .agg(pl.len().alias("rows"), pl.col(LABEL).cast(pl.Int64).sum().alias("positives"))
        .collect(engine="streaming")
    )
    by_code = {int(r[SPLIT_COLUMN]): (int(r["rows"]), int(r["positives"])) for r in counts.iter_rows(named=True)}
    return {
        name: {
            "path": f"{name}.parquet",
            "rows": by_code.get(code, (0, 0))[0],
            "positives": by_code.get(code, (0, 0))[1],
            "row_group_rows": ROW_GROUP_ROWS,
        }
        for code, name in enumerate(SPLIT_NAMES)
    }


def load_feature_map(out_dir: str | Path) -> FeatureMap:
    """The feature map of a preprocessed ``out_dir``."""
    return FeatureMap.load(Path(out_dir) / FEATURE_MAP_FILE)

