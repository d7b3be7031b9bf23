"""Raw SourceTable → encoded train/valid/test Parquet + feature_map.json, out of core.

``preprocess(table, params, out_dir)`` runs the steps of :mod:`components.data.partwise` over the
table's units (its partitions, or the whole of a single file) in this process;
:func:`preprocess_partitions` runs the same steps over a partitioned input's partitions, optionally
through a process pool or a Dask cluster (``preprocess.parallel``). Both write the same bytes. Peak
memory is set by the vocabulary sizes and ``params.batch_rows``, never by the row count
(toolchain.md §5):

1. **stage** (streaming, per unit): scan the raw rows, apply the numeric transform, attach the split
   (random: splitmix64 of ``(seed, LINE_COLUMN)`` — the source line number is the row index, plus a
   key of the partition's name for partitioned input, so a row's split never depends on chunking or
   on other rows; time: the time column is kept and split by its quantiles over all units;
   partition: by the unit's position) and ``sink_ipc`` the typed rows to an uncompressed Arrow IPC
   scratch file (measured at 2M Criteo rows: 1.2 CPU-s less than an uncompressed Parquet sink, whose
   encoding cost more than the bytes it saved; the later phases read it at least as fast).
   Criteo's 8-hex-digit categorical hashes are parsed to UInt32 here (:data:`HEX8_FORMATS`):
   ~17 % less CPU over the whole run and integer keys for the group-bys and lookups; a value that
   is not 8 hex digits raises ``DataFormatError(rule="hex8")`` with its file, line and column;
2. **fit** (streaming): value counts of each field over each unit's train rows, one streaming
   ``group_by`` per field (:mod:`components.data.vocab`), summed over the units into the
   vocabularies; dense statistics merged from per-unit partials; label check and split sizes;
3. **encode** (batched): slices of ``batch_rows`` rows of each staged file (``scan_ipc(...)
   .slice(offset, batch_rows).collect()``) → eager :func:`~components.data.vocab.encode_frame`
   (``replace_strict``, or a hash join for large vocabularies) → split by ``partition_by`` → one pyarrow
   ``ParquetWriter`` per split, in row groups of exactly :data:`ROW_GROUP_ROWS` rows (the last one
   shorter), so the layout does not depend on ``batch_rows`` nor on where a unit was encoded.
   (Measured at 10M Criteo-like rows: pyarrow ``iter_batches`` + ``pl.from_arrow`` alone grew to
   1.9 GB RSS, Polars slices stay at 0.85 GB including the encode.)

Outputs in ``out_dir``: ``train.parquet``, ``valid.parquet``, ``test.parquet`` (one Int32 column
per categorical or bucketised field, Float32 per dense field, ``label`` as Int8 0/1 — the loader
turns it into float32), ``feature_map.json`` and ``vocab/<field>.parquet``. Rows keep their input
order within a split (partition order, then line). Everything is written to a hidden temp directory
beside ``out_dir`` and renamed into place at the end, so a failure leaves the previous outputs
untouched. The same input and parameters give byte-identical files (no timestamps; dense statistics
rounded to 12 significant digits so floating summation order cannot leak into the bytes).

``feature_map.params`` records the effective parameters after preset expansion, minus
``out_dir``, ``batch_rows`` and ``parallel`` (they do not change the result); ``source_hash`` is a
sha256 over the input files' bytes, that record, the format, the field list and
:data:`PREPROCESS_VERSION`, so :func:`is_up_to_date` can detect a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import PreprocessParams
from components.data.errors import DataFormatError
from components.data.feature_map import FeatureMap, FieldInfo
from components.data.formats.base import LABEL, FieldSpec, SourceTable
from components.data.hashing import HashedField
from components.data.vocab import DENSE_COPY_KIND, DenseStats, Vocabulary

PREPROCESS_VERSION = 1  # bump when an algorithm change alters outputs: invalidates caches
ROW_GROUP_ROWS = 65_536  # rows per Parquet row group of the encoded splits (streaming loader unit)
FEATURE_MAP_FILE = "feature_map.json"
HEX8_FORMATS = frozenset({"criteo"})  # formats whose categorical values are 8-hex-digit hashes
HEX8_PATTERN = re.compile(r"[0-9a-fA-F]{8}")
_NOT_RECORDED = {"out_dir", "batch_rows", "parallel"}  # params that do not change the outputs

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
                       numeric="log2_bucket_dagfm", numeric_min_count=1, numeric_also_dense=False),
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
                       numeric="log2_bucket", numeric_min_count=10, numeric_also_dense=False),
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
    if not params.dense_copies:  # likewise the dense copies of the numeric fields
        skip |= {"numeric_also_dense"}
    return params.model_dump(mode="json", exclude=skip)


def _input_files(table: SourceTable) -> list[Path]:
    files: list[Path] = []
    for f in table.files:
        p = Path(f)
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return files


def _hash_files(files: list[Path], known: dict[str, str] | None = None) -> str:
    """One digest over the files' sizes and sha256s, in order. A file's sha256 comes from ``known``
    (path → sha256: a partition's, taken when the job was prepared) or :func:`file_sha256` (memoised:
    the partitions were hashed once for the gate check), so the bytes are not read a second time."""
    from components.data.partitions import file_sha256

    known = known or {}
    h = hashlib.sha256()
    for p in files:
        sha = known.get(str(p)) or file_sha256(p)
        h.update(f"file:{p.stat().st_size}:{sha}\n".encode())
    return h.hexdigest()


def _combine_hash(files_digest: str, table: SourceTable, params: PreprocessParams) -> str:
    partitions = [p.name for p in table.meta["partitions"]] if table.meta.get("partitions") else None
    return combine_hash(files_digest, fmt=table.format, fields=[[f.name, f.kind] for f in table.fields],
                        time_column=table.time_column, params=params, partitions=partitions)


def combine_hash(files_digest: str, *, fmt: str, fields: list[list[str]], time_column: str | None,
                 params: PreprocessParams, partitions: list[str] | None = None) -> str:
    """``source_hash`` from the input files' digest and what else decides the outputs."""
    meta = {
        "version": PREPROCESS_VERSION,
        "format": fmt,
        "fields": fields,
        "time_column": time_column,
        "params": params_record(params),
    }
    if partitions:  # partitioned input: the order (hence each one's role) counts
        meta["partitions"] = partitions
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
# helpers of the steps (components/data/partwise.py)


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


def partition_key(name: str) -> int:
    """A partition's random-split key offset: 24 bits of sha256(name), shifted past any line number
    (2**40), so a row's key depends on its partition's name and line only."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:6], 16) << 40


def _partition_keys(table: SourceTable) -> dict[int, int]:
    """Partition position → :func:`partition_key` of its name."""
    return {i: partition_key(p.name) for i, p in enumerate(table.meta["partitions"])}


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


def _round_sig(x: float, digits: int = 12) -> float:
    return float(f"{x:.{digits}g}")


def _field_encoders(
    fields: list[FieldSpec], vocabs: dict, dense_stats: dict, vocab_dir: Path
) -> tuple[list[FieldInfo], list[Vocabulary | DenseStats], pa.Schema]:
    """Per field (source order): its FieldInfo, its encoder and the output schema; writes the
    vocabularies to ``vocab_dir``."""
    infos: list[FieldInfo] = []
    encoders: list[Vocabulary | DenseStats] = []
    for f in fields:
        if f.name in vocabs:
            v = vocabs[f.name]
            v.save(vocab_dir)  # a HashedField (components/data/hashing.py) writes no vocabulary file
            stats = dict(v.stats) if isinstance(v, HashedField) else {**v.stats, "min_count": v.min_count}
            infos.append(FieldInfo(name=f.name, type="categorical", source_kind=f.kind, vocab_size=v.size,
                                   stats=stats))
        else:
            v = dense_stats[f.name]
            kind = "numeric" if f.kind == DENSE_COPY_KIND else f.kind  # a dense copy is made from a numeric field
            infos.append(FieldInfo(name=f.name, type="dense", source_kind=kind, vocab_size=0,
                                   oov_id=None, missing_id=None, stats=v.as_dict()))
        encoders.append(v)
    return infos, encoders, output_schema(infos)


def output_schema(fields: list[FieldInfo]) -> pa.Schema:
    """The encoded splits' Arrow schema: Int32 per categorical field, Float32 per dense one, Int8 label."""
    return pa.schema([pa.field(f.name, pa.int32() if f.type == "categorical" else pa.float32()) for f in fields]
                     + [pa.field(LABEL, pa.int8())])


# ---------------------------------------------------------------------------------------------
# the whole run


def preprocess(table: SourceTable, params: PreprocessParams, out_dir: str | Path) -> FeatureMap:
    """Split, fit vocabularies on train and encode ``table`` into ``out_dir``; returns the map.

    See the module docstring for the phases, outputs and guarantees. A partitioned table
    (:func:`components.data.partitioned.read_partitions`) is processed partition by partition. Raises
    :class:`DataFormatError` (file, line, column) on a null or non-0/1 label, a null time under a
    time split, a missing or mistyped column; ``ValueError`` on an unusable preset or split.
    """
    from components.data import partwise

    params = effective_params(params, table.format)
    parts = table.meta.get("partitions")
    if parts:
        tables = list(table.meta["partition_tables"])
        units = [partwise.Unit(p.name, str(Path(p.path).absolute()), p.sha256) for p in parts]
    else:
        tables = [table]
        units = [partwise.Unit(table.main_file.name, str(Path(table.main_file).absolute()))]
    work = partwise.prepare(out_dir, params, table.format, units, partitioned=bool(parts),
                            inputs=_input_files(table), window=table.meta.get("window") if parts else None)
    return partwise.run(work, tables=tables)


def preprocess_partitions(params, parts: list, out_dir: str | Path, executor=None) -> FeatureMap:
    """:func:`preprocess` of the partitions ``parts`` of ``params.data.input`` (a
    :class:`~components.config.Params`), each partition opened where its steps run: in this process
    one after the other (``executor`` None), or in the workers of a ``concurrent.futures`` executor
    (a process pool; a Dask client's executor: :mod:`components.executors`), which must see the
    partition files and ``out_dir`` at the same paths. The same bytes as
    ``preprocess(read_partitions(...))``.
    """
    from components.data import partwise

    return partwise.run(prepare_partitions(params, parts, out_dir), executor=executor)


def prepare_partitions(params, parts: list, out_dir: str | Path) -> Path:
    """The work directory of a partitioned preprocessing job (:func:`components.data.partwise.prepare`)
    whose steps can run in any process: the job records the partitions' absolute paths and sha256 and
    the parameters their reader needs."""
    from components.data import partwise
    from components.data.partitions import window_record

    fmt = params.data.format
    units = [partwise.Unit(p.name, str(Path(p.path).absolute()), p.sha256) for p in parts]
    return partwise.prepare(out_dir, effective_params(params.preprocess, fmt), fmt, units, partitioned=True,
                            inputs=[u.path for u in units], window=window_record(params.data.window),
                            source=params.model_dump(mode="json", by_alias=True))


def load_feature_map(out_dir: str | Path) -> FeatureMap:
    """The feature map of a preprocessed ``out_dir``."""
    return FeatureMap.load(Path(out_dir) / FEATURE_MAP_FILE)

