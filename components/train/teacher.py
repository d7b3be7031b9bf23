"""The train_teacher stage's logic: processed splits → trained zoo model + metrics + curve.

Reads ``<preprocess.out_dir>/feature_map.json`` and its splits, trains ``train.model`` with the
recipe of :func:`components.train.loop.fit`, then scores the validation and test splits with the
restored best weights. Writes (atomically):

- ``train.out_dir``: ``model.safetensors`` + ``model.json`` (and the resume state while training);
- ``train.metrics``: valid/test AUC and LogLoss, epochs, best epoch, samples/s, parameter counts;
- ``train.curve``: one CSV row per validation evaluation (epoch, epochs_done, lr, train_loss,
  valid_auc, valid_logloss, samples_per_s, seconds) for DVC plots.

Every run also fits the baseline gate's LR and scores the constant predictor on the same split
(:mod:`components.train.gate`); their metrics and the gate's verdict are in the metrics JSON under
``baselines`` and ``gate``. Raising on a failed gate is the stage's job (``components/stages.py``),
after these files are written, so a user can read why.
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
from components.train import gate

CURVE_COLUMNS = ("epoch", "epochs_done", "lr", "train_loss", "valid_auc", "valid_logloss",
                 "samples_per_s", "seconds")


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

    def score(net) -> dict:
        out = {}
        for split in ("valid", "test"):
            if split in fmap.splits and fmap.splits[split].get("rows", 1) > 0:
                logits, labels = predict(net, loader(split, False), device=dev)
                out[split] = evaluate_logits(labels, logits)
        return out

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

    scores = score(model)

    # the baseline gate: LR on the same split (own optimiser settings) and the constant predictor
    lr_params = gate.baseline_params(params)
    seed_everything(lr_params.seed)
    lr_model = build_model("lr", fmap, embedding_dim=params.embedding_dim)
    lr_fit = fit(lr_model, loader("train", True), loader("valid", False), lr_params, lr_params.out_dir,
                 resume=False, hparams={"embedding_dim": params.embedding_dim}, log=lambda _m: None)
    baselines = {"lr": {**score(lr_model), "best_epoch": lr_fit.best_epoch, "epochs": lr_fit.epochs_run,
                        "lr": lr_params.lr},
                 "constant": gate.constant_predictor(processed, fmap)}
    verdict = gate.judge(scores["valid"], baselines["lr"]["valid"], baselines["constant"]["valid"],
                         min_auc_gain=params.gate.min_auc_gain, on_fail=params.gate.on_fail)
    log(verdict.message)
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
        "best_eval": result.best_eval,
        "eval_every": params.eval_every,
        "baselines": baselines,
        "gate": verdict.record,
    }
    metrics_path, curve_path = Path(params.metrics), Path(params.curve)
    _atomic_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    _atomic_text(curve_path, _curve_csv(result.history))
    return TeacherResult(metrics, Path(params.out_dir), metrics_path, curve_path)
