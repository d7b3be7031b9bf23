"""Vectorised type checks shared by the readers: integers written as text, with line-level errors.

A reader scans every field as String, then for each integer column casts with ``strict=False``:
a row whose raw value is not null but whose cast is null is bad. One streaming aggregate finds the
first bad line per column and the count; the earliest line wins and is raised as a
:class:`~components.data.errors.DataFormatError` with rule ``integer`` naming line and column.

:func:`integer_pattern` gives a regular expression of values that surely pass (a sign and few
enough digits to fit the dtype): the structural scan matches whole lines against it
(:class:`~components.data.rawfile.LineLayout` ``field_patterns``) so that the exact check above
runs only on the rare lines that do not match.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from components.data.errors import DataFormatError
from components.data.formats.base import LINE_COLUMN


def as_integer(expr: pl.Expr, dtype: pl.DataType, *, float_ints: bool = False) -> pl.Expr:
    """``expr`` (String) cast to integer ``dtype``; null where it is not an integer of that dtype.

    With ``float_ints`` a value written as an integral float (``"260.0"``) is accepted too.
    """
    if not float_ints:
        return expr.cast(dtype, strict=False)
    as_float = expr.cast(pl.Float64, strict=False)
    return pl.when(as_float == as_float.floor()).then(as_float.cast(dtype, strict=False))


_DIGITS = {  # digits that always fit: 10**d - 1 <= max of the dtype
    pl.Int8: 2, pl.Int16: 4, pl.Int32: 9, pl.Int64: 18,
    pl.UInt8: 2, pl.UInt16: 4, pl.UInt32: 9, pl.UInt64: 19,
}
_FLOAT_EXACT_DIGITS = 15  # integers of up to 15 digits are exact in Float64


def integer_pattern(dtype: pl.DataType, *, float_ints: bool = False) -> str:
    """Regex (Rust syntax, unanchored) of strings :func:`as_integer` surely accepts for ``dtype``.

    Empty, or an optional sign (``+`` only for unsigned dtypes) and 1 to d ASCII digits where
    every d-digit number fits ``dtype``; with ``float_ints`` also a ``.0…`` fraction. A value
    outside the pattern may still be valid (e.g. 19 digits in Int64): it is checked exactly.
    """
    digits = _DIGITS[dtype]
    sign = "[+-]?" if dtype.is_signed_integer() else "[+]?"
    if float_ints:
        return f"(?:{sign}[0-9]{{1,{min(digits, _FLOAT_EXACT_DIGITS)}}}(?:\\.0+)?)?"
    return f"(?:{sign}[0-9]{{1,{digits}}})?"


def check_integers(
    lf: pl.LazyFrame,
    columns: Mapping[str, pl.DataType],
    *,
    file: str | Path,
    float_ints: bool = False,
) -> None:
    """Raise ``DataFormatError(rule="integer")`` at the first line where a non-empty value of one
    of ``columns`` (String columns of ``lf``, which carries ``LINE_COLUMN``) is not an integer of
    the dtype given for it (out of range counts as not an integer). Does nothing if all parse.
    """
    if not columns:
        return
    aggs = []
    for name, dtype in columns.items():
        bad = (
            pl.col(name).is_not_null()
            & as_integer(pl.col(name), dtype, float_ints=float_ints).is_null()
        )
        aggs.append(pl.col(LINE_COLUMN).filter(bad).min().alias(f"{name}\x00first"))
        aggs.append(bad.sum().alias(f"{name}\x00count"))
    stats = lf.select(aggs).collect(engine="streaming").row(0, named=True)
    hits = [
        (stats[f"{name}\x00first"], order, name)
        for order, name in enumerate(columns)
        if stats[f"{name}\x00first"] is not None
    ]
    if not hits:
        return
    line, _, name = min(hits)
    value = lf.filter(pl.col(LINE_COLUMN) == line).select(name).head(1).collect().item()
    count = stats[f"{name}\x00count"]
    shown = value if len(value) <= 40 else value[:40] + "…"
    kind = "an integral number" if float_ints else "an integer"
    dtype_name = str(columns[name])
    raise DataFormatError(
        file,
        "integer",
        f"value {shown!r} is not {kind} ({dtype_name}); {count} value(s) in this column are bad",
        line=int(line),
        column=name,
    )
