"""Where a distillation run reads and writes: split loaders, the staged output directory, metrics.

- :func:`split_loader` opens one processed split as a :class:`BatchLoader`.
- :func:`staged_output` builds a run's whole output directory under a temporary sibling and swaps
  it into place only when the run succeeds, so a failed (or pruned) run never destroys the
  checkpoints and metrics of an earlier good one.
- :func:`score_split` scores a model on a split (AUC, LogLoss), optionally also its agreement with
  cached teacher logits.
- :func:`split_labels` reads a split's labels; :func:`write_json` writes a JSON file atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from components.data.feature_map import FeatureMap
from components.data.loader import BatchLoader
from components.train.loop import predict
from components.train.metrics import evaluate_logits

METRICS_FILE = "metrics.json"


def load_feature_map(processed_dir: str | Path) -> FeatureMap:
    """``<processed_dir>/feature_map.json`` (ValueError naming the file when unreadable)."""
    return FeatureMap.load(Path(processed_dir) / "feature_map.json")


def has_rows(feature_map: FeatureMap, split: str) -> bool:
    """True when ``split`` exists in the feature map and is not recorded as empty."""
    return split in feature_map.splits and feature_map.splits[split].get("rows", 1) > 0


def split_loader(
    processed_dir: str | Path,
    feature_map: FeatureMap,
    split: str,
    batch_size: int | str,
    *,
    shuffle: bool,
    seed: int = 0,
    in_memory: bool = True,
    device: str | torch.device = "cpu",
    max_rows: int | None = None,
) -> BatchLoader:
    """A :class:`BatchLoader` over ``split`` of the processed directory (ValueError if absent).

    ``batch_size`` ``"auto"`` scales with the training split's rows (components/train/recipe.py);
    ``max_rows`` caps the rows the loader visits (row groups spread over the file, see
    :func:`~components.data.loader.spread_row_groups`)."""
    if split not in feature_map.splits:
        raise ValueError(
            f"{Path(processed_dir) / 'feature_map.json'}: no {split!r} split "
            f"(has {sorted(feature_map.splits)})"
        )
    from components.train.recipe import resolve_batch_size

    path = Path(processed_dir) / feature_map.splits[split]["path"]
    train_rows = int(feature_map.splits.get("train", {}).get("rows", 0) or 0)
    return BatchLoader(
        path, feature_map, resolve_batch_size(batch_size, train_rows), shuffle=shuffle, seed=seed,
        in_memory=in_memory, device=device, max_rows=max_rows,
    )  # fmt: skip


def student_loader(
    processed_dir: str | Path, feature_map: FeatureMap, split: str, batch_size: int | str, *,
    shuffle: bool, settings, device: str | torch.device = "cpu",
) -> BatchLoader:
    """:func:`split_loader` as every student procedure opens a split: ``settings`` (the ``distill``
    section) gives the seed and ``in_memory``, and the train split is capped at
    ``settings.max_train_rows`` (null: every row)."""
    cap = settings.max_train_rows if split == "train" else None
    return split_loader(processed_dir, feature_map, split, batch_size, shuffle=shuffle, seed=settings.seed,
                        in_memory=settings.in_memory, device=device, max_rows=cap)


def split_labels(processed_dir: str | Path, feature_map: FeatureMap, split: str) -> np.ndarray:
    """The label column of ``split`` as float32 [N], in file order."""
    path = Path(processed_dir) / feature_map.splits[split]["path"]
    return pq.read_table(path, columns=[feature_map.label]).column(0).to_numpy().astype(np.float32)


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented, key-sorted JSON via a temporary file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


@contextlib.contextmanager
def staged_output(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory next to ``out_dir``; on success it replaces ``out_dir``.

    On an exception the staging directory is deleted and ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.replace(old)
    stage.replace(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def score_split(
    model: nn.Module,
    loader: BatchLoader,
    *,
    device: torch.device,
    teacher_logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """``{"auc", "logloss"}`` of ``model`` on an unshuffled ``loader``.

    With ``teacher_logits`` (row-aligned with the split) also ``teacher_logit_mse`` = mean (z_S − z_T)²
    and ``teacher_logit_mae`` = mean |z_S − z_T|: how closely the student reproduces the teacher.
    """
    logits, labels = predict(model, loader, device=device)
    scores = evaluate_logits(labels, logits)
    if teacher_logits is not None:
        if teacher_logits.shape[0] != logits.shape[0]:
            raise ValueError(f"{teacher_logits.shape[0]} teacher logits for {logits.shape[0]} rows")
        diff = logits.astype(np.float64) - teacher_logits.numpy().astype(np.float64)
        scores["teacher_logit_mse"] = float(np.mean(diff**2))
        scores["teacher_logit_mae"] = float(np.mean(np.abs(diff)))
    return scores
