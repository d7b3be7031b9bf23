"""The training recipe's knobs: batch size scaled with the data, per-group embedding LR, roll-back on decay."""

from __future__ import annotations

import pytest
import torch

from components.config import TrainParams
from components.train.loop import _set_lr, build_optimizer, fit
from components.train.recipe import AUTO_MAX, AUTO_MIN, resolve_batch_size
from tests.test_train_loop import build, loaders, params, write_split_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipe_data")
    return d, write_split_data(d, n_train=3000, n_valid=1000, seed=5)


@pytest.mark.parametrize(("rows", "expected"), [
    (0, AUTO_MIN), (3_200, 256), (51_950, 256), (58_405, 512), (93_820, 512),
    (400_000, 2048), (1_600_065, 4096), (36_672_493, AUTO_MAX),
])
def test_auto_batch_size_keeps_about_160_steps_an_epoch_within_bounds(rows, expected):
    assert resolve_batch_size("auto", rows) == expected
    assert resolve_batch_size(777, rows) == 777  # a number is used as it is


def test_batch_size_accepts_auto_or_a_positive_integer():
    assert TrainParams().batch_size == "auto" and TrainParams(batch_size=64).batch_size == 64
    for bad in (0, -5, "big"):
        with pytest.raises(ValueError):
            TrainParams(batch_size=bad)


def test_embedding_lr_scale_gives_the_embeddings_their_own_lr_through_every_decay(data):
    _, fmap = data
    p = params(model="deepfm", model_params={"hidden_units": [8]}, lr=0.002, embedding_lr_scale=5.0)
    opt = build_optimizer(build(p, fmap), p)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([0.002, 0.01])
    _set_lr(opt, 0.0002)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.0002, 0.001])
    plain = build_optimizer(build(params(model="fm"), fmap), params(model="fm"))
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["lr"] == pytest.approx(0.02)


def test_restore_best_on_decay_continues_from_the_best_weights(data, tmp_path, monkeypatch):
    d, fmap = data
    # a net this large at this learning rate over-fits 3,000 rows within a few epochs: decays happen
    p = params(model="dnn", model_params={"hidden_units": [64, 64]}, lr=0.05, lr_decay=0.5, max_epochs=6,
               patience=3, restore_best_on_decay=True, monitor="auc")
    restored = []
    import components.train.loop as loop

    real = loop.load_model_weights

    def spy(model, directory, **kw):
        restored.append({k: v.clone() for k, v in model.state_dict().items()})
        out = real(model, directory, **kw)
        restored[-1] = (restored[-1], {k: v.clone() for k, v in model.state_dict().items()})
        return out

    monkeypatch.setattr(loop, "load_model_weights", spy)
    res = fit(build(p, fmap), *loaders(d, fmap), p, tmp_path / "m", log=lambda _m: None)
    decays = [h for h in res.history if not h["improved"]]
    assert decays, "the setting above must produce an epoch without a gain"
    # one roll-back per decay, plus the final best-weights load
    assert len(restored) == len(decays) + 1
    before, after = restored[0]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the weights really changed back
    best = max(res.history, key=lambda h: h["valid_auc"])
    assert res.best_valid_auc == best["valid_auc"]


def test_monitor_auc_minus_logloss_selects_the_best_balance(data, tmp_path):
    d, fmap = data
    p = params(model="dnn", model_params={"hidden_units": [64, 64]}, lr=0.05, max_epochs=6, patience=6,
               monitor="auc_minus_logloss")
    res = fit(build(p, fmap), *loaders(d, fmap), p, tmp_path / "m", log=lambda _m: None)
    scores = [h["valid_auc"] - h["valid_logloss"] for h in res.history]
    best = res.history[max(range(len(scores)), key=scores.__getitem__)]
    assert res.best_eval == best["eval"] and res.best_valid_auc == best["valid_auc"]
    assert [h["improved"] for h in res.history] == [
        s > max(scores[:i], default=float("-inf")) for i, s in enumerate(scores)]
    with pytest.raises(ValueError):
        TrainParams(monitor="gauc")


def test_study_storage_with_a_password_comes_from_the_environment(monkeypatch):
    from components.tune.settings import TuneParams

    monkeypatch.delenv("CTRFLOW_OPTUNA_STORAGE", raising=False)
    assert TuneParams().storage == "sqlite:///optuna/ctrflow.db"
    url = "postgresql+psycopg://ctrflow:pa55word@127.0.0.1:5432/optuna"
    monkeypatch.setenv("CTRFLOW_OPTUNA_STORAGE", url)
    assert TuneParams().storage == url
    assert TuneParams(storage_env=None).storage == "sqlite:///optuna/ctrflow.db"  # opt out
    # a bad URL is reported (params.yaml's loader: file, key, rule) without its password
    from components.config import ConfigError, load_params
    from tests.conftest import REPO_ROOT

    monkeypatch.setenv("CTRFLOW_OPTUNA_STORAGE", "oracle://ctrflow:pa55word@db/optuna")
    with pytest.raises(ConfigError) as err:
        load_params(REPO_ROOT / "params.yaml")
    assert "tune.storage" in str(err.value) and "ctrflow:***@db" in str(err.value)
    assert "pa55word" not in str(err.value)
