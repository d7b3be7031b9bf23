"""The evaluate and profile stages on a tiny finished run (tests/run_fixture.py).

Checked against direct recomputation: every model's test metrics (AUC, LogLoss, ECE, gAUC with
OOV/missing users left out), agreement with the teacher, the ROC and reliability CSVs, the n = 1
aggregate and a hand-computed two-run aggregate, the profile's FLOPs (fraction = student / teacher
exactly), parameters, file sizes and the Pareto CSV; plus model discovery, the gAUC field choice,
the settings section and the ROC helper on hand-made curves.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from components.data.feature_map import FeatureMap, FieldInfo
from components.data.loader import BatchLoader
from components.evaluate.aggregate import prediction_agreement
from components.evaluate.metrics import evaluate_predictions
from components.evaluate.models import (
    aggregate_runs,
    discover_models,
    evaluate_run,
    resolve_group_field,
    roc_points,
)
from components.evaluate.settings import EvaluateParams, evaluate_settings
from components.profile import count_flops
from components.profile.run import profile_run
from components.train.checkpoint import load_model
from components.train.loop import predict
from tests.run_fixture import EVALUATE, MODELS, ROWS, make_run, run_params


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(params, root, evaluation, profile) of one tiny run, evaluated and profiled once."""
    root = tmp_path_factory.mktemp("run")
    params = make_run(root)
    evaluation = evaluate_run(params)
    profile = profile_run(params)
    return params, root, evaluation, profile


def _recompute(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's test logits scored like the stage scores them: same batch size (EVALUATE's), so
    the same float32 matmuls run in the same order and the 1e-9 comparisons below are exact in
    practice. (A different batch size changes the GEMM blocking: float32 logits then differ at
    ~1e-7 relative, which moved a LogLoss by 1.4e-9 once — not a property of the code.)"""
    fmap = FeatureMap.load(root / "data/processed/feature_map.json")
    model, _ = load_model(root / MODELS[name][0], fmap)
    loader = BatchLoader(root / "data/processed/test.parquet", fmap, EVALUATE["batch_size"], shuffle=False)
    logits, labels = predict(model, loader)
    return logits.astype(np.float64), labels.astype(np.float64)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- evaluation


def test_every_model_equals_a_direct_recomputation(run):
    params, root, evaluation, _ = run
    import pyarrow.parquet as pq

    users = pq.read_table(root / "data/processed/test.parquet", columns=["user_id"]).column(0).to_numpy()
    teacher_logits, labels = _recompute(root, "teacher")
    assert list(evaluation["models"]) == list(MODELS)
    assert evaluation["rows"] == ROWS["test"] and evaluation["group_field"] == "user_id"
    assert evaluation["positives"] == int(labels.sum())
    for name in MODELS:
        logits, _ = _recompute(root, name)
        # OOV (0) / missing (1) users: each its own one-row group, so they never count
        groups = np.where(users >= 2, users, -1 - np.arange(users.size))
        expected = evaluate_predictions(labels, logits, groups=groups, n_bins=10)
        got = evaluation["models"][name]["metrics"]
        for key in ("auc", "logloss", "ece", "gauc", "gauc_groups", "n", "positives"):
            assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (name, key)
        assert got["reliability"]["count"] == expected["reliability"]["count"]
        # coverage = share of rows with a known user in a user group holding both classes
        known = users >= 2
        both = {u for u in np.unique(users[known])
                if 0 < labels[users == u].sum() < (users == u).sum()}
        assert got["gauc_impression_coverage"] == pytest.approx(
            np.isin(users, list(both)).sum() / users.size)
        assert got["gauc_groups"] == len(both)
        agreement = evaluation["models"][name]["agreement_with_teacher"]
        if name == "teacher":
            assert agreement is None
        else:
            assert agreement == pytest.approx(prediction_agreement(logits, teacher_logits))
    on_disk = json.loads(Path(evaluate_settings(params).out).read_text())
    assert on_disk["models"]["dagfm"]["metrics"]["auc"] == evaluation["models"]["dagfm"]["metrics"]["auc"]


def test_single_run_aggregate_is_n1_and_paired_difference_is_student_minus_teacher(run):
    _, _, evaluation, _ = run
    agg = evaluation["aggregate"]
    assert agg["n"] == 1 and agg["runs"] == ["distill=10,preprocess=8,train=9"]
    t_auc = evaluation["models"]["teacher"]["metrics"]["auc"]
    assert agg["models"]["teacher"]["auc"] == {
        "mean": t_auc, "std": None, "min": t_auc, "max": t_auc, "n": 1,
        "seeds": agg["runs"], "values": [t_auc]}
    s_auc = evaluation["models"]["fsdnet"]["metrics"]["auc"]
    paired = agg["vs_teacher"]["fsdnet"]["auc"]
    assert paired["mean_diff"] == pytest.approx(s_auc - t_auc)
    assert paired["std_diff"] is None and paired["p_value"] is None
    assert set(agg["vs_teacher"]) == {"dagfm", "fsdnet", "baseline_dagfm"}


def test_roc_csvs_are_subsampled_curves_from_0_0_to_1_1(run):
    params, root, evaluation, _ = run
    plots = Path(evaluate_settings(params).plots_dir)
    for name in MODELS:
        rows = _read_csv(plots / f"roc_{name}.csv")
        assert list(rows[0]) == ["fpr", "tpr"]
        fpr = np.array([float(r["fpr"]) for r in rows])
        tpr = np.array([float(r["tpr"]) for r in rows])
        assert 2 <= len(rows) <= 50  # evaluate.roc_points
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
        # the full curve integrates to the AUC (trapezoids = ties counted 1/2)
        logits, labels = _recompute(root, name)
        full_fpr, full_tpr = roc_points(labels, logits, max_points=10**6)
        assert len(full_fpr) > 50  # so the CSV really was subsampled
        assert np.trapezoid(full_tpr, full_fpr) == pytest.approx(
            evaluation["models"][name]["metrics"]["auc"], abs=1e-12)


def test_reliability_csv_holds_every_non_empty_bin_of_every_model(run):
    params, _, evaluation, _ = run
    rows = _read_csv(Path(evaluate_settings(params).plots_dir) / "reliability.csv")
    assert list(rows[0]) == ["model", "bin", "mean_predicted", "observed", "count"]
    for name in MODELS:
        rel = evaluation["models"][name]["metrics"]["reliability"]
        mine = [r for r in rows if r["model"] == name]
        filled = [k for k, c in enumerate(rel["count"]) if c > 0]
        assert [int(r["bin"]) for r in mine] == filled
        assert sum(int(r["count"]) for r in mine) == ROWS["test"]
        for r in mine:
            k = int(r["bin"])
            assert float(r["mean_predicted"]) == rel["mean_predicted"][k]
            assert float(r["observed"]) == rel["observed_rate"][k]


def test_aggregate_of_two_runs_matches_hand_computation():
    def run_(seed, t_auc, s_auc):
        return {"seeds": {"train": seed}, "models": {
            "teacher": {"metrics": {"auc": t_auc, "logloss": 0.5, "ece": 0.01}},
            "dagfm": {"metrics": {"auc": s_auc, "logloss": 0.5, "ece": 0.02}}}}

    agg = aggregate_runs([run_(1, 0.70, 0.69), run_(2, 0.72, 0.70)])
    assert agg["n"] == 2 and agg["runs"] == ["train=1", "train=2"]
    t = agg["models"]["teacher"]["auc"]
    assert t["mean"] == pytest.approx(0.71) and t["std"] == pytest.approx(math.sqrt(2 * 0.01**2))
    d = agg["vs_teacher"]["dagfm"]["auc"]
    assert d["differences"] == pytest.approx([-0.01, -0.02])
    assert d["mean_diff"] == pytest.approx(-0.015)
    assert d["std_diff"] == pytest.approx(math.sqrt(2 * 0.005**2))
    assert "gauc" not in agg["models"]["teacher"]  # absent metrics are not aggregated
    with pytest.raises(ValueError, match="share the seeds"):
        aggregate_runs([run_(1, 0.7, 0.7), run_(1, 0.7, 0.7)])


def test_seed_runs_are_aggregated_with_this_run(run, tmp_path):
    params, root, evaluation, _ = run
    other = json.loads(Path(evaluate_settings(params).out).read_text())
    other["seeds"] = {**other["seeds"], "train": 99}
    for m in other["models"].values():
        m["metrics"]["auc"] -= 0.01
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    p2 = run_params(root, out=str(tmp_path / "eval2.json"), plots_dir=str(tmp_path / "plots"),
                    seed_runs=[str(other_path)])
    agg = evaluate_run(p2)["aggregate"]
    t_auc = evaluation["models"]["teacher"]["metrics"]["auc"]
    assert agg["n"] == 2
    assert agg["models"]["teacher"]["auc"]["mean"] == pytest.approx(t_auc - 0.005)
    assert agg["models"]["teacher"]["auc"]["std"] == pytest.approx(0.01 / math.sqrt(2))


# ---------------------------------------------------------------- profile


def test_profile_fraction_is_student_over_teacher_flops_exactly(run):
    params, root, evaluation, profile = run
    fmap = FeatureMap.load(root / "data/processed/feature_map.json")
    teacher_flops = profile["models"]["teacher"]["flops_per_sample"]
    assert profile["models"]["teacher"]["vs_teacher"] is None
    for name, (rel, _, _) in MODELS.items():
        record = profile["models"][name]
        model, _ = load_model(root / rel, fmap)
        assert record["flops_per_sample"] == count_flops(model, fmap, 32).flops_per_sample
        assert record["macs_per_sample"] == record["flops_per_sample"] / 2
        n_emb = sum(p.numel() for p in model.embedding_parameters())
        assert record["parameters"] == {"total": sum(p.numel() for p in model.parameters()),
                                        "embedding": n_emb,
                                        "dense": sum(p.numel() for p in model.parameters()) - n_emb}
        assert record["checkpoint_bytes"] == (root / rel / "model.safetensors").stat().st_size
        lat = record["latency"]
        assert lat["single_runs"] == 5 and lat["throughput_batch_size"] == 64 and lat["threads"] == 1
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]
        if name != "teacher":
            vs = record["vs_teacher"]
            assert vs["fraction"] == record["flops_per_sample"] / teacher_flops
            assert vs["below_claim"] == (vs["fraction"] < 0.215)
    assert torch.get_num_threads() >= 1
    on_disk = json.loads(Path(evaluate_settings(params).profile_out).read_text())
    assert on_disk["models"]["dagfm"]["vs_teacher"]["fraction"] == \
        profile["models"]["dagfm"]["vs_teacher"]["fraction"]


def test_pareto_csv_pairs_flops_with_the_evaluated_test_auc(run):
    params, _, evaluation, profile = run
    rows = _read_csv(Path(evaluate_settings(params).plots_dir) / "pareto.csv")
    assert list(rows[0]) == ["model", "flops_per_sample", "test_auc"]
    assert [r["model"] for r in rows] == list(MODELS)
    for r in rows:
        assert float(r["flops_per_sample"]) == profile["models"][r["model"]]["flops_per_sample"]
        assert float(r["test_auc"]) == evaluation["models"][r["model"]]["metrics"]["auc"]


# ---------------------------------------------------------------- helpers


def test_discover_models_layout_and_missing_checkpoint(run, tmp_path):
    params, root, _, _ = run
    found = discover_models(params)
    assert [(m.name, m.role) for m in found] == [
        ("teacher", "teacher"), ("dagfm", "student"), ("fsdnet", "student"),
        ("baseline_dagfm", "baseline")]
    assert found[1].directory == root / "models/students/dagfm/finetune"
    assert found[2].directory == root / "models/students/fsdnet/self_distill"
    empty = run_params(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"teacher/model.json.*ctrflow train"):
        discover_models(empty)
    assert discover_models(empty, require=False) == []


def test_group_field_choice():
    toy = FeatureMap.toy([5, 4])
    user = FieldInfo(name="user_id", type="categorical", source_kind="categorical", vocab_size=5)
    users = FeatureMap(format="x", label="label", splits={}, source_hash="", params={},
                       fields=(user, toy.fields[1]))
    assert resolve_group_field(users, "auto") == "user_id"
    assert resolve_group_field(users, "c1") == "c1"
    assert resolve_group_field(users, None) is None
    assert resolve_group_field(FeatureMap.toy([5, 4]), "auto") is None
    with pytest.raises(ValueError, match="evaluate.group_field.*'nope'"):
        resolve_group_field(users, "nope")


def test_roc_points_on_hand_made_scores():
    fpr, tpr = roc_points([1, 0, 1, 0], [3.0, 2.0, 1.0, 0.0])
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    fpr, tpr = roc_points([1, 0, 1, 0], [1.0, 1.0, 0.0, 0.0])  # tied scores: one point per threshold
    assert fpr.tolist() == [0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1]
    fpr, _ = roc_points(np.arange(100) % 2, np.arange(100.0), max_points=7)
    assert len(fpr) == 7 and fpr[0] == 0 and fpr[-1] == 1
    with pytest.raises(ValueError, match="both classes"):
        roc_points([1, 1], [0.0, 1.0])


def test_settings_section_raw_typed_absent_and_bad_key():
    from components.config import Params

    assert evaluate_settings(Params()) == EvaluateParams()
    raw = Params.model_validate({"evaluate": {"n_bins": 20, "group_field": None}})
    ev = evaluate_settings(raw)
    assert (ev.n_bins, ev.group_field, ev.out) == (20, None, "metrics/evaluation.json")
    with pytest.raises(ValueError, match="evaluate.n_binz"):
        evaluate_settings(Params.model_validate({"evaluate": {"n_binz": 3}}))
    with pytest.raises(ValueError, match="evaluate.n_bins"):
        evaluate_settings(Params.model_validate({"evaluate": {"n_bins": 0}}))
    with pytest.raises(Exception, match="frozen"):
        ev.n_bins = 3
