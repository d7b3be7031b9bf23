"""Checkpoints: exact round trips, no pickles, integrity checks, atomic replacement."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

import components.train.checkpoint as ckpt
from components.data.feature_map import FeatureMap
from components.models import build_model

FMAP = FeatureMap.toy([7, 5, 3], dense=2)


def _model(seed: int, **hp):
    torch.manual_seed(seed)
    return build_model("dnn", FMAP, embedding_dim=4, hidden_units=(8, 4), **hp)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, v, (n,), generator=g) for v in (7, 5, 3)], 1)
    return cat, torch.randn(n, 2, generator=g), (torch.rand(n, generator=g) < 0.5).float()


def _no_pickle(monkeypatch):
    """Make any pickle-based load fail loudly during the test."""

    def boom(*a, **k):
        raise AssertionError("a pickle load was attempted")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)


def _safetensors_header(path) -> dict:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n])


def test_model_round_trip_is_exact_and_pickle_free(tmp_path, monkeypatch):
    a, b = _model(1), _model(2)
    assert not torch.equal(a.embedding.table.weight, b.embedding.table.weight)
    hp = {"embedding_dim": 4, "hidden_units": (8, 4)}
    ckpt.save_model(
        a,
        tmp_path,
        model_name="dnn",
        hparams=hp,
        feature_map_hash=ckpt.feature_map_hash(FMAP),
        epoch=3,
        metrics={"valid_auc": 0.75},
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    header = _safetensors_header(
        tmp_path / "model.safetensors"
    )  # parses as safetensors: JSON header
    assert "embedding.table.weight" in header and header["embedding.table.weight"]["shape"] == [
        15,
        4,
    ]

    _no_pickle(monkeypatch)
    meta = ckpt.load_model_weights(b, tmp_path)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    assert meta["model"] == "dnn" and meta["epoch"] == 3 and meta["metrics"] == {"valid_auc": 0.75}
    assert meta["hparams"] == {"embedding_dim": 4, "hidden_units": [8, 4]}
    n_emb = 15 * 4 + 2 * 4  # table rows x dim + dense projections
    assert meta["parameters"]["embedding"] == n_emb
    assert meta["parameters"]["total"] == sum(p.numel() for p in a.parameters())


def test_load_model_rebuilds_from_registry(tmp_path, monkeypatch):
    a = _model(1)
    ckpt.save_model(
        a,
        tmp_path,
        model_name="dnn",
        hparams={"embedding_dim": 4, "hidden_units": [8, 4]},
        feature_map_hash=ckpt.feature_map_hash(FMAP),
        epoch=1,
        metrics={},
    )
    _no_pickle(monkeypatch)
    c, meta = ckpt.load_model(tmp_path, FMAP)
    cat, dense, _ = _batch()
    a.eval()
    assert not c.training
    assert torch.equal(a(cat, dense), c(cat, dense))

    other = FeatureMap.toy([7, 5, 4], dense=2)
    with pytest.raises(ValueError, match="trained on feature map"):
        ckpt.load_model(tmp_path, other)


def test_tampered_weights_are_refused(tmp_path):
    a = _model(1)
    ckpt.save_model(
        a, tmp_path, model_name="dnn", hparams={}, feature_map_hash="x", epoch=1, metrics={}
    )
    raw = bytearray((tmp_path / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        ckpt.load_model_weights(_model(2), tmp_path)


def test_weights_that_do_not_fit_raise_naming_the_file(tmp_path):
    ckpt.save_model(
        _model(1), tmp_path, model_name="dnn", hparams={}, feature_map_hash="x", epoch=1, metrics={}
    )
    torch.manual_seed(0)
    wrong = build_model("dnn", FMAP, embedding_dim=4, hidden_units=(6,))
    with pytest.raises(ValueError, match="model.safetensors: weights do not fit"):
        ckpt.load_model_weights(wrong, tmp_path)


def _train_steps(model, opt, steps, seed=0):
    for i in range(steps):
        cat, dense, y = _batch(seed=seed + i)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(cat, dense), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_train_state_round_trip_continues_identically(tmp_path, monkeypatch):
    a = _model(1)
    opt_a = torch.optim.Adam(a.parameters(), lr=0.01)
    _train_steps(a, opt_a, 3)
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    scalars = {"epoch": 2, "lr": 0.01, "best_auc": 0.7, "history": [{"epoch": 1}, {"epoch": 2}]}
    ckpt.save_train_state(tmp_path, model=a, optimizer=opt_a, scalars=scalars)
    draws = (random.random(), np.random.rand(), torch.rand(1).item())

    b = _model(2)
    opt_b = torch.optim.Adam(b.parameters(), lr=0.5)
    _no_pickle(monkeypatch)
    got = ckpt.load_train_state(tmp_path, model=b, optimizer=opt_b)
    assert got == scalars
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws  # RNG states restored
    assert opt_b.param_groups[0]["lr"] == 0.01 and opt_b.param_groups[0]["betas"] == (0.9, 0.999)
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[k][name], sb[k][name]), (k, name)
    # one more identical step on both -> identical weights (Adam moments and step count carried over)
    _train_steps(a, opt_a, 1, seed=99)
    _train_steps(b, opt_b, 1, seed=99)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_train_state_files_are_json_and_safetensors_and_old_epochs_are_removed(tmp_path):
    a = _model(1)
    opt = torch.optim.Adam(a.parameters())
    _train_steps(a, opt, 1)
    ckpt.save_train_state(tmp_path, model=a, optimizer=opt, scalars={"epoch": 1})
    ckpt.save_train_state(tmp_path, model=a, optimizer=opt, scalars={"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume-2.safetensors", "resume.json"]
    meta = json.loads((tmp_path / "resume.json").read_text())
    assert meta["tensor_file"] == "resume-2.safetensors" and meta["scalars"] == {"epoch": 2}
    header = _safetensors_header(tmp_path / "resume-2.safetensors")
    assert (
        "optim.0.exp_avg" in header
        and "rng.torch" in header
        and "model.embedding.table.weight" in header
    )
    assert ckpt.has_train_state(tmp_path)
    ckpt.clear_train_state(tmp_path)
    assert list(tmp_path.iterdir()) == [] and not ckpt.has_train_state(tmp_path)
    assert ckpt.load_train_state(tmp_path, model=a, optimizer=opt) is None


def test_crash_while_writing_keeps_the_previous_state(tmp_path, monkeypatch):
    a = _model(1)
    opt = torch.optim.Adam(a.parameters())
    _train_steps(a, opt, 1)
    ckpt.save_train_state(tmp_path, model=a, optimizer=opt, scalars={"epoch": 1})
    ckpt.save_model(
        a, tmp_path, model_name="dnn", hparams={}, feature_map_hash="x", epoch=1, metrics={}
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def dies(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")  # half-written temp file, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", dies)
    _train_steps(a, opt, 1)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_train_state(tmp_path, model=a, optimizer=opt, scalars={"epoch": 2})
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_model(
            a, tmp_path, model_name="dnn", hparams={}, feature_map_hash="x", epoch=2, metrics={}
        )
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data, name
    monkeypatch.undo()
    b = _model(2)
    assert (
        ckpt.load_train_state(tmp_path, model=b, optimizer=torch.optim.Adam(b.parameters()))[
            "epoch"
        ]
        == 1
    )
    assert ckpt.load_model_weights(b, tmp_path)["epoch"] == 1


def test_unreadable_metadata_names_the_file(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model\.json: not valid JSON"):
        ckpt.read_model_metadata(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a ctrflow-checkpoint"):
        ckpt.read_model_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        ckpt.read_model_metadata(tmp_path / "nowhere")
