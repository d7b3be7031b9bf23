"""train.logistic_base: a frozen LR (the gate's) under the teacher's logit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.data.feature_map import FeatureMap
from components.models import build_model
from components.serve.optimize import prepare_for_inference
from components.train.checkpoint import feature_map_hash, load_model, load_model_weights, save_model
from components.train.gate import BASELINE_DIR, LOGISTIC_BASE_DIR
from components.train.teacher import teacher_hparams, train_teacher
from tests.test_train_loop import params, write_split_data


def _toy():
    fm = FeatureMap.toy([3, 5, 4], dense=2)
    cat = torch.tensor([[0, 4, 1], [2, 0, 3], [1, 1, 0]])
    return fm, cat, torch.randn(3, 2)


def test_the_logit_is_the_models_plus_the_frozen_lr_and_only_the_model_learns():
    fm, cat, dense = _toy()
    torch.manual_seed(0)
    plain = build_model("dcnv2", fm, embedding_dim=4, hidden_units=[8], num_cross_layers=1)
    torch.manual_seed(0)
    based = build_model("dcnv2", fm, embedding_dim=4, hidden_units=[8], num_cross_layers=1, logistic_base=True)
    lr = build_model("lr", fm)
    with torch.no_grad():
        for p in lr.parameters():
            p.normal_()
    based.logistic_base.load_state_dict(lr.state_dict())
    based.eval(), plain.eval(), lr.eval()
    torch.testing.assert_close(based(cat, dense), plain(cat, dense) + lr(cat, dense))
    assert float(lr(cat, dense).detach().abs().mean()) > 0.1  # the base is not a no-op here

    based.train()
    based(cat, dense).sum().backward()
    frozen = dict(based.logistic_base.named_parameters())
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen.values())
    rest = [p for n, p in based.named_parameters() if not n.startswith("logistic_base.")]
    assert all(p.grad is not None for p in rest)
    assert based.logistic_base.embedding.first_order_table.weight.requires_grad is False

    with pytest.raises(ValueError, match="'lr' is one already"):
        build_model("lr", fm, logistic_base=True)


@pytest.mark.parametrize("name,hparams", [
    ("deepfm", {"embedding_dim": 4, "hidden_units": [8]}),
    ("fsdnet", {"embedding_dim": 4, "num_layers": 2, "hidden_dim": 8}),  # the base under every head
])  # fmt: skip
def test_the_base_travels_with_the_checkpoint_and_the_serving_form(tmp_path, name, hparams):
    fm, cat, dense = _toy()
    hparams = {**hparams, "logistic_base": True}
    model = build_model(name, fm, **hparams).eval()
    with torch.no_grad():
        for p in model.logistic_base.parameters():
            p.normal_()
    save_model(model, tmp_path, model_name=name, hparams=hparams, feature_map_hash=feature_map_hash(fm),
               epoch=1, metrics={})
    loaded, meta = load_model(tmp_path, fm)
    assert meta["hparams"]["logistic_base"] is True and loaded.logistic_base is not None
    torch.testing.assert_close(loaded(cat, dense), model(cat, dense))
    served = prepare_for_inference(loaded)
    assert served.logistic_base.embedding.check_ids is False and served.embedding.check_ids is False
    with torch.inference_mode():
        torch.testing.assert_close(served(cat, dense), model(cat, dense).detach())
    # the ONNX graph (traced: the base's generic path) scores what the eager fast path scores
    import numpy as np
    import onnxruntime as ort

    from components.serve.export import export_onnx

    path = export_onnx(served, fm, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logit = session.run(["logit"], {"categorical": cat.numpy().astype(np.int64), "dense": dense.numpy()})[0]
    np.testing.assert_allclose(logit, model(cat, dense).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_teacher_hparams_follow_the_setting():
    assert teacher_hparams(params(model="dcnv2", logistic_base=True))["logistic_base"] is True
    assert "logistic_base" not in teacher_hparams(params(model="dcnv2", logistic_base=False))
    assert "logistic_base" not in teacher_hparams(params(model="lr", logistic_base=True))


def test_the_teacher_is_built_on_the_gates_lr_which_stays_frozen(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_split_data(d, n_train=3000, n_valid=1000, seed=5)
    p = params(model="fm", lr=0.02, max_epochs=2, logistic_base=True, out_dir=str(tmp_path / "teacher"),
               metrics=str(tmp_path / "teacher.json"), curve=str(tmp_path / "curve.csv"))
    logs: list[str] = []
    res = train_teacher(p, d, resume=False, log=logs.append)
    m = res.metrics
    assert m["hparams"]["logistic_base"] is True
    assert any(line.startswith("logistic base: the gate's LR fitted") for line in logs)
    fmap = FeatureMap.load(Path(d) / "feature_map.json")
    teacher, _ = load_model(res.model_dir, fmap)
    gate_lr = build_model("lr", fmap, embedding_dim=p.embedding_dim)
    load_model_weights(gate_lr, res.model_dir / BASELINE_DIR)
    assert m["baselines"]["lr"]["max_epochs"] == 20 and m["baselines"]["lr"]["best_epoch"] <= 20
    # the gate's LR ran no longer than the base's 20 epochs: the teacher's base is bit for bit the LR
    # the gate scored (its checkpoint also in logistic_base/), copied once, never trained
    for name, tensor in gate_lr.state_dict().items():
        assert torch.equal(teacher.logistic_base.state_dict()[name], tensor), name
    assert any(float(t.abs().max()) > 0 for t in gate_lr.state_dict().values())
    assert (res.model_dir / LOGISTIC_BASE_DIR / "model.safetensors").read_bytes() == \
        (res.model_dir / BASELINE_DIR / "model.safetensors").read_bytes()
    # and the gate's LR was fitted once: its record is the one the teacher was built on
    lr_meta = (res.model_dir / BASELINE_DIR / "model.json").read_text()
    assert f'"epoch": {m["baselines"]["lr"]["best_epoch"]}' in lr_meta
    assert m["baselines"]["lr"]["base_best_epoch"] == m["baselines"]["lr"]["best_epoch"]


def test_the_base_is_the_lrs_early_fit_while_the_gate_compares_with_the_converged_one(tmp_path):
    """``logistic_base_max_epochs: 2`` under a gate LR that goes on improving: the teacher's base is
    the checkpoint of the LR's best of its first 2 epochs, the gate scores the fit's final best, and
    the report's gate line says which is which."""
    import json
    from types import SimpleNamespace

    from components.report.tables import gate_line

    d = tmp_path / "data"
    d.mkdir()
    write_split_data(d, n_train=3000, n_valid=1000, seed=5)
    p = params(model="fm", max_epochs=1, logistic_base=True, logistic_base_max_epochs=2,
               gate={"baseline_lr": 2e-3, "baseline_max_epochs": 8, "on_fail": "warn"},
               out_dir=str(tmp_path / "teacher"), metrics=str(tmp_path / "teacher.json"),
               curve=str(tmp_path / "curve.csv"))
    res = train_teacher(p, d, resume=False, log=lambda _m: None)
    lr_rec = res.metrics["baselines"]["lr"]
    assert lr_rec["best_epoch"] > 2, lr_rec  # the LR was still improving after epoch 2 (the premise)
    assert lr_rec["base_max_epochs"] == 2 and lr_rec["base_best_epoch"] in (1, 2)
    fit_rec = json.loads((res.model_dir / BASELINE_DIR / "fit.json").read_text())
    assert fit_rec["base_best_epoch"] == lr_rec["base_best_epoch"] and fit_rec["base_converged"] is False
    fmap = FeatureMap.load(Path(d) / "feature_map.json")
    teacher, _ = load_model(res.model_dir, fmap)
    base, gate_lr = (build_model("lr", fmap, embedding_dim=p.embedding_dim) for _ in range(2))
    base_meta = load_model_weights(base, res.model_dir / LOGISTIC_BASE_DIR)
    load_model_weights(gate_lr, res.model_dir / BASELINE_DIR)
    assert base_meta["epoch"] == lr_rec["base_best_epoch"]
    for name, tensor in base.state_dict().items():
        assert torch.equal(teacher.logistic_base.state_dict()[name], tensor), name
    weights = base.embedding.first_order_table.weight
    assert not torch.equal(weights, gate_lr.embedding.first_order_table.weight)
    # the gate scored the converged LR: its valid AUC is the one in the record, above the base's
    from components.train.teacher import score_splits

    assert score_splits(gate_lr, p, d, fmap, torch.device("cpu"))["valid"]["auc"] == pytest.approx(lr_rec["valid"]["auc"], abs=1e-6)
    assert lr_rec["valid"]["auc"] > score_splits(base, p, d, fmap, torch.device("cpu"))["valid"]["auc"]
    line = gate_line(SimpleNamespace(teacher=res.metrics))
    assert f"this LR's fit at epoch {lr_rec['base_best_epoch']} (its best of the first 2; the gate's LR: " \
           f"epoch {lr_rec['best_epoch']})" in line


def test_the_gate_line_says_the_teacher_stands_on_the_lr():
    from types import SimpleNamespace

    from components.report.tables import gate_line

    gate = {"passed": True, "on_fail": "fail", "message": "baseline gate passed: teacher valid AUC 0.7 vs LR 0.6"}
    based = SimpleNamespace(teacher={"gate": gate, "hparams": {"embedding_dim": 16, "logistic_base": True}})
    plain = SimpleNamespace(teacher={"gate": gate, "hparams": {"embedding_dim": 16}})
    assert gate_line(plain) == gate["message"]
    assert gate_line(based) == gate["message"] + "; the teacher holds this LR as its frozen logistic base (train.logistic_base)"


def test_a_student_study_key_changes_when_the_student_carries_the_base(tmp_path):
    import json

    from components.config import load_params
    from components.distill.students import study_key
    from tests.conftest import REPO_ROOT

    params = load_params(REPO_ROOT / "params.yaml")
    off = params.model_copy(update={"distill": params.distill.model_copy(update={"logistic_base": False})})
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    meta = {"weights_sha256": "ab" * 32, "feature_map_hash": "cd" * 32, "hparams": {"embedding_dim": 16}}
    (teacher / "model.json").write_text(json.dumps(meta))
    assert study_key("dagfm", params, teacher) == study_key("dagfm", off, teacher)  # no base: nothing changes
    meta["hparams"]["logistic_base"] = True
    (teacher / "model.json").write_text(json.dumps(meta))
    assert study_key("dagfm", params, teacher) != study_key("dagfm", off, teacher)
    assert study_key("fsdnet", params, teacher) != study_key("fsdnet", off, teacher)  # FSDNet carries it too


def test_the_students_one_row_onnx_branch_folds_the_base_into_its_readout(tmp_path):
    """The DAGFM student's one-row ONNX branch (grouped convolutions, the base in the readout's
    Gemm) scores each row as PyTorch does; ``logit_terms`` is ``base_logit`` as x · w + b."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from components.serve.export import export_onnx

    fm = FeatureMap.toy([3, 5, 4, 6], dense=2)
    torch.manual_seed(0)
    cat = torch.stack([torch.randint(0, n, (5,)) for n in (3, 5, 4, 6)], 1)
    dense = torch.randn(5, 2)
    model = build_model("dagfm", fm, embedding_dim=4, interaction_type="outer", depth=2, logistic_base=True).eval()
    with torch.no_grad():
        for p in model.logistic_base.parameters():
            p.normal_()
    base = model.logistic_base
    x, w, b = base.logit_terms(cat, dense)
    assert x.shape == (5, 4 + 2) and w.shape == (6,)
    torch.testing.assert_close(x @ w + b, base.base_logit(cat, dense))
    assert float(base.base_logit(cat, dense).abs().mean()) > 0.1  # the base is not a no-op here
    served = prepare_for_inference(model)
    path = export_onnx(served, fm, tmp_path / "model.onnx")
    (branch,) = [a.g for a in onnx.load(str(path)).graph.node[-1].attribute if a.name == "then_branch"]
    ops = [n.op_type for n in branch.node]
    assert ops.count("Conv") == 2 * 2 and "ReduceSum" not in ops and ops.count("Gemm") == 2  # connect, readout
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(cat, dense).numpy()
    for row in range(5):
        feed = {"categorical": cat[row:row + 1].numpy(), "dense": dense[row:row + 1].numpy()}
        np.testing.assert_allclose(session.run(["logit"], feed)[0], expected[row:row + 1], rtol=1e-5, atol=1e-5)
    feed = {"categorical": cat.numpy(), "dense": dense.numpy()}  # and the batch branch
    np.testing.assert_allclose(session.run(["logit"], feed)[0], expected, rtol=1e-5, atol=1e-5)


def test_first_order_l2_puts_the_first_order_weights_under_the_embedding_penalty():
    fm, _, _ = _toy()
    model = build_model("deepfm", fm, embedding_dim=4, hidden_units=[8])
    vec = sum(float(q.detach().pow(2).sum()) for q in model.embedding.vector_parameters())
    first = model.embedding.first_order_parameters()
    assert len(first) == 2  # the categorical ids' weights and the dense fields'
    with torch.no_grad():
        for q in first:
            q.fill_(0.5)  # large next to the N(0, 1e-4) vectors: the two sums differ by orders
    lin = sum(float(q.detach().pow(2).sum()) for q in first)
    assert float(model.l2_penalty(1e-3).detach()) == pytest.approx(1e-3 / 2 * vec, rel=1e-5)
    model.embedding.first_order_l2 = True
    assert float(model.l2_penalty(1e-3).detach()) == pytest.approx(1e-3 / 2 * (vec + lin), rel=1e-5)
    # the lazy optimiser of sparse tables puts them in its L2 group the same way
    from components.train.loop import build_optimizer

    opt = build_optimizer(model, params(model="deepfm", embedding_l2=1e-3), sparse=True)
    (l2_group,) = [g for g in opt.param_groups if g.get("row_l2")]
    assert {id(q) for q in first} <= {id(q) for q in l2_group["params"]}
    model.embedding.first_order_l2 = False
    opt = build_optimizer(model, params(model="deepfm", embedding_l2=1e-3), sparse=True)
    (l2_group,) = [g for g in opt.param_groups if g.get("row_l2")]
    assert not {id(q) for q in first} & {id(q) for q in l2_group["params"]}


def test_first_order_l2_auto_follows_whether_the_base_lr_converged():
    from components.train.teacher import FittedLR, resolve_first_order_l2

    converged = FittedLR(None, 4, 6, 100, 20, 4)  # early stop at epoch 6: the base is that LR
    late = FittedLR(None, 57, 59, 100, 20, 20)  # converged at 57: the base (best of 20) is not
    capped = FittedLR(None, 20, 20, 20, 20, 20)  # stopped by the cap, still improving
    assert converged.base_converged and converged.converged
    assert late.converged and not late.base_converged
    assert not capped.converged and not capped.base_converged
    auto = params(first_order_l2="auto")
    assert resolve_first_order_l2(auto, converged) is True
    assert resolve_first_order_l2(auto, late) is False
    assert resolve_first_order_l2(auto, capped) is False
    assert resolve_first_order_l2(auto, None) is False  # no logistic base: nothing to be a residual of
    assert resolve_first_order_l2(params(first_order_l2=True), capped) is True
    assert resolve_first_order_l2(params(first_order_l2=False), converged) is False
    with pytest.raises(ValueError):
        params(first_order_l2="sometimes")


@pytest.mark.parametrize("cap,applied", [(60, True), (1, False)])
def test_the_teacher_penalises_its_first_order_weights_only_over_a_converged_lr(tmp_path, cap, applied):
    """A DeepFM teacher with ``first_order_l2: auto``: the gate's LR early-stops well inside a cap of
    60 epochs (converged: penalty on) and is stopped by a cap of 1 (penalty off); the record of the
    LR's fit lies beside its checkpoint and the teacher's metrics say which it was."""
    import json

    d = tmp_path / "data"
    d.mkdir()
    write_split_data(d, n_train=3000, n_valid=1000, seed=5)
    common = dict(model="deepfm", model_params={"hidden_units": [8]}, max_epochs=2, logistic_base=True,
                  embedding_l2=0.5, first_order_l2="auto",
                  gate={"baseline_lr": 0.05, "baseline_max_epochs": cap, "baseline_patience": 1})
    logs: list[str] = []
    out = tmp_path / "auto"
    res = train_teacher(params(**common, out_dir=str(out), metrics=str(tmp_path / "m.json"),
                               curve=str(tmp_path / "c.csv")), d, resume=False, log=logs.append)
    rec = json.loads((res.model_dir / BASELINE_DIR / "fit.json").read_text())
    assert rec["max_epochs"] == cap and rec["converged"] is applied
    assert rec["epochs"] == res.metrics["baselines"]["lr"]["epochs"]
    assert (rec["epochs"] < cap) is applied
    assert res.metrics["first_order_l2"] is applied
    assert any(line.startswith("first-order L2: the base LR converged") for line in logs) is applied
    # the penalty acts: the same teacher with it forced off ends with larger first-order weights
    off = train_teacher(params(**{**common, "first_order_l2": False}, out_dir=str(tmp_path / "off"),
                               metrics=str(tmp_path / "m2.json"), curve=str(tmp_path / "c2.csv")),
                        d, resume=False, log=lambda _m: None)
    assert off.metrics["first_order_l2"] is False
    fmap = FeatureMap.load(Path(d) / "feature_map.json")

    def first_order_norm(model_dir):
        model, _ = load_model(model_dir, fmap)
        return sum(float(q.pow(2).sum()) for q in model.embedding.first_order_parameters())

    ratio = first_order_norm(res.model_dir) / first_order_norm(off.model_dir)
    assert (ratio < 0.5) if applied else ratio == pytest.approx(1.0, rel=1e-4)
