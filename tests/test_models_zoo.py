"""Contract tests for EVERY registered model: logits [B], gradients everywhere, overfits, seeded.

Small dimensions keep the whole file fast; the batch has a row-unique field (vocab 64) so each
model can memorise random labels, plus two dense fields so dense projections are exercised.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.data.feature_map import FeatureMap
from components.models import build_model, list_models, register
from components.models.base import CTRModel

EXPECTED = {
    "lr", "fm", "ffm", "afm", "nfm", "wide_deep", "deepfm", "dlrm", "dcn", "dcnv2", "crossnet",
    "xdeepfm", "cin", "autoint", "autoint_plus", "ipnn", "dnn",
}  # fmt: skip
SMALL_MLP = {"hidden_units": [16, 16]}
SMALL = {
    "nfm": SMALL_MLP, "wide_deep": SMALL_MLP, "deepfm": SMALL_MLP, "ipnn": SMALL_MLP, "dnn": SMALL_MLP,
    "dcn": {**SMALL_MLP, "num_cross_layers": 2},
    "dcnv2": {**SMALL_MLP, "num_cross_layers": 2, "cross_type": "mixture", "low_rank": 4, "num_experts": 2},
    "crossnet": {"num_cross_layers": 2},
    "dlrm": {"bottom_units": [8], "top_units": [16]},
    "xdeepfm": {**SMALL_MLP, "cin_units": [6, 6]},
    "cin": {"cin_units": [6, 6]},
    "autoint": {"attention_layers": 2, "attention_dim": 8},
    "autoint_plus": {**SMALL_MLP, "attention_layers": 2, "attention_dim": 8},
    "afm": {"attention_dim": 8},
}  # fmt: skip
B = 64
FEATURE_MAP = FeatureMap.toy([B, 5, 3, 1], dense=2)
NAMES = sorted(info.name for info in list_models())


def _hparams(name: str) -> dict:
    return {"embedding_dim": 4, **SMALL.get(name, {})}


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    rows = torch.arange(B)
    cat = torch.stack([torch.randperm(B, generator=g), rows % 5, rows % 3, rows % 1], dim=1)
    dense = torch.randn(B, 2, generator=g)
    label = (torch.rand(B, generator=g) < 0.5).float()
    return cat, dense, label


def _build(name: str, seed: int = 0) -> CTRModel:
    torch.manual_seed(seed)
    return build_model(name, FEATURE_MAP, **_hparams(name))


def test_registry_holds_the_whole_zoo_with_families_and_papers():
    infos = {i.name: i for i in list_models()}
    assert EXPECTED <= set(infos)
    for name in EXPECTED:
        assert infos[name].family and infos[name].paper
        assert "embedding_dim" in infos[name].hyperparameters
    assert infos["dcnv2"].family == "cross" and "DCN V2" in infos["dcnv2"].paper
    assert infos["dcnv2"].hyperparameters["structure"] == "parallel"
    assert infos["dnn"].hyperparameters["hidden_units"] == (400, 400, 400)


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'dcn3'.*dcnv2.*xdeepfm"):
        build_model("dcn3", FEATURE_MAP)


def test_unknown_hyperparameter_is_a_type_error_naming_it():
    with pytest.raises(
        TypeError,
        match=r"'dcnv2' got unknown hyperparameter\(s\) 'num_cros_layers'.*accepted:.*num_cross_layers",
    ):
        build_model("dcnv2", FEATURE_MAP, num_cros_layers=2)


def test_bad_choice_values_are_value_errors_naming_the_key():
    with pytest.raises(ValueError, match="structure must be one of"):
        build_model("dcnv2", FEATURE_MAP, structure="diagonal")
    with pytest.raises(ValueError, match="embedding init"):
        build_model("fm", FEATURE_MAP, embedding_init="uniform")


def test_registering_a_taken_name_with_another_class_fails():
    with pytest.raises(ValueError, match="already registered"):

        @register("fm", family="x", paper="y")
        class Impostor(CTRModel):  # noqa: F841
            pass


@pytest.mark.parametrize("name", NAMES)
def test_logits_shape_and_gradients_reach_every_parameter(name):
    model = _build(name).train()
    cat, dense, label = _batch()
    logits = model(cat, dense)
    assert logits.shape == (B,) and logits.dtype == torch.float32
    nn.functional.binary_cross_entropy_with_logits(logits, label).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"
    bad = [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    assert not bad, f"{name}: non-finite gradient for {bad}"
    # the shared table is touched: every row of the row-unique field gets a non-zero gradient
    table = (
        model.embedding.table
        if model.embedding.table is not None
        else model.embedding.first_order_table
    )
    assert (table.weight.grad[:B].abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_small_batch_and_outputs_raw_logits(name):
    model = _build(name).train()
    cat, dense, label = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    loss = torch.tensor(float("inf"))
    for _ in range(300):
        opt.zero_grad()
        logits = model(cat, dense)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, label)
        if loss.item() < 0.1:
            break
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, f"{name}: BCE {loss.item():.3f} after 300 Adam steps"
    # logits, not probabilities: confident fits leave (0, 1) on both sides
    assert (logits < 0).any() and (logits > 1).any()
    assert ((logits > 0).float() == label).float().mean() >= 0.9


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_model_and_training(name):
    cat, dense, label = _batch()
    runs = []
    for _ in range(2):
        model = _build(name, seed=3).train()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(cat, dense), label).backward()
            opt.step()
        runs.append(model.eval()(cat, dense).detach())
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    other = _build(name, seed=4).eval()(cat, dense).detach()
    assert not torch.equal(other, _build(name, seed=3).eval()(cat, dense).detach())
