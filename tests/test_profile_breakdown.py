"""Where inference time goes: torch.profiler time shares, top ops, achieved GFLOP/s, speed vs teacher.

No timing assertion (times vary with the host): only what holds by construction — shares in [0, 1]
summing to 1, an MLP share of exactly 0 for a model without an MLP and > 0 for one with it, the
top-ops table sorted, and the derived numbers of profile.json equal to the stored numbers they are
computed from.
"""

from __future__ import annotations

import json

import pytest
import torch

from components.data.feature_map import FeatureMap
from components.evaluate.settings import EvaluateParams
from components.models import build_model, list_models
from components.models.layers.mlp import MLP
from components.profile import (
    LatencyReport,
    achieved_gflops,
    speed_vs_teacher,
    time_breakdown,
)
from components.profile.breakdown import EMBEDDING_SCOPE, MLP_SCOPE, PARTS, scoped_modules
from components.profile.run import profile_run
from tests.run_fixture import MODELS, make_run

FM = FeatureMap.toy([20] * 4, dense=1)


def _check_breakdown(b, top_ops: int) -> None:
    assert set(b.shares) == set(PARTS) == set(b.part_ms)
    assert all(0.0 <= v <= 1.0 for v in b.shares.values()), b.shares
    assert sum(b.shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert 0.0 <= b.outside_ops_share <= 1.0 and b.forward_ms > 0
    assert 0 < len(b.top_ops) <= top_ops
    selfs = [o["self_cpu_ms"] for o in b.top_ops]
    assert selfs == sorted(selfs, reverse=True)
    assert all(not o["op"].startswith("ctrflow::") and o["calls"] > 0 for o in b.top_ops)
    assert all(0.0 <= o["percent"] <= 100.0 for o in b.top_ops)


def test_mlp_share_is_positive_with_an_mlp_and_zero_without():
    dcnv2 = build_model("dcnv2", FM, hidden_units=[16, 16])
    threads = torch.get_num_threads()
    b = time_breakdown(dcnv2, FM, batch_size=32, runs=2, top_ops=5)
    _check_breakdown(b, 5)
    assert b.shares["mlp"] > 0 and b.shares["embedding"] > 0
    assert (b.batch_size, b.threads, b.runs) == (32, 1, 2)
    # state restored: no hook left, training flag and thread count as before
    assert dcnv2.training and torch.get_num_threads() == threads
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in dcnv2.modules())

    lr = build_model("lr", FM)
    b = time_breakdown(lr, FM, batch_size=32, runs=2, top_ops=5)
    _check_breakdown(b, 5)
    assert b.shares["mlp"] == 0.0 and b.part_ms["mlp"] == 0.0
    assert b.shares["embedding"] > 0


def test_every_zoo_model_gets_a_breakdown():
    fm = FeatureMap.toy([12] * 4, dense=1)
    for info in list_models():
        hp = {"cin_units": [8, 8]} if info.name in ("cin", "xdeepfm") else {}
        model = build_model(info.name, fm, **hp)
        b = time_breakdown(model, fm, batch_size=8, runs=1, warmup=0, top_ops=3)
        _check_breakdown(b, 3)
        has_mlp = any(isinstance(m, MLP) for m in model.modules())
        assert (b.shares["mlp"] > 0) == has_mlp, info.name


def test_scopes_cover_the_embedding_and_outermost_mlps_only():
    model = build_model("dcnv2", FM, hidden_units=[8])
    assert scoped_modules(model) == {model.embedding: EMBEDDING_SCOPE, model.mlp: MLP_SCOPE}
    outer = MLP(4, [3])
    outer.inner = MLP(3, [2])  # an MLP inside an MLP is timed by its parent's scope
    assert scoped_modules(outer) == {outer: MLP_SCOPE}
    lr = build_model("lr", FM)
    assert scoped_modules(lr) == {lr.embedding: EMBEDDING_SCOPE}


def test_time_breakdown_rejects_bad_arguments():
    model = build_model("lr", FM)
    with pytest.raises(ValueError, match="runs"):
        time_breakdown(model, FM, runs=0)
    with pytest.raises(ValueError, match="top_ops"):
        time_breakdown(model, FM, top_ops=-1)


def _latency(throughput: float, p50: float) -> LatencyReport:
    return LatencyReport(p50_ms=p50, p99_ms=p50, mean_ms=p50, throughput_samples_per_s=throughput,
                         throughput_batch_size=64, batch_median_ms=1.0, threads=1,
                         single_runs=1, batch_runs=1)


def test_speed_formulas_on_hand_numbers():
    assert achieved_gflops(2_000.0, 5e5) == 1.0
    s = speed_vs_teacher(_latency(4e5, 0.5), _latency(1e5, 1.0), 0.125)
    assert s == {"throughput_ratio": 4.0, "p50_latency_ratio": 0.5, "speedup_per_flop": 0.5}
    with pytest.raises(ValueError, match="teacher"):
        speed_vs_teacher(_latency(1.0, 1.0), _latency(0.0, 1.0), 0.5)


def test_new_settings_are_validated():
    ev = EvaluateParams()
    assert (ev.profile_runs, ev.profile_top_ops) == (5, 10)
    with pytest.raises(ValueError):
        EvaluateParams(profile_runs=0)
    with pytest.raises(ValueError):
        EvaluateParams(profile_top_ops=-1)


# ----------------------------------------------------------------- profile_run on a tiny run


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """(returned dict, profile.json as read back) of a tiny run, top ops cut at 4."""
    root = tmp_path_factory.mktemp("profilerun")
    params = make_run(root, profile_top_ops=4, profile_runs=2)
    result = profile_run(params)
    return result, json.loads((root / "metrics" / "profile.json").read_text())


def test_profile_json_holds_the_breakdown(profiled):
    result, stored = profiled
    assert stored == json.loads(json.dumps(result))
    assert (stored["settings"]["profile_top_ops"], stored["settings"]["profile_runs"]) == (4, 2)
    for name, m in stored["models"].items():
        b = m["time_breakdown"]
        assert b["batch_size"] == stored["settings"]["throughput_batch_size"]
        assert b["threads"] == stored["settings"]["latency_threads"] and b["runs"] == 2
        assert sum(b["shares"].values()) == pytest.approx(1.0, abs=1e-9), name
        assert all(0.0 <= v <= 1.0 for v in b["shares"].values())
        assert 0 < len(b["top_ops"]) <= 4
        selfs = [o["self_cpu_ms"] for o in b["top_ops"]]
        assert selfs == sorted(selfs, reverse=True)
    assert stored["models"]["fsdnet"]["time_breakdown"]["shares"]["mlp"] > 0  # MLP layers
    assert stored["models"]["teacher"]["time_breakdown"]["shares"]["mlp"] == 0  # CrossNet: none


def test_gflops_and_speed_ratios_equal_the_stored_numbers(profiled):
    _, stored = profiled
    models = stored["models"]
    teacher = models["teacher"]["latency"]
    assert set(models) == set(MODELS)
    assert models["teacher"]["vs_teacher"] is None
    for name, m in models.items():
        lat = m["latency"]
        assert m["achieved_gflops_per_s"] == m["flops_per_sample"] * lat["throughput_samples_per_s"] / 1e9
        if name == "teacher":
            continue
        vs = m["vs_teacher"]
        ratio = lat["throughput_samples_per_s"] / teacher["throughput_samples_per_s"]
        assert vs["throughput_ratio"] == ratio
        assert vs["p50_latency_ratio"] == lat["p50_ms"] / teacher["p50_ms"]
        assert vs["speedup_per_flop"] == ratio * vs["fraction"]
        # = the ratio of the achieved GFLOP/s, up to rounding
        assert vs["speedup_per_flop"] == pytest.approx(
            m["achieved_gflops_per_s"] / models["teacher"]["achieved_gflops_per_s"], rel=1e-12)
