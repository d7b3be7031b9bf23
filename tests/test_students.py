"""The KD students equal their formulas: DAGFM (inner/outer/kernel), KD-DAGFM+, FSDNet.

The DAGFM check is the DP argument of models.md §1.4 written out: the per-layer readout of a depth-L
DAGFM equals a plain-Python enumeration over non-decreasing index paths i_0 ≤ … ≤ i_t = j of the
edge operators applied, along the path, to the Hadamard products of the fields' vectors. Double
precision, tiny sizes, loops independent of the einsum code under test.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from components.data.feature_map import FeatureMap
from components.models import build_model
from components.models.dagfm import DAGPropagation
from components.models.embedding import Embedded
from components.models.fsdnet import mean_probability_logit

DT = torch.float64
TYPES = ("inner", "outer", "kernel")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(2022)


def _fm(num_fields: int) -> FeatureMap:
    return FeatureMap.toy([5] * num_fields)


def _emb(b: int, f: int, d: int) -> Embedded:
    return Embedded(torch.randn(b, f, d, dtype=DT), None, torch.zeros(b, 0, dtype=DT))


def _model(name: str, num_fields: int, d: int = 2, **hp):
    return build_model(name, _fm(num_fields), embedding_dim=d, **hp).double().eval()


def _phi(dag: DAGPropagation, t: int, i: int, j: int, h: torch.Tensor) -> torch.Tensor:
    """The edge operator φ_t(i, j, ·) on one vector h [d], written out coordinate by coordinate."""
    d = h.shape[0]
    if dag.interaction_type == "inner":
        return torch.stack([dag.p[t, i, j, k] * h[k] for k in range(d)])
    if dag.interaction_type == "outer":
        score = sum(dag.p[t, i, j, k] * h[k] for k in range(d))
        return torch.stack([score * dag.q[t, i, j, k] for k in range(d)])
    return torch.stack([sum(dag.W[t, i, j, k, m] * h[m] for m in range(d)) for k in range(d)])


def _enumerated_readouts(dag: DAGPropagation, e: torch.Tensor) -> torch.Tensor:
    """s_t[j] by path enumeration for one sample e [F, d] → [L+1, F] (C applied first)."""
    f, d = e.shape
    c = dag.connect
    h0 = [sum(c[j, k] * e[k] for k in range(f)) for j in range(f)]
    out = torch.zeros(dag.depth + 1, f, dtype=e.dtype)
    for j in range(f):
        out[0, j] = h0[j].sum()
    for t in range(1, dag.depth + 1):
        for path in itertools.combinations_with_replacement(range(f), t + 1):  # non-decreasing
            v = h0[path[0]]
            for s in range(1, t + 1):
                v = h0[path[s]] * _phi(dag, s - 1, path[s - 1], path[s], v)
            out[t, path[-1]] += v.sum()
    return out


# ---------------------------------------------------------------- DAGFM: the DP argument
@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize(("num_fields", "depth"), [(3, 2), (4, 3)])
def test_dagfm_readout_equals_enumeration_over_non_decreasing_paths(kind, num_fields, depth):
    model = _model("dagfm", num_fields, interaction_type=kind, depth=depth)
    assert torch.equal(model.dag.connect, torch.eye(num_fields, dtype=DT))  # C = I at init
    emb = _emb(2, num_fields, 2)
    got = model.layer_readouts(emb)
    assert got.shape == (2, depth + 1, num_fields)
    with torch.no_grad():
        for b in range(2):
            want = _enumerated_readouts(model.dag, emb.vectors[b])
            torch.testing.assert_close(got[b], want, rtol=1e-10, atol=1e-12)
    # the logit is the linear readout over concat(s_0, …, s_L), layer-major
    w, bias = model.readout.weight[0], model.readout.bias[0]
    want_logit = torch.stack(
        [sum(w[t * num_fields + j] * got[b, t, j] for t in range(depth + 1) for j in range(num_fields)) + bias
         for b in range(2)]
    )  # fmt: skip
    torch.testing.assert_close(model.interact(emb), want_logit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", TYPES)
def test_dagfm_with_a_learned_connect_layer_still_matches_the_enumeration(kind):
    model = _model("dagfm", 3, interaction_type=kind, depth=2)
    with torch.no_grad():
        model.dag.connect.add_(0.3 * torch.randn(3, 3, dtype=DT))
    emb = _emb(1, 3, 2)
    with torch.no_grad():
        want = _enumerated_readouts(model.dag, emb.vectors[0])
    torch.testing.assert_close(model.layer_readouts(emb)[0], want, rtol=1e-10, atol=1e-12)


def test_inner_layer_coefficient_is_the_product_of_path_weights_times_the_hadamard_product():
    """Closed form for inner (diagonal edges commute with ⊙): s_t[j] = Σ_paths Σ_k Π p · Π e."""
    model = _model("dagfm", 3, d=2, interaction_type="inner", depth=2)
    e = torch.randn(3, 2, dtype=DT)
    got = model.layer_readouts(_emb(1, 3, 2)._replace(vectors=e.unsqueeze(0)))[0]
    p = model.dag.p.detach()
    for t in (1, 2):
        want = torch.zeros(3, dtype=DT)
        for path in itertools.combinations_with_replacement(range(3), t + 1):
            for k in range(2):
                coef = math.prod(float(p[s - 1, path[s - 1], path[s], k]) for s in range(1, t + 1))
                want[path[-1]] += coef * math.prod(float(e[i, k]) for i in path)
        torch.testing.assert_close(got[t], want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", TYPES)
def test_mask_zeroes_every_i_greater_than_j_edge(kind):
    model = _model("dagfm", 4, interaction_type=kind, depth=2)
    mask = dict(model.named_buffers())["dag.mask"]
    assert torch.equal(
        mask, torch.tensor([[float(i <= j) for j in range(4)] for i in range(4)], dtype=DT)
    )
    emb = _emb(3, 4, 2)
    base = model.interact(emb).detach()
    names = {"inner": ["p"], "outer": ["p", "q"], "kernel": ["W"]}[kind]
    for name in names:
        weight = getattr(model.dag, name)
        with torch.no_grad():
            weight[0, 3, 1] += 5.0  # edge 3 → 1 (i > j): not in the DAG
            weight[1, 2, 0] -= 7.0
        torch.testing.assert_close(model.interact(emb).detach(), base, rtol=0, atol=0)
        with torch.no_grad():
            weight[1, 1, 2] += 0.5  # edge 1 → 2 (i ≤ j): must matter
        changed = model.interact(emb).detach()
        assert (changed - base).abs().max() > 1e-6
        with torch.no_grad():
            weight[1, 1, 2] -= 0.5
    model.interact(emb).sum().backward()
    for name in names:
        # (q is unmasked but only multiplies masked scores: its i > j gradient is zero too)
        grad = getattr(model.dag, name).grad
        lower = torch.tensor([[i > j for j in range(4)] for i in range(4)])
        assert grad[:, lower].abs().max() == 0
        assert grad[:, ~lower].abs().max() > 0


def test_mask_is_a_buffer_that_follows_the_module_and_is_not_a_parameter():
    model = build_model("dagfm", _fm(3), embedding_dim=2)
    assert "dag.mask" in dict(model.named_buffers())
    assert all("mask" not in n for n, _ in model.named_parameters())
    assert model.double().dag.mask.dtype == DT


def test_kernel_with_diagonal_matrices_equals_inner():
    inner = _model("dagfm", 4, interaction_type="inner", depth=3)
    kernel = _model("dagfm", 4, interaction_type="kernel", depth=3)
    with torch.no_grad():
        kernel.dag.W.copy_(torch.diag_embed(inner.dag.p))  # W[t, i, j] = diag(p[t, i, j])
        kernel.dag.connect.copy_(inner.dag.connect + 0.1)
        inner.dag.connect.add_(0.1)
        kernel.readout.load_state_dict(inner.readout.state_dict())
    emb = _emb(5, 4, 2)
    torch.testing.assert_close(kernel.interact(emb), inner.interact(emb), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("kind", "edge_params"),
    [("inner", lambda L, F, d: L * F * F * d), ("outer", lambda L, F, d: 2 * L * F * F * d),
     ("kernel", lambda L, F, d: L * F * F * d * d)],
)  # fmt: skip
def test_parameter_counts_match_the_formulas(kind, edge_params):
    for num_fields, d, depth in [(3, 2, 2), (5, 4, 3)]:
        model = build_model(
            "dagfm", _fm(num_fields), embedding_dim=d, interaction_type=kind, depth=depth
        )
        got = sum(p.numel() for p in model.dense_parameters())
        want = edge_params(depth, num_fields, d) + num_fields**2 + num_fields * (depth + 1) + 1
        assert got == want
    if kind == "inner":  # Criteo-sized F = 39, d = 16, L = 3: 73,008 + 1,521 + 156 + 1
        model = build_model("dagfm", FeatureMap.toy([2] * 39), embedding_dim=16, depth=3)
        assert sum(p.numel() for p in model.dense_parameters()) == 74_686


def test_edge_weights_are_xavier_gain_1414_not_standard_normal():
    torch.manual_seed(0)
    model = build_model(
        "dagfm", FeatureMap.toy([2] * 39), embedding_dim=16, depth=1, interaction_type="outer"
    )
    for w in (model.dag.p, model.dag.q):
        assert abs(w.std().item() - 1.414 / math.sqrt(39 * 16)) < 0.002  # ≈ 0.0566
    kern = build_model(
        "dagfm", FeatureMap.toy([2] * 20), embedding_dim=8, depth=1, interaction_type="kernel"
    )
    assert abs(kern.dag.W.std().item() - 1.414 / (math.sqrt(20) * 8)) < 0.002


def test_bad_dagfm_hyperparameters_are_value_errors():
    with pytest.raises(ValueError, match="interaction_type must be one of"):
        build_model("dagfm", _fm(3), interaction_type="hadamard")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        build_model("dagfm", _fm(3), depth=0)
    with pytest.raises(ValueError, match="structure must be one of"):
        build_model("kd_dagfm_plus", _fm(3), structure="serial")


# ---------------------------------------------------------------- KD-DAGFM+
@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_kd_dagfm_plus_equals_its_definition_and_trains_every_parameter(structure):
    model = _model("kd_dagfm_plus", 4, d=3, depth=2, structure=structure, hidden_units=[6])
    emb = _emb(5, 4, 3)
    states = model.dag(emb.vectors)
    assert len(states) == 3
    if structure == "stacked":
        assert model.readout is None
        want = model.mlp((states[0] + states[1] + states[2]).reshape(5, 12)).squeeze(1)
    else:
        s = torch.cat([h.sum(2) for h in states], dim=1)  # [B, F·(L+1)], layer-major
        want = (s @ model.readout.weight[0] + model.readout.bias[0]
                + model.mlp(emb.vectors.reshape(5, 12)).squeeze(1))  # fmt: skip
    got = model.interact(emb)
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    cat = torch.randint(0, 5, (8, 4))
    model.train()(cat).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


# ---------------------------------------------------------------- FSDNet
def test_fsdnet_heads_are_fused_cross_and_mlp_features_one_linear_each():
    fm = FeatureMap.toy([4, 3, 6], dense=1)
    model = build_model("fsdnet", fm, embedding_dim=2, num_layers=3, hidden_dim=5).double().eval()
    cat = torch.tensor([[0, 1, 2], [3, 2, 5], [1, 0, 0], [2, 2, 4]])
    dense = torch.randn(4, 1, dtype=DT)
    logits, fused = model.forward_heads(cat, dense)
    assert logits.shape == (4, 3) and len(fused) == 3
    assert all(f.shape == (4, 4 * 2 + 5) for f in fused)
    x0 = model.embed(cat, dense).vectors.reshape(4, 8)
    c, d = x0, x0
    for l in range(3):  # noqa: E741
        lin = model.cross.layers[l].linear
        c = c + x0 * (c @ lin.weight.T + lin.bias)
        d = model.deep[l](d)
        torch.testing.assert_close(fused[l], torch.cat([c, d], dim=1), rtol=1e-12, atol=1e-12)
        head = model.heads[l]
        torch.testing.assert_close(logits[:, l], fused[l] @ head.weight[0] + head.bias[0])
    # the cross stream never sees the MLP: perturbing MLP weights leaves every c_l unchanged
    with torch.no_grad():
        model.deep[0].net[0].weight.add_(1.0)
    _, fused2 = model.forward_heads(cat, dense)
    for f, g in zip(fused, fused2, strict=True):
        assert torch.equal(f[:, :8], g[:, :8]) and not torch.equal(f[:, 8:], g[:, 8:])


def test_fsdnet_inference_mean_is_logit_of_mean_probability_and_deepest_is_last_head():
    fm = FeatureMap.toy([4, 3])
    hp = {"embedding_dim": 3, "num_layers": 2, "hidden_dim": 4}
    mean = build_model("fsdnet", fm, **hp).double().eval()
    deepest = build_model("fsdnet", fm, **hp, inference="deepest").double().eval()
    with torch.no_grad():
        for p in mean.embedding_parameters():
            p.normal_()
        deepest.load_state_dict(mean.state_dict())
    cat = torch.tensor([[0, 1], [3, 2], [1, 0]])
    z, _ = mean.forward_heads(cat)
    for b in range(3):
        prob = (1 / (1 + math.exp(-z[b, 0].item())) + 1 / (1 + math.exp(-z[b, 1].item()))) / 2
        assert mean(cat)[b].item() == pytest.approx(math.log(prob / (1 - prob)), rel=1e-10)
    torch.testing.assert_close(deepest(cat), z[:, 1])
    assert not torch.allclose(mean(cat), deepest(cat))


def test_mean_probability_logit_is_finite_and_exact_on_known_values():
    z = torch.tensor(
        [[0.0, 0.0], [100.0, 100.0], [-100.0, -100.0], [2.0, -2.0], [50.0, -1000.0]], dtype=DT
    )
    got = mean_probability_logit(z)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(
        got[:4], torch.tensor([0.0, 100.0, -100.0, 0.0], dtype=DT), atol=1e-9, rtol=0
    )
    assert abs(got[4].item()) < 1e-12  # mean of (≈1, ≈0) = 0.5 → logit ≈ 0
    # float32: σ(40) rounds to 1.0, so the naive logit(mean σ) is inf; the log-space form is exact
    z32 = torch.tensor([[40.0, 40.0], [-40.0, -40.0]])
    naive = torch.logit(torch.sigmoid(z32).mean(1))
    assert torch.isinf(naive[0])
    torch.testing.assert_close(mean_probability_logit(z32), torch.tensor([40.0, -40.0]))
    # single head: the identity
    torch.testing.assert_close(mean_probability_logit(z[:, :1]), z[:, 0])


def test_fsdnet_parameter_count_and_gradients():
    f, d, h, L = 3, 2, 5, 3
    model = build_model(
        "fsdnet", FeatureMap.toy([4] * f), embedding_dim=d, num_layers=L, hidden_dim=h
    )
    D = f * d
    cross = L * (D * D + D)
    mlp = (D * h + h) + (L - 1) * (h * h + h) + L * 2 * h  # Linear layers + BN affine
    heads = L * (D + h + 1)
    assert sum(p.numel() for p in model.dense_parameters()) == cross + mlp + heads
    cat = torch.randint(0, 4, (8, f))
    logits, fused = model.train().forward_heads(cat)
    (logits.sum() + sum(x.sum() for x in fused)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="inference must be one of"):
        build_model("fsdnet", FeatureMap.toy([4] * f), inference="median")


def test_distill_names_and_one_entry_checks(tmp_path):
    from components.config import Params
    from components.distill.students import distill_names, distill_one

    params = Params.model_validate({"distill": {"students": ["dagfm", "fsdnet"], "baselines": ["dagfm"],
                                                "out_dir": str(tmp_path / "s")},
                                    "train": {"out_dir": str(tmp_path / "teacher")}})
    assert distill_names(params) == ["dagfm", "fsdnet", "baseline_dagfm"]
    with pytest.raises(ValueError, match="'kd_dagfm' is neither"):
        distill_one(params, "kd_dagfm")
    with pytest.raises(FileNotFoundError, match="no trained teacher"):
        distill_one(params, "baseline_dagfm")
