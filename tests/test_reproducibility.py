"""Identical reruns (issue 14 §5, docs/reproducibility.md): two runs from a clean state write
byte-identical data and model outputs; metric values are equal but for the timing fields that
components/repro.py lists."""

from __future__ import annotations

import csv
import fnmatch
import json
from pathlib import Path

import pytest

from components.repro import ALLOWED_TO_DIFFER, PATH_KEYED, TIMING_FIELDS, without_timings
from tests.conftest import write_params

# Smaller than SMALL_RUN: every stage that writes a data or model output, one epoch each, one trial.
TINY = {
    "generate": {"rows": 2000},
    "preprocess": {"min_count": 2},
    "train": {"max_epochs": 1, "batch_size": 512, "model_params": {"hidden_units": [16]},
              "gate": {"on_fail": "warn", "baseline_max_epochs": 1}},
    "distill": {
        "students": ["dagfm", "fsdnet"], "baselines": ["dagfm"],
        "dagfm": {"distill_max_epochs": 1, "finetune_max_epochs": 1, "batch_size": 512},
        "fsdnet": {"max_epochs": 1, "hidden_dim": 16, "batch_size": 512},
    },
    "tune": {"n_trials": 1},
}


def _run(root: Path, monkeypatch) -> None:
    from components import stages
    from components.config import load_params

    root.mkdir()
    monkeypatch.chdir(root)
    params = load_params(write_params(root, **TINY))
    for name in ("generate", "validate", "preprocess", "train", "distill", "evaluate"):
        getattr(stages, f"{name}_stage")(params)


def _allowed(rel: str) -> tuple[tuple[str, ...] | None, str] | None:
    for pattern, entry in ALLOWED_TO_DIFFER.items():
        if fnmatch.fnmatch(rel, pattern):
            return entry
    return None


def _drop(obj, path: list[str]):
    """``obj`` without the (dotted, ``*`` = any key or item) ``path``."""
    if not path:
        return None
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        keys = list(obj) if head == "*" else [head]
        out = dict(obj)
        for k in keys:
            if k in out:
                if rest:
                    out[k] = _drop(out[k], rest)
                else:
                    del out[k]
        return out
    if isinstance(obj, list) and head == "*":
        return [_drop(v, rest) for v in obj]
    return obj


def _comparable(path: Path, keys: tuple[str, ...]):
    if path.suffix == ".csv":
        with path.open() as f:
            return [{k: v for k, v in row.items() if k not in keys} for row in csv.DictReader(f)]
    obj = json.loads(path.read_text())
    for key in keys:
        obj = _drop(obj, key.split("."))
    return obj


def test_two_clean_runs_write_identical_outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("CTRFLOW_OPTUNA_STORAGE", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, monkeypatch)
    _run(b, monkeypatch)

    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    files_a = [f for f in files_a if not f.startswith(PATH_KEYED)]  # caches named by absolute paths
    files_b = [f for f in files_b if not f.startswith(PATH_KEYED)]
    if any(f.startswith("data/validation/data_docs/") for f in files_a):  # GX run-time directories
        files_a = [f for f in files_a if not f.startswith("data/validation/data_docs/validations/")]
        files_b = [f for f in files_b if not f.startswith("data/validation/data_docs/validations/")]
    assert files_a == files_b

    identical, compared = [], []
    for rel in files_a:
        entry = _allowed(rel)
        if entry is None:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs between two runs"
            identical.append(rel)
        elif entry[0] is not None:
            assert _comparable(a / rel, entry[0]) == _comparable(b / rel, entry[0]), rel
            compared.append(rel)

    # what the issue names, byte for byte
    for must in ("data/raw/synthetic.txt", "data/processed/train.parquet", "data/processed/feature_map.json",
                 "data/validation/validation.json", "models/teacher/model.safetensors",
                 "models/teacher/resume.json", "models/students/dagfm/finetune/model.safetensors",
                 "models/students/fsdnet/self_distill/model.safetensors",
                 "models/students/baseline_dagfm/baseline/model.safetensors",
                 "models/students/dagfm/study/trials.csv", "metrics/students.json",
                 "metrics/evaluation.json"):
        assert must in identical, must
    assert any(f.startswith("data/processed/vocab/") for f in identical)
    assert sum(f.startswith("data/teacher_logits/") and f.endswith(".parquet") for f in identical) == 3
    assert {"metrics/teacher.json", "metrics/teacher_curve.csv"} <= set(compared)
    # and the timings are really there, only outside the data and model outputs
    teacher = json.loads((a / "metrics/teacher.json").read_text())
    assert teacher["train_seconds"] > 0
    for rel in identical:
        if rel.startswith(("models/", "data/")) and rel.endswith((".json", ".csv")):
            text = (a / rel).read_text()
            assert not any(f'"{k}"' in text or f",{k}" in text for k in TIMING_FIELDS), rel


def test_without_timings_and_safetensors_headers_are_canonical(tmp_path):
    import torch

    from components.train.checkpoint import _atomic_save_tensors

    rec = {"epoch": 1, "seconds": 2.0, "history": [{"samples_per_s": 3.0, "valid_auc": 0.7}]}
    assert without_timings(rec) == {"epoch": 1, "history": [{"valid_auc": 0.7}]}
    # safetensors writes its metadata from a hash map: the header order varied from run to run
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16)}
    digests = {_atomic_save_tensors(tmp_path / f"{i}.safetensors", tensors,
                                    {"model": "dcnv2", "format": "ctrflow-checkpoint", "x": "ü"})
               for i in range(6)}
    assert len(digests) == 1
    from safetensors.torch import load_file

    loaded = load_file(str(tmp_path / "0.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


@pytest.mark.parametrize("rel", ["reports/report.md", "metrics/profile.json", "optuna/ctrflow.db",
                                 "data/validation/data_docs/index.html"])
def test_every_allowed_difference_has_a_reason(rel):
    entry = _allowed(rel)
    assert entry is not None and len(entry[1]) > 20
