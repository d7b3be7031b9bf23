"""benchmarks/inference.py: ratios and target verdicts on hand-made numbers, and a tiny real run."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.inference import (
    DEEPCTR,
    REFERENCE,
    TEACHER,
    bench_dataset,
    goal_checks,
    parse_args,
    ratios,
    render,
)
from tests.run_fixture import make_run


def _rec(per_batch: dict[str, float], p50: float) -> dict:
    return {"samples_per_s": per_batch, "p50_ms": p50}


def _result() -> dict:
    torch_models = {
        TEACHER: _rec({"1": 1000.0, "4096": 20000.0}, 1.0),
        "dagfm": _rec({"1": 3000.0, "4096": 90000.0}, 0.4),        # 4.5x, p50 0.4x: both met
        "kd_dagfm_plus": _rec({"1": 900.0, "4096": 30000.0}, 0.9),  # slower at batch 1: not met
        DEEPCTR: _rec({"1": 500.0, "4096": 25000.0}, 2.0),          # faster than the teacher: not met
    }
    onnx_models = {
        TEACHER: _rec({"1": 2000.0, "4096": 25000.0}, 0.5),
        "dagfm": _rec({"1": 5000.0, "4096": 75000.0}, 0.3),        # 3.0x: not met; p50 0.6x: not met
        "kd_dagfm_plus": _rec({"1": 2500.0, "4096": 26000.0}, 0.4),  # met
    }
    res = {"threads": {"1": {"torch": torch_models, "onnx": onnx_models}}}
    res["ratios"] = ratios(res)
    return res


def test_ratios_are_the_quotients_of_the_stored_numbers():
    r = _result()["ratios"]["1"]
    assert r["torch"]["dagfm"]["throughput_x"] == {"1": 3.0, "4096": 4.5}
    assert r["torch"]["dagfm"]["p50_x"] == pytest.approx(0.4)
    assert r["onnx"]["kd_dagfm_plus"]["throughput_x"]["4096"] == pytest.approx(26000 / 25000)
    assert TEACHER not in r["torch"]


def test_goal_checks_judge_each_target():
    goals = goal_checks({"datasets": {"embedded": _result()}})
    verdict = {(g["runtime"], g["goal"].split(" ")[0] + ("p50" if "p50" in g["goal"] else "")): g
               for g in goals}
    assert verdict[("torch", "DAGFM")]["met"] and verdict[("torch", "DAGFM")]["value"] == 4.5
    assert verdict[("torch", "DAGFMp50")]["met"]
    assert not verdict[("onnx", "DAGFM")]["met"] and verdict[("onnx", "DAGFM")]["value"] == 3.0
    assert not verdict[("onnx", "DAGFMp50")]["met"]
    assert not verdict[("torch", "KD-DAGFM+")]["met"] and verdict[("torch", "KD-DAGFM+")]["value"] == 0.9
    assert verdict[("onnx", "KD-DAGFM+")]["met"]
    teacher_vs_peer = verdict[("torch", "teacher")]
    assert teacher_vs_peer["value"] == pytest.approx(0.8) and not teacher_vs_peer["met"]
    assert ("onnx", "teacher") not in verdict  # the peer runs in PyTorch only


def test_parse_args_always_measures_batch_1_and_4096_and_refuses_bad_values():
    args = parse_args(["--datasets", "embedded", "--threads", "2,1", "--batch-sizes", "64"])
    assert args.threads == [1, 2] and args.batch_sizes == [1, 64, 4096]
    with pytest.raises(SystemExit):
        parse_args(["--datasets", "nope"])
    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])


def test_a_tiny_real_run_measures_every_model_in_both_runtimes(tmp_path):
    params = make_run(tmp_path / "run")
    params = params.model_copy(update={"train": params.train.model_copy(update={"embedding_dim": 4})})
    args = argparse.Namespace(threads=[1], batch_sizes=[1, 8], repeats=1, runs=1, single_runs=3, onnx_spinning="off",
                              onnx_one_row_threads=None)
    res = bench_dataset("fixture", tmp_path / "run/data/processed", params, args, tmp_path / "onnx")
    per = res["threads"]["1"]
    assert set(per["torch"]) >= {TEACHER, "dagfm", "kd_dagfm_plus", "fsdnet", REFERENCE}
    assert set(per["onnx"]) == {TEACHER, "dagfm", "kd_dagfm_plus", "fsdnet"}
    for runtime in ("torch", "onnx"):
        for rec in per[runtime].values():
            assert set(rec["samples_per_s"]) == {"1", "8"}
            assert all(v > 0 for v in rec["samples_per_s"].values()) and rec["p50_ms"] > 0
        t = per[runtime][TEACHER]["samples_per_s"]["8"]
        assert res["ratios"]["1"][runtime]["dagfm"]["throughput_x"]["8"] == (
            per[runtime]["dagfm"]["samples_per_s"]["8"] / t)
    text = render({"host": {"processor": "x", "cpu_count": 2, "torch": "t", "onnxruntime": "o"},
                   "load_before": 0.0, "load_after": 0.0, "command": "c", "settings": {"repeats": 1},
                   "goals": goal_checks({"datasets": {"fixture": res}}), "datasets": {"fixture": res}})
    assert "### 1 thread(s), ONNX Runtime" in text and "| dagfm |" in text
