"""Eval-mode row blocks (CTRModel.block_rows): the same logits as one piece, never while training."""

from __future__ import annotations

import pytest
import torch

from components.data.feature_map import FeatureMap
from components.models import build_model
from components.models.registry import list_models

F64 = {"rtol": 1e-12, "atol": 1e-12}


def _fmap() -> FeatureMap:
    return FeatureMap.toy([7, 5, 9, 4], dense=2)


@pytest.mark.parametrize("name", [m.name for m in list_models()])
def test_blocks_give_the_unsplit_logits_for_every_zoo_model(name):
    torch.manual_seed(11)
    model = build_model(name, _fmap(), embedding_dim=4).double()
    cat = torch.stack([torch.randint(0, v, (23,)) for v in (7, 5, 9, 4)], dim=1)
    dense = torch.randn(23, 2, dtype=torch.float64)
    model.train()(cat, dense)  # a training step's forward updates BatchNorm running statistics
    model.eval()
    with torch.no_grad():
        model.block_rows = 0
        whole = model(cat, dense)
        model.block_rows = 5  # 4 full blocks and a partial one
        blocked = model(cat, dense)
    torch.testing.assert_close(blocked, whole, **F64)


def test_training_never_splits_and_eval_splits_in_order():
    model = build_model("dcnv2", _fmap(), embedding_dim=4)
    model.block_rows = 4
    seen: list[int] = []
    model.embedding.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    cat = torch.zeros(10, 4, dtype=torch.long)
    model.train()(cat, torch.zeros(10, 2))
    assert seen == [10]
    seen.clear()
    with torch.no_grad():
        model.eval()(cat, torch.zeros(10, 2))
    assert seen == [4, 4, 2]
    seen.clear()
    model.block_rows = 0  # disabled
    with torch.no_grad():
        model(cat, torch.zeros(10, 2))
    assert seen == [10]


def test_the_serving_form_blocks_at_inference_score_rows_and_the_profile_says_so(tmp_path):
    from components.config import InferenceParams
    from components.profile.run import profile_run
    from components.serve.optimize import prepare_for_inference
    from tests.run_fixture import make_run

    model = build_model("dcnv2", _fmap(), embedding_dim=4)
    assert prepare_for_inference(model, InferenceParams(score_rows=37)).block_rows == 37
    assert model.block_rows == 1024  # the checkpoint's own module is left as it was
    params = make_run(tmp_path)
    params = params.model_copy(update={"inference": InferenceParams(score_rows=48)})
    served = profile_run(params)["models"]["dagfm"]["served_as"]
    assert served == {"fold_batch_norm": True, "quantize": "none", "compile": False, "block_rows": 48}


def test_the_serving_form_skips_the_id_range_check_the_checkpoint_keeps_it():
    from components.config import InferenceParams
    from components.serve.optimize import prepare_for_inference

    model = build_model("dagfm", _fmap(), embedding_dim=4).eval()
    served = prepare_for_inference(model, InferenceParams())
    bad = torch.tensor([[0, 0, 9, 0]])  # field c2 has 9 ids: 9 is out of range
    with pytest.raises(ValueError, match="c2"):
        model(bad, torch.zeros(1, 2))
    assert model.embedding.check_ids and not served.embedding.check_ids
    good = torch.tensor([[6, 4, 8, 3]])
    with torch.no_grad():
        torch.testing.assert_close(served(good, torch.zeros(1, 2)), model(good, torch.zeros(1, 2)),
                                   rtol=1e-5, atol=1e-6)
