"""Embedding-table remedies (issue 15 §1): hashing of very-high-cardinality fields, a min_count sized
by a memory budget, and the table-memory report (components/data/hashing.py, embedding_memory.py,
remedies.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from components.config import ConfigError, PreprocessParams, load_params
from components.data.embedding_memory import MB, budget_min_count, table_memory
from components.data.feature_map import FeatureMap
from components.data.formats import read_source
from components.data.hashing import HashedField, blake2b64
from components.data.preprocess import preprocess
from components.data.split import splitmix64
from components.serve import export_model, load_encoder, predict_file
from tests.conftest import write_params
from tests.test_preprocess import make_table, read, time_params
from tests.test_serve import (
    ROWS,
    criteo_lines,
    encode_all,
    model_probabilities,
    preprocessed_rows,
    read_probs,
    save_random_model,
    write,
)

REPO = Path(__file__).resolve().parents[1]


def tree_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(out)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------ the hash


def test_hash_gives_fixed_ids_for_fixed_inputs():
    ints = pl.Series("C", [0, 1, 0x05DB9164, 0xFFFFFFFF, None], dtype=pl.UInt32)
    assert HashedField("C", 1000, "splitmix64").encode_series(ints).to_list() == [537, 467, 354, 682, 1]
    # the numbers are splitmix64's (pure-Python reference) mod buckets, shifted past OOV (0) / missing (1)
    assert [2 + splitmix64(v) % 1000 for v in (0, 1, 0x05DB9164, 0xFFFFFFFF)] == [537, 467, 354, 682]
    strings = pl.Series("S", ["a", "abc", "", None, "abc"])
    assert blake2b64("abc") == int.from_bytes(hashlib.blake2b(b"abc", digest_size=8).digest(), "little")
    assert HashedField("S", 1000, "blake2b64").encode_series(strings).to_list() == [
        2 + blake2b64("a") % 1000, 2 + blake2b64("abc") % 1000, 2 + blake2b64("") % 1000, 1,
        2 + blake2b64("abc") % 1000]
    assert blake2b64("abc") % 1000 == 896  # a fixed number, not whatever this interpreter hashes


def test_hash_respects_the_bucket_count_and_spreads():
    values = pl.Series("C", np.arange(20_000, dtype=np.uint32))
    ids = HashedField("C", 64, "splitmix64").encode_series(values).to_numpy()
    assert ids.min() >= 2 and ids.max() <= 65 and ids.dtype == np.int32
    counts = np.bincount(ids - 2, minlength=64)
    assert counts.min() > 200 and counts.max() < 430  # ~312 each: every bucket used, none hogged
    s_ids = HashedField("S", 7, "blake2b64").encode_series(values.cast(pl.String)).to_numpy()
    assert set(s_ids.tolist()) == set(range(2, 9))
    # expression form (used inside a select) = the eager form
    expr = values.to_frame().select(HashedField("C", 64, "splitmix64").encode_expr()).to_series()
    np.testing.assert_array_equal(expr.to_numpy(), ids)


def _ids_here() -> list:
    return [HashedField("S", 97, "blake2b64").encode_series(pl.Series(["x", "yz", "a" * 40])).to_list(),
            HashedField("C", 97, "splitmix64").encode_series(pl.Series([7, 123456789], dtype=pl.UInt32)).to_list()]


def test_hash_is_the_same_in_other_processes():
    code = ("import json; from tests.test_embedding_remedies import _ids_here; print(json.dumps(_ids_here()))")
    runs = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}).stdout.strip()
            for seed in ("1", "2")}  # Python's own str hash differs between these two
    assert runs == {json.dumps(_ids_here())}


# ------------------------------------------------------------------ hashing in preprocess and predict


@pytest.fixture(scope="module")
def hashed(tmp_path_factory):
    """The Criteo serve log preprocessed with fields of > 3 kept values hashed into 4 buckets."""
    root = tmp_path_factory.mktemp("hashed")
    raw = write(root / "raw.txt", criteo_lines())
    params = PreprocessParams(min_count=2, hash_buckets={"min_vocab": 3, "buckets": 4})
    fmap = preprocess(read_source("criteo", raw), params, root / "proc")
    model = save_random_model(root / "dcnv2", fmap, "dcnv2", hidden_units=[8], num_cross_layers=2)
    return {"root": root, "raw": raw, "fmap": fmap, "model": model, "lines": raw.read_text().splitlines()}


def test_preprocess_hashes_fields_over_min_vocab_and_records_it(hashed):
    fmap, proc = hashed["fmap"], hashed["root"] / "proc"
    plain = preprocess(read_source("criteo", hashed["raw"]), PreprocessParams(min_count=2), hashed["root"] / "p0")
    kept = {f.name: f.stats["kept"] for f in plain.categorical_fields}
    want = sorted(n for n, k in kept.items() if n.startswith("C") and k > 3)
    assert want  # the log has such fields (6-value pools)
    by_name = {f.name: f for f in fmap.fields}
    assert sorted(fmap.embedding["hash_buckets"]["fields"]) == want
    for name in want:
        f = by_name[name]
        assert f.vocab_size == 6 and f.stats["hash_buckets"] == 4 and f.stats["hash"] == "splitmix64"
        assert f.stats["kept_before_hashing"] == kept[name]
        assert not (proc / "vocab" / f"{name}.parquet").exists()
        col = pl.concat([read(proc, s)[name] for s in ("train", "valid", "test")])
        assert col.min() >= 1 and col.max() <= 5  # never OOV (0); missing 1; buckets 2..5
    # the integer-valued numeric buckets and small fields keep their vocabularies
    assert all("hash_buckets" not in by_name[n].stats for n in kept if n not in want)
    assert {f.name: f.vocab_size for f in fmap.fields if f.name not in want} == {
        f.name: f.vocab_size for f in plain.fields if f.name not in want}


def test_hashed_ids_are_the_hash_of_the_raw_hex_value(hashed):
    fmap, proc = hashed["fmap"], hashed["root"] / "proc"
    name = fmap.embedding["hash_buckets"]["fields"][0]
    col = 14 + int(name[1:]) - 1  # label, I1..I13, C1..C26
    raw = [line.split("\t")[col] for line in hashed["lines"]]
    want = [1 if v == "" else 2 + splitmix64(int(v, 16)) % 4 for v in raw]
    lines = list(range(1, ROWS + 1))
    cat, _ = preprocessed_rows(proc, fmap, lines, lines)
    j = [f.name for f in fmap.categorical_fields].index(name)
    assert cat[:, j].tolist() == want


def test_predict_encodes_raw_rows_like_preprocess_with_hashing(hashed, tmp_path):
    proc, fmap = hashed["root"] / "proc", hashed["fmap"]
    lines, cat, dense, _ = encode_all(hashed["raw"], proc, tmp=tmp_path)
    want_cat, _ = preprocessed_rows(proc, fmap, lines.tolist(), lines.tolist())
    np.testing.assert_array_equal(cat, want_cat)
    # ctrflow predict end to end, on the processed dir and on an export (no vocab file for hashed fields)
    picked = [17, 3, 240, 101]
    few = write(tmp_path / "few.txt", [hashed["lines"][i - 1] for i in picked])
    out = tmp_path / "few.pred"
    assert predict_file(hashed["model"], few, out, processed_dir=proc) == len(picked)
    c, d = preprocessed_rows(proc, fmap, list(range(1, ROWS + 1)), picked)
    np.testing.assert_array_equal(read_probs(out), model_probabilities(hashed["model"], fmap, c, d))
    exported = tmp_path / "export"
    export_model(hashed["model"], exported, processed_dir=proc)
    enc = load_encoder(exported)
    assert isinstance(enc.vocabularies[fmap.embedding["hash_buckets"]["fields"][0]], HashedField)
    out2 = tmp_path / "few2.pred"
    predict_file(exported, few, out2, runtime="torch")  # the same runtime: bytes equal
    assert out2.read_bytes() == out.read_bytes()


def test_string_fields_hash_with_blake2b_in_preprocess_and_serving(tmp_path):
    rng = np.random.default_rng(5)
    n = 200
    values = [None if rng.random() < 0.1 else f"u{int(rng.integers(0, 40))}" for _ in range(n)]
    data = {"t": list(range(n)), "label": rng.integers(0, 2, n).tolist(), "U": values,
            "S": [f"s{int(v)}" for v in rng.integers(0, 3, n)]}
    table = make_table(tmp_path, data, [("U", "categorical"), ("S", "categorical")], time_column="t")
    fmap = preprocess(table, time_params(min_count=1, hash_buckets={"min_vocab": 10, "buckets": 8}), tmp_path / "o")
    assert fmap.embedding["hash_buckets"]["fields"] == ["U"]
    u = {f.name: f for f in fmap.fields}["U"]
    assert u.stats["hash"] == "blake2b64" and u.vocab_size == 10
    got = pl.concat([read(tmp_path / "o", s)["U"] for s in ("train", "valid", "test")]).to_list()
    assert got == [1 if v is None else 2 + blake2b64(v) % 8 for v in values]  # time order = input order
    # serving: the saved encoder encodes the same raw values to the same ids
    enc = load_encoder(tmp_path / "o")
    frame = pl.DataFrame({"U": values, "S": data["S"]})
    assert frame.select(enc.vocabularies["U"].encode_expr()).to_series().to_list() == got


# ------------------------------------------------------------------ the budget


def test_budget_picks_the_smallest_threshold_that_fits():
    # field a (floor 2): counts 50, 20, 20, 10, 5, 5 (and a 1, under the floor); b (floor 1): 100, 3, 3
    counts = {"a": [50, 20, 20, 10, 5, 5, 1], "b": [100, 3, 3]}
    floors = {"a": 2, "b": 1}
    per_id = 16 * 4  # dim 16, fp32

    def pick(ids: int, **kw):
        return budget_min_count(counts, floors, budget_mb=ids * per_id / MB, embedding_dim=16, **kw)

    # ids(t) = a: 2 + #{count >= max(2, t)}, b: 2 + #{count >= t}
    assert pick(13).min_count == 1 and pick(13).ids == 13  # fits unchanged
    assert pick(12).min_count == 4 and pick(12).ids == 11  # t = 4 drops b's 3s (t = 2, 3 keep 13)
    assert pick(8).min_count == 11 and pick(8).ids == 8   # t = 6..10 keeps a's 10: 9 ids
    assert pick(7).min_count == 21 and pick(7).ids == 6
    assert pick(5).min_count == 51 and pick(5).ids == 5
    assert pick(9, start=7).min_count == 7  # never below start (preprocess.min_count)
    assert pick(20, fixed_ids=10).min_count == 6  # + 10 hashed ids: t = 4 (11 + 10) no longer fits
    for ids in (13, 12, 8, 7, 5):
        c = pick(ids)
        assert c.ids * per_id <= ids * per_id and c.table_mb * MB == c.ids * per_id
    with pytest.raises(ValueError, match=r"preprocess\.embedding_budget_mb.*4 ids"):
        pick(3.9)  # even every value dropped leaves OOV + missing of both fields


# train (first 70 of 100 rows, time split): A a×30 b×20 c×10 d×5 e×3 f×2, B x×40 y×25 z×5
_A = ["a"] * 30 + ["b"] * 20 + ["c"] * 10 + ["d"] * 5 + ["e"] * 3 + ["f"] * 2
_B = ["x"] * 40 + ["y"] * 25 + ["z"] * 5
BUDGET_DATA = {"t": list(range(100)), "label": [i % 2 for i in range(100)],
               "A": _A + ["a", "d", "f", "g"] * 7 + ["a", "b"], "B": _B + ["x", "z", "y"] * 10}


def test_preprocess_with_a_budget_records_the_threshold_and_fits(tmp_path):
    table = make_table(tmp_path, BUDGET_DATA, [("A", "categorical"), ("B", "categorical")], time_column="t")
    budget = 9 * 4 * 4 / MB  # 9 ids at dim 4
    fmap = preprocess(table, time_params(min_count=1, embedding_budget_mb=budget, budget_embedding_dim=4),
                      tmp_path / "o")
    # unbudgeted: A 6 + 2, B 3 + 2 = 13 ids; t = 4, 5 keep d and z (11); t = 6 keeps a b c | x y = 9
    b = fmap.embedding["budget"]
    assert b["min_count"] == 6 and b["ids"] == 9 and b["ids_before"] == 13 and b["embedding_dim"] == 4
    assert b["table_mb"] * MB == pytest.approx(9 * 16) and b["table_mb"] <= budget
    assert b["training_mb"] == pytest.approx(4 * b["table_mb"])
    assert [f.vocab_size for f in fmap.fields] == [5, 4]
    assert [f.stats["min_count"] for f in fmap.fields] == [6, 6]
    assert table_memory(fmap, 4).total_ids == 9
    on_disk = json.loads((tmp_path / "o" / "feature_map.json").read_text())
    assert on_disk["embedding"]["budget"]["min_count"] == 6
    assert on_disk["params"]["embedding_budget_mb"] == budget and on_disk["params"]["budget_embedding_dim"] == 4
    # ids are a prefix of the unbudgeted ones: a b c keep 2 3 4, d (5×) is now OOV
    train = read(tmp_path / "o", "train")["A"]
    assert train[:30].unique().to_list() == [2] and train[60:65].unique().to_list() == [0]
    a_stats = fmap.fields[0].stats
    assert a_stats["kept"] == 3 and a_stats["train_oov_rows"] == 10  # d e f: 5 + 3 + 2 train rows
    # a budget the unbudgeted tables already fit changes nothing but the record
    roomy = preprocess(table, time_params(min_count=1, embedding_budget_mb=1.0, budget_embedding_dim=4),
                       tmp_path / "r")
    assert roomy.embedding["budget"]["min_count"] == 1 and [f.vocab_size for f in roomy.fields] == [8, 5]


def test_budget_and_hashing_together_rerun_byte_identical(tmp_path):
    raw = write(tmp_path / "raw.txt", criteo_lines())
    params = PreprocessParams(min_count=2, hash_buckets={"min_vocab": 4, "buckets": 3},
                              embedding_budget_mb=400 * 64 / MB, budget_embedding_dim=16)
    one = preprocess(read_source("criteo", raw), params, tmp_path / "one")
    two = preprocess(read_source("criteo", raw), params, tmp_path / "two")
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")
    b = one.embedding["budget"]
    assert b["ids"] <= 400 < b["ids_before"] and b["min_count"] > 1
    assert sum(one.vocab_sizes) == b["ids"]  # hashed fields' 5 ids each are counted
    assert all(f.vocab_size == 5 for f in one.fields if f.name in one.embedding["hash_buckets"]["fields"])
    assert two.source_hash == one.source_hash


def test_remedies_off_leave_the_outputs_byte_identical_to_before(tmp_path):
    """Golden digest of every output file, computed with the code before the remedies existed
    (commit c78f804) on the same input; Polars/pyarrow are pinned (constraints.txt). Re-pinned once
    when ``source_hash`` became a digest of the input files' sha256s instead of their bytes
    (2026-12-07: only that value of feature_map.json changed; every Parquet and vocabulary file kept
    its bytes)."""
    raw = write(tmp_path / "raw.txt", criteo_lines())
    fmap = preprocess(read_source("criteo", raw), PreprocessParams(min_count=2), tmp_path / "proc")
    assert fmap.embedding is None
    text = (tmp_path / "proc" / "feature_map.json").read_text()
    assert "embedding" not in json.loads(text) and "hash_buckets" not in text and "budget" not in text
    assert tree_digest(tmp_path / "proc") == "8ace81709f9b58e3ea19c5a27345e390858eae6b795c6f455a2675199239d66f"


# ------------------------------------------------------------------ settings and the memory report


def test_settings_are_validated_and_the_budget_dim_comes_from_train(tmp_path):
    p = load_params(write_params(tmp_path, preprocess={"embedding_budget_mb": 8.0}, train={"embedding_dim": 24}))
    assert p.preprocess.budget_embedding_dim == 24
    assert load_params(write_params(tmp_path)).preprocess.hash_buckets is None
    with pytest.raises(ConfigError, match=r"preprocess\.hash_buckets\.buckets"):
        load_params(write_params(tmp_path, preprocess={"hash_buckets": {"min_vocab": 10, "buckets": 0}}))
    with pytest.raises(ConfigError, match=r"preprocess\.hash_buckets\.bucket_count"):
        load_params(write_params(tmp_path, preprocess={"hash_buckets": {"min_vocab": 10, "bucket_count": 8}}))
    with pytest.raises(ConfigError, match=r"preprocess\.embedding_budget_mb"):
        load_params(write_params(tmp_path, preprocess={"embedding_budget_mb": -1}))
    with pytest.raises(ValueError, match="budget_embedding_dim"):
        PreprocessParams(embedding_budget_mb=4.0)


def test_table_memory_of_a_feature_map():
    fmap = FeatureMap.toy([10, 1000, 30], dense=2)
    m = table_memory(fmap, 16)
    assert m.total_ids == 1040 and m.total_mb == pytest.approx(1040 * 64 / MB)
    assert m.training_mb == pytest.approx(4 * m.total_mb)
    assert [(n, i) for n, i, _ in m.largest(2)] == [("c1", 1000), ("c2", 30)]
    assert m.as_dict()["fields"]["c1"] == {"ids": 1000, "mb": round(1000 * 64 / MB, 6)}
    assert "0.06 MB at dim 16" in m.summary()
