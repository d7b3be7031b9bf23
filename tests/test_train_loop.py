"""The fit loop on the real BatchLoader + zoo models: schedule, early stop, best restore, resume, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import components.train.loop as loop
from components.config import TrainParams
from components.data.feature_map import FeatureMap, FieldInfo
from components.data.loader import BatchLoader
from components.models import build_model
from components.progress import Progress, observed
from components.train.checkpoint import read_model_metadata
from components.train.loop import (
    FitResult,
    build_optimizer,
    evaluate,
    fit,
    predict_logits,
    seed_everything,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB = (20, 20, 12, 8)


def write_split_data(
    directory: Path, n_train: int = 3000, n_valid: int = 1000, seed: int = 0
) -> FeatureMap:
    """Encoded train/valid Parquet splits with a planted logistic signal, plus their feature map."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 1.0, v) for v in VOCAB]
    directory.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, n in (("train", n_train), ("valid", n_valid)):
        ids = [rng.integers(0, v, n).astype(np.int32) for v in VOCAB]
        dense = rng.normal(0, 1, n).astype(np.float32)
        logit = sum(w[i] for w, i in zip(weights, ids, strict=True)) + 0.8 * dense - 0.5
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        table = pa.table(
            {**{f"c{j}": ids[j] for j in range(len(VOCAB))}, "d0": dense, "label": label}
        )
        pq.write_table(table, directory / f"{name}.parquet", row_group_size=1024)
        splits[name] = {"path": f"{name}.parquet", "rows": n, "positives": int(label.sum())}
    fields = tuple(
        FieldInfo(name=f"c{j}", type="categorical", source_kind="categorical", vocab_size=v)
        for j, v in enumerate(VOCAB)
    ) + (FieldInfo(name="d0", type="dense", source_kind="numeric", oov_id=None, missing_id=None),)
    fmap = FeatureMap(
        format="toy", label="label", fields=fields, splits=splits, source_hash="test", params={}
    )
    fmap.save(directory / "feature_map.json")
    return fmap


def loaders(
    directory: Path, fmap: FeatureMap, batch_size: int = 256, *, shuffle: bool = True, seed: int = 7
):
    """(train, valid) BatchLoaders over ``write_split_data`` output."""
    train = BatchLoader(directory / "train.parquet", fmap, batch_size, shuffle=shuffle, seed=seed)
    valid = BatchLoader(directory / "valid.parquet", fmap, 1000, shuffle=False)
    return train, valid


def params(**kw) -> TrainParams:
    """Small, fast, CPU-only TrainParams (1 thread: the test box has 2 busy cores)."""
    base = {
        "model": "fm",
        "embedding_dim": 4,
        "batch_size": 256,
        "lr": 0.02,
        "max_epochs": 3,
        "patience": 2,
        "device": "cpu",
        "num_threads": 1,
        "seed": 11,
    }
    return TrainParams(**{**base, **kw})


def build(p: TrainParams, fmap: FeatureMap, seed: int | None = None):
    seed_everything(p.seed if seed is None else seed)
    return build_model(p.model, fmap, embedding_dim=p.embedding_dim, **p.model_params)


def metrics_only(history: list[dict]) -> list[tuple]:
    """History without the wall-clock fields."""
    return [
        (h["epoch"], h["lr"], h["train_loss"], h["valid_auc"], h["valid_logloss"], h["improved"])
        for h in history
    ]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    return d, write_split_data(d)


def quiet(_msg: str) -> None:
    pass


# ---------------------------------------------------------------- training outcome


def test_fit_learns_and_restores_the_best_epoch(data, tmp_path):
    d, fmap = data
    p = params(max_epochs=4, patience=4)
    model = build(p, fmap)
    train, valid = loaders(d, fmap)
    logs: list[str] = []
    seen: list[Progress] = []
    with observed(seen.append):  # what a Prefect progress artifact is built from
        res = fit(model, train, valid, p, tmp_path / "out", log=logs.append)
    assert isinstance(res, FitResult)
    assert res.epochs_run == 4 and len(res.history) == 4
    assert [(s.done, s.total, s.kind) for s in seen] == [(e, 4, "epochs") for e in (1, 2, 3, 4)]
    assert f"valid AUC {res.history[-1]['valid_auc']:.4f}" in seen[-1].message
    assert p.monitor == "auc_minus_logloss"  # the default: the kept epoch maximises AUC − LogLoss
    best = max(res.history, key=lambda h: h["valid_auc"] - h["valid_logloss"])
    assert res.best_epoch == best["epoch"] and res.best_valid_auc == best["valid_auc"]
    assert res.best_valid_auc > 0.70  # planted signal (oracle ~0.85); a broken loop stays ~0.5
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    # the model handed back IS the best epoch's model: re-evaluating gives that epoch's AUC
    assert evaluate(model, valid)["auc"] == pytest.approx(res.best_valid_auc, abs=1e-12)
    meta = read_model_metadata(tmp_path / "out")
    assert meta["epoch"] == res.best_epoch and meta["model"] == "fm"
    assert meta["hparams"] == {"embedding_dim": 4}
    assert (
        res.checkpoint_path == tmp_path / "out" / "model.safetensors"
        and res.checkpoint_path.exists()
    )
    assert sum(line.startswith("epoch ") for line in logs) == 4  # one concise line per epoch
    assert all(h["samples_per_s"] > 0 and h["seconds"] > 0 for h in res.history)


def test_predict_logits_matches_forward_and_keeps_mode(data):
    d, fmap = data
    p = params(model="dnn", model_params={"hidden_units": [8], "dropout": 0.5})
    model = build(p, fmap)
    model.train()
    _, valid = loaders(d, fmap)
    small = BatchLoader(d / "valid.parquet", fmap, 300, shuffle=False)  # 4 batches, last one short
    out = predict_logits(model, small)
    assert out.dtype == np.float32 and out.shape == (1000,)
    assert model.training  # mode restored
    model.eval()
    batch = next(iter(valid))
    with torch.no_grad():
        expected = model(batch.categorical, batch.dense).numpy()
    # eval mode (no dropout), loader order. Batches of 300 vs one of 1000: float32 GEMMs may block
    # differently by row count, so equal to rounding (a dropout mask or a reordering would be O(0.1))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- schedule and early stopping


def test_lr_decays_on_plateau_and_early_stops(data, tmp_path, monkeypatch):
    d, fmap = data
    scripted = iter([0.60, 0.65, 0.64, 0.66, 0.63, 0.62, 0.99])  # the 7th must never be reached
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {"auc": next(scripted), "logloss": 0.5})
    p = params(lr=0.01, lr_decay=0.1, min_lr=1e-4, patience=2, max_epochs=10)
    model = build(p, fmap)
    snapshots = {}

    def snap(rec):
        snapshots[rec["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    res = fit(model, *loaders(d, fmap), p, tmp_path, log=quiet, on_epoch_end=snap)
    # e1 gain, e2 gain, e3 no gain (lr -> 1e-3), e4 gain (counter reset), e5 no gain (lr -> 1e-4),
    # e6 no gain (lr stays at min_lr 1e-4; counter 2 = patience -> stop)
    assert [h["lr"] for h in res.history] == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001, 1e-4])
    assert [h["improved"] for h in res.history] == [True, True, False, True, False, False]
    assert res.epochs_run == 6 and res.best_epoch == 4 and res.best_valid_auc == 0.66
    state = json.loads((tmp_path / "resume.json").read_text())
    assert all(
        g["lr"] == pytest.approx(1e-4) for g in state["optimizer"]["param_groups"]
    )  # the optimizer's own LR
    assert state["scalars"]["bad_epochs"] == 2
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[4][k]) for k in final)  # best weights restored
    assert not all(torch.equal(final[k], snapshots[6][k]) for k in final)


def test_finished_run_is_not_trained_again(data, tmp_path):
    d, fmap = data
    p = params(max_epochs=2)
    first = fit(build(p, fmap), *loaders(d, fmap), p, tmp_path, log=quiet)
    calls = []
    model = build(p, fmap, seed=999)
    again = fit(model, *loaders(d, fmap), p, tmp_path, log=quiet, on_epoch_end=calls.append)
    assert calls == [] and again.epochs_run == 2 and again.best_valid_auc == first.best_valid_auc
    assert metrics_only(again.history) == metrics_only(first.history)
    assert again.resumed_from_epoch == 2
    # raising max_epochs continues the same run for the extra epochs only
    more = fit(
        model,
        *loaders(d, fmap),
        params(max_epochs=3, patience=5),
        tmp_path,
        log=quiet,
        on_epoch_end=calls.append,
    )
    assert [c["epoch"] for c in calls] == [3] and more.epochs_run == 3


# ---------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_metrics_and_weights(data, tmp_path):
    d, fmap = data
    p = params(model="dnn", model_params={"hidden_units": [16], "dropout": 0.2}, max_epochs=2)
    a, b = build(p, fmap), build(p, fmap)
    ra = fit(a, *loaders(d, fmap), p, tmp_path / "a", log=quiet)
    rb = fit(b, *loaders(d, fmap), p, tmp_path / "b", log=quiet)
    assert metrics_only(ra.history) == metrics_only(rb.history)
    assert same_weights(a, b)
    pc = params(
        model="dnn", model_params={"hidden_units": [16], "dropout": 0.2}, max_epochs=2, seed=12
    )
    rc = fit(build(pc, fmap), *loaders(d, fmap), pc, tmp_path / "c", log=quiet)
    assert rc.history[0]["train_loss"] != ra.history[0]["train_loss"]


class Interrupt(Exception):
    pass


def _interrupt_after_epoch_1(rec):
    if rec["epoch"] == 1:
        raise Interrupt


def test_resume_after_interruption_matches_uninterrupted_run(data, tmp_path):
    d, fmap = data
    # dropout + shuffling: the RNG streams and the loader order must both resume exactly
    p = params(
        model="dnn", model_params={"hidden_units": [16], "dropout": 0.2}, max_epochs=3, patience=3
    )
    full = build(p, fmap)
    ref = fit(full, *loaders(d, fmap), p, tmp_path / "ref", log=quiet)

    with pytest.raises(Interrupt):
        fit(
            build(p, fmap),
            *loaders(d, fmap),
            p,
            tmp_path / "cut",
            log=quiet,
            on_epoch_end=_interrupt_after_epoch_1,
        )
    resumed = build(p, fmap, seed=12345)  # different init: the weights must come from the state
    res = fit(resumed, *loaders(d, fmap), p, tmp_path / "cut", log=quiet)
    assert res.resumed_from_epoch == 1
    assert metrics_only(res.history) == metrics_only(ref.history)
    assert same_weights(resumed, full)


def test_resume_after_sigkill_matches_uninterrupted_run(data, tmp_path):
    d, fmap = data
    p = params(max_epochs=3, patience=3)
    full = build(p, fmap)
    ref = fit(full, *loaders(d, fmap), p, tmp_path / "ref", log=quiet)

    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from tests.test_train_loop import build, loaders, params
        from components.data.feature_map import FeatureMap
        from components.train.loop import fit
        d = Path({str(d)!r}); fmap = FeatureMap.load(d / "feature_map.json")
        p = params(max_epochs=3, patience=3)
        def die(rec):
            if rec["epoch"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        fit(build(p, fmap), *loaders(d, fmap), p, {str(tmp_path / "killed")!r}, log=print, on_epoch_end=die)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert json.loads((tmp_path / "killed" / "resume.json").read_text())["scalars"]["epoch"] == 1
    resumed = build(p, fmap, seed=4321)
    res = fit(resumed, *loaders(d, fmap), p, tmp_path / "killed", log=quiet)
    assert res.resumed_from_epoch == 1
    assert metrics_only(res.history) == metrics_only(ref.history)
    assert same_weights(resumed, full)


def test_resume_refuses_a_different_configuration_and_resume_false_restarts(data, tmp_path):
    d, fmap = data
    p = params(max_epochs=1)
    fit(build(p, fmap), *loaders(d, fmap), p, tmp_path, log=quiet)
    other = params(max_epochs=2, lr=0.5)
    with pytest.raises(ValueError, match=r"different configuration \(differs in: lr\)"):
        fit(build(other, fmap), *loaders(d, fmap), other, tmp_path, log=quiet)
    res = fit(build(other, fmap), *loaders(d, fmap), other, tmp_path, log=quiet, resume=False)
    assert res.resumed_from_epoch == 0 and [h["epoch"] for h in res.history] == [1, 2]
    assert res.history[0]["lr"] == 0.5


def test_a_state_written_by_other_model_code_is_not_resumed(data, tmp_path):
    """Same settings and data, other layer shapes (e.g. a model changed by an upgrade): the stage
    trains afresh instead of failing to load the state."""
    from components.train.loop import resume_state_matches

    d, fmap = data
    p = params(max_epochs=1)
    hp = {"embedding_dim": p.embedding_dim}
    fit(build(p, fmap), *loaders(d, fmap), p, tmp_path, log=quiet)
    assert resume_state_matches(tmp_path, p, build(p, fmap), hp) is True
    changed = build(p, fmap)
    changed.extra = torch.nn.Linear(3, 2)  # stands for a layer whose shape changed
    assert resume_state_matches(tmp_path, p, changed, hp) is False
    with pytest.raises(ValueError, match=r"differs in: parameters"):
        fit(changed, *loaders(d, fmap), p, tmp_path, log=quiet)


# ---------------------------------------------------------------- optimizer, regularisation, clipping


def test_adamw_puts_net_l2_on_network_weights_only(data):
    _, fmap = data
    p = params(model="dnn", model_params={"hidden_units": [8]}, optimizer="adamw", net_l2=0.05)
    model = build(p, fmap)
    opt = build_optimizer(model, p)
    assert isinstance(opt, torch.optim.AdamW)
    emb_ids = {id(q) for q in model.embedding_parameters()}
    (g_emb,) = [g for g in opt.param_groups if id(g["params"][0]) in emb_ids]
    (g_net,) = [g for g in opt.param_groups if id(g["params"][0]) not in emb_ids]
    assert g_emb["weight_decay"] == 0.0 and g_net["weight_decay"] == 0.05
    assert {id(q) for q in g_emb["params"]} == emb_ids
    assert type(build_optimizer(model, params())) is torch.optim.Adam


def test_embedding_l2_shrinks_embeddings(data, tmp_path):
    d, fmap = data
    norms = []
    for l2 in (0.0, 1.0):
        p = params(max_epochs=2, embedding_l2=l2)
        model = build(p, fmap)
        fit(model, *loaders(d, fmap), p, tmp_path / str(l2), log=quiet)
        norms.append(
            torch.cat([q.detach().flatten() for q in model.embedding.vector_parameters()]).norm().item()
        )
    assert norms[1] < 0.5 * norms[0]


def test_embedding_l2_leaves_first_order_weights_alone(data):
    """The penalty covers the embedding vectors only: LR (first-order weights only) gets none, FM
    only its vectors' λ/2·‖w‖²."""
    _, fmap = data
    lr_model = build(params(model="lr"), fmap)
    assert float(lr_model.l2_penalty(1e-3, 0.0)) == 0.0
    fm = build(params(model="fm"), fmap)
    vec = sum(float(q.pow(2).sum()) for q in fm.embedding.vector_parameters())
    assert fm.embedding.first_order_table is not None and vec > 0
    assert float(fm.l2_penalty(1e-3, 0.0)) == pytest.approx(1e-3 / 2 * vec, rel=1e-5)


def test_gradient_clipping_uses_grad_clip_and_zero_disables(data, tmp_path, monkeypatch):
    d, fmap = data
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *a, **k):
        seen.append(max_norm)
        return real(parameters, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train, valid = loaders(d, fmap)
    fit(
        build(params(max_epochs=1, grad_clip=3.0), fmap),
        train,
        valid,
        params(max_epochs=1, grad_clip=3.0),
        tmp_path / "a",
        log=quiet,
    )
    assert seen == [3.0] * len(train)
    seen.clear()
    fit(
        build(params(max_epochs=1, grad_clip=0.0), fmap),
        train,
        valid,
        params(max_epochs=1, grad_clip=0.0),
        tmp_path / "b",
        log=quiet,
    )
    assert seen == []


def test_empty_training_split_is_a_clear_error(tmp_path):
    fmap = write_split_data(tmp_path / "d", n_train=0, n_valid=50)
    p = params()
    with pytest.raises(ValueError, match="training loader yields no batches"):
        fit(build(p, fmap), *loaders(tmp_path / "d", fmap), p, tmp_path / "out", log=quiet)


# ---------------------------------------------------------------- precision


def test_resolve_precision_follows_setting_and_hardware(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loop.resolve_precision(cpu, "fp32") is None
    assert loop.resolve_precision(cuda, "fp32") is None
    assert loop.resolve_precision(cpu, "bf16") is torch.bfloat16
    assert loop.resolve_precision(cuda, "auto") is torch.bfloat16
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: False)
    assert loop.resolve_precision(cpu, "auto") is None
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: True)
    assert loop.resolve_precision(cpu, "auto") is torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        loop.resolve_precision(cpu, "fp16")


def test_bf16_autocast_changes_the_forward_but_prediction_stays_fp32(tmp_path):
    fmap = write_split_data(tmp_path, n_train=256, n_valid=64)
    seed_everything(0)
    model = build_model("dcnv2", fmap, embedding_dim=8).eval()
    batch = next(iter(BatchLoader(tmp_path / "valid.parquet", fmap, 64, shuffle=False)))
    with torch.no_grad():
        exact = model(batch.categorical, batch.dense)
        with loop._autocast(torch.device("cpu"), torch.bfloat16):
            low = model(batch.categorical, batch.dense)
    assert low.dtype == torch.bfloat16 and exact.dtype == torch.float32
    diff = (low.float() - exact).abs().max().item()
    scale = exact.abs().max().item()
    assert 0 < diff < 0.05 * scale  # bf16 really ran (not a no-op) and stays within a few % of fp32
    logits = predict_logits(model, BatchLoader(tmp_path / "valid.parquet", fmap, 64, shuffle=False))
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits[:64], exact.numpy(), rtol=1e-6, atol=1e-6)
