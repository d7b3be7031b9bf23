"""Serving optimisations (components/serve/optimize.py) and the ``inference:`` settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from components.config import ConfigError, InferenceParams, Params, load_params
from components.data.feature_map import FeatureMap, FieldInfo
from components.data.loader import Batch
from components.models import build_model
from components.serve.optimize import (
    count_batch_norms,
    fold_batch_norm,
    is_quantized_linear,
    prepare_for_inference,
    quantization_auc_cost,
    quantize_dynamic_int8,
)

VOCAB = {"u": 11, "c1": 7, "c2": 5, "c3": 9}


def feature_map() -> FeatureMap:
    fields = tuple(FieldInfo(name=f, type="categorical", source_kind="categorical", vocab_size=v)
                   for f, v in VOCAB.items())
    fields += (FieldInfo(name="d0", type="dense", source_kind="numeric", oov_id=None, missing_id=None),)
    return FeatureMap(format="criteo", label="label", fields=fields, splits={}, source_hash="0" * 64,
                      params={"numeric": "dense"})


def batches(n_batches: int, size: int, seed: int) -> list[Batch]:
    """Random rows whose label depends on the ids (so a trained model has an AUC above 0.5)."""
    w_rng, rng = np.random.default_rng(0), np.random.default_rng(seed)
    weights = {f: w_rng.normal(0, 1.5, v) for f, v in VOCAB.items()}  # one labelling rule for all seeds
    out = []
    for _ in range(n_batches):
        ids = {f: rng.integers(0, v, size) for f, v in VOCAB.items()}
        dense = rng.normal(0, 1, size)
        z = sum(weights[f][ids[f]] for f in VOCAB) + dense
        label = (rng.random(size) < 1 / (1 + np.exp(-z))).astype(np.float32)
        cat = np.stack([ids[f] for f in VOCAB], axis=1).astype(np.int32)
        out.append(Batch(torch.from_numpy(cat), torch.from_numpy(dense.astype(np.float32)[:, None]),
                         torch.from_numpy(label)))
    return out


def trained(name: str, steps: int = 30, **hparams) -> nn.Module:
    """``name`` after ``steps`` Adam steps (BatchNorm running statistics far from 0/1), eval mode."""
    torch.manual_seed(0)
    model = build_model(name, feature_map(), embedding_dim=4, embedding_std=0.3, **hparams)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for batch in batches(steps, 128, seed=1):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch.categorical, batch.dense), batch.label)
        loss.backward()
        opt.step()
    return model.eval()


def logits(model: nn.Module, data: list[Batch]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(b.categorical, b.dense).numpy() for b in data])


BN_MODELS = [  # the zoo's teachers default to no BatchNorm: these turn it on
    ("dcnv2", {"hidden_units": [16, 8], "num_cross_layers": 2, "dropout": 0.2, "batch_norm": True}, 0),
    ("deepfm", {"hidden_units": [16, 8], "batch_norm": True}, 0),
    ("fsdnet", {"num_layers": 2, "hidden_dim": 8, "dropout": 0.2}, 0),
    ("kd_dagfm_plus", {"depth": 2, "hidden_units": [16, 8]}, 0),
    ("nfm", {"hidden_units": [8], "batch_norm": True}, 1),  # the BN on the bi-interaction vector follows no Linear: kept
]


@pytest.mark.parametrize("name,hparams,kept", BN_MODELS, ids=[m[0] for m in BN_MODELS])
def test_folded_model_gives_the_same_logits_without_batch_norm(name, hparams, kept):
    model = trained(name, **hparams)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and all(float(m.running_var.sub(1).abs().max()) > 1e-3 for m in bns)  # stats really trained
    data = batches(3, 200, seed=2)
    before = logits(model, data)
    folded = fold_batch_norm(model)
    assert count_batch_norms(folded) == kept
    assert not any(isinstance(m, nn.Dropout) for m in folded.modules())
    after = logits(folded, data)
    assert np.abs(after - before).max() < 1e-5
    assert np.abs(before).max() > 0.1 and before.std() > 0.05  # the logits are not trivially equal
    assert count_batch_norms(model) == len(bns)  # the trained model is left as it was
    np.testing.assert_array_equal(logits(model, data), before)


def test_fold_is_exact_arithmetic_on_a_single_pair():
    torch.manual_seed(3)
    seq = nn.Sequential(nn.Linear(5, 3, bias=False), nn.BatchNorm1d(3), nn.ReLU())
    bn = seq[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        bn.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    folded = fold_batch_norm(seq.eval())
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    scale = torch.tensor([2.0, -1.0, 0.5]) / torch.sqrt(torch.tensor([4.0, 0.25, 1.0]) + bn.eps)
    torch.testing.assert_close(folded[0].weight, seq[0].weight * scale[:, None])
    torch.testing.assert_close(folded[0].bias, -torch.tensor([0.5, -1.0, 2.0]) * scale + torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(7, 5)
    torch.testing.assert_close(folded(x), seq(x), rtol=0, atol=1e-6)


def test_dynamic_int8_quantizes_every_linear_and_stays_close():
    model = trained("dcnv2", steps=60, hidden_units=[32, 16], num_cross_layers=2)
    linears = sum(isinstance(m, nn.Linear) for m in fold_batch_norm(model).modules())
    q = prepare_for_inference(model, InferenceParams(quantize="dynamic_int8"))
    assert sum(is_quantized_linear(m) for m in q.modules()) == linears > 0
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert count_batch_norms(q) == 0  # folded first, then quantised
    data = batches(4, 256, seed=5)
    fp32, int8 = logits(fold_batch_norm(model), data), logits(q, data)
    assert np.corrcoef(fp32, int8)[0, 1] > 0.99
    assert 0 < np.abs(fp32 - int8).max() < 0.5  # really int8 (not bit-equal), yet close
    cost = quantization_auc_cost(model, data)
    assert cost["rows"] == 1024 and cost["logit_correlation"] > 0.99
    assert cost["fp32_auc"] > 0.6  # a trained model: the AUC cost is measured on a meaningful AUC
    assert cost["auc_cost"] == pytest.approx(cost["fp32_auc"] - cost["int8_auc"])
    assert abs(cost["auc_cost"]) < 0.02
    assert is_quantized_linear(quantize_dynamic_int8(nn.Sequential(nn.Linear(3, 2)))[0])


def test_prepare_for_inference_steps_follow_the_settings():
    model = trained("deepfm", steps=5, hidden_units=[8], batch_norm=True)
    plain = prepare_for_inference(model, InferenceParams(fold_batch_norm=False))
    assert plain is not model and not plain.training and count_batch_norms(plain) == count_batch_norms(model) > 0
    assert count_batch_norms(prepare_for_inference(model)) == 0  # default: fold
    compiled = prepare_for_inference(model, InferenceParams(compile=True))  # lazy: nothing compiles yet
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert count_batch_norms(compiled._orig_mod) == 0


def test_inference_settings_are_validated_with_the_key_named(tmp_path):
    assert Params().inference == InferenceParams()
    assert load_params("params.yaml").inference == InferenceParams()  # params.yaml states the defaults
    with pytest.raises(ConfigError, match=r"inference\.quantize"):
        load_params("params.yaml", {"inference.quantize": "int4"})
    with pytest.raises(ConfigError, match=r"inference\.onnx_graph_optimization"):
        load_params("params.yaml", {"inference.onnx_graph_optimization": "max"})
    with pytest.raises(ConfigError, match=r"inference\.threads"):
        load_params("params.yaml", {"inference.threads": -1})
    with pytest.raises(ConfigError, match=r"inference\.fold_bn"):
        load_params("params.yaml", {"inference.fold_bn": True})  # unknown keys are rejected
