"""preprocess(): vocab/OOV/min-count semantics, numeric transforms, determinism, atomicity, caching."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

import components.data.preprocess as prep
from components.config import PreprocessParams
from components.data.errors import DataFormatError
from components.data.feature_map import FeatureMap
from components.data.formats.base import LINE_COLUMN, FieldSpec, SourceTable
from components.data.preprocess import effective_params, is_up_to_date, params_record, preprocess
from components.data.vocab import log2_bucket_dagfm_expr, log2_bucket_expr, signed_log1p_expr

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_table(tmp_path: Path, data: dict, fields: list[tuple[str, str]], *, fmt: str = "toy",
               time_column: str | None = None, name: str = "raw.parquet") -> SourceTable:
    """A SourceTable over a Parquet file written from ``data`` (LINE_COLUMN = 1-based row)."""
    path = tmp_path / name
    pl.DataFrame(data).write_parquet(path)
    lazy = pl.scan_parquet(path).with_row_index(LINE_COLUMN, offset=1).with_columns(
        pl.col(LINE_COLUMN).cast(pl.UInt64), pl.col("label").cast(pl.Int8)
    )
    return SourceTable(format=fmt, files=(path,), lazy=lazy,
                       fields=tuple(FieldSpec(n, k) for n, k in fields), time_column=time_column)


def read(out: Path, split: str) -> pl.DataFrame:
    return pl.read_parquet(out / f"{split}.parquet")


def time_params(**kw) -> PreprocessParams:
    return PreprocessParams(split="time", split_ratios=(0.7, 0.1, 0.2), **kw)


# rows at times 1..10: train = t1..t7, valid = t8, test = t9..t10 with ratios 0.7/0.1/0.2
HAND = {
    "t": list(range(1, 11)),
    "label": [1, 0, 1, 0, 0, 1, 0, 1, 0, 1],
    "C": ["a", "b", "a", "c", "b", "a", None, "d", "d", "a"],
}


def test_vocab_min_count_oov_and_missing_by_hand(tmp_path):
    table = make_table(tmp_path, HAND, [("C", "categorical")], time_column="t")
    fmap = preprocess(table, time_params(min_count=2), tmp_path / "out")
    out = tmp_path / "out"
    # train counts a×3, b×2, c×1 (+1 null); min_count 2 keeps a→2, b→3; c→OOV 0; null→1;
    # d is frequent only in valid/test (3×) but absent from train → OOV 0
    assert read(out, "train")["C"].to_list() == [2, 3, 2, 0, 3, 2, 1]
    assert read(out, "valid")["C"].to_list() == [0]
    assert read(out, "test")["C"].to_list() == [0, 2]
    assert read(out, "train")["label"].to_list() == [1, 0, 1, 0, 0, 1, 0]
    vocab = pl.read_parquet(out / "vocab" / "C.parquet")
    assert vocab.to_dicts() == [{"value": "a", "id": 2, "count": 3}, {"value": "b", "id": 3, "count": 2}]
    (c,) = fmap.fields
    assert (c.vocab_size, c.oov_id, c.missing_id, c.type) == (4, 0, 1, "categorical")
    assert c.stats["kept"] == 2 and c.stats["train_oov_rows"] == 1 and c.stats["train_missing_rows"] == 1
    assert fmap.splits["train"]["rows"] == 7 and fmap.splits["train"]["positives"] == 3
    assert (fmap.splits["valid"]["rows"], fmap.splits["test"]["rows"]) == (1, 2)
    assert FeatureMap.load(out / "feature_map.json") == fmap
    assert pq.read_schema(out / "train.parquet").field("C").type == "int32"


def test_ties_ordered_by_value(tmp_path):
    data = {
        "t": list(range(1, 11)),
        "label": [0, 1] * 5,
        # numeric train values: 2×2, -1×2, 0×2, 1×1
        "C": ["x", "b", "x", "a", "z", "q", "q", "q", "q", "q"],
        "I": [2, 2, -1, -1, 0, 0, 1, None, None, None],
    }
    table = make_table(tmp_path, data, [("C", "categorical"), ("I", "numeric")], time_column="t")
    preprocess(table, time_params(min_count=1, numeric_min_count=1), tmp_path / "out")
    vc = pl.read_parquet(tmp_path / "out" / "vocab" / "C.parquet")
    # train (t1..t7) = x, b, x, a, z, q, q: q and x tie at 2, then a, b, z tie at 1
    assert vc["value"].to_list() == ["q", "x", "a", "b", "z"] and vc["id"].to_list() == [2, 3, 4, 5, 6]
    vi = pl.read_parquet(tmp_path / "out" / "vocab" / "I.parquet")
    # count ties are broken numerically (-1 < 0 < 2), not as strings
    assert vi["value"].to_list() == [-1, 0, 2, 1] and vi["id"].to_list() == [2, 3, 4, 5]


def test_log2_bucket_values_by_hand():
    s = pl.DataFrame({"v": [3, 10, -1, 2, 0, None, 100]}, schema={"v": pl.Int64})
    assert s.select(log2_bucket_expr(pl.col("v")))["v"].to_list() == [1, 5, -1, 2, 0, None, 21]
    # dagfm: ceil(ln(v)^2 + 1): 3 → ceil(2.207) = 3, 10 → ceil(6.30) = 7, 100 → ceil(22.2) = 23
    assert s.select(log2_bucket_dagfm_expr(pl.col("v")))["v"].to_list() == [3, 7, -1, 2, 0, None, 23]


def test_numeric_buckets_are_vocab_encoded(tmp_path):
    data = {"t": list(range(1, 11)), "label": [0, 1] * 5, "I": [10, 11, 3, 10, None, 4, 12, 10, 3, 1000]}
    table = make_table(tmp_path, data, [("I", "numeric")], time_column="t")
    fmap = preprocess(table, time_params(numeric="log2_bucket", numeric_min_count=2), tmp_path / "out")
    # buckets in train (t1..t7): 10→5, 11→5, 3→1, 10→5, null, 4→1, 12→6: 5×3, 1×2, 6×1
    vocab = pl.read_parquet(tmp_path / "out" / "vocab" / "I.parquet")
    assert vocab.to_dicts() == [{"value": 5, "id": 2, "count": 3}, {"value": 1, "id": 3, "count": 2}]
    assert read(tmp_path / "out", "train")["I"].to_list() == [2, 2, 3, 2, 1, 3, 0]
    assert read(tmp_path / "out", "test")["I"].to_list() == [3, 0]  # 1000 → bucket 47, unseen
    assert fmap.fields[0].source_kind == "numeric" and fmap.fields[0].vocab_size == 4


def test_dense_standardised_with_train_stats(tmp_path):
    data = {"t": [1, 2, 3, 4, 5], "label": [0, 1, 0, 1, 0], "I": [0, 3, -3, None, 7]}
    table = make_table(tmp_path, data, [("I", "numeric")], time_column="t")
    fmap = preprocess(table, PreprocessParams(split="time", split_ratios=(0.8, 0.2, 0.0), numeric="dense"),
                      tmp_path / "out")
    ln4 = math.log(4.0)
    std = ln4 * math.sqrt(2 / 3)  # population std of (0, ln4, -ln4); mean 0
    (f,) = fmap.fields
    assert f.type == "dense" and f.vocab_size == 0 and f.oov_id is None
    assert f.stats["mean"] == pytest.approx(0.0, abs=1e-12)
    assert f.stats["std"] == pytest.approx(std, rel=1e-9)
    assert f.stats["train_missing_rows"] == 1
    train = read(tmp_path / "out", "train")["I"]
    assert train.dtype == pl.Float32
    assert train.to_list() == pytest.approx([0.0, ln4 / std, -ln4 / std, 0.0], abs=1e-6)
    assert read(tmp_path / "out", "valid")["I"].to_list() == pytest.approx([math.log(8.0) / std], rel=1e-6)
    assert read(tmp_path / "out", "test").height == 0
    logs = pl.DataFrame({"v": [-3, 0, 3, None]}).select(signed_log1p_expr(pl.col("v")))["v"].to_list()
    assert logs[:3] == pytest.approx([-ln4, 0.0, ln4]) and logs[3] is None


def test_numeric_also_dense_keeps_the_bucket_and_adds_a_standardised_copy(tmp_path):
    data = {"t": [1, 2, 3, 4, 5], "label": [0, 1, 0, 1, 0], "I": [0, 3, -3, None, 7], "C": list("aabab")}
    table = make_table(tmp_path, data, [("I", "numeric"), ("C", "categorical")], time_column="t")
    params = PreprocessParams(split="time", split_ratios=(0.8, 0.2, 0.0), min_count=1, numeric_also_dense=True)
    fmap = preprocess(table, params, tmp_path / "out")
    assert [(f.name, f.type, f.source_kind) for f in fmap.fields] == [
        ("I", "categorical", "numeric"), ("C", "categorical", "categorical"), ("I_dense", "dense", "numeric")]
    assert fmap.dense_copies == [("I_dense", "I")] and [f.name for f in fmap.source_fields] == ["I", "C"]
    ln4 = math.log(4.0)
    std = ln4 * math.sqrt(2 / 3)  # the same statistics as numeric: dense gives the field
    copy = fmap.fields[2]
    assert copy.stats["source"] == "I" and copy.stats["train_missing_rows"] == 1
    assert copy.stats["std"] == pytest.approx(std, rel=1e-9)
    train = read(tmp_path / "out", "train")
    # buckets 0, 1 (ln(3)² = 1.2), -3: one row each, ids by value (-3 → 2, 0 → 3, 1 → 4); null → missing (1)
    assert train["I"].to_list() == [3, 4, 2, 1]
    assert train["I_dense"].to_list() == pytest.approx([0.0, ln4 / std, -ln4 / std, 0.0], abs=1e-6)
    assert read(tmp_path / "out", "valid")["I_dense"].to_list() == pytest.approx([math.log(8.0) / std], rel=1e-6)
    assert not PreprocessParams(numeric="dense", numeric_also_dense=True).dense_copies  # dense already
    assert "numeric_also_dense" not in params_record(PreprocessParams())  # off: the record of before


def test_numeric_also_dense_refuses_a_copy_name_the_source_already_has(tmp_path):
    data = {"t": [1, 2, 3], "label": [0, 1, 0], "I": [1, 2, 3], "I_dense": ["x", "y", "x"]}
    table = make_table(tmp_path, data, [("I", "numeric"), ("I_dense", "categorical")], time_column="t")
    with pytest.raises(ValueError, match="'I_dense', which is already a field"):
        preprocess(table, PreprocessParams(split="time", split_ratios=(0.8, 0.2, 0.0), numeric_also_dense=True),
                   tmp_path / "out")


def random_table(tmp_path: Path, n: int = 3000, name: str = "raw.parquet", fmt: str = "criteo") -> SourceTable:
    """Criteo-like rows: I1 numeric with nulls, C1/C2 8-hex strings (C1 with nulls)."""
    data = {
        "label": [(i * 7) % 3 == 0 for i in range(n)],
        "I1": [None if i % 11 == 0 else (i * 37) % 500 - 2 for i in range(n)],
        "C1": [None if i % 13 == 0 else f"{(i * 31) % 40 * 0x1000193:08x}" for i in range(n)],
        "C2": [f"{(i * i) % 97 * 0x9E3779B1 % 2**32:08x}" for i in range(n)],
    }
    return make_table(tmp_path, data, [("I1", "numeric"), ("C1", "categorical"), ("C2", "categorical")],
                      name=name, fmt=fmt)


def _bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_byte_identical_rerun_independent_of_batch_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "ROW_GROUP_ROWS", 256)
    table = random_table(tmp_path)
    params = PreprocessParams(min_count=3, seed=5)
    preprocess(table, params, tmp_path / "a")
    preprocess(table, params.model_copy(update={"batch_rows": 97}), tmp_path / "b")
    preprocess(table, params, tmp_path / "a")  # re-run in place
    a, b = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert sorted(a) == ["feature_map.json", "test.parquet", "train.parquet", "valid.parquet",
                         "vocab/C1.parquet", "vocab/C2.parquet", "vocab/I1.parquet"]
    assert a == b
    # fixed row groups: every group but the last has exactly ROW_GROUP_ROWS rows
    meta = pq.ParquetFile(tmp_path / "a" / "train.parquet").metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [256] * (len(sizes) - 1) and 0 < sizes[-1] <= 256


def test_random_split_rows_partition_input_in_order(tmp_path):
    table = random_table(tmp_path)
    fmap = preprocess(table, PreprocessParams(min_count=1, seed=11), tmp_path / "out")
    rows = {s: fmap.splits[s]["rows"] for s in ("train", "valid", "test")}
    assert sum(rows.values()) == 3000
    assert rows["train"] == pytest.approx(2400, abs=90) and rows["valid"] == pytest.approx(300, abs=60)
    # C2 is never null and min_count 1 keeps every train value: decode and compare with the input
    vocab = pl.read_parquet(tmp_path / "out" / "vocab" / "C2.parquet")
    decoded = read(tmp_path / "out", "train").join(vocab, left_on="C2", right_on="id", how="left", maintain_order="left")
    raw = pl.read_parquet(tmp_path / "raw.parquet").with_row_index("i")
    from components.data.split import random_split_expr

    codes = raw.select(random_split_expr(pl.col("i") + 1, 11, (0.8, 0.1, 0.1)))["__split"]
    assert decoded["value"].to_list() == raw.filter(codes == 0)["C2"].to_list()


def test_criteo_hex_parsing_gives_the_same_outputs_as_strings(tmp_path):
    params = PreprocessParams(min_count=2, seed=3)
    fast = preprocess(random_table(tmp_path, fmt="criteo"), params, tmp_path / "hex")
    plain = preprocess(random_table(tmp_path, fmt="toy"), params, tmp_path / "str")
    a, b = _bytes(tmp_path / "hex"), _bytes(tmp_path / "str")
    a.pop("feature_map.json"), b.pop("feature_map.json")
    assert a == b  # same ids, same vocab files (values written back as 8-hex strings)
    assert fast.fields == plain.fields
    vocab = pl.read_parquet(tmp_path / "hex" / "vocab" / "C2.parquet")
    assert vocab["value"].dtype == pl.String and vocab["value"].str.len_bytes().unique().to_list() == [8]


def test_criteo_non_hex_value_names_line_and_column(tmp_path):
    data = {"label": [0, 1, 0, 1], "C1": ["0000000a", "deadbeef", "0000000a", "00000001"],
            "C2": ["0000000b", "0000000c", "xyz", "0000000d"]}
    table = make_table(tmp_path, data, [("C1", "categorical"), ("C2", "categorical")], fmt="criteo")
    with pytest.raises(DataFormatError) as e:
        preprocess(table, PreprocessParams(min_count=1), tmp_path / "out")
    assert (e.value.rule, e.value.line, e.value.column) == ("hex8", 3, "C2")
    assert "'xyz'" in str(e.value)


def test_vocab_fitted_on_train_only(tmp_path):
    # "zzz" is the most frequent value of valid+test (3×) but never in train: it must be OOV
    table = make_table(tmp_path, {**HAND, "C": ["a"] * 7 + ["zzz"] * 3}, [("C", "categorical")], time_column="t")
    preprocess(table, time_params(min_count=1), tmp_path / "out")
    assert read(tmp_path / "out", "test")["C"].to_list() == [0, 0]
    assert pl.read_parquet(tmp_path / "out" / "vocab" / "C.parquet")["value"].to_list() == ["a"]


def test_failure_leaves_previous_outputs_intact(tmp_path, monkeypatch):
    table = random_table(tmp_path)
    out = tmp_path / "out"
    preprocess(table, PreprocessParams(min_count=2), out)
    before = _bytes(out)

    def boom(self, table):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(prep._SplitWriter, "_flush", boom)
    with pytest.raises(OSError, match="simulated"):
        preprocess(table, PreprocessParams(min_count=5), out)
    assert _bytes(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_is_up_to_date_detects_stale_cache(tmp_path):
    table = random_table(tmp_path)
    params = PreprocessParams(min_count=2)
    out = tmp_path / "out"
    assert not is_up_to_date(out, table, params)
    fmap = preprocess(table, params, out)
    assert is_up_to_date(out, table, params)
    assert is_up_to_date(out, table, params.model_copy(update={"batch_rows": 10}))  # not result-changing
    assert not is_up_to_date(out, table, params.model_copy(update={"min_count": 3}))
    (out / "valid.parquet").unlink()
    assert not is_up_to_date(out, table, params)
    preprocess(table, params, out)
    assert is_up_to_date(out, table, params)
    changed = random_table(tmp_path, n=2999)  # same path, new bytes
    assert not is_up_to_date(out, changed, params)
    assert len(fmap.source_hash) == 64


def test_presets_expand_and_are_recorded(tmp_path):
    p = effective_params(PreprocessParams(preset="dagfm", seed=1, min_count=99), "criteo")
    assert (p.seed, p.min_count, p.numeric, p.numeric_min_count, p.split) == (2022, 8, "log2_bucket_dagfm", 1, "random")
    assert effective_params(PreprocessParams(preset="dagfm"), "avazu").min_count == 5
    assert effective_params(PreprocessParams(preset="dagfm"), "movielens").min_count == 1
    b = effective_params(PreprocessParams(preset="bars_x4_001"), "criteo")
    assert (b.min_count, b.numeric, b.numeric_min_count) == (10, "log2_bucket", 10)
    assert effective_params(PreprocessParams(preset="bars_x4_001"), "avazu").min_count == 2
    with pytest.raises(ValueError, match="bars_x4_001.*movielens"):
        effective_params(PreprocessParams(preset="bars_x4_001"), "movielens")
    fmap = preprocess(random_table(tmp_path), PreprocessParams(preset="dagfm"), tmp_path / "out")
    assert fmap.params["min_count"] == 8 and fmap.params["numeric"] == "log2_bucket_dagfm"
    assert "out_dir" not in fmap.params and "batch_rows" not in fmap.params


def test_bad_label_names_line_and_column(tmp_path):
    data = {"label": [0, 1, 0, 1, 2, 0], "C": list("abcdef")}
    table = make_table(tmp_path, data, [("C", "categorical")])
    with pytest.raises(DataFormatError) as e:
        preprocess(table, PreprocessParams(min_count=1), tmp_path / "out")
    assert (e.value.line, e.value.column, e.value.rule) == (5, "label", "label")
    assert not (tmp_path / "out").exists()


def test_time_split_null_time_is_reported(tmp_path):
    data = {"t": [1, 2, None, 4], "label": [0, 1, 0, 1], "C": list("abcd")}
    table = make_table(tmp_path, data, [("C", "categorical")], time_column="t")
    with pytest.raises(DataFormatError) as e:
        preprocess(table, time_params(min_count=1), tmp_path / "out")
    assert (e.value.line, e.value.column) == (3, "t")


@pytest.mark.realdata
def test_real_criteo_sample(tmp_path):
    path = SHARED_DATA / "criteo" / "criteo_kaggle_train_sample117k.txt.gz"
    if not path.exists():
        pytest.skip(f"real data not present at {path}")
    from components.data.formats import read_source

    table = read_source("criteo", path, work_dir=tmp_path / "work")
    fmap = preprocess(table, PreprocessParams(preset="bars_x4_001", batch_rows=50_000), tmp_path / "out")
    assert sum(s["rows"] for s in fmap.splits.values()) == 117_139
    assert fmap.splits["train"]["rows"] == pytest.approx(0.8 * 117_139, rel=0.01)
    assert len(fmap.fields) == 39 and all(f.type == "categorical" for f in fmap.fields)
    train = read(tmp_path / "out", "train")
    for f in fmap.fields:
        assert train[f.name].min() >= 0 and train[f.name].max() < f.vocab_size
    c6 = next(f for f in fmap.fields if f.name == "C6")
    assert c6.stats["train_missing_rows"] > 0  # C6 is often empty in the Kaggle log
