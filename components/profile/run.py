"""Profile every trained model of a run: the ``profile`` stage's logic.

For each model of :func:`components.evaluate.models.discover_models` (teacher, students' final
checkpoints, baselines), loaded on the CPU:

- FLOPs and MACs per sample of the whole forward (:func:`count_flops` on a synthetic batch of
  ``evaluate.flops_batch_size``), with the per-op and per-category breakdowns;
- parameters split embedding / dense and the checkpoint's weights-file size (:func:`model_size`
  with the ``model.safetensors`` path);
- batch-1 p50/p99 latency and large-batch throughput of the model in its **serving form**
  (:func:`components.serve.optimize.prepare_for_inference` with params.yaml's ``inference:``
  settings, what ``ctrflow predict`` and ``ctrflow export`` run: BatchNorm folded, eval-mode row
  blocks of ``inference.block_rows``; recorded under ``served_as``) (:func:`measure_latency` with
  ``evaluate.latency_threads`` threads, ``latency_warmup`` / ``latency_runs`` batch-1 calls and
  ``throughput_runs`` calls at ``throughput_batch_size``);
- ``achieved_gflops_per_s``: FLOPs per sample × throughput / 1e9, from the two numbers above
  (:func:`achieved_gflops`);
- ``time_breakdown`` (serving form too, without ``torch.compile`` whose fused graph has no
  module boundaries): shares of the forward's CPU time in the embedding lookup, the interaction and
  the MLPs, and the top ``evaluate.profile_top_ops`` aten ops by self CPU time, from
  ``evaluate.profile_runs`` forward calls at ``throughput_batch_size`` with ``latency_threads``
  threads under torch.profiler (:func:`time_breakdown`);
- for every model but the teacher, its FLOPs as a fraction of the teacher's
  (:func:`flops_fraction`: total, without gathers, matmul only), ``below_claim``: whether the
  total fraction is below ``evaluate.flops_claim`` (KD-DAGFM's "< 21.5 % of the teacher's FLOPs"),
  and its speed relative to the teacher's (:func:`speed_vs_teacher`: ``throughput_ratio``,
  ``p50_latency_ratio``, ``speedup_per_flop`` = throughput ratio × FLOPs fraction, 1.0 = the FLOP
  saving became speed in full), computed from the latency numbers stored beside it.

Outputs (temporary file + rename): ``evaluate.profile_out`` (JSON) and
``<evaluate.plots_dir>/pareto.csv`` with ``model,flops_per_sample,test_auc``. The test AUC is the
evaluation JSON's (``evaluate.out``, when it exists and was computed on the test split), else the
training metrics' (``train.metrics`` / ``distill.metrics``), else empty.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from components.data.feature_map import FeatureMap
from components.distill.workspace import write_json
from components.evaluate.models import TEACHER, discover_models
from components.evaluate.settings import EvaluateParams, evaluate_settings
from components.faults import pause_point
from components.serve.optimize import prepare_for_inference
from components.train.checkpoint import MODEL_WEIGHTS, load_model

from .breakdown import time_breakdown
from .compare import flops_fraction
from .flops import count_flops
from .latency import LatencyReport, measure_latency
from .size import model_size
from .speed import achieved_gflops, speed_vs_teacher


def _read_json(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


def reported_test_aucs(params, ev: EvaluateParams) -> dict[str, float]:
    """Test AUC per model name: evaluation JSON (test split) first, then the training metrics."""
    out: dict[str, float] = {}
    teacher = _read_json(params.train.metrics) or {}
    if (teacher.get("test") or {}).get("auc") is not None:
        out[TEACHER] = float(teacher["test"]["auc"])
    for name, s in (_read_json(params.distill.metrics) or {}).items():
        if (s.get("test") or {}).get("auc") is not None:
            out[name] = float(s["test"]["auc"])
    evaluation = _read_json(ev.out)
    if evaluation and evaluation.get("split") == "test":
        out.update({n: float(m["metrics"]["auc"]) for n, m in evaluation.get("models", {}).items()})
    return out


def _profile_model(
    model, fmap: FeatureMap, weights: Path, ev: EvaluateParams, inference
) -> tuple[dict, Any, LatencyReport]:
    flops = count_flops(model, fmap, ev.flops_batch_size)
    size = model_size(model, weights)
    served = prepare_for_inference(model, inference)
    latency = measure_latency(
        served, fmap, threads=ev.latency_threads, warmup=ev.latency_warmup,
        single_runs=ev.latency_runs, throughput_batch_size=ev.throughput_batch_size,
        batch_runs=ev.throughput_runs,
    )  # fmt: skip
    uncompiled = served if not inference.compile else prepare_for_inference(
        model, inference.model_copy(update={"compile": False}))
    breakdown = time_breakdown(
        uncompiled, fmap, batch_size=ev.throughput_batch_size, threads=ev.latency_threads,
        runs=ev.profile_runs, top_ops=ev.profile_top_ops,
    )  # fmt: skip
    record = {
        "flops_per_sample": flops.flops_per_sample,
        "macs_per_sample": flops.macs_per_sample,
        "flops": flops.to_dict(),
        "parameters": {"total": size.total_parameters, "embedding": size.embedding_parameters,
                       "dense": size.dense_parameters},
        "checkpoint_bytes": size.file_bytes,
        "latency": latency.to_dict(),
        "achieved_gflops_per_s": achieved_gflops(
            flops.flops_per_sample, latency.throughput_samples_per_s
        ),
        "time_breakdown": breakdown.to_dict(),
        "served_as": {"fold_batch_norm": inference.fold_batch_norm, "quantize": inference.quantize,
                      "compile": inference.compile, "block_rows": getattr(served, "block_rows", None)},
    }
    return record, flops, latency


def profile_run(params) -> dict[str, Any]:
    """Profile every model of the run, write ``evaluate.profile_out`` and ``pareto.csv`` (module doc).

    Returns ``{"models": {name: {role, model, checkpoint, flops_per_sample, macs_per_sample, flops,
    parameters, checkpoint_bytes, latency, achieved_gflops_per_s, time_breakdown, served_as, vs_teacher}},
    "flops_claim", "settings", "host", "outputs"}``; ``vs_teacher`` is None for the teacher.
    """
    ev = evaluate_settings(params)
    fmap = FeatureMap.load(Path(params.preprocess.out_dir) / "feature_map.json")
    models: dict[str, dict] = {}
    reports = {}
    latencies = {}
    for rm in discover_models(params):
        model, meta = load_model(rm.directory, fmap, device="cpu")
        record, reports[rm.name], latencies[rm.name] = _profile_model(
            model, fmap, rm.directory / MODEL_WEIGHTS, ev, params.inference
        )
        models[rm.name] = {"role": rm.role, "model": meta["model"], "checkpoint": str(rm.directory),
                           **record}
        del model
    for name, record in models.items():
        if name == TEACHER:
            record["vs_teacher"] = None
            continue
        cmp = flops_fraction(reports[name], reports[TEACHER]).to_dict()
        record["vs_teacher"] = {
            **cmp, "below_claim": cmp["fraction"] < ev.flops_claim,
            **speed_vs_teacher(latencies[name], latencies[TEACHER], cmp["fraction"]),
        }  # fmt: skip
    aucs = reported_test_aucs(params, ev)
    pareto = ["model,flops_per_sample,test_auc"] + [
        f"{n},{r['flops_per_sample']!r},{aucs[n]!r}" if n in aucs else f"{n},{r['flops_per_sample']!r},"
        for n, r in models.items()
    ]
    pareto_path = Path(ev.plots_dir) / "pareto.csv"
    result = {
        "models": models,
        "flops_claim": ev.flops_claim,
        "settings": {k: getattr(ev, k) for k in (
            "flops_batch_size", "latency_threads", "latency_warmup", "latency_runs",
            "throughput_batch_size", "throughput_runs", "profile_runs", "profile_top_ops")},
        "host": {"machine": platform.machine(), "processor": platform.processor() or None,
                 "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "outputs": {"profile": ev.profile_out, "pareto": str(pareto_path)},
    }
    pareto_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pareto_path.with_name(f".{pareto_path.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(pareto) + "\n")
    pause_point("profile.write")  # tests: a kill between a written temp file and its rename
    tmp.replace(pareto_path)
    write_json(ev.profile_out, result)
    return result
