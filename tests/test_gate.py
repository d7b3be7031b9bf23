"""The baseline gate (LR + constant predictor) of train_teacher, and evaluation inside an epoch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss

from components.config import GateParams
from components.stages import GateFailed, train_stage
from components.train.gate import constant_logloss, judge
from components.train.loop import eval_boundaries, fit
from components.train.teacher import train_teacher
from tests.test_train_loop import build, loaders, params, write_split_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate_data")
    return d, write_split_data(d, n_train=4000, n_valid=1500, seed=3)


def test_judge_states_both_numbers_and_what_failed():
    teacher, lr, const = {"auc": 0.75, "logloss": 0.50}, {"auc": 0.76, "logloss": 0.49}, {"logloss": 0.56}
    v = judge(teacher, lr, const, min_auc_gain=0.0, on_fail="fail")
    assert not v.passed and v.record["beats_constant"] and not v.record["beats_lr"]
    assert v.record["auc_gain_over_lr"] == pytest.approx(-0.01)
    assert "0.7500" in v.message and "0.7600" in v.message and "0.5000" in v.message and "0.5600" in v.message
    assert "does not beat LR" in v.message and "constant" in v.message
    ok = judge({"auc": 0.78, "logloss": 0.47}, lr, const, min_auc_gain=0.01, on_fail="warn")
    assert ok.passed and ok.message.startswith("baseline gate passed")
    # a margin above the gain fails; LogLoss above the constant's fails even with an AUC gain
    assert not judge({"auc": 0.765, "logloss": 0.47}, lr, const, min_auc_gain=0.01, on_fail="fail").passed
    bad_ll = judge({"auc": 0.80, "logloss": 0.60}, lr, const, min_auc_gain=0.0, on_fail="fail")
    assert not bad_ll.passed and bad_ll.record["beats_lr"] and not bad_ll.record["beats_constant"]


def test_constant_logloss_matches_sklearn():
    y = np.array([0, 1, 0, 0, 1, 0, 0, 0], dtype=np.float64)
    ctr = 0.3
    assert constant_logloss(ctr, y) == pytest.approx(log_loss(y, np.full(y.size, ctr)), rel=1e-12)


def _teacher_params(d: Path, tmp: Path, **kw):
    base = dict(model="dnn", model_params={"hidden_units": [16]}, max_epochs=2, out_dir=str(tmp / "teacher"),
                metrics=str(tmp / "teacher.json"), curve=str(tmp / "curve.csv"))
    return params(**{**base, **kw})


def test_a_weak_teacher_fails_the_gate_and_the_stage_stops(data, tmp_path):
    d, _ = data
    # crafted weak teacher: a learning rate so small the network stays at its initialisation
    weak = _teacher_params(d, tmp_path, lr=1e-9, max_epochs=1)
    res = train_teacher(weak, d, resume=False, log=lambda _m: None)
    g, base = res.metrics["gate"], res.metrics["baselines"]
    assert g["passed"] is False and g["beats_lr"] is False
    assert base["lr"]["valid"]["auc"] > 0.7 > res.metrics["valid"]["auc"]
    # the constant predictor: train CTR scored on valid
    labels = {s: pq.read_table(d / f"{s}.parquet")["label"].to_numpy().astype(float) for s in ("train", "valid")}
    assert base["constant"]["ctr"] == pytest.approx(labels["train"].mean())
    assert base["constant"]["valid"]["logloss"] == pytest.approx(
        constant_logloss(labels["train"].mean(), labels["valid"]), rel=1e-12)
    on_disk = json.loads(Path(weak.metrics).read_text())
    assert on_disk["gate"] == g

    class P:  # the stage reads params.train and params.preprocess.out_dir only
        train = weak.model_copy(update={"gate": GateParams(on_fail="fail")})
        preprocess = type("pp", (), {"out_dir": str(d)})

    with pytest.raises(GateFailed, match=r"baseline gate FAILED .*teacher valid AUC 0\.\d{4} vs LR 0\.\d{4}"):
        train_stage(P, resume=False)
    assert json.loads(Path(weak.metrics).read_text())["gate"]["passed"] is False  # numbers kept for the user

    P.train = weak.model_copy(update={"gate": GateParams(on_fail="warn")})
    result = train_stage(P, resume=False)
    assert result.details["warnings"] and "baseline gate FAILED" in result.details["warnings"][0]
    assert "WARNING: baseline gate FAILED" in result.summary


def test_a_trained_teacher_passes_a_lenient_gate(data, tmp_path):
    d, _ = data
    p = _teacher_params(d, tmp_path, model="fm", model_params={}, lr=0.02, max_epochs=3,
                        gate=GateParams(min_auc_gain=-0.05))
    m = train_teacher(p, d, resume=False, log=lambda _m: None).metrics
    assert m["gate"]["passed"] is True
    assert m["valid"]["logloss"] < m["baselines"]["constant"]["valid"]["logloss"]
    assert m["gate"]["auc_gain_over_lr"] == pytest.approx(m["valid"]["auc"] - m["baselines"]["lr"]["valid"]["auc"])


def test_eval_boundaries():
    assert eval_boundaries(100, 1.0) == [100]
    assert eval_boundaries(100, 0.25) == [25, 50, 75, 100]
    assert eval_boundaries(10, 1 / 3) == [3, 7, 10]
    assert eval_boundaries(2, 0.25) == [1, 2]  # fewer batches than evaluations: after every batch
    with pytest.raises(ValueError, match="eval_every"):
        eval_boundaries(10, 0.0)


def test_evaluations_inside_an_epoch_keep_patience_and_decay_in_epochs(data, tmp_path):
    d, fmap = data
    p = params(model="fm", eval_every=0.25, max_epochs=3, patience=1, lr=0.5)  # lr high: no gains soon
    res = fit(build(p, fmap), *loaders(d, fmap), p, tmp_path / "m", log=lambda _m: None)
    h = res.history
    assert [r["eval"] for r in h] == list(range(1, len(h) + 1))
    assert [r["epochs_done"] for r in h[:4]] == [0.25, 0.5, 0.75, 1.0]
    # patience 1 epoch = 4 evaluations without a gain; the LR decays once per 4 such evaluations
    last_gain = max(i for i, r in enumerate(h) if r["improved"])
    assert len(h) - 1 - last_gain <= 4
    bad = 0
    for prev, cur in zip(h, h[1:], strict=False):
        bad = 0 if prev["improved"] else bad + 1
        expect = prev["lr"] * 0.1 if (not prev["improved"] and bad % 4 == 0) else prev["lr"]
        assert cur["lr"] == pytest.approx(max(expect, min(p.min_lr, prev["lr"])))
    # the best evaluation by the monitored value (default AUC - LogLoss)
    assert p.monitor == "auc_minus_logloss"
    best = max(h, key=lambda r: r["valid_auc"] - r["valid_logloss"])
    assert res.best_eval == best["eval"] and res.best_valid_auc == best["valid_auc"]
    assert not math.isnan(res.best_valid_logloss)
