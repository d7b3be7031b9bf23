"""One function per pipeline stage: (settings, input paths) → output paths.

The three doors into the pipeline — DVC stage commands (`ctrflow <stage>`), the Prefect flow
(flows/pipeline.py) and the CLI — all call these functions, so they cannot drift apart. Nothing here
imports Prefect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.config import Params
from components.train.gate import GateFailed  # noqa: F401  (re-exported: the stage raises it)


@dataclass(frozen=True)
class StageResult:
    """What a stage wrote and a one-line human summary of it."""

    outputs: tuple[str, ...]
    summary: str
    details: dict


def output_paths(params: Params) -> dict[str, list[str]]:
    """Every file or directory each stage writes (its dvc.yaml outs and metrics, plus the plot data of
    evaluate/profile and the study trials of train/distill), by DVC stage name."""
    g, ev, tune = params.generate, params.evaluate, params.tune
    return {
        "generate": [g.out, f"{g.out}.proba.parquet", f"{g.out}.oracle.json"],
        "validate": [params.validation.out_dir],
        "preprocess": [params.preprocess.out_dir],
        "train_teacher": [params.train.out_dir, params.train.metrics, params.train.curve, tune.trials_dir],
        "distill": [params.distill.out_dir, params.distill.logit_cache_dir, params.distill.metrics,
                    tune.trials_dir],
        "evaluate": [ev.out, ev.plots_dir],
        "profile": [ev.profile_out, ev.plots_dir],
        "report": [ev.report_dir],
    }


def sweep_leftovers(params: Params, stages: list[str] | None = None, log=None) -> list[Path]:
    """Delete what a killed run left half-written in and beside the outputs of ``stages`` (default all):
    temporary files and directories that were never renamed into place. Hold the run lock."""
    from components.atomic_dir import sweep_leftovers as sweep

    paths = output_paths(params)
    roots = [r for name in (stages or list(paths)) for r in paths[name]]
    return sweep(roots, log=log)


def generate_stage(params: Params, fmt: str | None = None, rows: int | None = None,
                   seed: int | None = None, out: str | Path | None = None) -> StageResult:
    """Write the synthetic raw log (and its true click probabilities) per ``params.generate``."""
    from components.data.generate import generate

    g = params.generate
    log = generate(fmt or g.format, rows or g.rows, g.seed if seed is None else seed, Path(out or g.out))
    summary = (f"generated {log.rows:,} {fmt or g.format} rows → {log.path} "
               f"(CTR {log.positives / max(log.rows, 1):.3f}, oracle AUC {log.oracle_auc:.4f}, "
               f"oracle LogLoss {log.oracle_logloss:.4f})")
    return StageResult((str(log.path), str(log.proba_path)), summary,
                       {"rows": log.rows, "positives": log.positives,
                        "oracle_auc": log.oracle_auc, "oracle_logloss": log.oracle_logloss})


def read_raw(params: Params, fmt: str | None = None, path: str | Path | None = None,
             require_label: bool = True):
    """Open the raw log named by params (or the explicit fmt/path) as a lazy SourceTable."""
    from components.data.formats import read_source

    default_fmt, default_path = params.raw_input()
    return read_source(fmt or default_fmt, Path(path or default_path), params=params,
                       require_label=require_label)


def validate_stage(params: Params, fmt: str | None = None, path: str | Path | None = None,
                   out_dir: str | Path | None = None) -> StageResult:
    """Run the validation gate; raises DataFormatError / ValidationFailed on bad input.

    On success writes ``<out_dir>/validation.json`` and ``<out_dir>/data_docs/``; on failure the
    previous good outputs are left untouched.
    """
    from components.data.validate import validate_source

    table = read_raw(params, fmt, path)
    out = Path(out_dir or params.validation.out_dir)
    report = validate_source(table, params.validation, out)
    rows = report.get("rows")
    summary = f"validation passed: {table.main_file} ({table.format}, {rows:,} rows) → {out}/validation.json"
    return StageResult((str(out),), summary, report)


def _require_passed_gate(params: Params, table) -> None:
    """Preprocess runs only behind a passed gate for the same input files."""
    report_path = Path(params.validation.out_dir) / "validation.json"
    if not report_path.exists():
        raise FileNotFoundError(
            f"{report_path}: no validation report; run `ctrflow validate` first (the gate must pass "
            f"before preprocessing)")
    report = json.loads(report_path.read_text())
    if not report.get("success", False):
        raise RuntimeError(f"{report_path}: the last validation failed; fix the input and re-validate")
    validated = [str(Path(f).resolve()) for f in report.get("files", [])]
    current = [str(Path(f).resolve()) for f in table.files]
    if validated and validated[0] != current[0]:
        raise RuntimeError(f"{report_path} validated {validated[0]}, not the current input "
                           f"{current[0]}; run `ctrflow validate` first")


def preprocess_stage(params: Params, require_gate: bool = True) -> StageResult:
    """Split, fit vocabularies on train, encode → Parquet splits + feature_map.json."""
    from components.data.preprocess import preprocess

    table = read_raw(params)
    if require_gate:
        _require_passed_gate(params, table)
    out = Path(params.preprocess.out_dir)
    fmap = preprocess(table, params.preprocess, out)
    rows = {k: v.get("rows") for k, v in fmap.splits.items()}
    summary = (f"preprocessed {table.main_file} → {out}: {fmap.num_fields} fields, "
               f"{sum(fmap.vocab_sizes):,} ids, rows {rows}")
    return StageResult((str(out),), summary, {"splits": fmap.splits, "num_fields": fmap.num_fields})


def train_stage(params: Params, model: str | None = None, resume: bool = True) -> StageResult:
    """Train the teacher (``train.model`` or ``model``) on the preprocessed splits.

    With ``train.tune.n_trials`` > 0 an Optuna study over ``train.tune.search_space`` picks it
    instead (:func:`components.train.tuning.tune_teacher`: resumed from its storage, its best
    trial's checkpoint kept); ``resume`` applies to a single run only (each trial starts afresh).
    """
    tp = params.train if model is None else params.train.model_copy(update={"model": model})
    if tp.tune.n_trials > 0:
        from components.train.tuning import tune_teacher

        res = tune_teacher(tp, params.tune, params.preprocess.out_dir)
    else:
        from components.train.teacher import train_teacher

        res = train_teacher(tp, params.preprocess.out_dir, resume=resume)
    m = res.metrics
    test = m.get("test") or {}
    verdict = m.get("gate") or {}
    if verdict and not verdict["passed"] and tp.gate.on_fail == "fail":
        raise GateFailed(f"{verdict['message']} (train.gate.on_fail: fail; {res.metrics_path} has the "
                         f"numbers; set train.gate.on_fail: warn to distil anyway)")
    warnings = [verdict["message"]] if verdict and not verdict["passed"] else []
    tuning = m.get("tuning")
    tuned = (f"; tuned: best of {len(tuning['trials'])} trial(s) is {tuning['best_trial']} in study "
             f"{tuning['study']}" if tuning else "")
    summary = (f"trained {tp.model}: test AUC {test.get('auc', float('nan')):.4f}, "
               f"LogLoss {test.get('logloss', float('nan')):.4f} (best epoch {m['best_epoch']} of "
               f"{m['epochs']}, {m['train_samples_per_s'] or 0:,.0f} samples/s on {m['device']}{tuned}) "
               f"→ {res.model_dir}, {res.metrics_path}; "
               + (f"WARNING: {warnings[0]}" if warnings else verdict.get("message", "")))
    return StageResult((str(res.model_dir), str(res.metrics_path), str(res.curve_path)), summary,
                       {**m, "warnings": warnings})


def distill_stage(params: Params) -> StageResult:
    """Distil the teacher into every configured student (Optuna-tuned) and train the baselines."""
    from components.distill.students import distill_students

    summaries = distill_students(params)
    path = Path(params.distill.metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({s["student"]: s for s in summaries}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    lines = [f"{s['student']}: test AUC {s['test']['auc']:.4f}, LogLoss {s['test']['logloss']:.4f}"
             for s in summaries if s.get("test")]
    summary = f"distilled {len(summaries)} student run(s) → {params.distill.out_dir}, {path}: " + "; ".join(lines)
    return StageResult((params.distill.out_dir, str(path)), summary, {"students": summaries})


def evaluate_stage(params: Params) -> StageResult:
    """Score the teacher, every student and baseline on the test split: AUC, LogLoss, ECE, gAUC, agreement."""
    from components.evaluate.models import evaluate_run

    result = evaluate_run(params)
    ev = params.evaluate
    summary = f"evaluated {len(result.get('models', result))} model(s) → {ev.out}, {ev.plots_dir}/"
    return StageResult((ev.out, ev.plots_dir), summary, result)


def profile_stage(params: Params) -> StageResult:
    """FLOPs per sample (every op), parameters, file size and CPU latency of every model of the run."""
    from components.profile.run import profile_run

    result = profile_run(params)
    summary = f"profiled {len(result.get('models', result))} model(s) → {params.evaluate.profile_out}"
    return StageResult((params.evaluate.profile_out,), summary, result)


def report_stage(params: Params) -> StageResult:
    """reports/report.md + report.html, then the headline table."""
    from components.report.build import build_report, headline_table

    md, html = build_report(params)
    summary = f"report → {md} and {html}\n{headline_table(params)}"
    return StageResult((str(md), str(html)), summary, {})
