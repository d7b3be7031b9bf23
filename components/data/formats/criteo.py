"""Criteo display-advertising logs (Kaggle ``dac`` / Terabyte day files).

Variants, told apart by line 1:

- ``kaggle``: tab-separated, no header, 40 fields: ``label``, ``I1``–``I13`` (integers, may be
  empty or negative), ``C1``–``C26`` (8-hex-char hashes, may be empty). Plain or compressed.
- ``kaggle_unlabelled`` (only with ``require_label=False``): the 39-field test format without
  ``label``. The table still has a ``label`` column, all null (Int8), so the schema is the same.
- ``deepctr_csv``: DeepCTR's comma-separated sample with header ``label,I1..I13,C1..C26`` whose
  integers are written as floats (``260.0``); accepted when integral, read as Int64.

Output columns: ``LINE_COLUMN``, ``label`` (Int8), ``I1``–``I13`` (Int64, numeric fields),
``C1``–``C26`` (String, categorical fields); empty fields are null. No time column.

Checks, reading the text once: the byte pass of :func:`~components.data.rawfile.open_raw`, then
ONE streaming structural query (:func:`~components.data.rawfile.checked_structure`) that also
matches the label and integer fields of every line against
:func:`~components.data.formats.typecheck.integer_pattern`. Only lines that do not match (none in
a clean Kaggle file) get the exact integer check. When every line matched, the returned table
parses label and integers as Int8 / Int64 directly in the CSV reader (same values as the
String → integer cast, less work downstream).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from components.config import Params
from components.data.errors import DataFormatError
from components.data.formats.base import LABEL, LINE_COLUMN, FieldSpec, SourceTable
from components.data.formats.typecheck import as_integer, check_integers, integer_pattern
from components.data.rawfile import (
    LineLayout,
    checked_structure,
    open_raw,
    read_first_line,
    scan_fields,
    unmatched_fields,
)

INT_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CAT_COLUMNS = tuple(f"C{i}" for i in range(1, 27))
FEATURE_COLUMNS = INT_COLUMNS + CAT_COLUMNS
COLUMNS = (LABEL, *FEATURE_COLUMNS)
FIELDS = tuple(FieldSpec(c, "numeric") for c in INT_COLUMNS) + tuple(
    FieldSpec(c, "categorical") for c in CAT_COLUMNS
)

_INTEGER = re.compile(r"[+-]?\d+")
_HEADER_TOKENS = frozenset(COLUMNS) | {"click", "Label"}


def _variant(first_line: str, source: Path, require_label: bool) -> str:
    """Which Criteo variant line 1 announces; raises ``no_header`` for a header on the TSV."""
    if first_line.split(",") == list(COLUMNS):
        return "deepctr_csv"
    tab_fields = first_line.split("\t")
    tokens = set(tab_fields) | set(first_line.split(","))
    looks_header = bool(tokens & _HEADER_TOKENS) or (
        len(tab_fields) in (len(COLUMNS), len(FEATURE_COLUMNS))
        and tab_fields[0] != ""
        and not _INTEGER.fullmatch(tab_fields[0])
    )
    if looks_header:
        raise DataFormatError(
            source,
            "no_header",
            f"line 1 looks like a header ({first_line[:60]!r}…); the Criteo TSV format has no header "
            "line: delete it (or use the `schema` format for a CSV with a header)",
            line=1,
        )
    if not require_label and len(tab_fields) == len(FEATURE_COLUMNS):
        return "kaggle_unlabelled"
    return "kaggle"


def read_criteo(
    path: str | Path, *, params: Params, work_dir: Path | None = None, require_label: bool = True,
    remember_structure: bool = False,
) -> SourceTable:
    """Parse a Criteo log into a lazy :class:`SourceTable` after the structural and integer checks."""
    raw = open_raw(path, work_dir, store_dir=params.validation.cache_dir if remember_structure else None)
    variant = _variant(read_first_line(raw), raw.source, require_label)
    names = FEATURE_COLUMNS if variant == "kaggle_unlabelled" else COLUMNS
    separator, header_lines = (
        ("," if variant == "deepctr_csv" else "\t"),
        int(variant == "deepctr_csv"),
    )
    float_ints = variant == "deepctr_csv"
    int_types = {c: pl.Int64 for c in INT_COLUMNS}
    if variant != "kaggle_unlabelled":
        int_types = {LABEL: pl.Int8, **int_types}
    layout = LineLayout(
        separator,
        len(names),
        names,
        field_patterns=tuple(
            (c, integer_pattern(t, float_ints=float_ints)) for c, t in int_types.items()
        ),
        header_lines=header_lines,
    )
    report = checked_structure(raw, layout, max_field_bytes=params.validation.max_field_bytes,
                               store_dir=params.validation.cache_dir if remember_structure else None)
    if report.unmatched_lines:
        check_integers(
            unmatched_fields(raw, layout), int_types, file=raw.source, float_ints=float_ints
        )
    if report.unmatched_lines == 0 and not float_ints:
        # every value matched integer_pattern: the CSV reader parses them to the same integers
        lf = scan_fields(raw.plain, names, separator, header_lines=header_lines, dtypes=int_types)
        label = pl.col(LABEL) if LABEL in int_types else pl.lit(None, dtype=pl.Int8).alias(LABEL)
        ints = [pl.col(c) for c in INT_COLUMNS]
    else:
        lf = scan_fields(raw.plain, names, separator, header_lines=header_lines)
        label = (
            as_integer(pl.col(LABEL), pl.Int8, float_ints=float_ints).alias(LABEL)
            if LABEL in int_types
            else pl.lit(None, dtype=pl.Int8).alias(LABEL)
        )
        ints = [as_integer(pl.col(c), pl.Int64, float_ints=float_ints).alias(c) for c in INT_COLUMNS]
    typed = lf.select(pl.col(LINE_COLUMN), label, *ints, *(pl.col(c) for c in CAT_COLUMNS))
    return SourceTable(
        format="criteo",
        files=(raw.source,),
        lazy=typed,
        fields=FIELDS,
        header_lines=header_lines,
        meta={
            "variant": variant,
            "lines": report.lines,
            "typed_scan": report.unmatched_lines == 0 and not float_ints,
            "compression": raw.compression,
            "crlf": raw.crlf,
            "plain_path": str(raw.plain),
        },
    )
