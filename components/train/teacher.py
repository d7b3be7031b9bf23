"""The train_teacher stage's logic: processed splits → trained zoo model + metrics + curve.

Reads ``<preprocess.out_dir>/feature_map.json`` and its splits, trains ``train.model`` with the
recipe of :func:`components.train.loop.fit`, then scores the validation and test splits with the
restored best weights. Writes (atomically):

- ``train.out_dir``: ``model.safetensors`` + ``model.json`` (and the resume state while training);
- ``train.metrics``: valid/test AUC and LogLoss, epochs, best epoch, samples/s, parameter counts;
- ``train.curve``: one CSV row per epoch (epoch, lr, train_loss, valid_auc, valid_logloss,
  samples_per_s, seconds) for DVC plots.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

from components.config import TrainParams
from components.data.feature_map import FeatureMap

CURVE_COLUMNS = ("epoch", "lr", "train_loss", "valid_auc", "valid_logloss", "samples_per_s", "seconds")


@dataclass(frozen=True)
class TeacherResult:
    metrics: dict
    model_dir: Path
    metrics_path: Path
    curve_path: Path


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _curve_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rec in history:
        writer.writerow({k: rec.get(k) for k in CURVE_COLUMNS})
    return buf.getvalue()


def train_teacher(params: TrainParams, processed_dir: str | Path, *, resume: bool = True,
                  log=print) -> TeacherResult:
    """Train ``params.model`` on the processed splits and write checkpoint, metrics and curve."""
    from components.data.loader import BatchLoader
    from components.models import build_model
    from components.train.checkpoint import clear_train_state, count_parameters
    from components.train.loop import (
        fit,
        predict,
        resolve_device,
        resolve_precision,
        resume_state_matches,
        seed_everything,
    )
    from components.train.metrics import evaluate_logits

    processed = Path(processed_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    dev = resolve_device(params.device)
    device = str(dev)

    def loader(split: str, shuffle: bool) -> BatchLoader:
        if split not in fmap.splits:
            raise ValueError(f"{processed / 'feature_map.json'}: no {split!r} split (has {sorted(fmap.splits)})")
        return BatchLoader(processed / fmap.splits[split]["path"], fmap, params.batch_size,
                           shuffle=shuffle, seed=params.seed, in_memory=params.in_memory, device=device)

    train, valid = loader("train", True), loader("valid", False)
    seed_everything(params.seed)
    hparams = {"embedding_dim": params.embedding_dim, **params.model_params}
    model = build_model(params.model, fmap, **hparams)
    if resume and resume_state_matches(params.out_dir, params, model, hparams) is False:
        log(f"{params.out_dir}: resume state is from another configuration or data; training afresh")
        clear_train_state(params.out_dir)
    started = time.perf_counter()
    result = fit(model, train, valid, params, params.out_dir, resume=resume, hparams=hparams, log=log)
    wall = time.perf_counter() - started

    scores = {}
    for split in ("valid", "test"):
        if split in fmap.splits and fmap.splits[split].get("rows", 1) > 0:
            logits, labels = predict(model, loader(split, False), device=dev)
            scores[split] = evaluate_logits(labels, logits)
    sps = [h["samples_per_s"] for h in result.history if h.get("samples_per_s")]
    metrics = {
        "model": params.model,
        "hparams": hparams,
        "valid": scores.get("valid"),
        "test": scores.get("test"),
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "train_samples_per_s": round(sum(sps) / len(sps), 1) if sps else None,
        "train_seconds": round(wall, 2),
        "device": device,
        "precision": "bf16" if resolve_precision(dev, params.precision) is not None else "fp32",
        "parameters": count_parameters(model),
    }
    metrics_path, curve_path = Path(params.metrics), Path(params.curve)
    _atomic_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    _atomic_text(curve_path, _curve_csv(result.history))
    return TeacherResult(metrics, Path(params.out_dir), metrics_path, curve_path)
