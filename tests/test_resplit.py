"""benchmarks/resplit.py: split variants of a dataset and the comparison pooled over them, as
quality.py and peers.py render it."""

from __future__ import annotations

import pytest

from benchmarks import peers, quality
from benchmarks.resplit import (
    bases_with_variants,
    pooled_difference,
    pooled_means,
    split_variant,
    splits_of,
    variant_dir_name,
    variant_name,
)


def test_split_variant_names_parse_and_malformed_ones_are_refused():
    assert split_variant("avazu10k") == ("avazu10k", None)
    assert split_variant("avazu10k@split2023") == ("avazu10k", 2023)
    assert variant_name("criteo117k", 7) == "criteo117k@split7"
    assert variant_dir_name("avazu10k@split2023") == "avazu10k_split2023"
    for bad in ("avazu10k@split", "avazu10k@2023", "avazu10k@splitX", "@split3"):
        with pytest.raises(ValueError, match="<dataset>@split<seed>"):
            split_variant(bad)
    names = ["x@split9", "y", "x", "x@split10", "z@split1"]
    assert splits_of(names, "x") == ["x", "x@split9", "x@split10"]  # numeric seed order, default first
    assert bases_with_variants(names) == ["x", "z"]


def _run(ds, model, seed, auc, ll=0.40, lib=None):
    r = {"dataset": ds, "model": model, "seed": seed, "test_auc": auc, "test_logloss": ll}
    if lib:
        r["library"] = lib
    return r


def test_pooled_means_weigh_every_split_the_same_over_the_common_seeds():
    runs = [
        # default split: 3 seeds of "a" (seed 3 only here: left out), 2 of "b"
        _run("d", "a", 1, 0.70), _run("d", "a", 2, 0.72), _run("d", "a", 3, 0.99),
        _run("d", "b", 1, 0.69), _run("d", "b", 2, 0.69),
        # one variant, both seeds
        _run("d@split5", "a", 1, 0.60, 0.50), _run("d@split5", "a", 2, 0.62, 0.50),
        _run("d@split5", "b", 1, 0.63, 0.45), _run("d@split5", "b", 2, 0.63, 0.45),
        _run("other", "a", 1, 0.10),  # another dataset: ignored
    ]
    groups = {"a": lambda r: r["model"] == "a", "b": lambda r: r["model"] == "b"}
    pool = pooled_means(runs, "d", groups)
    assert pool["splits"] == ["d", "d@split5"] and pool["seeds"] == [1, 2]
    a, b = pool["groups"]["a"], pool["groups"]["b"]
    assert a["per_split"]["d"]["test_auc"] == pytest.approx(0.71)  # seed 3's 0.99 is not common
    assert a["test_auc"] == pytest.approx((0.71 + 0.61) / 2)
    assert b["test_auc"] == pytest.approx((0.69 + 0.63) / 2)
    diff = pooled_difference(pool, "a", "b")
    assert diff["diff"] == pytest.approx(0.0)
    assert diff["per_split"] == pytest.approx({"d": 0.02, "d@split5": -0.02})
    assert (diff["splits_ahead"], diff["splits"]) == (1, 2)
    assert pooled_difference(pool, "a", "b", "test_logloss")["diff"] == pytest.approx((0.0 + 0.05) / 2)
    # one split only, or a group absent from a split: nothing to pool
    assert pooled_means([r for r in runs if r["dataset"] == "d"], "d", groups) is None
    assert pooled_means([r for r in runs if not (r["dataset"] == "d@split5" and r["model"] == "b")], "d", groups) is None


def test_quality_renders_a_pooled_section_with_the_difference_to_lr_split_by_split():
    runs = []
    for ds, lr, deep in (("avazu10k", 0.725, 0.722), ("avazu10k@split2023", 0.700, 0.710),
                         ("avazu10k@split2024", 0.690, 0.700)):
        for seed in (1, 2):
            runs += [_run(ds, "lr", seed, lr, 0.42), _run(ds, "dcnv2", seed, deep, 0.41)]
    lines = quality.pooled_section({"runs": runs}, "avazu10k")
    text = "\n".join(lines)
    assert lines[0] == "## avazu10k over 3 random splits (pooled)"
    row = next(x for x in lines if x.startswith("| dcnv2 |"))
    # pooled: lr (0.725 + 0.700 + 0.690) / 3, dcnv2 (0.722 + 0.710 + 0.700) / 3 → +0.0057; ahead on 2 of 3
    assert row == "| dcnv2 | 0.7107 | 0.4100 | +0.0057 | -0.0100 | 2/3 |"
    assert "| seed 2023 | 0.7000 | 0.7100 |" in text and "| default | 0.7250 | 0.7220 |" in text


def test_quality_refuses_variants_of_fixed_splits_and_unknown_names():
    assert quality._known_dataset("avazu10k@split3") and quality._known_dataset("criteo117k")
    assert not quality._known_dataset("frappe@split3")
    assert not quality._known_dataset("synthetic@split3")
    assert not quality._known_dataset("avazu10k@3")
    with pytest.raises(ValueError, match="split variants exist for"):
        quality.prepare("frappe@split3", None, 0, print)
    with pytest.raises(SystemExit):
        quality.parse_args(["--datasets", "frappe@split2023"])


def test_peers_pools_the_splits_into_the_verdict_and_keeps_variants_out_of_the_summary(tmp_path):
    def run(ds, lib, seed, auc):
        return {"dataset": ds, "library": lib, "model": "dcnv2", "seed": seed,
                "settings": {"train.device": "cpu", "train.num_threads": 1, "train_params_hash": "h"},
                "test_auc": auc, "test_logloss": 0.40 if lib == peers.CTRFLOW else 0.41, "valid_auc": auc,
                "valid_logloss": 0.4, "best_epoch": 2, "epochs": 4, "train_samples_per_s": 2.0 if lib == peers.CTRFLOW
                else 1.0, "wall_s": 1.0, "precision": "fp32", "batch_size": 256,
                "load_avg_start": 0.5, "load_avg_end": 0.5}

    runs = []
    # the default split: ctrflow behind by 0.002 (seeds 1-3; seed 3 has no variant run)
    for seed in (1, 2, 3):
        runs += [run("avazu10k", peers.CTRFLOW, seed, 0.720), run("avazu10k", peers.DEEPCTR, seed, 0.722)]
    # two more splits: ahead by 0.004 and behind by 0.001
    for seed in (1, 2):
        runs += [run("avazu10k@split7", peers.CTRFLOW, seed, 0.704), run("avazu10k@split7", peers.DEEPCTR, seed, 0.700),
                 run("avazu10k@split8", peers.CTRFLOW, seed, 0.699), run("avazu10k@split8", peers.DEEPCTR, seed, 0.700)]
    results = {"runs": runs, "datasets": {}, "invocations": [], "context": {}, "recipe": {}}
    peers.write_outputs(results, tmp_path)
    c = results["pooled"]["avazu10k"]["dcnv2"]
    assert c["splits"] == ["avazu10k", "avazu10k@split7", "avazu10k@split8"] and c["seeds"] == [1, 2]
    assert c["auc_diff"] == pytest.approx((-0.002 + 0.004 - 0.001) / 3)
    assert c["auc_pass"] and c["splits_ahead"] == 1 and c["logloss_diff"] == pytest.approx(-0.01)
    assert not results["comparisons"]["avazu10k"]["dcnv2"]["auc_pass"]  # the default split alone still misses
    md = (tmp_path / "peers.md").read_text()
    summary = md.split("## How it was run")[0]
    assert "| avazu10k@split7 |" not in summary and "## avazu10k@split7" not in md
    assert "| avazu10k | dcnv2 | 3 × 2 | 0.7077 | 0.7073 | +0.0003 | 1/3 | -0.0100 | **PASS** |" in summary
    assert "| dcnv2 | 1, 2 | -0.0020 | +0.0040 | -0.0010 | **+0.0003** |" in md
    assert any("over 3 splits" in x and "PASS" in x for x in peers.pooled_lines(results["pooled"]))


def test_peers_accepts_variants_of_random_splits_only():
    assert peers.parse_args(["--datasets", "avazu10k@split2023,criteo117k"]).datasets == ["avazu10k@split2023",
                                                                                          "criteo117k"]
    for bad in ("frappe@split2023", "avazu10k@2023", "nope@split1"):
        with pytest.raises(SystemExit):
            peers.parse_args(["--datasets", bad])
