"""Serving: raw-line encoding equals preprocessing, predict_file end to end, ONNX export parity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from components.config import Params, PreprocessParams
from components.data.errors import DataFormatError
from components.data.feature_map import FeatureMap
from components.data.formats import read_source
from components.data.preprocess import preprocess
from components.data.split import SPLIT_COLUMN, SPLIT_NAMES, random_split_expr
from components.models import build_model
from components.serve import export_model, iter_encoded, load_encoder, predict_file, verify_onnx
from components.serve.onnx_runtime import ONNX_FILE, onnx_probabilities, onnx_session
from components.serve.predict import read_raw, reader_params
from components.train.checkpoint import feature_map_hash, save_model

ROWS = 240
FREQUENT = 0  # pool index drawn with probability 1/2: the most frequent value, id 2 in train


def criteo_lines(seed: int = 0) -> list[str]:
    """ROWS labelled Criteo lines: ints in [-1, 300), hex values from 6-value pools (geometric)."""
    rng = np.random.default_rng(seed)
    pools = rng.integers(0, 2**32, size=(26, 6), dtype=np.uint64)
    lines = []
    for _ in range(ROWS):
        label = str(int(rng.integers(0, 2)))
        ints = ["" if rng.random() < 0.1 else str(int(rng.integers(-1, 300))) for _ in range(13)]
        picks = np.minimum(rng.geometric(0.5, size=26) - 1, 5)
        cats = ["" if rng.random() < 0.1 else f"{int(pools[j, k]):08x}" for j, k in enumerate(picks)]
        lines.append("\t".join([label, *ints, *cats]))
    return lines


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def save_random_model(model_dir: Path, fmap: FeatureMap, name: str, **hparams) -> Path:
    """A randomly initialised checkpoint (embedding std 0.5 so rows give distinct probabilities)."""
    torch.manual_seed(0)
    hparams = {"embedding_dim": 4, "embedding_std": 0.5, **hparams}
    model = build_model(name, fmap, **hparams).eval()
    save_model(model, model_dir, model_name=name, hparams=hparams, feature_map_hash=feature_map_hash(fmap),
               epoch=1, metrics={})
    return model_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A Criteo log preprocessed twice (log buckets; dense numerics) and two random checkpoints."""
    root = tmp_path_factory.mktemp("serve")
    raw = write(root / "raw.txt", criteo_lines())
    table = read_source("criteo", raw)
    bucket = preprocess(table, PreprocessParams(min_count=2), root / "proc")
    dense = preprocess(table, PreprocessParams(min_count=2, numeric="dense"), root / "proc_dense")
    preprocess(table, PreprocessParams(min_count=2, numeric_also_dense=True), root / "proc_both")
    return {
        "root": root, "raw": raw, "lines": raw.read_text().splitlines(),
        "fmap": bucket, "fmap_dense": dense,
        "model": save_random_model(root / "dcnv2", bucket, "dcnv2", hidden_units=[8], num_cross_layers=2),
        "model_dense": save_random_model(root / "dlrm", dense, "dlrm", bottom_units=[8, 4], top_units=[8]),
    }  # fmt: skip


def preprocessed_rows(processed: Path, fmap: FeatureMap, source_lines: list[int],
                      wanted: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, dense float32) of the preprocessed rows of source lines ``wanted``, in that order.

    Preprocessing keeps input order within a split and assigns splits by
    ``random_split_expr(LINE_COLUMN)``, so line → (split, row) is recomputed here.
    """
    p = fmap.params
    where = pl.DataFrame({"line": source_lines}, schema={"line": pl.UInt64}).with_columns(
        random_split_expr(pl.col("line"), p["seed"], p["split_ratios"])
    ).with_columns(pl.int_range(pl.len()).over(SPLIT_COLUMN).alias("row"))
    parts = [pl.read_parquet(processed / f"{name}.parquet").with_row_index("row").with_columns(
        pl.col("row").cast(pl.Int64), pl.lit(code, dtype=pl.UInt8).alias(SPLIT_COLUMN))
        for code, name in enumerate(SPLIT_NAMES)]  # fmt: skip
    rows = where.join(pl.concat(parts), on=[SPLIT_COLUMN, "row"], how="inner")
    order = pl.DataFrame({"line": wanted, "pos": range(len(wanted))}, schema={"line": pl.UInt64, "pos": pl.Int64})
    rows = order.join(rows, on="line", how="left").sort("pos")
    assert rows.height == len(wanted) and rows[fmap.fields[0].name].null_count() == 0
    cat = [f.name for f in fmap.categorical_fields]
    dense = [f.name for f in fmap.dense_fields]
    # C order, like the encoder's arrays: a strided input can take another matmul kernel (1-ulp drift)
    return (np.ascontiguousarray(rows.select(cat).to_numpy(), dtype=np.int32),
            np.ascontiguousarray(rows.select(dense).to_numpy(), dtype=np.float32).reshape(len(wanted), len(dense)))


def encode_all(raw: Path, processed: Path, *, fmt: str = "criteo", params: Params | None = None,
               batch_rows: int = 37, tmp: Path):
    encoder = load_encoder(processed)
    table = read_raw(raw, encoder, fmt=fmt, params=params)
    batches = list(iter_encoded(table, encoder, tmp, batch_rows=batch_rows))
    return (np.concatenate([b.lines for b in batches]), np.concatenate([b.categorical for b in batches]),
            np.concatenate([b.dense for b in batches]), [len(b) for b in batches])


def model_probabilities(model_dir: Path, fmap: FeatureMap, cat: np.ndarray, dense: np.ndarray) -> np.ndarray:
    from components.train.checkpoint import load_model

    model, _ = load_model(model_dir, fmap)
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(cat), torch.from_numpy(dense))).numpy()


def read_probs(path: Path) -> np.ndarray:
    return np.array(path.read_text().splitlines(), dtype=np.float32)


# ------------------------------------------------------------------ encoding = preprocessing


@pytest.mark.parametrize("join_min", [None, 1])
@pytest.mark.parametrize("processed", ["proc", "proc_dense", "proc_both"])
def test_encoding_the_training_log_reproduces_every_preprocessed_row(world, processed, join_min, tmp_path,
                                                                     monkeypatch):
    if join_min is not None:  # every vocabulary through the hash-index path of large ones
        from components.data import vocab

        monkeypatch.setattr(vocab, "JOIN_MIN_VALUES", join_min)
    proc = world["root"] / processed
    fmap = FeatureMap.load(proc / "feature_map.json")
    lines, cat, dense, sizes = encode_all(world["raw"], proc, tmp=tmp_path)
    assert lines.tolist() == list(range(1, ROWS + 1))  # input order, every line
    assert sizes == [37] * 6 + [ROWS - 6 * 37]  # batch_rows honoured, nothing dropped
    want_cat, want_dense = preprocessed_rows(proc, fmap, lines.tolist(), lines.tolist())
    np.testing.assert_array_equal(cat, want_cat)  # ids identical to the training splits
    np.testing.assert_array_equal(dense, want_dense)  # dense floats bit-identical
    assert dense.shape[1] == (0 if processed == "proc" else 13)
    assert cat.shape[1] == (26 if processed == "proc_dense" else 39)  # proc_both: buckets and dense copies


def test_schema_csv_with_strings_and_float_numerics_reproduces_preprocessing(tmp_path):
    rng = np.random.default_rng(3)
    n = 120
    frame = pl.DataFrame({
        "clicked": rng.integers(0, 2, n),
        "city": rng.choice(["oslo", "rome", "lima", "kyiv", None], n, p=[0.4, 0.3, 0.2, 0.05, 0.05]),
        "price": np.round(rng.exponential(40.0, n), 2),
        "visits": rng.integers(0, 30, n),
    })  # fmt: skip
    raw = tmp_path / "log.csv"
    frame.write_csv(raw)
    params = Params.model_validate({"data": {"format": "schema", "input": str(raw)}, "schema": {
        "label": "clicked", "categorical": ["city"], "numeric": ["price", "visits"]}})
    table = read_source("schema", raw, params=params)
    fmap = preprocess(table, PreprocessParams(min_count=2, numeric="log2_bucket_dagfm"), tmp_path / "proc")
    lines, cat, dense, _ = encode_all(raw, tmp_path / "proc", fmt="schema", params=params, tmp=tmp_path)
    assert lines.tolist() == list(range(2, n + 2))  # physical lines after the header
    want_cat, want_dense = preprocessed_rows(tmp_path / "proc", fmap, lines.tolist(), lines.tolist())
    np.testing.assert_array_equal(cat, want_cat)
    assert dense.shape == (n, 0) and want_dense.shape == (n, 0)


# ------------------------------------------------------------------ predict_file


def test_predict_file_equals_the_model_on_the_preprocessed_rows(world, tmp_path):
    picked = [17, 3, 240, 3, 101, 58]  # out of order, one line twice
    few = write(tmp_path / "few.txt", [world["lines"][i - 1] for i in picked])
    out = tmp_path / "few.pred"
    assert predict_file(world["model"], few, out, processed_dir=world["root"] / "proc") == len(picked)
    got = read_probs(out)
    cat, dense = preprocessed_rows(world["root"] / "proc", world["fmap"], list(range(1, ROWS + 1)), picked)
    want = model_probabilities(world["model"], world["fmap"], cat, dense)
    np.testing.assert_array_equal(got, want)  # the written text round-trips the float32 exactly
    assert got[1] == got[3] and len(set(got.tolist())) == 5  # same line, same score; others differ
    # the unlabelled 39-field test format of the same lines gives the same output, byte for byte
    unlabelled = write(tmp_path / "few39.txt", [line.split("\t", 1)[1] for line in few.read_text().splitlines()])
    out39 = tmp_path / "few39.pred"
    predict_file(world["model"], unlabelled, out39, processed_dir=world["root"] / "proc")
    assert out39.read_bytes() == out.read_bytes()


def test_dense_numerics_model_scores_raw_lines_like_its_preprocessed_rows(world, tmp_path):
    out = tmp_path / "all.pred"
    n = predict_file(world["model_dense"], world["raw"], out, processed_dir=world["root"] / "proc_dense",
                     batch_rows=ROWS)
    assert n == ROWS and len(out.read_text().splitlines()) == ROWS
    lines = list(range(1, ROWS + 1))
    cat, dense = preprocessed_rows(world["root"] / "proc_dense", world["fmap_dense"], lines, lines)
    want = model_probabilities(world["model_dense"], world["fmap_dense"], cat, dense)
    np.testing.assert_array_equal(read_probs(out), want)


def test_a_model_with_folded_dense_copies_scores_raw_lines_like_its_preprocessed_rows(world, tmp_path):
    proc = world["root"] / "proc_both"
    fmap = FeatureMap.load(proc / "feature_map.json")
    ckpt = save_random_model(tmp_path / "dcnv2", fmap, "dcnv2", hidden_units=[8], num_cross_layers=2)
    out = tmp_path / "all.pred"
    assert predict_file(ckpt, world["raw"], out, processed_dir=proc, batch_rows=ROWS) == ROWS
    lines = list(range(1, ROWS + 1))
    cat, dense = preprocessed_rows(proc, fmap, lines, lines)
    assert dense.shape[1] == 13 and float(np.abs(dense).max()) > 0.5  # the copies carry values
    want = model_probabilities(ckpt, fmap, cat, dense)
    np.testing.assert_array_equal(read_probs(out), want)
    # the copies reach the score: zeroing them changes it
    assert not np.allclose(model_probabilities(ckpt, fmap, cat, np.zeros_like(dense)), want)


def test_output_order_and_count_do_not_depend_on_batching(world, tmp_path):
    one, small = tmp_path / "one.pred", tmp_path / "small.pred"
    kw = {"processed_dir": world["root"] / "proc"}
    assert predict_file(world["model"], world["raw"], one, batch_rows=10_000, **kw) == ROWS
    assert predict_file(world["model"], world["raw"], small, batch_rows=7, **kw) == ROWS
    a, b = read_probs(one), read_probs(small)
    assert len(a) == len(b) == ROWS
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert np.abs(a - a[::-1]).max() > 1e-3  # the scores really distinguish rows (order is testable)


def test_unseen_values_are_oov_and_empty_values_missing(world, tmp_path):
    first = world["lines"][0].split("\t")
    vocab_c1 = pl.read_parquet(world["root"] / "proc" / "vocab" / "C1.parquet")
    top = vocab_c1.filter(pl.col("id") == 2)["value"].item()  # the most frequent C1 value
    known = first[1:]
    unseen = [*["999999999"] * 13, *["00c0ffee"] * 26]  # bucket 429 and a hash never drawn
    empty = [""] * 39
    upper = [*known[:13], top.upper(), *known[14:]]  # hex case does not matter, as in training
    rows = [known, unseen, empty, upper]
    raw = write(tmp_path / "odd.txt", ["\t".join(r) for r in rows])
    encoder = load_encoder(world["root"] / "proc")
    (batch,) = iter_encoded(read_raw(raw, encoder), encoder, tmp_path)
    assert batch.categorical[1].tolist() == [0] * 39  # OOV everywhere
    assert batch.categorical[2].tolist() == [1] * 39  # missing everywhere
    assert batch.categorical[3][13] == 2  # "ABCDEF12" finds "abcdef12"
    assert batch.categorical[3].tolist()[14:] == batch.categorical[0].tolist()[14:]
    out = tmp_path / "odd.pred"
    predict_file(world["model"], raw, out, processed_dir=world["root"] / "proc")
    ids = np.asarray([batch.categorical[0], [0] * 39, [1] * 39, batch.categorical[3]], dtype=np.int32)
    want = model_probabilities(world["model"], world["fmap"], ids, np.zeros((4, 0), np.float32))
    np.testing.assert_array_equal(read_probs(out), want)


def test_predict_to_stdout(world, tmp_path, capsys):
    few = write(tmp_path / "two.txt", world["lines"][:2])
    out = tmp_path / "two.pred"
    predict_file(world["model"], few, out, processed_dir=world["root"] / "proc")
    capsys.readouterr()
    assert predict_file(world["model"], few, "-", processed_dir=world["root"] / "proc") == 2
    assert capsys.readouterr().out == out.read_text()


def test_bad_hex_value_names_file_line_and_column(world, tmp_path):
    lines = world["lines"][:4]
    fields = lines[2].split("\t")
    fields[18] = "zz00zz00"  # C5 on line 3
    raw = write(tmp_path / "bad.txt", [*lines[:2], "\t".join(fields), lines[3]])
    out = tmp_path / "bad.pred"
    out.write_text("earlier\n")
    with pytest.raises(DataFormatError) as e:
        predict_file(world["model"], raw, out, processed_dir=world["root"] / "proc")
    assert (e.value.rule, e.value.line, e.value.column) == ("hex8", 3, "C5")
    assert "zz00zz00" in str(e.value)
    assert out.read_text() == "earlier\n"  # a failed run leaves the earlier output alone


def test_wrong_encodings_and_missing_checkpoint_are_refused(world, tmp_path):
    with pytest.raises(ValueError, match="trained on feature map"):
        predict_file(world["model"], world["raw"], tmp_path / "x", processed_dir=world["root"] / "proc_dense")
    with pytest.raises(FileNotFoundError, match="feature_map.json"):
        predict_file(world["model"], world["raw"], tmp_path / "x")  # no encodings beside a checkpoint
    with pytest.raises(FileNotFoundError, match=r"checkpoints below it: .*dcnv2"):
        predict_file(world["root"], world["raw"], tmp_path / "x")
    encoder = load_encoder(world["root"] / "proc")
    table = read_source("criteo", world["raw"])
    with pytest.raises(ValueError, match="read as format 'avazu'"):
        encoder.check_source(dataclasses.replace(table, format="avazu"))
    with pytest.raises(ValueError, match=r"missing \['C26'\]"):
        encoder.check_source(dataclasses.replace(table, fields=table.fields[:-1]))


def test_reader_params_keep_every_rating_line():
    fmap = FeatureMap(format="movielens", label="label", fields=(), splits={}, source_hash="",
                      params={"rating_threshold": 5, "drop_neutral_rating": True})
    pre = reader_params(fmap, Params()).preprocess
    assert (pre.rating_threshold, pre.drop_neutral_rating) == (5, False)


# ------------------------------------------------------------------ ONNX export


@pytest.mark.parametrize("name,hparams,processed", [
    ("dcnv2", {"hidden_units": [8], "num_cross_layers": 2}, "proc"),
    ("dagfm", {"interaction_type": "outer", "depth": 2}, "proc"),
    ("kd_dagfm_plus", {"depth": 2, "hidden_units": [8]}, "proc"),
    ("fsdnet", {"num_layers": 2, "hidden_dim": 8}, "proc"),
    ("dlrm", {"bottom_units": [8, 4], "top_units": [8]}, "proc_dense"),
    ("dcnv2", {"hidden_units": [8], "num_cross_layers": 2}, "proc_both"),  # dense copies folded in
    ("dagfm", {"interaction_type": "outer", "depth": 2}, "proc_both"),
])  # fmt: skip
def test_onnx_export_matches_pytorch_on_the_test_split(world, tmp_path, name, hparams, processed):
    proc = world["root"] / processed
    fmap = FeatureMap.load(proc / "feature_map.json")
    ckpt = save_random_model(tmp_path / "ckpt", fmap, name, **hparams)
    export = export_model(ckpt, tmp_path / "export", processed_dir=proc)
    assert sorted(p.name for p in export.iterdir()) == [
        "export.json", "feature_map.json", "model.json", "model.onnx", "model.safetensors", "vocab"]
    assert (export / "feature_map.json").read_bytes() == (proc / "feature_map.json").read_bytes()
    assert verify_onnx(export, proc, "test") < 1e-5
    assert fmap.splits["test"]["rows"] > 10
    info = json.loads((export / "export.json").read_text())
    assert info["inputs"]["categorical"]["fields"] == [f.name for f in fmap.categorical_fields]
    assert info["smoke_max_abs_diff"] < 1e-5
    # dynamic batch: 1 row and 33 rows through the same graph
    session = onnx_session(export)
    cat, dense = preprocessed_rows(proc, fmap, list(range(1, ROWS + 1)), list(range(1, 34)))
    want = model_probabilities(ckpt, fmap, cat, dense)
    np.testing.assert_allclose(onnx_probabilities(session, cat[:1], dense[:1]), want[:1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(onnx_probabilities(session, cat, dense), want, atol=1e-5, rtol=0)


def test_export_dir_is_self_contained_and_scores_raw_lines(world, tmp_path):
    import shutil

    proc = tmp_path / "proc"
    shutil.copytree(world["root"] / "proc", proc)
    export = export_model(world["model"], tmp_path / "export", processed_dir=proc)
    shutil.rmtree(proc)  # the export no longer needs the processed directory
    torch_out, onnx_out, ref = tmp_path / "t.pred", tmp_path / "o.pred", tmp_path / "r.pred"
    auto_out = tmp_path / "a.pred"
    assert predict_file(export, world["raw"], torch_out, runtime="torch") == ROWS
    assert predict_file(export, world["raw"], onnx_out, runtime="onnx") == ROWS
    assert predict_file(export, world["raw"], auto_out) == ROWS  # auto: the export's model.onnx
    predict_file(world["model"], world["raw"], ref, processed_dir=world["root"] / "proc")  # auto: torch
    assert torch_out.read_bytes() == ref.read_bytes()  # same checkpoint, same encodings
    assert auto_out.read_bytes() == onnx_out.read_bytes()
    np.testing.assert_allclose(read_probs(onnx_out), read_probs(torch_out), atol=1e-5, rtol=0)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(export / ONNX_FILE)).metadata_props}
    assert props["ctrflow.model"] == "dcnv2" and json.loads(props["ctrflow.dense_fields"]) == []
    # re-exporting over an existing export replaces it atomically; exporting in place is refused
    export_model(world["model"], export, processed_dir=world["root"] / "proc")
    assert predict_file(export, world["raw"], torch_out, runtime="torch") == ROWS
    with pytest.raises(ValueError, match="new directory"):
        export_model(export, export)


def test_onnx_scoring_never_imports_torch_and_still_checks_the_feature_map(world, tmp_path):
    """`ctrflow predict` on an export: onnxruntime scores, torch stays unloaded (startup time and
    memory of a serving process), and the checkpoint's feature-map hash is still checked."""
    import subprocess
    import sys

    export = export_model(world["model"], tmp_path / "export", processed_dir=world["root"] / "proc")
    in_process = tmp_path / "in.pred"
    predict_file(export, world["raw"], in_process, runtime="onnx")
    with pytest.raises(ValueError, match="trained on feature map"):
        predict_file(export, world["raw"], tmp_path / "x", runtime="onnx", processed_dir=world["root"] / "proc_dense")
    out = tmp_path / "cli.pred"
    probe = ("import atexit, sys; atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules)); "
             "import cli; cli.main()")
    done = subprocess.run(
        [sys.executable, "-c", probe, "predict", "--model", str(export),
         "--out", str(out), str(world["raw"])],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "torch loaded: False"
    assert out.read_bytes() == in_process.read_bytes()
    assert len(read_probs(out)) == ROWS


# ------------------------------------------------------------------ inference settings (components/serve/optimize.py)


def _trained_bn_checkpoint(model_dir: Path, fmap: FeatureMap, processed: Path) -> Path:
    """kd_dagfm_plus with BatchNorm, a few train steps on the train split (running stats not 0/1)."""
    from components.data.loader import BatchLoader

    torch.manual_seed(0)
    hparams = {"embedding_dim": 4, "embedding_std": 0.5, "depth": 2, "hidden_units": [8, 8]}
    model = build_model("kd_dagfm_plus", fmap, **hparams)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        for batch in BatchLoader(processed / "train.parquet", fmap, 64, shuffle=False):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(
                model(batch.categorical, batch.dense), batch.label).backward()
            opt.step()
    save_model(model.eval(), model_dir, model_name="kd_dagfm_plus", hparams=hparams,
               feature_map_hash=feature_map_hash(fmap), epoch=1, metrics={})
    return model_dir


def test_export_graph_has_batch_norm_folded_and_still_matches_the_checkpoint(world, tmp_path):
    import onnx

    proc = world["root"] / "proc"
    ckpt = _trained_bn_checkpoint(tmp_path / "ckpt", world["fmap"], proc)
    folded = export_model(ckpt, tmp_path / "folded", processed_dir=proc)
    unfolded = export_model(ckpt, tmp_path / "unfolded", processed_dir=proc,
                            params=Params.model_validate({"inference": {"fold_batch_norm": False}}))
    ops = {name: [n.op_type for n in onnx.load(str(d / ONNX_FILE)).graph.node]
           for name, d in (("folded", folded), ("unfolded", unfolded))}
    assert "BatchNormalization" not in ops["folded"]
    assert ops["unfolded"].count("BatchNormalization") == 2  # what folding removed
    info = json.loads((folded / "export.json").read_text())
    assert info["batch_norm_folded"] == 2 and info["smoke_max_abs_diff"] < 1e-5
    assert verify_onnx(folded, proc, "test") < 1e-5  # against the unfolded checkpoint


def test_onnx_session_uses_the_configured_optimization_level_and_threads(world, tmp_path):
    import onnx
    import onnxruntime as ort

    from components.config import InferenceParams

    export = export_model(world["model"], tmp_path / "export", processed_dir=world["root"] / "proc")
    nodes = {}
    for level, ort_name in [("disabled", "ORT_DISABLE_ALL"), ("basic", "ORT_ENABLE_BASIC"),
                            ("extended", "ORT_ENABLE_EXTENDED"), ("all", "ORT_ENABLE_ALL")]:
        saved = tmp_path / f"optimized-{level}.onnx"
        session = onnx_session(export, InferenceParams(onnx_graph_optimization=level, threads=1),
                               optimized_model_path=saved)
        options = session.get_session_options()
        assert options.graph_optimization_level == getattr(ort.GraphOptimizationLevel, ort_name)
        assert options.intra_op_num_threads == 1
        nodes[level] = [n.op_type for n in onnx.load(str(saved)).graph.node]
    # the saved graphs show the levels at work: higher levels fuse / fold more nodes away
    assert len(nodes["disabled"]) > len(nodes["basic"]) >= len(nodes["extended"]) >= len(nodes["all"])
    default = onnx_session(export).get_session_options()
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # inference.onnx_spinning: within_call (default) spins while a call runs, false never, true always
    for setting, spin, stop in (("within_call", "1", "1"), (False, "0", None), (True, "1", None)):
        options = onnx_session(export, InferenceParams(onnx_spinning=setting)).get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == spin
        if stop is not None:
            assert options.get_session_config_entry("session.force_spinning_stop") == stop
        else:
            with pytest.raises(RuntimeError, match="force_spinning_stop"):  # onnxruntime: no such entry
                options.get_session_config_entry("session.force_spinning_stop")
    assert InferenceParams().onnx_spinning == "within_call"
    from pydantic import ValidationError

    for bad in ({"onnx_spinning": "sometimes"}, {"onnx_one_row_threads": -1}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            InferenceParams(**bad)


def test_single_rows_run_on_a_one_thread_session_sharing_the_embedding_tables(world, tmp_path, monkeypatch):
    import onnx

    import components.serve.onnx_runtime as rt
    from components.config import InferenceParams

    export = export_model(world["model"], tmp_path / "export", processed_dir=world["root"] / "proc")
    monkeypatch.setattr(rt, "SHARED_MIN_BYTES", 0)  # the fixture's tables are small
    scorer = onnx_session(export, InferenceParams(threads=2))
    fmap = world["fmap"]
    rng = np.random.default_rng(0)
    cat = np.stack([rng.integers(0, n, 6) for n in fmap.vocab_sizes], 1).astype(np.int64)
    dense = rng.normal(size=(6, len(fmap.dense_fields))).astype(np.float32)
    before = onnx_probabilities(scorer, cat, dense)
    assert scorer.one_row is None and not scorer.shared  # rows in blocks only: no second session
    onnx_probabilities(scorer, cat[:1], dense[:1])  # the first single row opens it
    assert scorer.get_session_options().intra_op_num_threads == 2
    assert scorer.one_row.get_session_options().intra_op_num_threads == 1
    tables = {t.name for t in onnx.load(str(export / ONNX_FILE)).graph.initializer if "table" in t.name}
    assert tables and set(scorer.shared) == tables  # the Gather tables, held once by both sessions
    calls, one_row = [], scorer.one_row

    class Spy:
        def run(self, *args):
            calls.append(len(args[1]["categorical"]))
            return one_row.run(*args)

    scorer.one_row = Spy()
    batch = onnx_probabilities(scorer, cat, dense)
    singles = [onnx_probabilities(scorer, cat[i:i + 1], dense[i:i + 1])[0] for i in range(6)]
    assert calls == [1] * 6  # the batch went to the batch session, each single row to the one-row one
    np.testing.assert_allclose(singles, batch, rtol=1e-5, atol=1e-5)  # other sessions: float rounding only
    np.testing.assert_allclose(batch, before, rtol=1e-5, atol=1e-5)  # the reopened batch session
    assert onnx_session(export, InferenceParams(threads=1)).one_row is None
    assert onnx_session(export, InferenceParams(threads=2, onnx_one_row_threads=0)).one_row is None


def _reference_text(model_dir: Path, raw: Path, processed: Path, settings, tmp: Path) -> str:
    """predict's output computed the pre-optimisation way: one model call on all rows, Polars'
    CSV writer (shortest round-trip float32 text) on the whole column."""
    from components.serve.optimize import prepare_for_inference
    from components.train.checkpoint import load_model

    encoder = load_encoder(processed)
    (batch,) = iter_encoded(read_raw(raw, encoder), encoder, tmp, batch_rows=10_000)
    model, _ = load_model(model_dir, encoder.feature_map)
    model = prepare_for_inference(model, settings)
    with torch.inference_mode():
        probs = torch.sigmoid(model(torch.from_numpy(batch.categorical), torch.from_numpy(batch.dense))).numpy()
    import io

    buf = io.BytesIO()
    pl.DataFrame({"p": probs}).write_csv(buf, include_header=False)
    return buf.getvalue().decode()


@pytest.mark.parametrize("fold", [True, False])
def test_predict_text_equals_the_unoptimised_reference(world, tmp_path, fold):
    from components.config import InferenceParams

    proc = world["root"] / "proc"
    ckpt = _trained_bn_checkpoint(tmp_path / "ckpt", world["fmap"], proc)
    settings = InferenceParams(fold_batch_norm=fold)
    want = _reference_text(ckpt, world["raw"], proc, settings, tmp_path)
    out = tmp_path / "p.txt"
    assert predict_file(ckpt, world["raw"], out, processed_dir=proc,
                        params=Params.model_validate({"inference": settings.model_dump()})) == ROWS
    assert out.read_text() == want
    got = read_probs(out)
    assert len(set(got.tolist())) > ROWS // 2
    assert np.all(np.float32(np.array(want.splitlines(), dtype=np.float64)) == got)  # text round-trips
    # score_rows splits the model calls; values agree (no bit-equality across batch sizes)
    small = tmp_path / "s.txt"
    predict_file(ckpt, world["raw"], small, processed_dir=proc, batch_rows=100,
                 params=Params.model_validate({"inference": {**settings.model_dump(), "score_rows": 16}}))
    np.testing.assert_allclose(read_probs(small), got, rtol=0, atol=1e-6)


def test_predict_with_int8_dynamic_quantization_stays_close(world, tmp_path):
    proc = world["root"] / "proc"
    ckpt = _trained_bn_checkpoint(tmp_path / "ckpt", world["fmap"], proc)
    fp32, int8 = tmp_path / "fp32.txt", tmp_path / "int8.txt"
    predict_file(ckpt, world["raw"], fp32, processed_dir=proc)
    predict_file(ckpt, world["raw"], int8, processed_dir=proc,
                 params=Params.model_validate({"inference": {"quantize": "dynamic_int8"}}))
    a, b = read_probs(fp32), read_probs(int8)
    assert len(b) == ROWS and not np.array_equal(a, b)  # the int8 model really ran
    assert np.corrcoef(a, b)[0, 1] > 0.99 and np.abs(a - b).max() < 0.05
