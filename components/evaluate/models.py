"""Evaluate every trained model of a run on one split: the ``evaluate`` stage's logic.

Models of a run (:func:`discover_models`, paths from params.yaml):

- ``teacher``: ``train.out_dir`` (``model.json`` + ``model.safetensors``);
- each name in ``distill.students``: its final checkpoint ``<distill.out_dir>/<student>/<phase>``,
  phase ``finetune`` for the KD-DAGFM chain (dagfm, kd_dagfm_plus) and ``self_distill`` for FSDNet;
- each name in ``distill.baselines``: ``<distill.out_dir>/baseline_<name>/baseline``.

:func:`evaluate_run` scores each of them on ``evaluate.split`` (default test) in file order and
computes :func:`components.evaluate.metrics.evaluate_predictions` (AUC, LogLoss, ECE, reliability,
calibration-in-the-large, and gAUC when a user field exists) and, for every model but the teacher,
:func:`components.evaluate.aggregate.prediction_agreement` with the teacher's logits on the same rows.

gAUC groups: ``evaluate.group_field`` ``auto`` takes the first of
:data:`~components.evaluate.settings.AUTO_GROUP_FIELDS` among the categorical fields (MovieLens
``user_id``), a field name forces that field, ``null`` disables gAUC. Groups are the encoded ids;
rows whose id is the OOV or missing id (users unseen in train, or null) cannot be told apart, so
each such row becomes its own one-row group, which holds one class and is left out of the gAUC
(its share shows in ``gauc_impression_coverage``).

Multi-seed hook: :func:`aggregate_runs` takes the evaluation dicts of several runs (one per seed
setting) and gives per model the mean ± sample std (:func:`aggregate_seeds`) of the headline metrics
and per student the paired comparison with the teacher of the same run (:func:`compare_runs`). The
evaluation JSON of one run always holds ``aggregate`` over itself plus the JSONs named in
``evaluate.seed_runs`` (n = 1 when none).

Outputs (each written to a temporary file then renamed; the JSON last): ``evaluate.out`` and, in
``evaluate.plots_dir``, ``roc_<model>.csv`` (``fpr,tpr``, at most ``roc_points`` rows, both
endpoints kept) and ``reliability.csv`` (``model,bin,mean_predicted,observed,count``, non-empty
bins only, ``bin`` 0-based).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from components.data.feature_map import MISSING_ID, OOV_ID, FeatureMap
from components.data.loader import BatchLoader
from components.distill.baseline import PHASE as BASELINE_PHASE
from components.distill.self_distill import PHASE as SELF_DISTILL_PHASE
from components.distill.workspace import write_json
from components.evaluate.aggregate import aggregate_seeds, compare_runs, prediction_agreement
from components.evaluate.metrics import evaluate_predictions
from components.evaluate.settings import AUTO_GROUP_FIELDS, EvaluateParams, evaluate_settings
from components.faults import pause_point
from components.train.checkpoint import MODEL_META, load_model
from components.train.loop import _configure_threads, predict, resolve_device

TEACHER = "teacher"
FINAL_PHASE = {"dagfm": "finetune", "kd_dagfm_plus": "finetune", "fsdnet": SELF_DISTILL_PHASE}
# metrics aggregated over seeds and compared student vs teacher (those a run has)
AGGREGATED_METRICS = ("auc", "logloss", "ece", "predicted_to_observed_ratio", "gauc")


@dataclass(frozen=True)
class RunModel:
    """One trained model of a run: report name, role (teacher/student/baseline), checkpoint dir."""

    name: str
    role: str
    directory: Path


def discover_models(params, *, require: bool = True) -> list[RunModel]:
    """The teacher, every configured student's final checkpoint and every baseline (module doc).

    With ``require`` a missing checkpoint raises FileNotFoundError naming its ``model.json`` and the
    stage that writes it; without, missing models are left out.
    """
    students_dir = Path(params.distill.out_dir)
    found = [RunModel(TEACHER, "teacher", Path(params.train.out_dir))]
    found += [RunModel(s, "student", students_dir / s / FINAL_PHASE[s]) for s in params.distill.students]
    found += [RunModel(f"baseline_{b}", "baseline", students_dir / f"baseline_{b}" / BASELINE_PHASE)
              for b in params.distill.baselines]
    present = [m for m in found if (m.directory / MODEL_META).is_file()]
    if require and len(present) < len(found):
        missing = next(m for m in found if m not in present)
        stage = "ctrflow train" if missing.role == "teacher" else "ctrflow distill"
        raise FileNotFoundError(
            f"{missing.directory / MODEL_META}: no checkpoint of {missing.name!r}; run `{stage}` first")
    return present


def resolve_group_field(feature_map: FeatureMap, setting: str | None) -> str | None:
    """The categorical field whose ids group rows for gAUC, or None (``setting``: auto/name/None)."""
    if setting is None:
        return None
    names = [f.name for f in feature_map.categorical_fields]
    if setting == "auto":
        return next((n for n in AUTO_GROUP_FIELDS if n in names), None)
    if setting not in names:
        raise ValueError(f"evaluate.group_field: {setting!r} is not a categorical field of the "
                         f"feature map (fields: {names})")
    return setting


def split_groups(path: str | Path, field: str) -> np.ndarray:
    """Group id per row of ``path`` (file order): the encoded id, or a unique negative id for
    OOV/missing rows so that each forms a one-row group, left out of gAUC (module doc)."""
    ids = pq.read_table(path, columns=[field]).column(0).to_numpy().astype(np.int64)
    unknown = (ids == OOV_ID) | (ids == MISSING_ID)
    return np.where(unknown, -1 - np.arange(ids.size, dtype=np.int64), ids)


def roc_points(labels, logits, max_points: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) at every distinct logit threshold, from (0, 0) to (1, 1), subsampled
    evenly by threshold index to at most ``max_points`` points (both endpoints kept)."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both classes")
    order = np.argsort(-z, kind="mergesort")
    ys, zs = y[order], z[order]
    last = np.r_[np.flatnonzero(np.diff(zs)), zs.size - 1]  # last row of each threshold run
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    if fpr.size > max_points:
        keep = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    pause_point("evaluate.write")  # tests: a kill between a written temp file and its rename
    tmp.replace(path)


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def reliability_rows(name: str, metrics: dict) -> list[list[Any]]:
    """``[model, bin, mean_predicted, observed, count]`` for each non-empty reliability bin."""
    rel = metrics["reliability"]
    return [[name, k, p, o, c]
            for k, (p, o, c) in enumerate(zip(rel["mean_predicted"], rel["observed_rate"], rel["count"],
                                              strict=True)) if c > 0]


def run_label(evaluation: dict) -> str:
    """Identity of a run for seed aggregation: its seeds, e.g. ``train=2024,distill=2022``."""
    seeds = evaluation.get("seeds") or {}
    return ",".join(f"{k}={seeds[k]}" for k in sorted(seeds)) or "run"


def aggregate_runs(evaluations: list[dict]) -> dict[str, Any]:
    """Mean ± std per model over several runs' evaluation dicts, and paired student − teacher.

    Models and metrics are those present in every run. Runs are keyed by :func:`run_label`; two runs
    with the same seeds raise ValueError (the same run passed twice). Returns ``{"n", "runs",
    "models": {name: aggregate_seeds(...)}, "vs_teacher": {name: compare_runs(...)}}``.
    """
    if not evaluations:
        raise ValueError("no evaluations to aggregate")
    labels = [run_label(e) for e in evaluations]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"several evaluations share the seeds {dup}; aggregate distinct runs only")
    names = [n for n in evaluations[0]["models"] if all(n in e["models"] for e in evaluations)]
    per_model = {n: {lab: e["models"][n]["metrics"] for lab, e in zip(labels, evaluations, strict=True)}
                 for n in names}
    models, vs_teacher = {}, {}
    for name, runs in per_model.items():
        metrics = [m for m in AGGREGATED_METRICS if all(r.get(m) is not None for r in runs.values())]
        models[name] = aggregate_seeds(runs, metrics)
        if name != TEACHER and TEACHER in per_model:
            shared = [m for m in metrics if all(r.get(m) is not None for r in per_model[TEACHER].values())]
            vs_teacher[name] = compare_runs(runs, per_model[TEACHER], shared)
    return {"n": len(evaluations), "runs": labels, "models": models, "vs_teacher": vs_teacher}


def _load_evaluation(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"evaluate.seed_runs: cannot read {path}: {e}") from e


def _score(model_dir: Path, fmap: FeatureMap, split_path: Path, ev: EvaluateParams, device):
    model, meta = load_model(model_dir, fmap, device=device)
    loader = BatchLoader(split_path, fmap, ev.batch_size, shuffle=False, device=device)
    logits, labels = predict(model, loader, device=device)
    return logits.astype(np.float64), labels.astype(np.float64), meta


def _metrics(labels, logits, groups, ev: EvaluateParams) -> dict:
    try:
        return evaluate_predictions(labels, logits, groups=groups, n_bins=ev.n_bins)
    except ValueError as e:
        if groups is None:
            raise
        out = evaluate_predictions(labels, logits, n_bins=ev.n_bins)
        out["gauc_error"] = str(e)
        return out


def reference_scores(params, processed: Path, split: str) -> dict:
    """What "good" means on this data, scored on ``split``: the gate's LR and the constant predictor
    (from the teacher's metrics JSON, written by train_teacher) and, on a synthetic log, the oracle."""
    from components.evaluate.oracle import oracle_on_split

    refs: dict[str, Any] = {}
    teacher_metrics = Path(params.train.metrics)
    if teacher_metrics.is_file():
        baselines = json.loads(teacher_metrics.read_text()).get("baselines") or {}
        for name in ("lr", "constant"):
            scores = (baselines.get(name) or {}).get(split)
            if scores:
                refs[name] = {"auc": scores["auc"], "logloss": scores["logloss"], "source": str(teacher_metrics)}
    if params.uses_synthetic:
        oracle = oracle_on_split(params.generate.out, processed, split)
        if oracle is not None:
            refs["oracle"] = {**oracle, "source": f"{params.generate.out}.proba.parquet"}
    return refs


def evaluate_run(params) -> dict[str, Any]:
    """Score every model of the run on ``evaluate.split``, write the JSON and plot CSVs (module doc).

    Returns the evaluation dict: ``split``, ``rows``, ``positives``, ``group_field``, ``n_bins``,
    ``device``, ``seeds``, ``models`` (name → ``role``, ``model``, ``checkpoint``, ``metrics``,
    ``agreement_with_teacher``), ``aggregate`` and ``outputs``.
    """
    ev = evaluate_settings(params)
    processed = Path(params.preprocess.out_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    if ev.split not in fmap.splits:
        raise ValueError(f"{processed / 'feature_map.json'}: no {ev.split!r} split "
                         f"(has {sorted(fmap.splits)})")
    split_path = processed / fmap.splits[ev.split]["path"]
    group_field = resolve_group_field(fmap, ev.group_field)
    groups = split_groups(split_path, group_field) if group_field else None
    device = resolve_device(ev.device)
    # The same thread count whatever ran before in this process (train/distill set all cores; a fresh
    # `ctrflow evaluate` would keep torch's default): a float sum's order, so the scores, depend on it.
    _configure_threads(device, 0, 1)
    models: dict[str, dict] = {}
    plots: dict[str, str] = {}
    reliability: list[list[Any]] = []
    teacher_logits = labels0 = None
    for rm in discover_models(params):
        logits, labels, meta = _score(rm.directory, fmap, split_path, ev, device)
        if labels0 is None:
            labels0 = labels
        elif not np.array_equal(labels, labels0):
            raise RuntimeError(f"{split_path}: labels differ between models' scoring passes")
        metrics = _metrics(labels, logits, groups, ev)
        if rm.name == TEACHER:
            teacher_logits = logits
        models[rm.name] = {
            "role": rm.role,
            "model": meta["model"],
            "checkpoint": str(rm.directory),
            "metrics": metrics,
            "agreement_with_teacher": (None if rm.name == TEACHER
                                       else prediction_agreement(logits, teacher_logits)),
        }
        fpr, tpr = roc_points(labels, logits, ev.roc_points)
        plots[f"roc_{rm.name}.csv"] = _csv_text(["fpr", "tpr"], np.c_[fpr, tpr].tolist())
        reliability += reliability_rows(rm.name, metrics)
    plots["reliability.csv"] = _csv_text(["model", "bin", "mean_predicted", "observed", "count"],
                                         reliability)
    result: dict[str, Any] = {
        "split": ev.split,
        "rows": int(labels0.size),
        "positives": int(labels0.sum()),
        "group_field": group_field,
        "n_bins": ev.n_bins,
        "device": str(device),
        "seeds": {"preprocess": params.preprocess.seed, "train": params.train.seed,
                  "distill": params.distill.seed},
        "models": models,
        "references": reference_scores(params, processed, ev.split),
    }
    result["aggregate"] = aggregate_runs([result, *(_load_evaluation(p) for p in ev.seed_runs)])
    plots_dir = Path(ev.plots_dir)
    result["outputs"] = {"evaluation": ev.out, "plots": sorted(str(plots_dir / n) for n in plots)}
    for name, text in plots.items():
        _atomic_write_text(plots_dir / name, text)
    write_json(ev.out, result)
    return result
