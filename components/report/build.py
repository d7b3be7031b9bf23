"""The run report: ``<evaluate.report_dir>/report.md`` (+ ``figures/*.png``) and a self-contained
``report.html`` (figures as base64 PNG, no external URL), built from the run's artefacts
(:mod:`.sources`); plus :func:`headline_table`, the plain-text summary the CLI prints.

Sections (:data:`SECTIONS`, in order): data summary (rows per split, fields and vocabulary sizes,
the validation gate's result, the synthetic log's oracle AUC), teacher and students (the comparison
table of :mod:`.tables`, the FLOPs claim, where inference time goes and the top ops by self CPU
time (:mod:`.timing`), agreement with the teacher, paired student − teacher differences), the
Pareto plot (test AUC vs FLOPs, log x), ROC curves, reliability curves, the
teacher's training curve, the tuned hyperparameters (the teacher's study from ``tuning`` of
``train.metrics`` when it was tuned; ``tuned`` of ``distill.metrics`` and each student study's
``best.json`` / ``trials.csv``) and the environment (package versions, devices, seeds, git
commit, DVC output hashes). A section whose inputs are missing says which file and stage provide them.

The report directory is built whole in a temporary sibling and swapped in at the end.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from components.atomic_dir import link_or_copy, link_tree
from components.evaluate.models import TEACHER
from components.evaluate.settings import EvaluateParams, evaluate_settings
from components.faults import pause_point

from .document import (
    Block,
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Preformatted,
    Table,
    render_html,
    render_markdown,
)
from .environment import dvc_output_hashes, git_state, package_versions
from .sources import RunArtifacts, load_artifacts
from .tables import (
    COMPARISON_HEADER,
    MISSING,
    comparison_cells,
    fmt,
    gate_line,
    headline_text,
    model_rows,
    reference_rows,
)
from .timing import SPEED_HEADER, TOP_OPS_HEADER, speed_cells, top_ops_cells

TITLE = "ctrflow run report"
SECTIONS = (
    "Data summary",
    "Teacher and students",
    "Accuracy vs cost (Pareto)",
    "ROC curves",
    "Calibration (reliability)",
    "Teacher training curve",
    "Tuned hyperparameters",
    "Environment",
)
FIGURES_DIR = "figures"


def _missing(what: str, path: str, stage: str) -> Paragraph:
    return Paragraph(f"Not available: {what} ({path}) not found; run `ctrflow {stage}`.")


# ---------------------------------------------------------------- sections


def _data_section(art: RunArtifacts) -> list[Block]:
    blocks: list[Block] = [Heading(SECTIONS[0])]
    fm = art.feature_map
    if fm is None:
        blocks.append(_missing("the feature map", art.paths["feature_map"], "preprocess"))
    else:
        p = fm.params
        blocks.append(Paragraph(
            f"Format {fm.format}; {len(fm.categorical_fields)} categorical and "
            f"{len(fm.dense_fields)} dense fields; {sum(fm.vocab_sizes):,} embedding ids in all; "
            f"split {p.get('split', MISSING)} {p.get('split_ratios', '')}, min_count "
            f"{p.get('min_count', MISSING)}, numeric {p.get('numeric', MISSING)}; source hash "
            f"{fm.source_hash[:12] or MISSING}."))
        split_rows = []
        order = {"train": 0, "valid": 1, "test": 2}
        for name, s in sorted(fm.splits.items(), key=lambda kv: order.get(kv[0], 3)):
            rows, pos = s.get("rows"), s.get("positives")
            ctr = fmt(pos / rows) if rows and pos is not None else MISSING
            split_rows.append((name, f"{rows:,}" if rows is not None else MISSING,
                               f"{pos:,}" if pos is not None else MISSING, ctr))
        blocks.append(Table(("split", "rows", "positives", "CTR"), tuple(split_rows)))
        blocks.append(Table(("field", "type", "raw kind", "vocab size"), tuple(
            (f.name, f.type, f.source_kind, f"{f.vocab_size:,}" if f.type == "categorical" else MISSING)
            for f in fm.fields)))
    v = art.validation
    if v is None:
        blocks.append(_missing("the validation report", art.paths["validation"], "validate"))
    else:
        checks = v.get("checks", [])
        failed = [c for c in checks if not c.get("success", True)]
        gx = v.get("gx") or {}
        blocks.append(Paragraph(
            f"Validation gate: {'passed' if v.get('success') else 'FAILED'} on "
            f"{v.get('rows', 0):,} rows of {', '.join(v.get('files', [])) or MISSING}; "
            f"{len(checks)} checks, {len(failed)} failed (Great Expectations "
            f"{v.get('gx_version', MISSING)}, {'sampled' if gx.get('sampled') else 'every row'})."))
        if failed:
            blocks.append(Bullets(tuple(
                f"{c.get('rule')} on {c.get('column')}: {c.get('expect')} (observed "
                f"{c.get('observed_value')}, first bad line {c.get('first_bad_line')})" for c in failed)))
    if art.oracle is not None:
        o = art.oracle
        blocks.append(Paragraph(
            f"Synthetic log: {o.get('rows', 0):,} rows, CTR {fmt(o.get('ctr'))}; oracle (true click "
            f"probabilities) AUC {fmt(o.get('oracle_auc'))}, LogLoss {fmt(o.get('oracle_logloss'))}: "
            f"the ceiling any model can reach on this data."))
    return blocks


def _models_section(art: RunArtifacts, rows: list[dict[str, Any]], ev: EvaluateParams) -> list[Block]:
    blocks: list[Block] = [Heading(SECTIONS[1])]
    if not rows:
        return blocks + [_missing("model metrics", art.paths["teacher"], "train")]
    blocks.append(Table(COMPARISON_HEADER, tuple(comparison_cells(r) for r in rows)))
    sources = sorted({r["source"] for r in rows if r["source"]})
    notes = [f"Metrics from: {', '.join(sources) or MISSING}."]
    if art.evaluation is None:
        notes.append(f"No evaluation JSON ({art.paths['evaluation']}): run `ctrflow evaluate` for "
                     "ECE, gAUC and agreement.")
    if art.profile is None:
        notes.append(f"No profile JSON ({art.paths['profile']}): run `ctrflow profile` for FLOPs, "
                     "parameters and latency.")
    else:
        s = art.profile.get("settings", {})
        notes.append(f"FLOPs per sample of the whole forward (embedding gathers included) at batch "
                     f"{s.get('flops_batch_size')}; latency on the CPU with {s.get('latency_threads')} "
                     f"thread(s): batch-1 p50/p99 over {s.get('latency_runs')} calls, throughput at "
                     f"batch {s.get('throughput_batch_size')}.")
    blocks.append(Paragraph(" ".join(notes)))
    claims = [f"{r['name']}: {100 * r['flops_fraction']:.2f} % of the teacher's FLOPs — "
              f"{'below' if r['below_claim'] else 'NOT below'} the {100 * ev.flops_claim:.1f} % claim"
              for r in rows if r["name"] != TEACHER and r["flops_fraction"] is not None]
    if claims:
        blocks += [Heading(f"FLOPs claim (KD-DAGFM: < {100 * ev.flops_claim:.1f} % of the teacher)", 3),
                   Bullets(tuple(claims))]
    blocks += _speed_blocks(art, [r["name"] for r in rows])
    models = (art.evaluation or {}).get("models", {})
    agreement = [(n, m["agreement_with_teacher"]) for n, m in models.items()
                 if m.get("agreement_with_teacher")]
    if agreement:
        blocks += [Heading("Agreement with the teacher", 3), Table(
            ("model", "mean |Δ logit|", "RMS Δ logit", "mean |Δ p|", "Pearson (logits)"),
            tuple((n, fmt(a["mean_abs_logit_diff"]), fmt(a["rms_logit_diff"]),
                   fmt(a["mean_abs_prob_diff"]), fmt(a["pearson_logits"])) for n, a in agreement))]
    vs = ((art.evaluation or {}).get("aggregate") or {}).get("vs_teacher", {})
    paired = [(n, c["auc"]) for n, c in vs.items() if "auc" in c]
    if paired:
        n_runs = (art.evaluation.get("aggregate") or {}).get("n")
        blocks += [Heading("Student − teacher test AUC, paired by seed", 3), Table(
            ("model", "n", "mean Δ AUC", "std Δ", "t", "p"),
            tuple((n, str(c["n"]), f"{c['mean_diff']:+.4f}", fmt(c["std_diff"]),
                   fmt(c["t_statistic"], 3), fmt(c["p_value"], 4)) for n, c in paired)),
            Paragraph(f"{n_runs} run(s) aggregated; with one run there is no spread and no test.")]
    return blocks


def _speed_blocks(art: RunArtifacts, order: list[str]) -> list[Block]:
    """Where inference time goes (GFLOP/s, time shares, speed vs the teacher) and the top ops."""
    prof = (art.profile or {}).get("models", {})
    names = [n for n in order if n in prof]
    if not names:
        return []
    s = art.profile.get("settings", {})
    blocks: list[Block] = [
        Heading("Where inference time goes", 3),
        Table(SPEED_HEADER, tuple(speed_cells(n, prof[n]) for n in names)),
        Paragraph(
            f"GFLOP/s = FLOPs per sample × throughput at batch {s.get('throughput_batch_size')}. "
            f"Time shares from torch.profiler over {s.get('profile_runs', MISSING)} forward calls at "
            f"that batch with {s.get('latency_threads')} thread(s): embedding = the embedding "
            "lookup, MLP = the MLP stacks, interaction = the rest of the forward (interaction "
            "layers, heads, glue); outside aten ops = the part of the forward in Python and "
            "dispatch rather than in any op's kernel. Throughput and p50 latency as multiples of "
            "the teacher's (> 1 throughput, < 1 latency: faster); speedup per FLOP = throughput "
            "ratio × FLOPs fraction: 1.0 when the FLOP saving became speed in full, lower when it "
            "did not."),
    ]
    ops = [row for n in names for row in top_ops_cells(n, prof[n])]
    if ops:
        blocks += [Heading("Top ops by self CPU time", 3), Table(TOP_OPS_HEADER, tuple(ops))]
    return blocks


def _pareto_section(art: RunArtifacts, rows: list[dict[str, Any]]) -> list[Block]:
    from .plots import pareto_png

    blocks: list[Block] = [Heading(SECTIONS[2])]
    points = [(r["name"], r["flops"], r["auc"]) for r in rows
              if r["flops"] is not None and r["auc"] is not None]
    if not points:
        return blocks + [_missing("FLOPs and AUC", art.paths["profile"], "profile")]
    return blocks + [Figure("pareto", "Test AUC vs FLOPs per sample (log scale)", pareto_png(points))]


def _roc_section(art: RunArtifacts, order: list[str]) -> list[Block]:
    from .plots import roc_png

    blocks: list[Block] = [Heading(SECTIONS[3])]
    if not art.roc:
        return blocks + [_missing("ROC curves", f"{art.paths['plots_dir']}/roc_<model>.csv", "evaluate")]
    aucs = {n: m["metrics"]["auc"] for n, m in art.evaluation["models"].items()}
    curves = {n: art.roc[n] for n in order if n in art.roc}
    return blocks + [Figure("roc", f"ROC curves on the {art.evaluation.get('split')} split",
                            roc_png(curves, aucs))]


def _reliability_section(art: RunArtifacts, order: list[str]) -> list[Block]:
    from .plots import reliability_png

    blocks: list[Block] = [Heading(SECTIONS[4])]
    if art.evaluation is None:
        return blocks + [_missing("the evaluation", art.paths["evaluation"], "evaluate")]
    models = {n: art.evaluation["models"][n] for n in order if n in art.evaluation["models"]}
    curves = {n: (m["metrics"]["reliability"]["mean_predicted"], m["metrics"]["reliability"]["observed_rate"])
              for n, m in models.items()}
    table = Table(("model", "ECE", "predicted CTR", "observed CTR", "predicted / observed"), tuple(
        (n, fmt(m["metrics"]["ece"]), fmt(m["metrics"]["predicted_positive_rate"]),
         fmt(m["metrics"]["observed_positive_rate"]), fmt(m["metrics"]["predicted_to_observed_ratio"], 3))
        for n, m in models.items()))
    fig = Figure("reliability", f"Reliability: {art.evaluation.get('n_bins')} equal-width probability bins",
                 reliability_png(curves))
    return blocks + [table, fig]


def _curve_section(art: RunArtifacts) -> list[Block]:
    from .plots import curve_png

    blocks: list[Block] = [Heading(SECTIONS[5])]
    if not art.curve:
        return blocks + [_missing("the training curve", art.paths["curve"], "train")]
    t = art.teacher or {}
    blocks.append(Paragraph(f"Teacher {t.get('model', MISSING)}: best epoch {t.get('best_epoch', MISSING)} "
                            f"of {t.get('epochs', MISSING)} on {t.get('device', MISSING)}."))
    return blocks + [Figure("teacher_curve", "Teacher: validation AUC and losses per epoch",
                            curve_png(art.curve))]


def _value(v: Any) -> str:
    return MISSING if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def _teacher_tuning_blocks(art: RunArtifacts) -> list[Block]:
    """The teacher's study (``tuning`` of ``train.metrics``): summary, best params, trials table."""
    t = (art.teacher or {}).get("tuning")
    if not t:
        return []
    best = ", ".join(f"{k} = {_value(v)}" for k, v in sorted((t.get("best_params") or {}).items()))
    trials = t.get("trials") or []
    keys = sorted({k for r in trials for k in r.get("params") or {}})
    rows = tuple((str(r.get("number")), str(r.get("state")),
                  *(_value((r.get("params") or {}).get(k)) for k in keys),
                  fmt(r.get("valid_auc")), _value(r.get("epochs")), r.get("note") or "")
                 for r in trials)
    return [
        Heading("Teacher tuning", 3),
        Paragraph(f"Study {t.get('study', MISSING)} ({t.get('storage', MISSING)}): "
                  f"{t.get('n_complete', MISSING)} complete, {t.get('n_pruned', MISSING)} pruned, "
                  f"{t.get('n_failed', MISSING)} failed trials (budget {t.get('n_trials', MISSING)}). "
                  f"Best trial {t.get('best_trial', MISSING)} (validation AUC "
                  f"{fmt(t.get('best_value'))}), kept as the teacher: {best or MISSING}. Valid AUC "
                  f"of a complete trial: its best checkpoint; of a pruned one: its last evaluation."),
        Table(("number", "state", *keys, "valid AUC", "epochs", "note"), rows),
    ]


def _tuned_section(art: RunArtifacts) -> list[Block]:
    blocks: list[Block] = [Heading(SECTIONS[6]), *_teacher_tuning_blocks(art)]
    tuned = {n: s["tuned"] for n, s in (art.students or {}).items() if s.get("tuned")}
    if not tuned and not art.studies:
        return blocks + [Paragraph(f"No tuned student ({art.paths['students']} lists none; "
                                   "run `ctrflow distill` with a tune.search_space entry).")]
    for name in sorted(set(tuned) | set(art.studies)):
        blocks.append(Heading(name, 3))
        t = tuned.get(name)
        if t:
            values = ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}"
                               for k, v in sorted((t.get("params") or {}).items()))
            blocks.append(Paragraph(
                f"Best trial {t.get('best_trial')} (validation AUC {fmt(t.get('best_valid_auc'))}; "
                f"{t.get('complete')} complete, {t.get('pruned')} pruned trials): {values}."))
        study = art.studies.get(name)
        if study and study["best"]:
            b = study["best"]
            blocks.append(Paragraph(
                f"Study {b.get('study_name')} ({b.get('direction')}): {b.get('n_complete')} complete, "
                f"{b.get('n_pruned')} pruned, {b.get('n_failed')} failed trials."))
        if study and study["trials"]:
            header = tuple(k for k in study["trials"][0] if k not in ("datetime_start", "datetime_complete"))
            blocks.append(Table(header, tuple(tuple(r.get(k) or "" for k in header)
                                              for r in study["trials"])))
    return blocks


def _environment_section(art: RunArtifacts, params) -> list[Block]:
    blocks: list[Block] = [Heading(SECTIONS[7])]
    versions = package_versions()
    blocks.append(Table(("package", "version"), tuple((k, v or "not installed") for k, v in versions.items())))
    devices = [f"teacher training: {(art.teacher or {}).get('device', MISSING)}",
               f"evaluation: {(art.evaluation or {}).get('device', MISSING)}"]
    host = (art.profile or {}).get("host")
    if host:
        devices.append(f"profiling: CPU {host.get('machine')}, {host.get('cpu_count')} cores, "
                       f"torch {host.get('torch')}")
    git = git_state()
    seeds = {"generate": params.generate.seed, "preprocess": params.preprocess.seed,
             "train": params.train.seed, "distill": params.distill.seed, "tune": params.tune.seed}
    blocks.append(Bullets((
        "devices: " + "; ".join(devices),
        "seeds: " + ", ".join(f"{k} {v}" for k, v in seeds.items()),
        f"git commit: {git['commit'] or 'not a git checkout'}"
        + (" (uncommitted changes)" if git["dirty"] else ""),
    )))
    hashes = dvc_output_hashes()
    if hashes:
        blocks.append(Table(("stage", "output", "DVC hash"),
                            tuple((h["stage"], h["path"], h["hash"]) for h in hashes)))
    else:
        blocks.append(Paragraph("No dvc.lock here: outputs not recorded by DVC."))
    return blocks


# ---------------------------------------------------------------- assembly


def report_blocks(params, art: RunArtifacts | None = None) -> list[Block]:
    """Every block of the report, title first, then :data:`SECTIONS` in order."""
    ev = evaluate_settings(params)
    art = art or load_artifacts(params, ev)
    rows = model_rows(art)
    blocks: list[Block] = [Heading(TITLE, 1), Preformatted(headline_text(rows + reference_rows(art)))]
    gate = gate_line(art)
    if gate is not None:
        blocks.append(Paragraph(gate if gate.startswith("baseline gate passed") else f"WARNING: {gate}"))
    blocks += _data_section(art)
    blocks += _models_section(art, rows, ev)
    blocks += _pareto_section(art, rows)
    order = [r["name"] for r in rows]
    blocks += _roc_section(art, order)
    blocks += _reliability_section(art, order)
    blocks += _curve_section(art)
    blocks += _tuned_section(art)
    blocks += _environment_section(art, params)
    return blocks


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    pause_point("report.write")  # tests: a kill between a written temp file and its rename
    tmp.replace(path)


_LEFTOVER = re.compile(r"^\..+\.(tmp|old|partial)(-\d+)?$")  # a killed writer's temporary: not carried over
REPORT_FILES = ("report.md", "report.html", FIGURES_DIR)
"""What :func:`build_report` writes into ``evaluate.report_dir``; anything else there is carried over."""


def build_report(params) -> tuple[Path, Path]:
    """Write ``report.md`` (+ ``figures/``) and ``report.html`` into ``evaluate.report_dir``.

    The whole directory is built in a sibling ``.<name>.tmp-<pid>`` and swapped in at the end
    (:func:`components.atomic_dir.replace_dir`): a failed write (disk full, read-only) leaves the
    earlier report as it was, never a new report.md beside an old report.html, and no temporary.
    Files in the directory that the report does not write are carried over (hard links)."""
    from components.atomic_dir import replace_dir

    ev = evaluate_settings(params)
    out = Path(ev.report_dir)
    blocks = report_blocks(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        (staged / FIGURES_DIR).mkdir(parents=True)
        for b in blocks:
            if isinstance(b, Figure):
                _write(staged / FIGURES_DIR / f"{b.name}.png", b.png)
        _write(staged / "report.md", render_markdown(blocks, FIGURES_DIR).encode())
        _write(staged / "report.html", render_html(blocks, TITLE).encode())
        if out.is_dir():
            for entry in out.iterdir():
                if entry.name not in REPORT_FILES and not _LEFTOVER.match(entry.name):
                    _carry_over(entry, staged / entry.name)
        replace_dir(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return out / "report.md", out / "report.html"


def _write(path: Path, data: bytes) -> None:
    """:func:`_atomic_write`; a failed write's OSError names ``path`` (write(2) errors carry no name)."""
    try:
        _atomic_write(path, data)
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _carry_over(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        link_tree(src, dst)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        link_or_copy(src, dst)


def headline_table(params) -> str:
    """Plain-text table (model, role, test AUC ± std (n), LogLoss, FLOPs, % teacher, p50) of the run,
    with the reference rows (LR, constant predictor, oracle) and the baseline gate's verdict under it."""
    art = load_artifacts(params)
    text = headline_text(model_rows(art) + reference_rows(art))
    gate = gate_line(art)
    return text if gate is None else f"{text}\n{gate}"
