"""Each layer/model of the zoo equals its paper formula, computed here the slow explicit way.

Random inputs in double precision; explicit sums are written with Python loops over fields/pairs
(tiny sizes), independent of the vectorised code under test. A few cases are hand-computed.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from components.data.feature_map import FeatureMap
from components.models import build_model
from components.models.embedding import Embedded, FeatureEmbedding
from components.models.layers.attention import MultiHeadSelfAttention, PairAttentionPooling
from components.models.layers.cin import CIN
from components.models.layers.cross import (
    CrossLayerV1,
    CrossLayerV2,
    CrossNet,
    LowRankCrossLayer,
    MixtureCrossLayer,
)
from components.models.layers.interaction import FieldAwarePairs, FieldPairs, bi_interaction
from components.models.layers.mlp import MLP

DT = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def _batch(fm: FeatureMap, b: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    cat = torch.stack([torch.randint(0, v, (b,)) for v in fm.vocab_sizes], dim=1)
    dense = torch.randn(b, len(fm.dense_fields), dtype=DT)
    return cat, dense


def _model(name: str, fm: FeatureMap, **hp):
    m = build_model(name, fm, **hp).double()
    with torch.no_grad():  # move embeddings away from N(0, 1e-4) so products are not ~0
        for p in m.embedding_parameters():
            p.normal_()
        if getattr(m, "bias", None) is not None:
            m.bias.fill_(0.37)
    return m.eval()


# ---------------------------------------------------------------- embedding
def test_embedding_offsets_pick_each_fields_own_row_and_dense_is_scaled_weight():
    fm = FeatureMap.toy([3, 5, 2], dense=2)
    emb = FeatureEmbedding(fm, 4, first_order=True).double()
    cat = torch.tensor([[0, 4, 1], [2, 0, 0]])
    dense = torch.tensor([[1.5, -2.0], [0.0, 3.0]], dtype=DT)
    out = emb(cat, dense)
    assert out.vectors.shape == (2, 5, 4) and out.linear.shape == (2, 5)
    w = emb.table.weight
    # field 1 starts at row 3, field 2 at row 3 + 5 = 8
    torch.testing.assert_close(out.vectors[0, 1], w[3 + 4])
    torch.testing.assert_close(out.vectors[0, 2], w[8 + 1])
    torch.testing.assert_close(out.vectors[1, 0], w[2])
    torch.testing.assert_close(out.vectors[0, 3], 1.5 * emb.dense_weight[0])
    torch.testing.assert_close(out.vectors[1, 4], 3.0 * emb.dense_weight[1])
    torch.testing.assert_close(out.linear[0, 1], emb.first_order_table.weight[7, 0])
    torch.testing.assert_close(out.linear[0, 4], -2.0 * emb.first_order_dense[1])


def test_dense_weights_start_at_the_categorical_rows_scale_under_the_normal_init():
    torch.manual_seed(0)
    fm = FeatureMap.toy([50] * 4, dense=200)
    emb = FeatureEmbedding(fm, 16, first_order=True, std=1e-2)
    # N(0, 1e-2²) like the categorical rows (the xavier scale 0.34 / 1 let standardised dense values
    # dominate the FM sum and the logit at the start)
    for w in (emb.table.weight, emb.dense_weight, emb.first_order_dense):
        assert 0.008 < float(w.std()) < 0.012
    xavier = FeatureEmbedding(fm, 16, first_order=True, init="xavier")
    assert 0.3 < float(xavier.dense_weight.std()) < 0.39  # √(2/17) = 0.343
    assert 0.85 < float(xavier.first_order_dense.std()) < 1.15


def _with_copies(fm: FeatureMap, sources: dict[str, str]) -> FeatureMap:
    """``fm`` with dense fields turned into dense copies of the named categorical fields."""
    from dataclasses import replace

    fields = tuple(replace(f, stats={"source": sources[f.name]}) if f.name in sources else f for f in fm.fields)
    return replace(fm, fields=fields)


def test_dense_copies_fold_into_their_bucket_fields_vector_and_first_order_term():
    # d0 is the dense copy of c2, d1 a dense field of its own
    fm = _with_copies(FeatureMap.toy([3, 5, 4], dense=2), {"d0": "c2"})
    emb = FeatureEmbedding(fm, 4, first_order=True).double()
    with torch.no_grad():
        for p in (emb.table.weight, emb.dense_weight, emb.first_order_table.weight, emb.first_order_dense):
            p.normal_()
    assert emb.num_fields == 4 and emb.field_names == ["c0", "c1", "c2", "d1"]
    cat = torch.tensor([[0, 4, 1], [2, 0, 3]])
    dense = torch.tensor([[1.5, -2.0], [0.5, 3.0]], dtype=DT)
    out = emb(cat, dense)
    assert out.vectors.shape == (2, 4, 4) and out.linear.shape == (2, 4)
    w, w1 = emb.table.weight, emb.first_order_table.weight[:, 0]
    for b in range(2):
        torch.testing.assert_close(out.vectors[b, 0], w[cat[b, 0]])  # untouched fields
        torch.testing.assert_close(out.vectors[b, 2], w[8 + cat[b, 2]] + dense[b, 0] * emb.dense_weight[0])
        torch.testing.assert_close(out.vectors[b, 3], dense[b, 1] * emb.dense_weight[1])
        torch.testing.assert_close(out.linear[b, 2], w1[8 + cat[b, 2]] + dense[b, 0] * emb.first_order_dense[0])
        torch.testing.assert_close(out.linear[b, 3], dense[b, 1] * emb.first_order_dense[1])
    # a model sees the folded fields: DCNv2's input is 4 fields × d, not 5
    model = build_model("dcnv2", fm, embedding_dim=4, hidden_units=[8], num_cross_layers=1)
    assert model.num_fields == 4 and model(cat, dense.float()).shape == (2,)


@pytest.mark.parametrize(
    "sources, run",
    [
        ({"d0": "c1", "d1": "c2"}, (0, 1, 2)),  # copies d0, d1 → c1, c2: the in-place slice form
        ({"d0": "c2", "d1": "c0"}, None),  # any other layout: the scatter-matmul form
    ],
)
def test_folded_copies_in_place_form_equals_the_traced_form_values_and_gradients(sources, run):
    fm = _with_copies(FeatureMap.toy([3, 5, 4], dense=3), sources)
    emb = FeatureEmbedding(fm, 4, first_order=True).double()
    assert emb.fold_run == run and emb.field_names == ["c0", "c1", "c2", "d2"]
    with torch.no_grad():
        for p in (emb.table.weight, emb.dense_weight, emb.first_order_table.weight, emb.first_order_dense):
            p.normal_()
    cat = torch.tensor([[0, 4, 1], [2, 0, 3], [1, 1, 0]])
    dense = torch.randn(3, 3, dtype=DT)
    w, w1 = emb.table.weight, emb.first_order_table.weight[:, 0]
    offsets = torch.tensor([0, 3, 8])
    expected = w[cat + offsets].clone()
    linear = w1[cat + offsets].clone()
    pos = {"c0": 0, "c1": 1, "c2": 2}
    for j, name in enumerate(["d0", "d1"]):
        expected[:, pos[sources[name]]] += dense[:, j, None] * emb.dense_weight[j]
        linear[:, pos[sources[name]]] += dense[:, j] * emb.first_order_dense[j]
    expected = torch.cat([expected, (dense[:, 2, None] * emb.dense_weight[2])[:, None]], 1)
    linear = torch.cat([linear, (dense[:, 2] * emb.first_order_dense[2])[:, None]], 1)
    out = emb(cat, dense)
    torch.testing.assert_close(out.vectors, expected)
    torch.testing.assert_close(out.linear, linear)

    def grads(forward):
        emb.zero_grad()
        o = forward()
        ((o.vectors**3).sum() + (o.linear**3).sum()).backward()
        return [p.grad.clone() for p in emb.parameters()]

    eager = grads(lambda: emb(cat, dense))
    class Outputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = emb

        def forward(self, c, x):
            return tuple(self.emb(c, x)[:2])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the id check, run once on valid ids
        traced = torch.jit.trace(Outputs(), (cat, dense), check_trace=False)
    along_trace = grads(lambda: Embedded(*traced(cat, dense), dense))  # the export's (scatter-matmul) form
    graph = str(traced.inlined_graph)
    assert "aten::matmul" in graph and "aten::addcmul_" not in graph
    for a, b in zip(eager, along_trace, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(traced(cat, dense)[0], expected)


def test_embedding_rejects_out_of_range_id_naming_the_field():
    emb = FeatureEmbedding(FeatureMap.toy([3, 5]), 4)
    with pytest.raises(ValueError, match=r"field 'c0' \(column 0\): id 3 at batch row 1"):
        emb(torch.tensor([[0, 1], [3, 1]]))
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        emb(torch.tensor([[0, 1, 2]]))


def test_embedding_init_scales():
    fm = FeatureMap.toy([20000, 10000])
    normal = FeatureEmbedding(fm, 16).table.weight
    assert abs(normal.std().item() - 1e-4) < 5e-6
    xavier = FeatureEmbedding(fm, 16, init="xavier").table.weight
    assert abs(xavier[:20000].std().item() - (2 / 20016) ** 0.5) < 3e-4
    assert abs(xavier[20000:].std().item() - (2 / 10016) ** 0.5) < 3e-4


def test_l2_penalty_is_half_lambda_sum_of_squares_per_group():
    """emb_l2 covers the embedding vectors (table + dense fields' weights), not first-order weights."""
    m = _model("fm", FeatureMap.toy([2, 3], dense=1), embedding_dim=2)
    with torch.no_grad():
        m.embedding.table.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [3.0, 0.0]]))
        m.embedding.dense_weight.fill_(1.0)
        m.embedding.first_order_table.weight.fill_(5.0)  # unpenalised: LR's weights
        m.embedding.first_order_dense.fill_(5.0)
        m.bias.fill_(4.0)
    assert {id(p) for p in m.embedding_parameters()}.isdisjoint(id(p) for p in m.dense_parameters())
    # emb vectors: 1 + 4 + 1 + 9 + (1 + 1) = 17; net: 16
    assert m.l2_penalty(0.1, 0.0).item() == pytest.approx(0.05 * 17)
    assert m.l2_penalty(0.0, 0.5).item() == pytest.approx(0.25 * 16)
    assert m.l2_penalty(0.1, 0.5).item() == pytest.approx(0.85 + 4.0)
    assert _model("lr", FeatureMap.toy([2, 3], dense=1)).l2_penalty(0.1, 0.0).item() == 0.0


# ---------------------------------------------------------------- LR / FM / FFM
def test_lr_is_bias_plus_sum_of_weights():
    fm = FeatureMap.toy([4, 3], dense=1)
    m = _model("lr", fm)
    cat, dense = _batch(fm)
    w = m.embedding.first_order_table.weight[:, 0]
    expected = (
        0.37 + w[cat[:, 0]] + w[4 + cat[:, 1]] + dense[:, 0] * m.embedding.first_order_dense[0]
    )
    torch.testing.assert_close(m(cat, dense), expected)


def test_fm_fast_form_equals_explicit_pairwise_sum():
    e = torch.randn(5, 7, 3, dtype=DT)
    explicit = torch.zeros(5, 3, dtype=DT)
    for i, j in itertools.combinations(range(7), 2):
        explicit += e[:, i] * e[:, j]
    torch.testing.assert_close(bi_interaction(e), explicit)
    # hand case: vectors 1, 2, 3 (d=1): 1·2 + 1·3 + 2·3 = 11
    torch.testing.assert_close(
        bi_interaction(torch.tensor([[[1.0], [2.0], [3.0]]])), torch.tensor([[11.0]])
    )


def test_fm_model_equals_rendle_equation():
    fm = FeatureMap.toy([4, 5, 3], dense=1)
    m = _model("fm", fm, embedding_dim=3)
    cat, dense = _batch(fm)
    emb = m.embed(cat, dense)
    v, lin = emb.vectors, emb.linear
    expected = 0.37 + lin.sum(1)
    for i, j in itertools.combinations(range(4), 2):
        expected = expected + (v[:, i] * v[:, j]).sum(1)
    torch.testing.assert_close(m(cat, dense), expected)


def test_ffm_equals_explicit_field_aware_sum():
    fm = FeatureMap.toy([4, 5, 3, 6])
    m = _model("ffm", fm, embedding_dim=2)
    cat, dense = _batch(fm)
    f, d = 4, 2
    table = m.embedding.table.weight
    offsets = [0, 4, 9, 12]
    expected = 0.37 + m.embedding(cat, dense).linear.sum(1)
    for b in range(cat.shape[0]):
        rows = [table[offsets[i] + cat[b, i]].view(f - 1, d) for i in range(f)]

        def vec(i, target_field, rows=rows):
            others = [g for g in range(f) if g != i]
            return rows[i][others.index(target_field)]

        expected[b] += sum(
            (vec(i, j) * vec(j, i)).sum() for i, j in itertools.combinations(range(f), 2)
        )
    torch.testing.assert_close(m(cat, dense), expected)


def test_field_aware_pairs_hand_case():
    # 3 fields, d = 1; field i's list holds its vectors for the other fields in order.
    v = torch.tensor([[[[2.0], [3.0]], [[5.0], [7.0]], [[11.0], [13.0]]]])
    # (0,1): v_{0,f1}=2 · v_{1,f0}=5 = 10; (0,2): 3 · 11 = 33; (1,2): 7 · 13 = 91
    torch.testing.assert_close(FieldAwarePairs(3)(v), torch.tensor([[10.0, 33.0, 91.0]]))


# ---------------------------------------------------------------- NFM / AFM / IPNN
def test_nfm_bi_interaction_equals_sum_of_hadamard_products_and_feeds_mlp():
    fm = FeatureMap.toy([3, 4, 5])
    m = _model("nfm", fm, embedding_dim=3, hidden_units=[4], batch_norm=False)
    cat, dense = _batch(fm)
    emb = m.embed(cat, dense)
    v = emb.vectors
    f_bi = v[:, 0] * v[:, 1] + v[:, 0] * v[:, 2] + v[:, 1] * v[:, 2]
    torch.testing.assert_close(bi_interaction(v), f_bi)
    torch.testing.assert_close(m(cat, dense), 0.37 + emb.linear.sum(1) + m.mlp(f_bi).squeeze(1))


def test_afm_attention_sums_to_one_and_logit_matches_equation():
    fm = FeatureMap.toy([3, 4, 5, 2])
    m = _model("afm", fm, embedding_dim=3, attention_dim=4)
    cat, dense = _batch(fm)
    emb = m.embed(cat, dense)
    a = m.attention_weights(emb)
    assert a.shape == (6, 6)
    torch.testing.assert_close(a.sum(1), torch.ones(6, dtype=DT))
    assert (a > 0).all()
    v = emb.vectors
    pairs = list(itertools.combinations(range(4), 2))
    att = m.attention
    scores = torch.stack(
        [att.h(torch.relu(att.W(v[:, i] * v[:, j]))).squeeze(1) for i, j in pairs], dim=1
    )
    weights = torch.softmax(scores, dim=1)
    torch.testing.assert_close(a, weights)
    pooled = sum(weights[:, k : k + 1] * v[:, i] * v[:, j] for k, (i, j) in enumerate(pairs))
    expected = 0.37 + emb.linear.sum(1) + (pooled @ m.projection.weight[0])
    torch.testing.assert_close(m(cat, dense), expected)


def test_pair_attention_pooling_rows_sum_to_one():
    pool = PairAttentionPooling(5, 3).double()
    pooled, w = pool(torch.randn(4, 10, 5, dtype=DT))
    assert pooled.shape == (4, 5)
    torch.testing.assert_close(w.sum(1), torch.ones(4, dtype=DT))


def test_ipnn_inner_products_equal_explicit_ones():
    e = torch.randn(3, 5, 4, dtype=DT)
    pairs = FieldPairs(5)
    explicit = torch.stack(
        [(e[:, i] * e[:, j]).sum(1) for i, j in itertools.combinations(range(5), 2)], 1
    )
    torch.testing.assert_close(pairs.inner_products(e), explicit)
    had = torch.stack([e[:, i] * e[:, j] for i, j in itertools.combinations(range(5), 2)], 1)
    torch.testing.assert_close(pairs.hadamard_products(e), had)
    fm = FeatureMap.toy([3, 4, 5], dense=1)
    m = _model("ipnn", fm, embedding_dim=2, hidden_units=[3])
    cat, dense = _batch(fm)
    v = m.embed(cat, dense).vectors
    prod = m.product_layer(m.embed(cat, dense))
    assert prod.shape == (6, 4 * 2 + 6)
    torch.testing.assert_close(prod[:, :8], v.flatten(1))
    torch.testing.assert_close(prod[:, 8 + 5], (v[:, 2] * v[:, 3]).sum(1))  # pair index 5 = (2, 3)


# ---------------------------------------------------------------- cross layers
def test_dcn_v1_cross_layer_hand_case_and_formula():
    layer = CrossLayerV1(2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, -1.0]))
        layer.bias.copy_(torch.tensor([0.1, 0.2]))
    x0 = torch.tensor([[1.0, 2.0]], dtype=DT)
    x = torch.tensor([[3.0, 4.0]], dtype=DT)
    # x·w = 1.5 − 4 = −2.5 → x0·(−2.5) + b + x = [−2.5 + 0.1 + 3, −5 + 0.2 + 4]
    torch.testing.assert_close(layer(x0, x), torch.tensor([[0.6, -0.8]], dtype=DT))
    layer = CrossLayerV1(6).double()
    x0, x = torch.randn(4, 6, dtype=DT), torch.randn(4, 6, dtype=DT)
    expected = torch.stack(
        [x0[b] * torch.dot(x[b], layer.weight) + layer.bias + x[b] for b in range(4)]
    )
    torch.testing.assert_close(layer(x0, x), expected)


def test_dcnv2_cross_layer_formula_and_low_rank_equals_full_rank_with_uv():
    d = 6
    full = CrossLayerV2(d).double()
    with torch.no_grad():
        full.linear.bias.normal_()
    x0, x = torch.randn(4, d, dtype=DT), torch.randn(4, d, dtype=DT)
    W, b = full.linear.weight, full.linear.bias
    expected = torch.stack([x0[i] * (W @ x[i] + b) + x[i] for i in range(4)])
    torch.testing.assert_close(full(x0, x), expected)

    low = LowRankCrossLayer(d, rank=2).double()
    with torch.no_grad():
        low.bias.normal_()
        full.linear.weight.copy_(low.U @ low.V.T)
        full.linear.bias.copy_(low.bias)
    torch.testing.assert_close(low(x0, x), full(x0, x))


def test_dcnv2_mixture_layer_equals_gated_sum_of_experts():
    d, r, k = 5, 2, 3
    mix = MixtureCrossLayer(d, r, k).double()
    with torch.no_grad():
        mix.bias.normal_()
    x0, x = torch.randn(4, d, dtype=DT), torch.randn(4, d, dtype=DT)
    g = mix.gates(x)
    torch.testing.assert_close(g.sum(1), torch.ones(4, dtype=DT))
    torch.testing.assert_close(g, torch.softmax(x @ mix.gate.T, dim=1))
    expected = x.clone()
    for e in range(k):
        inner = torch.tanh(mix.C[e] @ torch.tanh(mix.V[e].T @ x.T))  # [r, B]
        expert = x0 * ((mix.U[e] @ inner).T + mix.bias)
        expected = expected + g[:, e : e + 1] * expert
    torch.testing.assert_close(mix(x0, x), expected)


def test_cross_net_stacks_layers_on_the_same_x0():
    net = CrossNet(4, num_layers=2, kind="full").double()
    x0 = torch.randn(3, 4, dtype=DT)
    l1, l2 = net.layers
    torch.testing.assert_close(net(x0), l2(x0, l1(x0, x0)))
    with pytest.raises(ValueError, match="cross kind"):
        CrossNet(4, kind="diagonal")


def test_dcnv2_structures_wire_cross_and_mlp():
    fm = FeatureMap.toy([3, 4])
    cat, dense = _batch(fm)
    par = _model("dcnv2", fm, embedding_dim=2, hidden_units=[3], structure="parallel")
    x0 = par.flat_vectors(par.embed(cat, dense))
    torch.testing.assert_close(
        par(cat, dense), par.head(torch.cat([par.cross(x0), par.mlp(x0)], 1)).squeeze(1)
    )
    st = _model(
        "dcnv2",
        fm,
        embedding_dim=2,
        hidden_units=[3],
        structure="stacked",
        cross_type="low_rank",
        low_rank=2,
    )
    x0 = st.flat_vectors(st.embed(cat, dense))
    assert st.head.in_features == 3
    torch.testing.assert_close(st(cat, dense), st.head(st.mlp(st.cross(x0))).squeeze(1))


# ---------------------------------------------------------------- CIN
def test_cin_layer_equals_explicit_double_sum():
    f, d, h_prev, h = 4, 3, 5, 2
    cin = CIN(f, [h_prev, h]).double()
    with torch.no_grad():
        cin.biases[1].normal_()
    x0 = torch.randn(2, f, d, dtype=DT)
    x_prev = torch.randn(2, h_prev, d, dtype=DT)
    w, bias = cin.weights[1], cin.biases[1]
    expected = torch.zeros(2, h, d, dtype=DT)
    for hh in range(h):
        expected[:, hh] = bias[hh]
        for i in range(h_prev):
            for j in range(f):
                expected[:, hh] += w[hh, i, j] * x_prev[:, i] * x0[:, j]
    torch.testing.assert_close(cin.layer(1, x_prev, x0), expected)


def test_cin_pools_every_layer_and_split_half_halves_the_output():
    f, d = 3, 2
    cin = CIN(f, [4, 2]).double()
    x0 = torch.randn(2, f, d, dtype=DT)
    x1 = cin.layer(0, x0, x0)
    x2 = cin.layer(1, x1, x0)
    torch.testing.assert_close(cin(x0), torch.cat([x1.sum(2), x2.sum(2)], 1))
    half = CIN(f, [4, 2], split_half=True).double()
    assert half.output_dim == 2 + 2 and half.weights[1].shape == (2, 2, f)
    y1 = half.layer(0, x0, x0)
    y2 = half.layer(1, y1[:, :2], x0)  # first half fed forward
    torch.testing.assert_close(half(x0), torch.cat([y1[:, 2:].sum(2), y2.sum(2)], 1))
    with pytest.raises(ValueError, match="even"):
        CIN(f, [3, 2], split_half=True)


# ---------------------------------------------------------------- DLRM
def test_dlrm_interaction_is_dense_vector_plus_all_pair_dots():
    fm = FeatureMap.toy([3, 4, 5], dense=2)
    m = _model("dlrm", fm, embedding_dim=4, bottom_units=[6], top_units=[5])
    cat, dense = _batch(fm)
    emb = m.embed(cat, dense)
    assert emb.vectors.shape == (6, 3, 4)  # dense fields are not embedded
    n = 3 + 1  # 3 categorical vectors + the bottom-MLP output
    z = m.interaction(emb)
    assert z.shape == (6, 4 + n * (n - 1) // 2)
    x = m.bottom(dense)
    torch.testing.assert_close(z[:, :4], x)
    t = [x] + [emb.vectors[:, i] for i in range(3)]
    dots = torch.stack([(t[i] * t[j]).sum(1) for i, j in itertools.combinations(range(n), 2)], 1)
    torch.testing.assert_close(z[:, 4:], dots)
    assert m.top.net[0].in_features == 4 + 6
    # without dense fields: only the F(F-1)/2 dots of the categorical vectors
    m2 = _model("dlrm", FeatureMap.toy([3, 4, 5, 2]), embedding_dim=4, top_units=[5])
    assert m2.bottom is None and m2.interaction_dim == 6


# ---------------------------------------------------------------- AutoInt
def test_autoint_attention_rows_sum_to_one_and_layer_matches_formula():
    att = MultiHeadSelfAttention(4, attention_dim=6, num_heads=2).double()
    x = torch.randn(3, 5, 4, dtype=DT)
    a = att.attention_weights(x)
    assert a.shape == (3, 2, 5, 5)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 2, 5, dtype=DT))
    q, k, v = att.W_q(x), att.W_k(x), att.W_v(x)
    heads = []
    for h in range(2):
        sl = slice(3 * h, 3 * h + 3)
        scores = torch.einsum("bmd,bkd->bmk", q[..., sl], k[..., sl])  # no 1/sqrt scaling
        heads.append(torch.softmax(scores, -1) @ v[..., sl])
    expected = torch.relu(torch.cat(heads, -1) + att.W_res(x))
    torch.testing.assert_close(att(x), expected)


# ---------------------------------------------------------------- composites and MLP
def test_deepfm_and_xdeepfm_sum_their_parts():
    fm = FeatureMap.toy([3, 4], dense=1)
    cat, dense = _batch(fm)
    m = _model("deepfm", fm, embedding_dim=2, hidden_units=[3])
    emb = m.embed(cat, dense)
    fm_part = 0.37 + emb.linear.sum(1) + bi_interaction(emb.vectors).sum(1)
    torch.testing.assert_close(m(cat, dense), fm_part + m.mlp(emb.vectors.flatten(1)).squeeze(1))
    x = _model("xdeepfm", fm, embedding_dim=2, hidden_units=[3], cin_units=[2, 2])
    emb = x.embed(cat, dense)
    parts = (
        0.37
        + emb.linear.sum(1)
        + x.cin_head(x.cin(emb.vectors)).squeeze(1)
        + x.mlp(emb.vectors.flatten(1)).squeeze(1)
    )
    torch.testing.assert_close(x(cat, dense), parts)


def test_mlp_is_linear_bn_relu_stack_with_xavier_init():
    mlp = MLP(300, [200], output_dim=1, batch_norm=True)
    kinds = [type(layer).__name__ for layer in mlp.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    w = mlp.net[0].weight
    assert abs(w.std().item() - (2 / 500) ** 0.5) < 0.003
    assert torch.all(mlp.net[0].bias == 0)
