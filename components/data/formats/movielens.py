"""MovieLens 100K and 1M: ratings joined to user and item side features.

``path`` is the dataset directory (or its ratings file); the variant is told by the files present:

- 100K: ``u.data`` (tab: user item rating timestamp), ``u.user`` (``id|age|gender|occupation|zip``),
  ``u.item`` (``id|title|release date|video date|url|`` + 19 genre flags, latin-1).
- 1M: ``ratings.dat`` (``user::item::rating::timestamp``), ``users.dat``
  (``id::gender::age::occupation::zip``), ``movies.dat`` (``id::title::genres``, latin-1).

Every file gets the structural scan (``::`` is split vectorised per line) and integer checks of
its ids (and ratings, timestamps, ages, genre flags); side-table ids must be unique and every
rating's user and item must exist (rules ``duplicate_id`` / ``unknown_id``).

Output columns: ``LINE_COLUMN`` (line in the ratings file); ``label`` (Int8) = rating >=
``params.preprocess.rating_threshold``; rows with rating 3 are dropped when
``params.preprocess.drop_neutral_rating``. Fields, all categorical String: ``user_id``,
``item_id``, ``gender``, ``age`` (years in 100K, the age-group code in 1M), ``occupation`` (name
in 100K, code in 1M), ``zip``, ``genre`` (the FIRST listed genre: the first set flag in the
100K genre order, the first token of the 1M genre list), ``year`` (release year from the title's
``(YYYY)``, else from the 100K release date). Extra: ``rating`` and ``timestamp`` (Int64); time
column ``timestamp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from components.config import Params
from components.data.errors import DataFormatError
from components.data.formats.base import LABEL, LINE_COLUMN, FieldSpec, SourceTable
from components.data.formats.typecheck import as_integer, check_integers
from components.data.rawfile import LineLayout, RawFile, check_structure, open_raw, scan_fields

GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
FLAGS_100K = tuple(f"genre_{i}" for i in range(len(GENRES_100K)))
FIELD_NAMES = ("user_id", "item_id", "gender", "age", "occupation", "zip", "genre", "year")
FIELDS = tuple(FieldSpec(c, "categorical") for c in FIELD_NAMES)
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class _Layout:
    """File names, separator and column names of one MovieLens release."""

    name: str
    separator: str
    ratings: str
    users: str
    items: str
    user_columns: tuple[str, ...]
    item_columns: tuple[str, ...]


ML_100K = _Layout(
    "100k",
    "\t",
    "u.data",
    "u.user",
    "u.item",
    ("user_id", "age", "gender", "occupation", "zip"),
    ("item_id", "title", "release_date", "video_release_date", "imdb_url", *FLAGS_100K),
)
ML_1M = _Layout(
    "1m",
    "::",
    "ratings.dat",
    "users.dat",
    "movies.dat",
    ("user_id", "gender", "age", "occupation", "zip"),
    ("item_id", "title", "genres"),
)


def _detect(path: Path) -> tuple[Path, _Layout]:
    directory = path.parent if path.is_file() else path
    for layout in (ML_100K, ML_1M):
        if (directory / layout.ratings).is_file():
            return directory, layout
    raise DataFormatError(
        path,
        "movielens_files",
        "not a MovieLens directory: expected u.data, u.user, u.item (100K) or ratings.dat, "
        "users.dat, movies.dat (1M)",
    )


def _read_delimited(
    path: Path,
    separator: str,
    names: tuple[str, ...],
    integers: dict,
    params: Params,
    work_dir: Path | None,
    encoding: str = "utf-8",
) -> tuple[RawFile, pl.LazyFrame]:
    """One MovieLens file: opened, structure-checked, split into String columns, integers checked."""
    raw = open_raw(path, work_dir, encoding=encoding)
    check_structure(raw, LineLayout(separator, len(names), names), max_field_bytes=params.validation.max_field_bytes)
    lf = scan_fields(raw.plain, names, separator)
    check_integers(lf, integers, file=raw.source)
    return raw, lf


def _check_unique(lf: pl.LazyFrame, key: str, file: Path) -> None:
    dup = lf.filter(pl.col(key).is_not_null() & ~pl.col(key).is_first_distinct())
    row = dup.select(
        pl.col(LINE_COLUMN).min(), pl.col(key).sort_by(LINE_COLUMN).first(), pl.len()
    ).collect()
    line, value, count = row.row(0)
    if count:
        raise DataFormatError(
            file,
            "duplicate_id",
            f"{key} {value} appears more than once ({count} duplicate lines)",
            line=int(line),
            column=key,
        )


def _check_present(ratings: pl.LazyFrame, file: Path) -> None:
    firsts = ratings.select(
        pl.col(LINE_COLUMN).filter(pl.col(c).is_null()).min().alias(c) for c in RATING_COLUMNS
    )
    hits = [
        (line, c)
        for c, line in firsts.collect(engine="streaming").row(0, named=True).items()
        if line is not None
    ]
    if hits:
        line, column = min(hits)
        raise DataFormatError(
            file,
            "missing_value",
            f"{column} is empty; every rating needs it",
            line=int(line),
            column=column,
        )


def _check_known(
    ratings: pl.LazyFrame, side: pl.LazyFrame, key: str, ratings_file: Path, side_file: Path
) -> None:
    orphans = ratings.join(side.select(key), on=key, how="anti")
    row = orphans.select(
        pl.col(LINE_COLUMN).min(), pl.col(key).sort_by(LINE_COLUMN).first(), pl.len()
    ).collect()
    line, value, count = row.row(0)
    if count:
        raise DataFormatError(
            ratings_file,
            "unknown_id",
            f"{key} {value} does not appear in {side_file.name} ({count} ratings refer to unknown ids)",
            line=int(line),
            column=key,
        )


def read_movielens(
    path: str | Path, *, params: Params, work_dir: Path | None = None, require_label: bool = True,
    remember_structure: bool = False,
) -> SourceTable:
    """Parse a MovieLens 100K / 1M directory into a lazy :class:`SourceTable` (ratings ⋈ users ⋈ items).

    ``require_label`` has no effect: the label always comes from the rating. ``remember_structure``
    neither (the readers' common signature): MovieLens files are small, their scan is always run.
    """
    directory, ml = _detect(Path(path))
    int64 = pl.Int64
    r_raw, ratings = _read_delimited(
        directory / ml.ratings,
        ml.separator,
        RATING_COLUMNS,
        dict.fromkeys(RATING_COLUMNS, int64),
        params,
        work_dir,
    )
    user_sep = "|" if ml is ML_100K else "::"
    u_raw, users = _read_delimited(
        directory / ml.users,
        user_sep,
        ml.user_columns,
        {"user_id": int64, "age": int64},
        params,
        work_dir,
    )
    item_ints = (
        {"item_id": int64, **dict.fromkeys(FLAGS_100K, pl.Int8)}
        if ml is ML_100K
        else {"item_id": int64}
    )
    i_raw, items = _read_delimited(
        directory / ml.items,
        user_sep,
        ml.item_columns,
        item_ints,
        params,
        work_dir,
        encoding="latin-1",
    )

    ratings = ratings.with_columns(as_integer(pl.col(c), int64) for c in RATING_COLUMNS)
    users = users.with_columns(as_integer(pl.col("user_id"), int64))
    year = pl.col("title").str.extract(r".*\((\d{4})\)", 1)
    if ml is ML_100K:
        genre = pl.coalesce(
            pl.when(pl.col(f) == "1").then(pl.lit(g))
            for f, g in zip(FLAGS_100K, GENRES_100K, strict=True)
        )
        year = pl.coalesce(year, pl.col("release_date").str.extract(r"(\d{4})\s*$", 1))
    else:
        genre = pl.col("genres").str.extract(r"^([^|]+)", 1)
    items = items.select(
        as_integer(pl.col("item_id"), int64),
        genre.alias("genre"),
        year.alias("year"),
        pl.col(LINE_COLUMN),
    )

    _check_present(ratings, r_raw.source)
    _check_unique(users, "user_id", u_raw.source)
    _check_unique(items, "item_id", i_raw.source)
    _check_known(ratings, users, "user_id", r_raw.source, u_raw.source)
    _check_known(ratings, items, "item_id", r_raw.source, i_raw.source)

    pre = params.preprocess
    joined = ratings.join(
        users.drop(LINE_COLUMN), on="user_id", how="left", maintain_order="left"
    ).join(items.drop(LINE_COLUMN), on="item_id", how="left", maintain_order="left")
    if pre.drop_neutral_rating:
        joined = joined.filter(pl.col("rating") != 3)
    typed = joined.select(
        pl.col(LINE_COLUMN),
        (pl.col("rating") >= pre.rating_threshold).cast(pl.Int8).alias(LABEL),
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("gender"),
        as_integer(pl.col("age"), int64).cast(pl.String).alias("age"),
        pl.col("occupation"),
        pl.col("zip"),
        pl.col("genre"),
        pl.col("year"),
        pl.col("rating"),
        pl.col("timestamp"),
    )
    return SourceTable(
        format="movielens",
        files=(r_raw.source, u_raw.source, i_raw.source),
        lazy=typed,
        fields=FIELDS,
        extra=("rating", "timestamp"),
        time_column="timestamp",
        meta={
            "variant": ml.name,
            "rating_threshold": pre.rating_threshold,
            "drop_neutral_rating": pre.drop_neutral_rating,
            "plain_path": str(r_raw.plain),
            "compression": r_raw.compression,
            "crlf": r_raw.crlf,
        },
    )
