"""Raw-format readers: the registry and :func:`read_source`, the one entry point.

Each reader (``criteo``, ``avazu``, ``movielens``, ``schema``) runs the streamed structural scan
of :mod:`components.data.rawfile`, then vectorised type checks, and returns a lazy
:class:`~components.data.formats.base.SourceTable`. Bad input raises
:class:`~components.data.errors.DataFormatError` naming file, line, column and rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from components.config import Params
from components.data.formats.avazu import read_avazu
from components.data.formats.base import LABEL, LINE_COLUMN, FieldSpec, SourceTable
from components.data.formats.criteo import read_criteo
from components.data.formats.movielens import read_movielens
from components.data.formats.schema import read_schema

__all__ = ["FORMATS", "LABEL", "LINE_COLUMN", "FieldSpec", "SourceTable", "read_source"]


class Reader(Protocol):
    def __call__(
        self,
        path: str | Path,
        *,
        params: Params,
        work_dir: Path | None = None,
        require_label: bool = True,
        remember_structure: bool = False,
    ) -> SourceTable: ...


FORMATS: dict[str, Reader] = {
    "criteo": read_criteo,
    "avazu": read_avazu,
    "movielens": read_movielens,
    "schema": read_schema,
}


def read_source(
    fmt: str,
    path: str | Path,
    *,
    params: Params | None = None,
    work_dir: Path | None = None,
    require_label: bool = True,
    remember_structure: bool = False,
) -> SourceTable:
    """Read the raw log at ``path`` in format ``fmt`` (a key of :data:`FORMATS`) lazily.

    ``params`` defaults to ``Params()`` (``validate.max_field_bytes``, ``preprocess.rating_threshold``
    / ``drop_neutral_rating`` and the ``schema`` section are used). Decompressed / transcoded
    copies go to ``work_dir`` (default: a per-process temporary directory removed at exit); the
    returned LazyFrame reads them, so keep ``work_dir`` until the table has been consumed.
    ``require_label=False`` accepts unlabelled files (Criteo/Avazu test format, schema without
    label) and yields an all-null Int8 ``label`` column. ``remember_structure``: a passed structural
    scan is stored under ``validate.cache_dir`` and reused for the same unchanged file
    (:func:`components.data.rawfile.checked_structure`; the gate and preprocessing, not predict).
    """
    try:
        reader = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown raw format {fmt!r}; known formats: {sorted(FORMATS)}") from None
    return reader(path, params=params or Params(), work_dir=work_dir, require_label=require_label,
                  remember_structure=remember_structure)
