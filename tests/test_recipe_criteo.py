"""The default recipe on real rows: Criteo 117k (skipped where ../shared/data is absent).

One train_teacher run with params.yaml's defaults (DCNv2, batch auto, no BatchNorm) also fits the
gate's LR and scores the constant predictor on the same split, so the three are compared as a user
would see them. Measured (seed 2024, 2 threads, with the integers' dense copies of
``preprocess.numeric_also_dense`` folded into their buckets' fields and the logistic base of
``train.logistic_base``): DCNv2 valid AUC 0.7652, LogLoss 0.4831; LR 0.7657 / 0.4827; constant
LogLoss 0.574 (without the base DCNv2 0.7642 / 0.4853; bucket-only, before: DCNv2 0.7605, LR 0.7628).
The recipe of 2026-11-23 (batch 4096, BatchNorm) scored 0.7375 valid AUC with a LogLoss of 0.55:
these bounds fail on it.
"""

from __future__ import annotations

import pytest

from components.config import load_params
from components.stages import preprocess_stage, validate_stage
from components.train.teacher import train_teacher
from tests.conftest import REPO_ROOT

CRITEO = "criteo/criteo_kaggle_train_sample117k.txt.gz"


@pytest.fixture(scope="module")
def shared_data_module():
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (they are never copied into the repo)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def criteo_run(tmp_path_factory, shared_data_module):
    path = shared_data_module / CRITEO
    if not path.exists():
        pytest.skip(f"{path} not found (the real Criteo sample is never copied into the repo)")
    tmp = tmp_path_factory.mktemp("criteo117k")
    params = load_params(REPO_ROOT / "params.yaml", {
        "data.format": "criteo", "data.input": str(path),
        "validate.out_dir": str(tmp / "validation"), "preprocess.out_dir": str(tmp / "processed"),
        "train.out_dir": str(tmp / "teacher"), "train.metrics": str(tmp / "teacher.json"),
        "train.curve": str(tmp / "curve.csv"), "train.device": "cpu", "train.num_threads": 2,
    })
    validate_stage(params)
    preprocess_stage(params)
    return train_teacher(params.train, params.preprocess.out_dir, resume=False, log=lambda _m: None).metrics


def test_default_dcnv2_on_criteo_117k_beats_lr_and_the_constant(criteo_run):
    m = criteo_run
    lr, const = m["baselines"]["lr"], m["baselines"]["constant"]
    assert m["model"] == "dcnv2" and m["batch_size"] == 512  # auto: 93,820 training rows
    # far above the replaced recipe (valid AUC 0.7375) and above the bucket-only one (0.7605);
    # calibrated: LogLoss well below the constant's
    assert m["valid"]["auc"] > 0.761 and m["test"]["auc"] > 0.750
    assert m["valid"]["logloss"] < const["valid"]["logloss"] - 0.08
    # above a converged LR in both (issue 11): the teacher learns the residual over the gate's LR
    # (train.logistic_base) with the embedding L2 and min count 5 of 2026-12-07. Measured at 1 thread,
    # seeds 2024 / 2025 / 2026: valid AUC +0.0032 / +0.0029 / +0.0027 over LR, LogLoss below LR's in
    # every seed; the run-to-run float noise (thread count) moved a seed by up to 0.0009, so the sign
    # is asserted, not the size.
    assert m["hparams"].get("logistic_base") is True
    assert m["valid"]["auc"] > lr["valid"]["auc"] and m["valid"]["logloss"] < lr["valid"]["logloss"]
    assert m["test"]["auc"] > lr["test"]["auc"]
    assert m["gate"]["passed"] is True
    assert lr["valid"]["auc"] > 0.762 and lr["epochs"] > 3  # the gate's LR is trained, not a strawman
