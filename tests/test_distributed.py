"""DDP (two gloo ranks under torchrun) reaches the same model as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from components.data.feature_map import FeatureMap
from components.train.checkpoint import load_model_weights
from components.train.loop import fit
from tests.conftest import write_params
from tests.test_train_loop import build, loaders, params, quiet, write_split_data

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists(), reason=f"torchrun not found next to {sys.executable}")
def test_two_gloo_ranks_match_single_process(tmp_path):
    # 3,073 train rows: in-memory shards of 1,537 / 1,536 rows give 13 / 12 batches of 128, so the ranks
    # must agree on 12 steps (rows 0..3071). 1,001 valid rows: uneven shards in the all-gather.
    proc_dir = tmp_path / "processed"
    fmap = write_split_data(proc_dir, n_train=3073, n_valid=1001)
    train = dict(
        model="lr",
        batch_size=256,  # the global batch: 128 rows per rank and step
        lr=0.02,
        embedding_l2=1e-3,  # params.yaml's: every rank adds the whole tables' penalty, DDP averages the gradients
        max_epochs=3,
        patience=3,
        device="cpu",
        num_threads=1,
        seed=11,
        out_dir=str(tmp_path / "ddp"),
    )
    params_yaml = write_params(tmp_path, preprocess={"out_dir": str(proc_dir)}, train=train)
    proc = subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "components.train.distributed",
            "--params",
            str(params_yaml),
            "--no-shuffle",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("epoch 1/3:") == 1  # only rank 0 logs
    out = tmp_path / "ddp"
    # only rank 0 wrote: exactly one set of files, no temp leftovers from a second writer
    assert sorted(p.name for p in out.iterdir()) == [
        "model.json",
        "model.safetensors",
        "resume-3.safetensors",
        "resume.json",
    ]
    state = json.loads((out / "resume.json").read_text())
    assert state["scalars"]["fingerprint"]["world_size"] == 2
    ddp_history = state["scalars"]["history"]

    # the single-process reference: the first 3,072 train rows, the same global batch 256, seed and init
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    pq.write_table(
        pq.read_table(proc_dir / "train.parquet").slice(0, 3072), ref_dir / "train.parquet"
    )
    (ref_dir / "valid.parquet").write_bytes((proc_dir / "valid.parquet").read_bytes())
    p = params(**{**train, "batch_size": 256, "out_dir": str(tmp_path / "single")})
    single = build(p, fmap)
    res = fit(
        single, *loaders(ref_dir, fmap, 256, shuffle=False), p, tmp_path / "single", log=quiet
    )

    ddp_model = build(p, FeatureMap.load(proc_dir / "feature_map.json"), seed=999)
    load_model_weights(ddp_model, out)
    for (k, a), b in zip(single.state_dict().items(), ddp_model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=k)
    assert len(ddp_history) == len(res.history) == 3
    np.testing.assert_allclose(
        [h["valid_auc"] for h in ddp_history],
        [h["valid_auc"] for h in res.history],
        rtol=0,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        [h["train_loss"] for h in ddp_history],
        [h["train_loss"] for h in res.history],
        rtol=0,
        atol=1e-6,
    )
    assert res.best_valid_auc > 0.75  # it learned (the planted signal)
