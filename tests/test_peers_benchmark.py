"""benchmarks/peers.py: aggregation, ratios and target verdicts on hand-made runs, the DeepCTR-Torch
feature columns of a tiny feature map, the skip message for absent data, and one tiny real run of
both libraries (skipped when DeepCTR-Torch, the optional [bench] extra, is not installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import benchmarks.quality as quality
from benchmarks import peers
from benchmarks.peers import (
    CTRFLOW,
    DEEPCTR,
    aggregate,
    column_spec,
    compare,
    missing_data,
    parse_args,
    ratio_lines,
    run_settings,
    train_recipe,
    write_outputs,
)
from components.config import load_params

REPO = Path(__file__).resolve().parents[1]
HAS_DEEPCTR = importlib.util.find_spec("deepctr_torch") is not None
NEEDS_DEEPCTR = pytest.mark.skipif(not HAS_DEEPCTR, reason="DeepCTR-Torch (the optional [bench] extra) is not "
                                   "installed: pip install -c constraints.txt -e '.[bench]'")

TINY_FMAP = {
    "label": "label",
    "fields": [
        {"name": "user", "type": "categorical", "vocab_size": 7},
        {"name": "item", "type": "categorical", "vocab_size": 11},
        {"name": "price", "type": "dense", "vocab_size": 0},
    ],
}


def _run(ds: str, lib: str, model: str, seed: int, auc: float, sps: float, batch: int = 1024) -> dict:
    return {"dataset": ds, "library": lib, "model": model, "seed": seed,
            "settings": {"train.device": "cpu", "train.num_threads": 2, "train_params_hash": "h"},
            "test_auc": auc, "test_logloss": 0.45, "valid_auc": auc + 0.001, "valid_logloss": 0.44,
            "best_epoch": 2, "epochs": 4, "train_samples_per_s": sps, "wall_s": 10.0,
            "precision": "bf16" if lib == CTRFLOW else "fp32", "batch_size": batch,
            "load_avg_start": 1.0, "load_avg_end": 1.5}


def _results(batch: int = 1024) -> dict:
    runs = [
        # criteo117k dcnv2: ctrflow ahead in AUC in both seeds, 2.5x faster → both targets met
        _run("criteo117k", CTRFLOW, "dcnv2", 1, 0.760, 50_000.0, batch),
        _run("criteo117k", CTRFLOW, "dcnv2", 2, 0.764, 50_000.0, batch),
        _run("criteo117k", DEEPCTR, "dcnv2", 1, 0.755, 20_000.0, batch),
        _run("criteo117k", DEEPCTR, "dcnv2", 2, 0.757, 20_000.0, batch),
        # frappe deepfm: ctrflow behind and only 1.5x → both missed
        _run("frappe", CTRFLOW, "deepfm", 1, 0.930, 30_000.0, batch),
        _run("frappe", DEEPCTR, "deepfm", 1, 0.935, 20_000.0, batch),
        # avazu10k dcnv2 has no DeepCTR-Torch run yet: no comparison
        _run("avazu10k", CTRFLOW, "dcnv2", 1, 0.70, 9_000.0, batch),
    ]
    return {"runs": runs, "datasets": {"criteo117k": {"protocol": "params.yaml's preprocessing unchanged",
                                                      "splits": {"train": 8, "valid": 1, "test": 1}}},
            "invocations": [{"command": ".venv/bin/python benchmarks/peers.py", "started": "now", "runs_done": 7}],
            "context": {"cpu_count": 2, "machine": "x86_64", "torch": "2.13", "python": "3.11", "threads": 2},
            "recipe": {"h": {"batch_size": batch, "lr": 0.001}}}


def test_aggregates_and_comparisons_pair_the_libraries():
    agg = aggregate(_results())
    a = agg["criteo117k"]["dcnv2"]
    assert a[CTRFLOW]["test_auc"]["mean"] == pytest.approx(0.762)
    assert a[DEEPCTR]["test_auc"]["std"] == pytest.approx(0.0014142, abs=1e-6)
    assert a[CTRFLOW]["precision"] == ["bf16"] and a[DEEPCTR]["batch_sizes"] == [1024]
    cmp = compare(agg)
    c = cmp["criteo117k"]["dcnv2"]
    assert c["auc_diff"] == pytest.approx(0.006)
    assert c["auc_diff_per_seed"] == {"1": pytest.approx(0.005), "2": pytest.approx(0.007)}
    assert (c["seeds_won"], c["seeds_common"]) == (2, 2)
    assert c["speed_ratio"] == pytest.approx(2.5)
    assert c["auc_pass"] and c["speed_pass"] and c["at_target_batch"]
    f = cmp["frappe"]["deepfm"]
    assert f["auc_diff"] == pytest.approx(-0.005) and f["speed_ratio"] == pytest.approx(1.5)
    assert not f["auc_pass"] and not f["speed_pass"]
    assert "avazu10k" not in cmp  # one library only: nothing to compare

    lines = ratio_lines(cmp)
    assert len(lines) == 2
    assert "Δ test AUC ctrflow − DeepCTR-Torch +0.0060 (PASS" in lines[0] and "2.50× (PASS, ≥ 2×)" in lines[0]
    assert "-0.0050 (MISS" in lines[1] and "1.50× (MISS" in lines[1]


def test_write_outputs_renders_both_rows_references_and_verdicts(tmp_path):
    results = _results()
    write_outputs(results, tmp_path)
    md = (tmp_path / "peers.md").read_text()
    assert "| criteo117k | dcnv2 | 0.7620 ± 0.0028 | 0.7560 ± 0.0014 | +0.0060 | **PASS** | 2.50× | **PASS** |" in md
    assert "| frappe | deepfm | 0.9300 ± — | 0.9350 ± — | -0.0050 | **MISS** | 1.50× | **MISS** |" in md
    assert "| dcnv2 | ctrflow | 2 | 0.7620 ± 0.0028 |" in md
    assert "| dcnv2 | DeepCTR-Torch 0.3.0 | 2 | 0.7560 ± 0.0014 |" in md
    # peers.md's FuxiCTR (and DeepCTR-Torch) numbers quoted as references
    assert "| dcnv2 | FuxiCTR 2.3.9 (peers.md, reference) | 2 | 0.7594 ± 0.0021 | — | — | — | 13.6k | — |" in md
    assert "| deepfm | FuxiCTR 2.3.9 (peers.md, reference) | 1 | 0.9476 ± — |" in md
    assert "  - AUC ≥ DeepCTR-Torch's: **PASS**" in md and "  - samples/s ≥ 2× (batch 1024): **MISS**" in md
    assert "Protocol: params.yaml's preprocessing unchanged" in md
    assert "not at the target's batch" not in md
    stored = json.loads((tmp_path / "peers.json").read_text())
    assert stored["comparisons"]["criteo117k"]["dcnv2"]["speed_ratio"] == pytest.approx(2.5)


def test_speed_verdict_names_a_batch_size_other_than_the_targets(tmp_path):
    results = _results(batch=4096)
    write_outputs(results, tmp_path)
    md = (tmp_path / "peers.md").read_text()
    assert "| 2.50× | **PASS** (batch 4096) |" in md
    assert "not at the target's batch 1024" in md and "--batch-size 1024" in md
    assert results["comparisons"]["criteo117k"]["dcnv2"]["at_target_batch"] is False


def test_column_spec_of_a_tiny_feature_map():
    assert column_spec(TINY_FMAP, 16) == [("sparse", "user", 7, 16), ("sparse", "item", 11, 16), ("dense", "price", 1)]
    with pytest.raises(ValueError, match="unknown type"):
        column_spec({"fields": [{"name": "x", "type": "list", "vocab_size": 0}]}, 4)


@NEEDS_DEEPCTR
def test_deepctr_columns_and_models_of_a_tiny_feature_map():
    assert peers.import_deepctr()[0] is not None  # first import behind the offline version-check guard
    from deepctr_torch.inputs import DenseFeat, SparseFeat

    cols = peers.deepctr_columns(TINY_FMAP, 8)
    assert [type(c) for c in cols] == [SparseFeat, SparseFeat, DenseFeat]
    assert [(c.name, c.vocabulary_size, c.embedding_dim) for c in cols[:2]] == [("user", 7, 8), ("item", 11, 8)]
    assert (cols[2].name, cols[2].dimension) == ("price", 1)
    dcn = peers.build_deepctr("dcnv2", cols, seed=1)
    assert dcn.crossnet.parameterization == "matrix" and dcn.crossnet.layer_num == 3
    assert [m.out_features for m in dcn.dnn.linears] == [400, 400, 400]
    assert not dcn.dnn.use_bn and dcn.dnn.dropout.p == 0
    assert dcn.regularization_weight and all(l1 == l2 == 0 for _w, l1, l2 in dcn.regularization_weight)
    assert float(dcn.get_regularization_loss()) == 0.0
    deepfm = peers.build_deepctr("deepfm", cols, seed=1)
    assert deepfm.use_fm and all(l1 == l2 == 0 for _w, l1, l2 in deepfm.regularization_weight)
    with pytest.raises(ValueError, match="no DeepCTR-Torch twin"):
        peers.build_deepctr("xdeepfm", cols, seed=1)


def test_absent_data_gives_a_clear_skip_message(tmp_path, monkeypatch):
    msg = missing_data("criteo117k", tmp_path)
    assert msg.startswith("[criteo117k] skipped: ")
    assert str(tmp_path / "criteo" / "criteo_kaggle_train_sample117k.txt.gz") in msg and "../shared/data" in msg
    (tmp_path / "frappe").mkdir()
    (tmp_path / "frappe" / "frappe_x1_valid.csv").write_text("label\n")
    msg = missing_data("frappe", tmp_path)
    assert "frappe_x1_test.csv" in msg and "frappe_x1_valid.csv" not in msg
    (tmp_path / "frappe" / "frappe_x1_test.csv").write_text("label\n")
    assert missing_data("frappe", tmp_path) is None
    monkeypatch.setattr(quality, "SHARED_DATA", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"\[movielens100k\] skipped: .*nowhere/movielens/ml-100k"):
        peers.prepare_dataset("movielens100k", tmp_path / "work", print)


def test_the_recipe_is_params_yaml_read_at_run_time_and_its_hash_is_part_of_the_settings():
    args = parse_args(["--threads", "1", "--max-epochs", "3"])
    recipe = train_recipe(args)
    committed = load_params(REPO / "params.yaml").train
    assert recipe["max_epochs"] == 3 and recipe["num_threads"] == 1 and recipe["device"] == "cpu"
    for key in ("embedding_dim", "batch_size", "lr", "patience", "lr_decay", "grad_clip", "precision"):
        assert recipe[key] == committed.model_dump(mode="json")[key]
    assert "seed" not in recipe and "out_dir" not in recipe
    s = run_settings(args, recipe)
    assert s["train.max_epochs"] == 3 and "train.batch_size" not in s
    assert s["train_params_hash"] != run_settings(args, {**recipe, "lr": 0.5})["train_params_hash"]


def test_parse_args_defaults_and_refusals():
    args = parse_args([])
    # the four samples, then Avazu 10k's nine extra random splits (its verdict is pooled over them)
    assert args.datasets == ["criteo117k", "movielens100k", "frappe", "avazu10k"] + [
        f"avazu10k@split{s}" for s in range(2023, 2032)]
    assert args.models == ["dcnv2", "deepfm"] and args.seeds == [2024, 2025, 2026] and args.threads == 2
    assert args.max_epochs is None and args.batch_size is None
    for bad in (["--datasets", "synthetic"], ["--models", "xdeepfm"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_the_version_check_is_refused_only_inside_the_import_guard():
    import requests

    original = requests.get
    with peers._offline_version_check():
        with pytest.raises(requests.ConnectionError):
            requests.get("https://pypi.org/pypi/deepctr-torch/json")
    assert requests.get is original


@NEEDS_DEEPCTR
def test_a_tiny_run_of_both_libraries_on_the_same_split(tmp_path, monkeypatch, capsys):
    prep = quality.prepare_synthetic(tmp_path / "work", 3000, lambda _m: None)
    prep.name = "criteo117k"  # a Criteo-layout synthetic log standing in for the real sample
    monkeypatch.setattr(peers, "prepare_dataset", lambda name, work, log: prep)
    argv = ["--datasets", "criteo117k", "--models", "dcnv2", "--seeds", "7", "--max-epochs", "1",
            "--batch-size", "512", "--threads", "1", "--work-dir", str(tmp_path / "work"),
            "--out-dir", str(tmp_path / "out")]
    peers.main(argv)
    results = json.loads((tmp_path / "out" / "peers.json").read_text())
    runs = {r["library"]: r for r in results["runs"]}
    assert set(runs) == {CTRFLOW, DEEPCTR}
    for r in runs.values():
        assert 0.0 <= r["test_auc"] <= 1.0 and r["test_logloss"] > 0
        assert (r["epochs"], r["best_epoch"], r["batch_size"]) == (1, 1, 512)
        assert r["train_samples_per_s"] > 0 and r["settings"]["train.batch_size"] == 512
    md = (tmp_path / "out" / "peers.md").read_text()
    assert "| dcnv2 | ctrflow | 1 |" in md and "| dcnv2 | DeepCTR-Torch 0.3.0 | 1 |" in md
    assert "training samples/s ctrflow/DeepCTR-Torch" in capsys.readouterr().out
    # the same invocation again: both runs are already there with the same settings
    peers.main(argv)
    again = json.loads((tmp_path / "out" / "peers.json").read_text())
    assert [r["finished"] for r in again["runs"]] == [r["finished"] for r in results["runs"]]
    assert again["invocations"][-1]["runs_done"] == 0
