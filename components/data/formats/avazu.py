"""Avazu click logs (Kaggle "Click-Through Rate Prediction"): CSV with a header.

The header must be exactly :data:`HEADER` (``train``), or, with ``require_label=False``, the same
without ``click`` (``test``; ``label`` is then an all-null Int8 column).

Output columns: ``LINE_COLUMN``; ``label`` (Int8, = ``click``); the fields, all categorical
String: ``hour_of_day`` ("0".."23") and ``weekday`` ("0".."6", Monday = 0) derived from ``hour``
(YYMMDDHH, 20YY), then ``C1``, ``banner_pos``, ``site_*``, ``app_*``, ``device_*``, ``C14``–``C21``
as written; ``id`` is dropped. Extra: ``hour`` (raw String, so the validation gate can check its
format; a malformed hour gives null derived fields here, not an error). Time column ``__time``
(Int64, ``int(hour)``; sortable because YYMMDDHH is big-endian).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from components.config import Params
from components.data.errors import DataFormatError
from components.data.formats.base import LABEL, LINE_COLUMN, FieldSpec, SourceTable
from components.data.formats.typecheck import as_integer, check_integers
from components.data.rawfile import (
    LineLayout,
    checked_structure,
    open_raw,
    read_first_line,
    scan_fields,
)

HEADER = (
    "id",
    "click",
    "hour",
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
    "device_type",
    "device_conn_type",
    "C14",
    "C15",
    "C16",
    "C17",
    "C18",
    "C19",
    "C20",
    "C21",
)
UNLABELLED_HEADER = tuple(c for c in HEADER if c != "click")
RAW_FIELDS = tuple(c for c in HEADER if c not in ("id", "click", "hour"))
FIELDS = tuple(FieldSpec(c, "categorical") for c in ("hour_of_day", "weekday", *RAW_FIELDS))
TIME_COLUMN = "__time"


def _check_header(first_line: str, source: Path, require_label: bool) -> tuple[str, ...]:
    names = tuple(first_line.split(","))
    if names == HEADER or (not require_label and names == UNLABELLED_HEADER):
        return names
    want = ",".join(HEADER)
    if names == UNLABELLED_HEADER:
        why = "the header has no `click` column (a test file): pass require_label=False to read it"
    elif set(names) & set(HEADER):
        missing = [c for c in HEADER if c not in names]
        extra = [c for c in names if c not in HEADER]
        why = (
            f"columns missing: {missing}, unexpected: {extra}"
            if missing or extra
            else "columns in the wrong order"
        )
    elif tuple(first_line.split("\t")) in (HEADER, UNLABELLED_HEADER):
        why = "expected comma-separated, line looks tab-separated"
    else:
        why = "line 1 is not the Avazu header (the header is missing or the file is not Avazu CSV)"
    raise DataFormatError(source, "header", f"{why}; expected the header {want!r}", line=1)


def read_avazu(
    path: str | Path, *, params: Params, work_dir: Path | None = None, require_label: bool = True,
    remember_structure: bool = False,
) -> SourceTable:
    """Parse an Avazu CSV into a lazy :class:`SourceTable` after header, structure and label checks."""
    raw = open_raw(path, work_dir, store_dir=params.validation.cache_dir if remember_structure else None)
    names = _check_header(read_first_line(raw), raw.source, require_label)
    report = checked_structure(
        raw, LineLayout(",", len(names), names), max_field_bytes=params.validation.max_field_bytes,
        store_dir=params.validation.cache_dir if remember_structure else None,
    )
    lf = scan_fields(raw.plain, names, ",", header_lines=1)
    labelled = "click" in names
    if labelled:
        check_integers(lf, {"click": pl.Int8}, file=raw.source)
    hour = pl.col("hour")
    date = hour.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False)
    hour_of_day = hour.str.slice(6, 2).cast(pl.Int64, strict=False)
    valid = hour.str.len_bytes() == 8
    typed = lf.select(
        pl.col(LINE_COLUMN),
        (as_integer(pl.col("click"), pl.Int8) if labelled else pl.lit(None, dtype=pl.Int8)).alias(
            LABEL
        ),
        pl.when(valid & hour_of_day.is_between(0, 23))
        .then(hour_of_day.cast(pl.String))
        .alias("hour_of_day"),
        pl.when(valid).then((date.dt.weekday() - 1).cast(pl.String)).alias("weekday"),
        *(pl.col(c) for c in RAW_FIELDS),
        hour,
        pl.when(valid).then(hour.cast(pl.Int64, strict=False)).alias(TIME_COLUMN),
    )
    return SourceTable(
        format="avazu",
        files=(raw.source,),
        lazy=typed,
        fields=FIELDS,
        extra=("hour",),
        time_column=TIME_COLUMN,
        header_lines=1,
        meta={
            "variant": "train" if labelled else "test",
            "lines": report.lines,
            "compression": raw.compression,
            "crlf": raw.crlf,
            "plain_path": str(raw.plain),
        },
    )
