"""Synthetic MovieLens (100K layout): ``u.data``, ``u.user`` and ``u.item`` in one directory.

- ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``, no header, one row per rating;
- ``u.user``: ``id|age|gender|occupation|zip``;
- ``u.item``: ``id|title (year)|release date|video release date|IMDb URL|`` + 19 genre flags.

Users and items scale with the log like the real releases (943 users / 1,682 items at 100k
ratings, about 6k / 4.2k at 1M). User activity and item popularity are Zipf (ids shuffled).
A rating's label (``rating >= 4``) is drawn from the hidden model, then the rating from the label:
4 or 5 when positive, 1-3 when negative, in the real proportions, so ``P(rating >= 4) = p``.
Dropping rating 3 keeps the ranking by ``p`` (the neutral share of negatives is constant).

Logit fields: user, item, age group, gender, occupation, decade of release, primary genre; the
planted terms include the classic user x item latent dot product, see :data:`INTERACTIONS`.
Pairs of (user, item) may repeat (real MovieLens has each pair at most once).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa

from components.data.synthetic.base import Block
from components.data.synthetic.planted import FirstOrder, Interaction
from components.data.synthetic.zipf import zipf_table

OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
OCCUPATION_WEIGHTS = (8, 3, 1, 10, 7, 2, 3, 2, 1, 1, 5, 3, 1, 11, 7, 1, 1, 3, 20, 3, 5)
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# primary-genre weights (index 0 "unknown" never primary)
GENRE_WEIGHTS = (0, 10, 5, 2, 3, 18, 4, 2, 25, 1, 1, 4, 2, 2, 6, 4, 7, 2, 2)
AGE_GROUP_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M age groups
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
FIRST_TIMESTAMP = 874_724_710  # 1997-09-20
LAST_TIMESTAMP = 893_286_638  # 1998-04-22
# P(rating = 5 | positive); P(rating = 1, 2, 3 | negative)
FIVE_GIVEN_POSITIVE = 0.38
NEGATIVE_RATINGS = (0.14, 0.25, 0.61)

INTERACTIONS: tuple[Interaction, ...] = (
    Interaction(("user", "item"), rank=8, scale=0.9),
    Interaction(("gender", "genre"), rank=2, scale=0.4),
    Interaction(("age", "genre"), rank=3, scale=0.4),
    Interaction(("occupation", "decade"), rank=2, scale=0.3),
    Interaction(("age", "gender", "decade"), rank=2, scale=0.4),
)
FIRST_ORDER = {
    "user": 0.5, "item": 0.7, "age": 0.15, "gender": 0.1, "occupation": 0.15,
    "genre": 0.2, "decade": 0.2,
}  # fmt: skip


def population(rows: int) -> tuple[int, int]:
    """(users, items) for a log of ``rows`` ratings, following the MovieLens releases."""
    users = max(20, round(rows / 106))
    items = max(20, round(1682 * (rows / 100_000) ** 0.4))
    return users, items


class MovieLensFormat:
    """MovieLens 100K files; the log is ``u.data``."""

    name = "movielens"
    target_ctr = 0.55
    separator = "\t"
    header = False
    interactions = INTERACTIONS

    def __init__(self, rows: int, rng: np.random.Generator) -> None:
        self.n_users, self.n_items = population(rows)
        self.user_zipf = zipf_table(self.n_users, 0.6)
        self.item_zipf = zipf_table(self.n_items, 1.0)
        self.user_of_rank = np.concatenate([[0], rng.permutation(self.n_users) + 1])
        self.item_of_rank = np.concatenate([[0], rng.permutation(self.n_items) + 1])
        self._draw_users(rng)
        self._draw_items(rng)
        self.sizes = {
            "user": self.n_users + 1,
            "item": self.n_items + 1,
            "age": len(AGE_GROUP_EDGES) + 2,
            "gender": 3,
            "occupation": len(OCCUPATIONS) + 1,
            "genre": len(GENRES) + 1,
            "decade": 9 + 1,
        }
        self.first_order = {f: FirstOrder(sd) for f, sd in FIRST_ORDER.items()}

    def _draw_users(self, rng: np.random.Generator) -> None:
        n = self.n_users
        self.age = np.clip(np.round(7 + rng.gamma(4.0, 6.8, n)), 7, 73).astype(np.int64)
        self.male = rng.random(n) < 0.71
        weights = np.array(OCCUPATION_WEIGHTS, dtype=np.float64)
        self.occupation = rng.choice(len(OCCUPATIONS), size=n, p=weights / weights.sum())
        self.zip = rng.integers(0, 100_000, n)
        # logit indices per user id (index 0 unused)
        self.user_age = np.concatenate(
            [[0], np.searchsorted(AGE_GROUP_EDGES, self.age, "right") + 1]
        )
        self.user_gender = np.concatenate([[0], np.where(self.male, 1, 2)])
        self.user_occupation = np.concatenate([[0], self.occupation + 1])

    def _draw_items(self, rng: np.random.Generator) -> None:
        n = self.n_items
        self.year = np.clip(1998 - np.round(rng.exponential(7.0, n)), 1922, 1998).astype(np.int64)
        self.month = rng.integers(0, 12, n)
        self.day = rng.integers(1, 29, n)
        weights = np.array(GENRE_WEIGHTS, dtype=np.float64)
        p = weights / weights.sum()
        primary = rng.choice(len(GENRES), size=n, p=p)
        second = rng.choice(len(GENRES), size=n, p=p)
        third = rng.choice(len(GENRES), size=n, p=p)
        flags = np.zeros((n, len(GENRES)), dtype=np.int8)
        rows = np.arange(n)
        flags[rows, primary] = 1
        has_second = rng.random(n) < 0.5
        flags[rows[has_second], second[has_second]] = 1
        has_third = rng.random(n) < 0.15
        flags[rows[has_third], third[has_third]] = 1
        self.genre_flags = flags
        self.item_genre = np.concatenate([[0], primary + 1])
        self.item_decade = np.concatenate([[0], np.clip((self.year - 1920) // 10, 0, 8) + 1])

    def sample(self, rng: np.random.Generator, positions: np.ndarray) -> Block:
        """Draw one rating event per position: user, item, timestamp, and rating uniforms."""
        n = len(positions)
        user = self.user_of_rank[self.user_zipf.ranks(rng.random(n))]
        item = self.item_of_rank[self.item_zipf.ranks(rng.random(n))]
        timestamp = rng.integers(FIRST_TIMESTAMP, LAST_TIMESTAMP + 1, n)
        u_rating = rng.random(n)
        idx = {
            "user": user,
            "item": item,
            "age": self.user_age[user],
            "gender": self.user_gender[user],
            "occupation": self.user_occupation[user],
            "genre": self.item_genre[item],
            "decade": self.item_decade[item],
        }
        payload = {"user": user, "item": item, "timestamp": timestamp, "u_rating": u_rating}
        return Block(idx, payload, rng.random(n))

    def frame(self, payload: Mapping[str, np.ndarray], label: np.ndarray) -> pl.DataFrame:
        """u.data columns: user, item, rating (>= 4 exactly when label is 1), timestamp."""
        u = payload["u_rating"]
        neg_edges = np.cumsum(NEGATIVE_RATINGS)
        negative = np.minimum(np.searchsorted(neg_edges, u, side="right"), 2) + 1
        positive = np.where(u < FIVE_GIVEN_POSITIVE, 5, 4)
        rating = np.where(label == 1, positive, negative).astype(np.int64)
        return pl.from_arrow(
            pa.table(
                {
                    "user": pa.array(payload["user"].astype(np.int64)),
                    "item": pa.array(payload["item"].astype(np.int64)),
                    "rating": pa.array(rating),
                    "timestamp": pa.array(payload["timestamp"].astype(np.int64)),
                }
            )
        )

    def side_frames(self) -> dict[str, pl.DataFrame]:
        """``u.user`` and ``u.item`` as frames (written '|'-separated, no header)."""
        users = pl.DataFrame(
            {
                "id": np.arange(1, self.n_users + 1),
                "age": self.age,
                "gender": np.where(self.male, "M", "F"),
                "occupation": np.array(OCCUPATIONS)[self.occupation],
                "zip": pl.Series(self.zip).cast(pl.String).str.zfill(5),
            }
        )
        ids = np.arange(1, self.n_items + 1)
        items = pl.DataFrame({"id": ids, "year": self.year, "month": self.month, "day": self.day})
        title = pl.format("Synthetic Film {} ({})", pl.col("id"), pl.col("year"))
        month = pl.col("month").replace_strict(
            list(range(12)), list(MONTHS), return_dtype=pl.String
        )
        items = items.select(
            "id",
            title.alias("title"),
            pl.format(
                "{}-{}-{}", pl.col("day").cast(pl.String).str.zfill(2), month, pl.col("year")
            ).alias("release_date"),
            pl.lit("").alias("video_release_date"),
            pl.format(
                "http://us.imdb.com/M/title-exact?Synthetic%20Film%20{}%20({})",
                pl.col("id"),
                pl.col("year"),
            ).alias("url"),
        )
        flags = pl.DataFrame(self.genre_flags, schema=[f"g{i}" for i in range(len(GENRES))])
        return {"u.user": users, "u.item": pl.concat([items, flags], how="horizontal")}
