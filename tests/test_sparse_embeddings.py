"""Sparse embedding gradients + lazy Adam (train.sparse_embeddings): the update equals
torch.optim.SparseAdam on the rows of the batch and torch.optim.Adam on dense parameters, clipping
equals torch's, the auto policy, and a real fit with it (train, resume)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from components.config import ConfigError, TrainParams, load_params
from components.train.sparse_embeddings import (
    LazyAdam,
    clip_grad_norm,
    enable_sparse_embeddings,
    wants_sparse,
)


class Tiny(nn.Module):
    def __init__(self, sparse: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.table = nn.Embedding(50, 4, sparse=sparse)
        self.head = nn.Linear(4, 1)

    def forward(self, ids):
        return self.head(self.table(ids).sum(1)).squeeze(1)


def _grads(model, ids, y):
    model.zero_grad(set_to_none=True)
    nn.functional.binary_cross_entropy_with_logits(model(ids), y).backward()


def _lazy_against_sparse_adam(lam: float):
    """LazyAdam (table group ``row_l2`` = lam) and the reference — torch's SparseAdam on the table
    with lam·w added to the batch rows' gradient, Adam on the head — after the same 6 steps."""
    ids = [torch.tensor([[1, 2, 2], [7, 1, 3]]), torch.tensor([[4, 2, 9], [9, 9, 1]])]
    y = torch.tensor([1.0, 0.0])
    ours, ref = Tiny(sparse=True), Tiny(sparse=True)
    opt = LazyAdam([{"params": [ours.table.weight], "row_l2": lam}, {"params": ours.head.parameters()}], lr=0.01)
    ref_sparse = torch.optim.SparseAdam([ref.table.weight], lr=0.01)
    ref_dense = torch.optim.Adam(ref.head.parameters(), lr=0.01)
    untouched = ours.table.weight[20:].clone()
    for x in ids * 3:
        _grads(ours, x, y)
        opt.step()
        _grads(ref, x, y)
        g = ref.table.weight.grad.coalesce()
        ref.table.weight.grad = torch.sparse_coo_tensor(
            g.indices(), g.values() + lam * ref.table.weight.detach()[g.indices()[0]], g.shape,
            check_invariants=False)
        ref_sparse.step()
        ref_dense.step()
    torch.testing.assert_close(ours.table.weight, ref.table.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.head.weight, ref.head.weight, rtol=1e-6, atol=1e-7)
    assert torch.equal(ours.table.weight[20:], untouched)  # rows never in a batch never move
    return ours, opt


def test_lazy_adam_equals_sparse_adam_on_rows_and_adam_on_dense_params():
    ours, opt = _lazy_against_sparse_adam(0.0)
    assert set(opt.state[ours.table.weight]) == {"step", "exp_avg", "exp_avg_sq"}  # Adam's state layout


def test_lazy_adam_on_dense_gradients_equals_adam_and_adamw():
    for decoupled, ref_cls in ((False, torch.optim.Adam), (True, torch.optim.AdamW)):
        ours, ref = Tiny(sparse=False), Tiny(sparse=False)
        opt = LazyAdam(ours.parameters(), lr=0.01, weight_decay=0.1 if decoupled else 0.0, decoupled=decoupled)
        ref_opt = ref_cls(ref.parameters(), lr=0.01, weight_decay=0.1 if decoupled else 0.0)
        x, y = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([1.0, 0.0])
        for _ in range(4):
            _grads(ours, x, y)
            opt.step()
            _grads(ref, x, y)
            ref_opt.step()
        for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_row_l2_adds_the_l2_gradient_to_the_batch_rows_only():
    """row_l2 = λ: a sparse step equals SparseAdam on the gradient of loss + λ/2·Σ‖w_row‖² over the
    batch's rows; rows outside every batch never move (no decay of unseen rows)."""
    ours, _ = _lazy_against_sparse_adam(0.05)
    plain, _ = _lazy_against_sparse_adam(0.0)
    assert not torch.allclose(plain.table.weight[:10], ours.table.weight[:10], atol=1e-4)  # the L2 acted


def test_sparse_fit_takes_the_embedding_l2_from_the_optimizer_not_the_loss(tmp_path):
    """With sparse tables the loss's penalty skips them (a whole-table term would be a dense
    gradient) and build_optimizer hands embedding_l2 to LazyAdam's embedding group."""
    from components.models import build_model
    from components.train.loop import _penalty, build_optimizer
    from tests.test_train_loop import write_split_data

    fmap = write_split_data(tmp_path, n_train=300, n_valid=100)  # 4 tables + a dense field's weights
    model = build_model("deepfm", fmap, embedding_dim=4, hidden_units=[8])  # vectors + first order
    emb = model.embedding
    p = TrainParams(embedding_l2=1e-3, net_l2=0.0, sparse_embeddings="on")
    tables = tuple(enable_sparse_embeddings(model))
    assert {id(t) for t in tables} == {id(emb.table.weight), id(emb.first_order_table.weight)}
    opt = build_optimizer(model, p, sparse=True)
    assert isinstance(opt, LazyAdam)
    by_l2 = {id(q): g.get("row_l2", 0.0) for g in opt.param_groups for q in g["params"]}
    assert by_l2[id(emb.table.weight)] == 1e-3 and by_l2[id(emb.dense_weight)] == 1e-3
    assert by_l2[id(emb.first_order_table.weight)] == 0.0 and by_l2[id(emb.first_order_dense)] == 0.0
    assert len(by_l2) == sum(1 for q in model.parameters() if q.requires_grad)  # every parameter once
    with torch.no_grad():
        full, lazy = _penalty(model, p).item(), _penalty(model, p, tables).item()
        dense_sq, table_sq = emb.dense_weight.pow(2).sum().item(), emb.table.weight.pow(2).sum().item()
    # the loss keeps the dense field's vectors only; first-order weights never get the embedding L2
    assert lazy == pytest.approx(1e-3 / 2 * dense_sq, rel=1e-5)
    assert full == pytest.approx(1e-3 / 2 * (dense_sq + table_sq), rel=1e-5)


def test_clip_grad_norm_matches_torch_on_the_dense_equivalent():
    x, y = torch.tensor([[1, 2, 2], [7, 1, 3]]), torch.tensor([1.0, 0.0])
    sparse, dense = Tiny(sparse=True), Tiny(sparse=False)
    _grads(sparse, x * 1, y)
    _grads(dense, x * 1, y)
    for p in (*sparse.parameters(), *dense.parameters()):
        p.grad = p.grad * 100  # large enough to be clipped
    n_ours = clip_grad_norm(list(sparse.parameters()), 0.5)
    n_ref = torch.nn.utils.clip_grad_norm_(list(dense.parameters()), 0.5)
    torch.testing.assert_close(n_ours, n_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(sparse.table.weight.grad.to_dense(), dense.table.weight.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(sparse.head.weight.grad, dense.head.weight.grad)


def test_auto_policy_and_settings_errors(tmp_path):
    p = TrainParams()
    assert p.sparse_embeddings == "auto" and p.sparse_min_ids == 1_000_000
    assert not wants_sparse(p, 999_999) and wants_sparse(p, 1_000_000)
    assert not wants_sparse(p, 5_000_000, distributed=True)
    # an embedding L2 no longer keeps large tables dense: LazyAdam applies it to each batch's rows
    assert wants_sparse(p.model_copy(update={"embedding_l2": 1e-3}), 5_000_000)
    assert wants_sparse(p.model_copy(update={"sparse_embeddings": "on"}), 10)
    assert not wants_sparse(p.model_copy(update={"sparse_embeddings": "off"}), 10**8)
    path = tmp_path / "params.yaml"
    path.write_text("train: {sparse_embeddings: 'on', embedding_l2: 0.001}\n")
    assert load_params(path).train.embedding_l2 == 0.001
    path.write_text("train: {sparse_embeddings: 'on', distributed: {nproc: 2}}\n")
    with pytest.raises(ConfigError, match="sparse_embeddings"):
        load_params(path)
    m = Tiny(sparse=False)
    assert enable_sparse_embeddings(m) == [m.table.weight] and m.table.sparse


def test_state_dict_round_trip_continues_identically():
    x, y = torch.tensor([[1, 2, 2], [7, 1, 3]]), torch.tensor([1.0, 0.0])
    a, b = Tiny(sparse=True), Tiny(sparse=True)
    opt_a = LazyAdam(a.parameters(), lr=0.01)
    _grads(a, x, y)
    opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = LazyAdam(b.parameters(), lr=0.01)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # (load_state_dict keeps the tensors: a copy, as from disk)
    for m, o in ((a, opt_a), (b, opt_b)):
        _grads(m, x.flip(0), y)
        o.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_teacher_fit_with_sparse_embeddings_learns_like_dense(tmp_path):
    """A real teacher fit (train_teacher, DCNv2) with sparse_min_ids 1, so auto turns sparse on:
    its metrics say so and it learns the planted signal as the dense fit does."""
    from components.train.teacher import train_teacher
    from tests.test_train_loop import params, write_split_data

    d = tmp_path / "data"
    write_split_data(d, n_train=4000, n_valid=1500, seed=3)
    aucs = {}
    for mode in ("off", "auto"):
        p = params(model="dcnv2", model_params={"hidden_units": [16], "num_cross_layers": 1}, max_epochs=2,
                   sparse_embeddings=mode, sparse_min_ids=1, out_dir=str(tmp_path / mode),
                   metrics=str(tmp_path / f"{mode}.json"), curve=str(tmp_path / f"{mode}.csv"))
        lines: list[str] = []
        res = train_teacher(p, d, resume=False, log=lines.append, with_gate=False)
        aucs[mode] = res.metrics["valid"]["auc"]
        assert any("lazy Adam" in line for line in lines) == (mode == "auto")
    assert aucs["auto"] > 0.7 and abs(aucs["auto"] - aucs["off"]) < 0.03
