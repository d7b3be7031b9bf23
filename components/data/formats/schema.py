"""A user's own log declared in params.yaml ``schema`` (no code): CSV or Parquet.

Parquet is recognised by its ``PAR1`` magic bytes (any name), anything else is read as CSV
(``separator``, ``has_header``; gzip/bz2/xz are decompressed; double quotes allowed — lines holding
a quote are not field-counted by the structural scan, Polars parses them; a quoted field must not
span lines, or ``LINE_COLUMN`` drifts from the physical line). Without a header the
columns are named ``column_1``, ``column_2``, … and the declaration must use those names.

Every declared column (``label``, ``categorical``, ``numeric``, ``time_column``) must exist:
otherwise ``DataFormatError(rule="missing_column")`` naming it (``label`` may be absent with
``require_label=False``: an all-null Int8 column is produced).

Output columns, fields in file order: ``LINE_COLUMN`` (CSV: physical line; Parquet: 1-based row
number); ``label`` (Int8; integral floats like ``1.0`` accepted); numeric fields Int64, or Float64
when some value is fractional (a non-number → rule ``numeric``); categorical fields String;
with a ``time_column``, its raw values as an extra column (unless it is a field) and ``__time``
(Int64: the integer itself, or epoch seconds of a date/datetime; unparsable → rule ``time``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from components.config import Params, SchemaParams
from components.data.errors import DataFormatError
from components.data.formats.base import LABEL, LINE_COLUMN, FieldSpec, SourceTable
from components.data.formats.typecheck import as_integer, check_integers
from components.data.rawfile import LineLayout, checked_structure, open_raw, read_first_line

TIME_COLUMN = "__time"


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def _check_declared(
    spec: SchemaParams, names: list[str], file: Path, require_label: bool, line: int | None
) -> None:
    declared = [("label", spec.label)] if require_label else []
    declared += [("categorical", c) for c in spec.categorical] + [
        ("numeric", c) for c in spec.numeric
    ]
    if spec.time_column is not None:
        declared.append(("time_column", spec.time_column))
    for key, column in declared:
        if column not in names:
            shown = names if len(names) <= 30 else [*names[:30], "…"]
            raise DataFormatError(
                file,
                "missing_column",
                f"column {column!r} declared in params schema.{key} is not in the file; it has {shown}",
                line=line,
                column=column,
            )


def _csv_frame(
    path: Path, spec: SchemaParams, params: Params, work_dir: Path | None, require_label: bool,
    remember_structure: bool = False,
):
    raw = open_raw(path, work_dir, store_dir=params.validation.cache_dir if remember_structure else None)
    first = read_first_line(raw).split(spec.separator)
    if spec.has_header:
        names = [n.strip().strip('"') for n in first]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataFormatError(
                raw.source, "header", f"duplicate column names in the header: {dupes}", line=1
            )
    else:
        names = [f"column_{i}" for i in range(1, len(first) + 1)]
    _check_declared(spec, names, raw.source, require_label, 1 if spec.has_header else None)
    report = checked_structure(
        raw,
        LineLayout(spec.separator, len(names), tuple(names), skip_quoted=True),
        max_field_bytes=params.validation.max_field_bytes,
        store_dir=params.validation.cache_dir if remember_structure else None,
    )
    header = int(spec.has_header)
    lf = pl.scan_csv(
        raw.plain,
        separator=spec.separator,
        has_header=False,
        skip_lines=header,
        schema=dict.fromkeys(names, pl.String),
        row_index_name=LINE_COLUMN,
        row_index_offset=1 + header,
    ).with_columns(pl.col(LINE_COLUMN).cast(pl.UInt64))
    meta = {
        "container": "csv",
        "lines": report.lines,
        "compression": raw.compression,
        "plain_path": str(raw.plain),
    }
    return raw.source, names, lf, header, meta


def _parquet_frame(path: Path, spec: SchemaParams, require_label: bool):
    lf = pl.scan_parquet(path)
    try:
        schema = lf.collect_schema()
    except pl.exceptions.PolarsError as e:
        raise DataFormatError(path, "parquet", f"not a readable Parquet file: {e}") from None
    names = list(schema.names())
    _check_declared(spec, names, path, require_label, None)
    strings = [
        pl.col(c).cast(pl.String)
        for c in {spec.label, *spec.numeric, *spec.categorical}
        if c in schema and not (c == spec.time_column and schema[c].is_temporal())
    ]
    lf = lf.with_row_index(LINE_COLUMN, offset=1).with_columns(
        pl.col(LINE_COLUMN).cast(pl.UInt64), *strings
    )
    return (
        path,
        names,
        lf,
        0,
        {
            "container": "parquet",
            "temporal_time": schema.get(spec.time_column, pl.Null).is_temporal(),
        },
    )


def _numeric_types(lf: pl.LazyFrame, columns: list[str], file: Path) -> dict[str, pl.DataType]:
    """Int64 for all-integral columns, Float64 for fractional ones; rule ``numeric`` otherwise."""
    if not columns:
        return {}
    aggs = []
    for c in columns:
        present = pl.col(c).is_not_null()
        aggs.append(
            pl.col(LINE_COLUMN)
            .filter(present & pl.col(c).cast(pl.Float64, strict=False).is_null())
            .min()
            .alias(f"{c}\x00bad")
        )
        aggs.append(
            (present & as_integer(pl.col(c), pl.Int64, float_ints=True).is_null())
            .any()
            .alias(f"{c}\x00frac")
        )
    stats = lf.select(aggs).collect(engine="streaming").row(0, named=True)
    bad = [(stats[f"{c}\x00bad"], c) for c in columns if stats[f"{c}\x00bad"] is not None]
    if bad:
        line, c = min(bad)
        value = lf.filter(pl.col(LINE_COLUMN) == line).select(c).head(1).collect().item()
        raise DataFormatError(
            file, "numeric", f"value {value[:40]!r} is not a number", line=int(line), column=c
        )
    return {c: pl.Float64 if stats[f"{c}\x00frac"] else pl.Int64 for c in columns}


def _time_expr(lf: pl.LazyFrame, column: str, file: Path, temporal: bool) -> pl.Expr:
    """``__time`` Int64: integers as they are, dates/datetimes as epoch seconds."""
    col = pl.col(column)
    if temporal:
        return col.dt.epoch("s").alias(TIME_COLUMN)
    integral = as_integer(col, pl.Int64, float_ints=True)
    if (
        not lf.select((col.is_not_null() & integral.is_null()).any())
        .collect(engine="streaming")
        .item()
    ):
        return integral.alias(TIME_COLUMN)
    try:
        parsed = col.str.to_datetime(strict=False).dt.epoch("s")
        bad = (
            lf.select(pl.col(LINE_COLUMN).filter(col.is_not_null() & parsed.is_null()).min())
            .collect()
            .item()
        )
    except pl.exceptions.PolarsError:
        bad, parsed = (
            lf.select(pl.col(LINE_COLUMN).filter(col.is_not_null()).min()).collect().item(),
            None,
        )
    if bad is not None:
        value = lf.filter(pl.col(LINE_COLUMN) == bad).select(column).head(1).collect().item()
        raise DataFormatError(
            file,
            "time",
            f"value {value[:40]!r} is neither an integer nor a date/datetime",
            line=int(bad),
            column=column,
        )
    return parsed.alias(TIME_COLUMN)


def read_schema(
    path: str | Path, *, params: Params, work_dir: Path | None = None, require_label: bool = True,
    remember_structure: bool = False,
) -> SourceTable:
    """Read a CSV / Parquet log as declared by ``params.schema_spec`` into a lazy :class:`SourceTable`."""
    spec = params.schema_spec
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0 and _is_parquet(path):
        source, names, lf, header, meta = _parquet_frame(path, spec, require_label)
    else:
        source, names, lf, header, meta = _csv_frame(path, spec, params, work_dir, require_label,
                                                          remember_structure)
    has_label = spec.label in names
    try:
        if has_label:
            check_integers(lf, {spec.label: pl.Int8}, file=source, float_ints=True)
        numeric = _numeric_types(lf, list(spec.numeric), source)
        time = (
            _time_expr(lf, spec.time_column, source, meta.pop("temporal_time", False))
            if spec.time_column
            else None
        )
    except pl.exceptions.PolarsError as e:
        raise DataFormatError(
            source, "csv_parse", f"the file could not be parsed: {str(e)[:400]}"
        ) from None
    declared = set(spec.categorical) | set(spec.numeric)
    field_names = [c for c in names if c in declared]
    fields = tuple(FieldSpec(c, "numeric" if c in numeric else "categorical") for c in field_names)
    label = (
        as_integer(pl.col(spec.label), pl.Int8, float_ints=True)
        if has_label
        else pl.lit(None, dtype=pl.Int8)
    )
    columns = [pl.col(LINE_COLUMN), label.alias(LABEL)]
    for c in field_names:
        if c in numeric:
            cast = (
                as_integer(pl.col(c), pl.Int64, float_ints=True)
                if numeric[c] == pl.Int64
                else pl.col(c).cast(pl.Float64)
            )
            columns.append(cast.alias(c))
        else:
            columns.append(pl.col(c).cast(pl.String))
    extra: tuple[str, ...] = ()
    if time is not None:
        if spec.time_column not in declared and spec.time_column != spec.label:
            columns.append(pl.col(spec.time_column))
            extra = (spec.time_column,)
        columns.append(time)
    return SourceTable(
        format="schema",
        files=(source,),
        lazy=lf.select(columns),
        fields=fields,
        extra=extra,
        time_column=TIME_COLUMN if time is not None else None,
        header_lines=header,
        meta=meta,
    )
