"""Shared fixtures: repo paths, the real-data folder (skipped when absent), small params files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from flows import _env  # noqa: F401  (offline-safe env defaults for Prefect/GX/DVC)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
VENV_BIN = Path(os.sys.executable).parent


@pytest.fixture
def shared_data() -> Path:
    """The real public samples beside the checkout; tests using them skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (they are never copied into the repo)")
    return SHARED_DATA


def write_params(dir_: Path, **sections) -> Path:
    """Write a params.yaml into dir_ from the repo's own, with sections updated key by key."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    path = dir_ / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# A pipeline small enough for tests: 4,000 rows, tiny nets, 1-2 epochs, 2 Optuna trials.
SMALL_RUN = {
    "generate": {"rows": 4000},
    "preprocess": {"min_count": 2},
    # 3,200 training rows cannot show a teacher beating LR: the gate only warns here (tests/test_gate.py
    # and test_pipeline.py's gate test hold it to `fail`)
    "train": {"max_epochs": 2, "batch_size": 1024, "model_params": {"hidden_units": [32, 32]},
              "gate": {"on_fail": "warn"}},
    "distill": {
        "students": ["dagfm", "fsdnet"],
        "dagfm": {"distill_max_epochs": 2, "finetune_max_epochs": 1, "batch_size": 1024},
        "fsdnet": {"max_epochs": 1, "hidden_dim": 32, "batch_size": 1024},
    },
    "tune": {"n_trials": 2},
    "evaluate": {"latency_runs": 20, "latency_warmup": 2, "throughput_runs": 2, "throughput_batch_size": 512},
}


@pytest.fixture
def small_params(tmp_path, monkeypatch) -> Path:
    """A params.yaml in a temp working dir for a 4,000-row synthetic Criteo run."""
    monkeypatch.chdir(tmp_path)
    return write_params(tmp_path, **SMALL_RUN)
