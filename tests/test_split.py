"""Split assignment: the splitmix64 hash, random split ratios/determinism, time split cut-offs."""

from __future__ import annotations

import polars as pl
import pytest

from components.data.split import (
    SPLIT_COLUMN,
    TEST,
    TRAIN,
    VALID,
    random_split_expr,
    splitmix64,
    splitmix64_expr,
    time_cutoffs,
    time_split_expr,
)

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def test_splitmix64_reference_vector():
    # Published splitmix64 sequence for seed 1234567 (Vigna's reference implementation).
    state = 1234567
    outs = []
    for _ in range(3):
        outs.append(splitmix64(state))
        state = (state + GOLDEN) & MASK
    assert outs == [6457827717110365317, 3203168211198807973, 9817491932198370423]


def test_polars_splitmix64_matches_python_with_wrapping():
    xs = [0, 1, 2, 12345, 2**63, MASK, MASK - 7, 0xDEADBEEFCAFEBABE]
    got = pl.DataFrame({"x": xs}, schema={"x": pl.UInt64}).select(splitmix64_expr(pl.col("x")))["x"].to_list()
    assert got == [splitmix64(x) for x in xs]


def _codes(n: int, seed: int, ratios=(0.8, 0.1, 0.1), offset: int = 0) -> list[int]:
    df = pl.DataFrame({"i": pl.int_range(offset, offset + n, eager=True, dtype=pl.UInt64)})
    return df.select(random_split_expr(pl.col("i"), seed, ratios))[SPLIT_COLUMN].to_list()


def test_random_split_matches_hand_computation():
    seed, ratios = 7, (0.5, 0.25, 0.25)
    key = splitmix64(seed)
    expected = []
    for i in range(50):
        u = splitmix64((key + i * GOLDEN) & MASK) >> 11
        expected.append(TRAIN if u < 2**52 else VALID if u < 3 * 2**51 else TEST)
    assert _codes(50, seed, ratios) == expected


def test_random_split_is_deterministic_and_seed_dependent():
    a, b, c = _codes(5000, 2022), _codes(5000, 2022), _codes(5000, 2023)
    assert a == b
    assert sum(x != y for x, y in zip(a, c, strict=True)) > 1000  # ~34 % of rows move


def test_random_split_ratios_within_tolerance():
    codes = pl.Series(_codes(200_000, 2022, (0.7, 0.2, 0.1)))
    frac = [(codes == k).mean() for k in (TRAIN, VALID, TEST)]
    assert frac == pytest.approx([0.7, 0.2, 0.1], abs=0.005)


def test_random_split_depends_only_on_row_index():
    # rows 1000..1999 computed on their own equal the same rows computed inside a bigger frame
    assert _codes(1000, 3, offset=1000) == _codes(3000, 3)[1000:2000]


def test_degenerate_ratios():
    assert set(_codes(1000, 1, (1.0, 0.0, 0.0))) == {TRAIN}
    with pytest.raises(ValueError, match="summing to 1"):
        _codes(10, 1, (0.5, 0.2, 0.2))


def _time_split(times: list[int], ratios) -> list[int]:
    lf = pl.LazyFrame({"t": times}, schema={"t": pl.Int64})
    cut = time_cutoffs(lf, "t", ratios)
    return lf.select(time_split_expr(pl.col("t"), cut)).collect()[SPLIT_COLUMN].to_list()


def test_time_split_orders_by_time_and_keeps_row_order():
    times = [5, 1, 9, 3, 7, 2, 10, 4, 8, 6]  # unsorted input: rows are not reordered
    got = _time_split(times, (0.6, 0.2, 0.2))
    # earliest 6 times (1..6) train, 7..8 valid, 9..10 test
    assert got == [TRAIN if t <= 6 else VALID if t <= 8 else TEST for t in times]


def test_time_split_keeps_ties_together():
    times = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    # 0.5 of 10 rows falls inside the tie at time 2: the whole tie goes to train
    assert _time_split(times, (0.5, 0.3, 0.2)) == [TRAIN] * 8 + [TEST] * 2
    cut = time_cutoffs(pl.LazyFrame({"t": times}), "t", (0.5, 0.3, 0.2))
    assert (cut.train_end, cut.valid_end, cut.rows) == (2, 2, 10)


def test_time_split_rejects_nulls():
    with pytest.raises(ValueError, match="nulls"):
        time_cutoffs(pl.LazyFrame({"t": [1, None, 3]}), "t", (0.8, 0.1, 0.1))
