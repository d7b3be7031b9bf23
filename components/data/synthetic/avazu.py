"""Synthetic Avazu log: the Kaggle ``train`` CSV layout, header included.

Columns: ``id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,
app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14..C21``.

- ``id`` is a unique unsigned 64-bit number (a seeded bijection of the row number);
- ``hour`` (YYMMDDHH) runs through 10 days from 14102100 in file order, with a daily cycle in
  traffic;
- a row is site traffic or app traffic: app rows carry one fixed "no site" value in the three
  site columns and site rows one "no app" value in the app columns, as in the real data;
  domain and category are functions of the site (app) id;
- hashed columns are 8-hex strings, Zipf over Avazu's vocabulary sizes (device_id / device_ip
  divided by 10), device_id with one dominant value; the integer columns draw from value pools
  shaped like the real ones (C20 is -1 for about half the rows). No field is empty.

Hour of day, every column but ``id`` and the planted interactions in :data:`INTERACTIONS` enter
the logit. Target CTR 17 % (the real train set's).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa

from components.data.synthetic.base import Block
from components.data.synthetic.hexcodes import hex_codes, hex_column
from components.data.synthetic.planted import FirstOrder, Interaction
from components.data.synthetic.zipf import ZipfTable, zipf_table

COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip

FIRST_HOUR = 14102100
DAYS = 10
APP_SHARE = 0.3
RARE_HALF = 300.0  # first-order weights shrink past this frequency rank

# Drawn hashed columns: (vocabulary size, Zipf exponent, head share or None).
HASHED: dict[str, tuple[int, float, float | None]] = {
    "site_id": (4737, 1.62, None),
    "app_id": (8552, 1.35, None),
    "device_id": (268_641, 0.60, 0.82),
    "device_ip": (672_948, 0.76, None),
    "device_model": (8251, 0.91, None),
}
# Hashed columns that are a function of the site (app) id: (parent, vocabulary, Zipf exponent).
DERIVED: dict[str, tuple[str, int, float]] = {
    "site_domain": ("site_id", 7745, 1.35),
    "site_category": ("site_id", 26, 1.50),
    "app_domain": ("app_id", 559, 1.98),
    "app_category": ("app_id", 36, 1.94),
}
# Integer columns with fixed value pools (most frequent first) and their Zipf exponent.
FIXED_POOLS: dict[str, tuple[tuple[int, ...], float]] = {
    "C1": ((1005, 1002, 1010, 1012, 1007, 1001, 1008), 3.92),
    "banner_pos": ((0, 1, 7, 2, 4, 5, 3), 2.27),
    "device_type": ((1, 0, 4, 5, 2), 3.90),
    "device_conn_type": ((0, 2, 3, 5), 3.10),
    "C15": ((320, 300, 216, 728, 120, 1024, 480, 768), 4.10),
    "C16": ((50, 250, 36, 480, 90, 20, 768, 1024, 320), 4.31),
    "C18": ((0, 3, 2, 1), 1.51),
}
# Integer columns with seeded pools: (size, low, high, Zipf exponent, leading value or None).
DRAWN_POOLS: dict[str, tuple[int, int, int, float, int | None]] = {
    "C14": (2626, 375, 24_052, 0.87, None),
    "C17": (435, 112, 2758, 1.31, None),
    "C19": (68, 33, 1959, 1.57, None),
    "C20": (172, 100_000, 100_248, 1.64, -1),
    "C21": (60, 1, 219, 1.21, None),
}

SITE_COLUMNS = ("site_id", "site_domain", "site_category")
APP_COLUMNS = ("app_id", "app_domain", "app_category")
HEX_COLUMNS = (*SITE_COLUMNS, *APP_COLUMNS, "device_id", "device_ip", "device_model")
INT_COLUMNS = (
    "C1", "banner_pos", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip

INTERACTIONS: tuple[Interaction, ...] = (
    Interaction(("site_category", "C18"), rank=3, scale=0.5),
    Interaction(("app_category", "banner_pos"), rank=3, scale=0.5),
    Interaction(("C15", "C16"), rank=2, scale=0.4),
    Interaction(("hour_of_day", "device_conn_type"), rank=2, scale=0.4),
    Interaction(("C17", "site_domain"), rank=4, scale=0.4),
    Interaction(("device_model", "C14"), rank=4, scale=0.3),
    Interaction(("banner_pos", "device_type", "C18"), rank=2, scale=0.5),
)


class AvazuFormat:
    """Avazu Kaggle CSV with header; no missing fields."""

    name = "avazu"
    target_ctr = 0.17
    separator = ","
    header = True
    interactions = INTERACTIONS

    def __init__(self, rows: int, rng: np.random.Generator) -> None:
        self.rows = rows
        self.zipf = {c: zipf_table(*shape) for c, shape in HASHED.items()}
        vocab = {c: shape[0] for c, shape in HASHED.items()} | {c: d[1] for c, d in DERIVED.items()}
        keys = rng.integers(0, 2**32, size=len(HEX_COLUMNS))
        # index vocab + 1 of a site (app) column is the "no site" ("no app") value
        self.codes = {
            c: hex_codes(vocab[c] + 1, int(k)) for c, k in zip(HEX_COLUMNS, keys, strict=True)
        }
        self.parent_map: dict[str, np.ndarray] = {}
        for col, (parent, size, exponent) in DERIVED.items():
            children = zipf_table(size, exponent).ranks(rng.random(HASHED[parent][0]))
            self.parent_map[col] = np.concatenate([[0], children, [size + 1]]).astype(np.int64)
        self.pools: dict[str, np.ndarray] = {}
        self.pool_zipf: dict[str, ZipfTable] = {}
        for col, (values, exponent) in FIXED_POOLS.items():
            self.pools[col] = np.array((0, *values), dtype=np.int64)
            self.pool_zipf[col] = zipf_table(len(values), exponent)
        for col, (size, low, high, exponent, lead) in DRAWN_POOLS.items():
            n_drawn = size - (lead is not None)
            drawn = rng.choice(np.arange(low, high + 1), size=n_drawn, replace=False)
            lead_part = [] if lead is None else [lead]
            self.pools[col] = np.array([0, *lead_part, *drawn], dtype=np.int64)
            self.pool_zipf[col] = zipf_table(size, exponent)
        self.id_mult = np.uint64(int(rng.integers(0, 2**63)) * 2 + 1)  # odd: a bijection mod 2^64
        self.id_add = np.uint64(int(rng.integers(0, 2**63)))
        # traffic share of each of the 10 x 24 hours: a daily cycle peaking in the afternoon
        hod = np.tile(np.arange(24), DAYS)
        share = 1.0 + 0.6 * np.sin(2 * np.pi * (hod - 9) / 24)
        self.hour_cdf = np.cumsum(share) / share.sum()
        self.sizes = (
            {"hour_of_day": 25}
            | {c: vocab[c] + 2 for c in HEX_COLUMNS}
            | {c: len(self.pools[c]) for c in INT_COLUMNS}
        )
        self.first_order = {"hour_of_day": FirstOrder(0.22, smooth=True)} | {
            c: FirstOrder(0.12 if self.sizes[c] > 10_000 else 0.22, rare_half=RARE_HALF)
            for c in self.sizes
            if c != "hour_of_day"
        }

    def sample(self, rng: np.random.Generator, positions: np.ndarray) -> Block:
        """Draw one row per position; the position fixes the row's hour."""
        n = len(positions)
        hour_index = np.searchsorted(self.hour_cdf, (positions + 0.5) / self.rows, side="right")
        hour_index = np.minimum(hour_index, DAYS * 24 - 1)
        idx: dict[str, np.ndarray] = {"hour_of_day": hour_index % 24 + 1}
        is_app = rng.random(n) < APP_SHARE
        for col, table in self.zipf.items():
            idx[col] = table.ranks(rng.random(n))
        idx["site_id"] = np.where(is_app, HASHED["site_id"][0] + 1, idx["site_id"])
        idx["app_id"] = np.where(is_app, idx["app_id"], HASHED["app_id"][0] + 1)
        for col, (parent, _, _) in DERIVED.items():
            idx[col] = self.parent_map[col][idx[parent]]
        for col, table in self.pool_zipf.items():
            idx[col] = table.ranks(rng.random(n))
        payload = {c: idx[c] for c in (*HEX_COLUMNS, *INT_COLUMNS)}
        payload["position"] = positions
        payload["hour_index"] = hour_index
        return Block(idx, payload, rng.random(n))

    def frame(self, payload: Mapping[str, np.ndarray], label: np.ndarray) -> pl.DataFrame:
        """The 24 Avazu columns in file order."""
        hour_index = payload["hour_index"]
        hour = FIRST_HOUR + (hour_index // 24) * 100 + hour_index % 24
        ids = payload["position"].astype(np.uint64) * self.id_mult + self.id_add
        cols: dict[str, pa.Array] = {
            "id": pa.array(ids),
            "click": pa.array(label.astype(np.int8)),
            "hour": pa.array(hour.astype(np.int64)),
        }
        for col in COLUMNS[3:]:
            if col in self.codes:
                cols[col] = hex_column(self.codes[col], payload[col], None)
            else:
                cols[col] = pa.array(self.pools[col][payload[col]])
        return pl.from_arrow(pa.table(cols))

    def side_frames(self) -> dict[str, pl.DataFrame]:
        """None: the Avazu log is one file."""
        return {}
