"""The contract every raw-format reader fulfils.

A reader turns one raw log (one or more files) into a :class:`SourceTable`: a Polars LazyFrame
with typed columns, plus the list of model fields. Readers never collect the whole file; they run a
streamed structural check first (:mod:`components.data.rawfile`) that raises
:class:`~components.data.errors.DataFormatError` naming file, line and column.

Columns of ``SourceTable.lazy``:

- ``LINE_COLUMN`` (UInt64): 1-based line number in ``files[0]`` (the main log) of each row, so
  later checks can point at the offending line.
- ``label`` (Int8, 0/1; may be null only if the input is broken — the gate checks it).
- one column per field in ``fields``: numeric fields as Int64 (Float64 where the source has
  fractional values), categorical fields as String (missing = null).
- ``extra`` columns the validation suite needs but models do not (e.g. Avazu ``hour`` as the raw
  YYMMDDHH string, MovieLens ``rating`` and ``timestamp``).
- ``time_column`` (if not None) is a sortable Int64 column used by the time-ordered split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

LINE_COLUMN = "__line"
LABEL = "label"

FieldKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FieldSpec:
    """One model input field of a source."""

    name: str
    kind: FieldKind


@dataclass(frozen=True)
class SourceTable:
    """A raw log, parsed lazily into typed columns (see module docstring for the columns)."""

    format: str
    files: tuple[Path, ...]
    lazy: pl.LazyFrame
    fields: tuple[FieldSpec, ...]
    extra: tuple[str, ...] = ()
    time_column: str | None = None
    header_lines: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.fields if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.fields if f.kind == "categorical"]

    @property
    def main_file(self) -> Path:
        return self.files[0]
