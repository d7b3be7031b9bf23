"""The fast DAG propagation equals the einsum formulas it replaces (issue: students as fast as their FLOPs).

``DAGPropagation.propagate`` (batch-last batched matmuls, cached inference weights) against ``reference_forward`` / ``reference_interact`` (the einsum specification, itself
checked against a path enumeration in test_students.py): every interaction type, DAGFM and both
KD-DAGFM+ structures, values and gradients, random inputs and a trained checkpoint, PyTorch and
ONNX Runtime. Float64 comparisons are tight (1e-12); float32 ones use 1e-5, the bound the issue
sets, far above the ~1e-7 rounding of a different summation order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.feature_map import FeatureMap
from components.models import build_model
from components.models.dagfm import DAGPropagation

TYPES = ("inner", "outer", "kernel")
F32 = {"rtol": 1e-5, "atol": 1e-5}
F64 = {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(7)


def _perturbed(dag: DAGPropagation) -> DAGPropagation:
    """A DAG whose connect layer is not the identity (its init), so C is really exercised."""
    with torch.no_grad():
        dag.connect.add_(0.2 * torch.randn_like(dag.connect))
    return dag


def _model(name: str, fields: int = 6, d: int = 4, dtype=torch.float32, **hp):
    model = build_model(name, FeatureMap.toy([9] * fields), embedding_dim=d, **hp).to(dtype)
    _perturbed(model.dag)
    return model.eval()


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, F64), (torch.float32, F32)])
def test_propagation_states_equal_the_einsum_formulas(kind, dtype, tol):
    dag = _perturbed(DAGPropagation(7, 5, 3, kind)).to(dtype)
    e = torch.randn(33, 7, 5, dtype=dtype)
    fast, ref = dag(e), dag.reference_forward(e)
    assert len(fast) == len(ref) == 4
    for h_fast, h_ref in zip(fast, ref, strict=True):
        assert h_fast.shape == h_ref.shape == (33, 7, 5)
        torch.testing.assert_close(h_fast, h_ref, **tol)
    # the readout inputs taken straight from the batch-last states
    states = dag.propagate(e)
    want_sums = torch.cat([h.sum(dim=2) for h in ref], dim=1)
    torch.testing.assert_close(dag.node_sums(states), want_sums, **tol)
    torch.testing.assert_close(dag.summed_flat(states), sum(ref).flatten(1), **tol)


@pytest.mark.parametrize("per_group", [1, 2, 3, 10])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, F64), (torch.float32, F32)])
def test_grouped_outer_layers_equal_the_einsum_formulas(per_group, dtype, tol):
    """Serving runs outer layers per target-field group (propagate_stacked): same states."""
    dag = _perturbed(DAGPropagation(7, 5, 3, "outer")).to(dtype)
    dag.fields_per_group, dag.group_min_rows = per_group, 1
    groups = dag.field_groups()
    assert groups[0][0] == 0 and groups[-1][1] == 7
    assert all(hi - lo <= max(per_group, 1) + 1 for lo, hi in groups)
    e = torch.randn(33, 7, 5, dtype=dtype)
    with torch.inference_mode():
        buf = dag.propagate_stacked(e)
    for t, h_ref in enumerate(dag.reference_forward(e)):
        torch.testing.assert_close(dag.as_bfd(buf[t]), h_ref.detach(), **tol)


def test_serving_groups_outer_layers_from_group_min_rows_and_the_flop_path_never():
    dag = DAGPropagation(7, 5, 2, "outer")
    dag.fields_per_group, dag.group_min_rows = 2, 8
    calls = []
    original = torch.bmm
    try:
        torch.bmm = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
        counts = []
        for rows, mode in ((8, torch.inference_mode), (7, torch.inference_mode), (8, torch.no_grad)):
            calls.clear()
            with mode():
                (dag.propagate_stacked if mode is torch.inference_mode else dag.propagate)(
                    torch.randn(rows, 7, 5))
            counts.append(len(calls))
    finally:
        torch.bmm = original
    grouped, small, counted = counts
    assert small == counted == 2 * 2  # two bmm per layer
    assert grouped == 2 * 2 * len(dag.field_groups()) == 2 * 2 * 4


@pytest.mark.parametrize("kind", TYPES)
def test_chained_readout_of_the_export_equals_the_linear_over_node_sums(kind):
    dag = _perturbed(DAGPropagation(7, 5, 3, kind)).double()
    states = dag.propagate(torch.randn(9, 7, 5, dtype=torch.float64))
    readout = torch.nn.Linear(4 * 7, 1).double()
    want = readout(dag.node_sums(states)).squeeze(1)
    torch.testing.assert_close(dag.chained_readout(states, readout.weight, readout.bias), want, **F64)


@pytest.mark.parametrize("fields", [1, 2, 7, 39])
def test_split_readout_of_the_export_equals_the_reference_readout(fields, monkeypatch):
    """The exported batch graph's outer layers (field groups as separate tensors) = the formulas,
    for 2 and 3 groups, odd field counts and a single field (an empty group is skipped)."""
    import components.models.dagfm as dagfm

    dag = _perturbed(DAGPropagation(fields, 5, 3, "outer")).double()
    vectors = torch.randn(9, fields, 5, dtype=torch.float64)
    readout = torch.nn.Linear(4 * fields, 1).double()
    want = readout(torch.cat([h.sum(dim=2) for h in dag.reference_forward(vectors)], dim=1)).squeeze(1)
    for groups in (2, 3):
        monkeypatch.setattr(dagfm, "EXPORT_FIELD_GROUPS", groups)
        torch.testing.assert_close(dag.split_readout(vectors, readout.weight, readout.bias), want, **F64)


@pytest.mark.parametrize("kind", TYPES)
def test_gradients_equal_the_einsum_formulas(kind):
    dag = _perturbed(DAGPropagation(5, 3, 2, kind)).double()
    e = torch.randn(6, 5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 5, 3, dtype=torch.float64)

    def grads(states):
        loss = sum((h * w * (t + 1)).sum() for t, h in enumerate(states))
        return torch.autograd.grad(loss, [e, *(p for p in dag.parameters())])

    for g_fast, g_ref in zip(grads(dag(e)), grads(dag.reference_forward(e)), strict=True):
        torch.testing.assert_close(g_fast, g_ref, **F64)


CASES = [("dagfm", {"interaction_type": k}) for k in TYPES] + [
    ("kd_dagfm_plus", {"interaction_type": k, "structure": s, "hidden_units": [8, 8]})
    for k in ("inner", "outer") for s in ("stacked", "parallel")
]


@pytest.mark.parametrize(("rows", "group_min_rows"), [(50, 1), (50, 10**6), (1, 1)])
@pytest.mark.parametrize(("name", "hp"), CASES)
def test_served_logits_equal_the_reference_interaction(name, hp, rows, group_min_rows):
    """Under inference_mode the models take the stacked-buffer path (grouped outer layers or not;
    one row: the online path of the inner and outer layers)."""
    for dtype, tol in ((torch.float64, F64), (torch.float32, F32)):
        model = _model(name, dtype=dtype, depth=3, **hp)
        model.dag.fields_per_group, model.dag.group_min_rows = 2, group_min_rows
        cat = torch.randint(0, 9, (rows, 6))
        with torch.no_grad():
            want = model.reference_interact(model.embed(cat))
        with torch.inference_mode():
            got = model.interact(model.embed(cat))
            buf = model.dag.propagate_stacked(model.embed(cat).vectors)
        torch.testing.assert_close(got, want, **tol)
        for t, h_ref in enumerate(model.dag.reference_forward(model.embed(cat).vectors)):
            torch.testing.assert_close(model.dag.as_bfd(buf[t]), h_ref.detach(), **tol)
    with pytest.raises(RuntimeError, match="inference_mode"):
        model.dag.propagate_stacked(model.embed(cat).vectors)


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_int8_served_students_score_close_to_fp32(name, hp):
    """inference.quantize: dynamic_int8 swaps the readout Linear for a quantised one."""
    from components.config import InferenceParams
    from components.serve.optimize import prepare_for_inference

    model = _model(name, **hp)
    model.dag.fields_per_group, model.dag.group_min_rows = 2, 1
    served = prepare_for_inference(model, InferenceParams(quantize="dynamic_int8"))
    cat = torch.randint(0, 9, (64, 6))
    with torch.inference_mode():
        got, want = served(cat), model(cat)
    assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.99


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_autocast_scoring_takes_the_unstacked_path(name, hp):
    """bf16 autocast under inference_mode (the training loop's scoring on CUDA): no dtype clash."""
    model = _model(name, **hp)
    model.dag.fields_per_group, model.dag.group_min_rows = 2, 1
    cat = torch.randint(0, 9, (40, 6))
    with torch.no_grad():
        want = model(cat)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(cat)
    assert got.shape == want.shape
    corr = float(torch.corrcoef(torch.stack([got.float(), want]))[0, 1])
    assert corr > 0.99  # bf16 rounding only


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_model_logits_equal_the_reference_interaction(name, hp):
    for dtype, tol in ((torch.float64, F64), (torch.float32, F32)):
        model = _model(name, dtype=dtype, depth=3, **hp)
        cat = torch.randint(0, 9, (50, 6))
        with torch.no_grad():
            emb = model.embed(cat)
            torch.testing.assert_close(model.interact(emb), model.reference_interact(emb), **tol)


@pytest.mark.parametrize("kind", TYPES)
def test_inference_weight_cache_follows_every_parameter_change(kind):
    model = _model("dagfm", interaction_type=kind)
    cat = torch.randint(0, 9, (12, 6))

    def check():
        with torch.inference_mode():
            for rows in (cat, cat[:1]):  # a batch and the one-row path (their own cached layouts)
                emb = model.embed(rows)
                torch.testing.assert_close(model.interact(emb), model.reference_interact(emb), **F32)

    check()
    weight = model.dag.W if kind == "kernel" else model.dag.p
    with torch.no_grad():  # an in-place edit (bumps the version counter)
        weight.mul_(-1.5)
    check()
    with torch.no_grad():  # the readout's weight, spread over the d coordinates once (stacked_readout)
        model.readout.weight.mul_(-2.0)
    check()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # an optimiser step
    model.train()
    torch.nn.functional.binary_cross_entropy_with_logits(
        model(cat), torch.randint(0, 2, (12,)).float()
    ).backward()
    opt.step()
    model.eval()
    check()
    other = _model("dagfm", interaction_type=kind)  # load_state_dict copies in place
    model.load_state_dict(other.state_dict())
    check()
    model.double()  # new storage and dtype
    with torch.no_grad():
        emb = model.embed(cat)
        torch.testing.assert_close(model.interact(emb), model.reference_interact(emb), **F64)


def test_fast_path_matches_on_a_trained_checkpoint_in_pytorch_and_onnx(tmp_path):
    """Train a KD-DAGFM student briefly, save and reload it: fast == reference, and ONNX == both."""
    import onnx
    import onnxruntime as ort

    from components.serve.export import export_onnx
    from components.train.checkpoint import feature_map_hash, load_model, save_model

    fmap = FeatureMap.toy([9] * 6)
    for name, hp in (("dagfm", {"interaction_type": "outer"}), ("dagfm", {"interaction_type": "inner"}),
                     ("kd_dagfm_plus", {"interaction_type": "outer", "hidden_units": [16, 16]}),
                     ("kd_dagfm_plus", {"interaction_type": "inner", "structure": "parallel", "hidden_units": [16]}),
                     ("kd_dagfm_plus", {"interaction_type": "outer", "structure": "parallel", "hidden_units": [16]})):
        torch.manual_seed(3)
        model = build_model(name, fmap, embedding_dim=4, **hp)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        cat = torch.randint(0, 9, (256, 6))
        y = (cat[:, 0] > 4).float()
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(cat), y).backward()
            opt.step()
        directory = tmp_path / name / hp["interaction_type"] / hp.get("structure", "default")
        save_model(model, directory, model_name=name, hparams={"embedding_dim": 4, **hp},
                   feature_map_hash=feature_map_hash(fmap), epoch=20, metrics={})
        loaded, _ = load_model(directory, fmap)
        loaded.block_rows = 100  # exercise the eval-mode row blocks too
        loaded.dag.fields_per_group = 2  # grouped outer layers under inference_mode below
        test = torch.randint(0, 9, (300, 6))
        with torch.no_grad():
            fast, ref = loaded(test), loaded.reference_interact(loaded.embed(test))
        torch.testing.assert_close(fast, ref, **F32)
        loaded.dag.group_min_rows = 1
        with torch.inference_mode():
            served = loaded(test)
        torch.testing.assert_close(served, ref, **F32)
        path = export_onnx(loaded, fmap, directory / "model.onnx")
        # outer layers: two traces joined under an If on the row count (one row: grouped convolutions)
        top = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert (top == ["Shape", "Gather", "Equal", "If"]) == (hp["interaction_type"] == "outer")
        assert not any(m.trace_one_row for m in loaded.modules() if isinstance(m, DAGPropagation))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        feeds = {"categorical": test.numpy(), "dense": np.zeros((300, 0), np.float32)}
        (logit, _) = session.run(None, {k: v for k, v in feeds.items() if k in names})
        np.testing.assert_allclose(logit, ref.numpy(), rtol=1e-5, atol=1e-5)
        for row in (0, 7, 299):  # one row at a time: the If's one-row branch
            one = {k: v[row:row + 1] for k, v in feeds.items() if k in names}
            np.testing.assert_allclose(session.run(["logit"], one)[0], ref.numpy()[row:row + 1], rtol=1e-5, atol=1e-5)
