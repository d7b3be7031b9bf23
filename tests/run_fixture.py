"""A tiny finished pipeline run on disk, for the evaluate / profile / report tests.

:func:`make_run` writes into a directory: encoded splits with a ``user_id`` field (some test rows
with the OOV or missing id), a feature map, randomly initialised checkpoints (weights drawn wide
enough that the logits vary) of a CrossNet teacher, a DAGFM and an FSDNet student and a DAGFM
baseline in the layout of the distill stage, and the JSON/CSV artefacts of the earlier stages
(validation report, oracle, teacher metrics and curve, students summary, one Optuna study table,
a dvc.lock). Returns the run's :class:`Params` (every path absolute inside the directory).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from components.config import Params
from components.data.feature_map import FeatureMap, FieldInfo
from components.models import build_model
from components.train.checkpoint import feature_map_hash, save_model

VOCAB = {"user_id": 9, "c1": 6, "c2": 5}
ROWS = {"train": 120, "valid": 80, "test": 400}
DIM = 4
MODELS = {  # report name → (checkpoint dir relative to the run, registry name, hparams)
    "teacher": ("models/teacher", "crossnet", {"embedding_dim": DIM, "num_cross_layers": 2}),
    "dagfm": ("models/students/dagfm/finetune", "dagfm",
              {"embedding_dim": DIM, "interaction_type": "inner", "depth": 2}),
    "fsdnet": ("models/students/fsdnet/self_distill", "fsdnet",
               {"embedding_dim": DIM, "num_layers": 2, "hidden_dim": 8}),
    "baseline_dagfm": ("models/students/baseline_dagfm/baseline", "dagfm",
                       {"embedding_dim": DIM, "interaction_type": "inner", "depth": 1}),
}
EVALUATE = {"n_bins": 10, "roc_points": 50, "batch_size": 64, "device": "cpu",
            "flops_batch_size": 32, "latency_warmup": 1, "latency_runs": 5,
            "throughput_batch_size": 64, "throughput_runs": 2}
TUNED = {"best_trial": 1, "best_valid_auc": 0.7123, "complete": 2, "pruned": 1,
         "params": {"alpha": 0.25, "beta": 512.5, "depth": 2}}
DVC_HASH = "0123456789abcdef0123456789abcdef.dir"


def _write_processed(directory: Path) -> FeatureMap:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(11)
    weights = {f: rng.normal(0, 1.0, v) for f, v in VOCAB.items()}
    splits = {}
    for name, n in ROWS.items():
        ids = {f: rng.integers(0, v, n).astype(np.int32) for f, v in VOCAB.items()}
        dense = rng.normal(0, 1, n).astype(np.float32)
        z = sum(weights[f][ids[f]] for f in VOCAB) + 0.5 * dense
        label = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
        pq.write_table(pa.table({**ids, "d0": dense, "label": label}), directory / f"{name}.parquet",
                       row_group_size=128)
        splits[name] = {"path": f"{name}.parquet", "rows": n, "positives": int(label.sum())}
    fields = tuple(FieldInfo(name=f, type="categorical", source_kind="categorical", vocab_size=v)
                   for f, v in VOCAB.items())
    fields += (FieldInfo(name="d0", type="dense", source_kind="numeric", oov_id=None, missing_id=None),)
    fmap = FeatureMap(format="criteo", label="label", fields=fields, splits=splits,
                      source_hash="feedbeef" * 8,
                      params={"split": "random", "split_ratios": [0.8, 0.1, 0.1], "min_count": 2,
                              "numeric": "log2_bucket"})
    fmap.save(directory / "feature_map.json")
    return fmap


def _write_checkpoints(root: Path, fmap: FeatureMap) -> None:
    for i, (rel, model_name, hparams) in enumerate(MODELS.values()):
        torch.manual_seed(100 + i)
        model = build_model(model_name, fmap, **hparams)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.6)
        save_model(model.eval(), root / rel, model_name=model_name, hparams=hparams,
                   feature_map_hash=feature_map_hash(fmap), epoch=1, metrics={"valid_auc": 0.5})


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _write_stage_artifacts(root: Path) -> None:
    _write_json(root / "data/validation/validation.json", {
        "format": "criteo", "files": ["data/raw/synthetic.txt"], "rows": 1234, "success": True,
        "gx_version": "1.24.1", "gx": {"sampled": False},
        "checks": [{"rule": "min_rows", "column": None, "success": True},
                   {"rule": "label_in_set", "column": "label", "success": True}]})
    _write_json(root / "data/raw/synthetic.txt.oracle.json",
                {"rows": 1234, "ctr": 0.2512, "oracle_auc": 0.8287, "oracle_logloss": 0.4211})
    _write_json(root / "metrics/teacher.json", {
        "model": "crossnet", "device": "cpu", "best_epoch": 2, "epochs": 3,
        "test": {"auc": 0.6543, "logloss": 0.55}, "valid": {"auc": 0.66, "logloss": 0.54},
        "baselines": {"lr": {"valid": {"auc": 0.65, "logloss": 0.545}, "test": {"auc": 0.6432, "logloss": 0.5567}},
                      "constant": {"ctr": 0.25, "valid": {"auc": 0.5, "logloss": 0.5612},
                                   "test": {"auc": 0.5, "logloss": 0.5623}}},
        "gate": {"passed": True, "beats_lr": True, "beats_constant": True, "auc_gain_over_lr": 0.01,
                 "min_auc_gain": 0.0, "on_fail": "fail",
                 "message": "baseline gate passed: teacher valid AUC 0.6600 vs LR 0.6500"}})
    (root / "metrics/teacher_curve.csv").write_text(
        "epoch,lr,train_loss,valid_auc,valid_logloss,samples_per_s,seconds\n"
        "1,0.001,0.60,0.62,0.58,1000,1.0\n2,0.001,0.55,0.66,0.54,1000,1.0\n"
        "3,0.0001,0.50,0.65,0.56,1000,1.0\n")
    _write_json(root / "metrics/students.json", {
        "dagfm": {"student": "dagfm", "test": {"auc": 0.61, "logloss": 0.6}, "tuned": TUNED},
        "fsdnet": {"student": "fsdnet", "test": {"auc": 0.62, "logloss": 0.6}, "tuned": None},
        "baseline_dagfm": {"student": "baseline_dagfm", "test": {"auc": 0.6, "logloss": 0.6},
                           "tuned": None}})
    study = root / "models/students/dagfm/study"
    _write_json(study / "best.json", {"study_name": "ctrflow-dagfm-abc", "direction": "maximize",
                                      "n_complete": 2, "n_pruned": 1, "n_failed": 0})
    (study / "trials.csv").write_text(
        "number,state,value,last_step,duration_s,datetime_start,datetime_complete,note,"
        "params_alpha,params_beta,params_depth\n"
        "0,COMPLETE,0.7001,3,1.5,,,defaults,0.1,921.6,3\n"
        "1,COMPLETE,0.7123,3,1.4,,,,0.25,512.5,2\n"
        "2,PRUNED,0.6002,1,0.3,,,,0.9,11.0,4\n")
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  preprocess:\n    cmd: ctrflow preprocess\n    outs:\n"
        f"    - path: data/processed\n      hash: md5\n      md5: {DVC_HASH}\n      size: 10\n")


def make_run(root: Path, **evaluate) -> Params:
    """Write the run into ``root`` (see module doc) and return its params."""
    fmap = _write_processed(root / "data/processed")
    _write_checkpoints(root, fmap)
    _write_stage_artifacts(root)
    return run_params(root, **evaluate)


def run_params(root: Path, **evaluate) -> Params:
    """Params of a run rooted at ``root`` (absolute paths); ``evaluate`` updates :data:`EVALUATE`."""
    raw = str(root / "data/raw/synthetic.txt")
    return Params.model_validate({
        "data": {"format": "criteo", "input": raw},
        "generate": {"format": "criteo", "out": raw, "seed": 7},
        "validate": {"out_dir": str(root / "data/validation")},
        "preprocess": {"out_dir": str(root / "data/processed"), "seed": 8},
        "train": {"out_dir": str(root / "models/teacher"), "metrics": str(root / "metrics/teacher.json"),
                  "curve": str(root / "metrics/teacher_curve.csv"), "seed": 9},
        "distill": {"students": ["dagfm", "fsdnet"], "baselines": ["dagfm"],
                    "out_dir": str(root / "models/students"),
                    "metrics": str(root / "metrics/students.json"), "seed": 10},
        "tune": {"seed": 12},
        "evaluate": {**EVALUATE, "out": str(root / "metrics/evaluation.json"),
                     "plots_dir": str(root / "metrics/plots"),
                     "profile_out": str(root / "metrics/profile.json"),
                     "report_dir": str(root / "reports"), **evaluate},
    })
