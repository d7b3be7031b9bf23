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
        "promote": [params.promote.out],  # the registry tidies its own staging (components/registry/store.py)
    }


def sweep_leftovers(params: Params, stages: list[str] | None = None, log=None) -> list[Path]:
    """Delete what a killed run left half-written in and beside the outputs of ``stages`` (default all):
    temporary files and directories that were never renamed into place. Hold the run lock."""
    from components.atomic_dir import sweep_leftovers as sweep
    from components.tune.worker import workers_present

    paths = output_paths(params)
    roots = [r for name in (stages or list(paths)) for r in paths[name]]
    if workers_present(params.run.lock_file):  # tuning workers take no run lock: leave their files alone
        busy = {params.tune.trials_dir, params.distill.logit_cache_dir}
        if log is not None and busy & set(roots):
            log(f"tuning workers are running on this checkout: not sweeping {sorted(busy & set(roots))}")
        roots = [r for r in roots if r not in busy]
    return sweep(roots, log=log)


def generate_stage(params: Params, fmt: str | None = None, rows: int | None = None,
                   seed: int | None = None, out: str | Path | None = None,
                   partitions: int | None = None) -> StageResult:
    """Write the synthetic raw log (and its true click probabilities) per ``params.generate``.

    ``partitions`` (default ``generate.partitions``) > 0 writes a directory of that many drifting
    partition files of ``rows`` rows each (:func:`components.data.generate.generate_partitions`).
    """
    from components.data.generate import generate, generate_partitions

    g = params.generate
    fmt = fmt or g.format
    n_parts = g.partitions if partitions is None else partitions
    seed = g.seed if seed is None else seed
    if n_parts > 0:
        log = generate_partitions(fmt, rows or g.rows, seed, Path(out or g.out), n_parts,
                                  cardinality=g.cardinality)
        what = f"{n_parts} partition(s) of {log.rows // n_parts:,} {fmt} rows"
    else:
        log = generate(fmt, rows or g.rows, seed, Path(out or g.out), cardinality=g.cardinality)
        what = f"{log.rows:,} {fmt} rows"
    summary = (f"generated {what} → {log.path} "
               f"(CTR {log.positives / max(log.rows, 1):.3f}, oracle AUC {log.oracle_auc:.4f}, "
               f"oracle LogLoss {log.oracle_logloss:.4f})")
    return StageResult((str(log.path), str(log.proba_path)), summary,
                       {"rows": log.rows, "positives": log.positives, "partitions": log.partitions,
                        "oracle_auc": log.oracle_auc, "oracle_logloss": log.oracle_logloss})


def read_raw(params: Params, fmt: str | None = None, path: str | Path | None = None,
             require_label: bool = True):
    """Open the raw log named by params (or the explicit fmt/path) as a lazy SourceTable.

    A partitioned ``data.input`` (a directory or glob, components/data/partitions.py) gives the
    window's partitions concatenated (:func:`components.data.partitioned.read_partitions`).
    """
    from components.data.formats import read_source

    parts = input_partitions(params, fmt, path)
    if parts is not None:
        from components.data.partitioned import read_partitions

        return read_partitions(_with_format(params, fmt), parts, require_label=require_label)
    default_fmt, default_path = params.raw_input()
    return read_source(fmt or default_fmt, Path(path or default_path), params=params,
                       require_label=require_label, remember_structure=True)


def _with_format(params: Params, fmt: str | None) -> Params:
    if fmt is None or fmt == params.data.format:
        return params
    return params.model_copy(update={"data": params.data.model_copy(update={"format": fmt})})


def input_partitions(params: Params, fmt: str | None = None, path: str | Path | None = None, *,
                     hashed: bool = True):
    """The partitions a run reads (``data.window`` applied, in order), or None for a single file.

    ``path`` / ``fmt`` replace ``data.input`` / ``data.format`` (the CLI's explicit PATH). Raises
    ValueError when a window or ``preprocess.split: partition`` is set for a single-file input.
    ``hashed``: their sha256 computed at once (:func:`components.data.partitions.hash_partitions`,
    stored by stat under ``validate.cache_dir``), as every stage reading them needs it.
    """
    from components.data.partitions import (
        discover_partitions,
        hash_partitions,
        is_partitioned,
        select_window,
    )

    source = str(path or params.data.input)
    if not is_partitioned(source, fmt or params.data.format):
        if path is None and params.data.window is not None:
            raise ValueError(f"data.window is set but data.input {source} is one file, not a directory "
                             f"or glob of partitions")
        return None
    parts = select_window(discover_partitions(source), params.data.window)
    if hashed:
        hash_partitions([p.path for p in parts], params.validation.cache_dir)
    return parts


def validate_stage(params: Params, fmt: str | None = None, path: str | Path | None = None,
                   out_dir: str | Path | None = None) -> StageResult:
    """Run the validation gate; raises DataFormatError / ValidationFailed on bad input.

    On success writes ``<out_dir>/validation.json`` and ``<out_dir>/data_docs/``; on failure the
    previous good outputs are left untouched. A partitioned input is validated partition by
    partition, each verdict cached by content hash
    (:func:`components.data.partitioned.validate_partitions`).
    """
    out = Path(out_dir or params.validation.out_dir)
    parts = input_partitions(params, fmt, path)
    if parts is not None:
        from components.data.partitioned import validate_partitions

        p = _with_format(params, fmt)
        if path is not None:
            p = p.model_copy(update={"data": p.data.model_copy(update={"input": str(path)})})
        report = validate_partitions(p, parts, out)
        cached = sum(e["cached"] for e in report["partitions"])
        summary = (f"validation passed: {len(parts)} partition(s) {parts[0].name} … {parts[-1].name} "
                   f"({p.data.format}, {report['rows']:,} rows; {cached} unchanged since an earlier "
                   f"validation, not re-validated) → {out}/validation.json")
        return StageResult((str(out),), summary, report)

    from components.data.validate import validate_source

    table = read_raw(params, fmt, path)
    report = validate_source(table, params.validation, out)
    rows = report.get("rows")
    summary = f"validation passed: {table.main_file} ({table.format}, {rows:,} rows) → {out}/validation.json"
    return StageResult((str(out),), summary, report)


def _require_passed_gate(params: Params, files, parts=None) -> None:
    """Preprocess runs only behind a passed gate for the same input files (``parts``: the
    partitions of a partitioned input, each with the bytes the gate saw)."""
    report_path = Path(params.validation.out_dir) / "validation.json"
    if not report_path.exists():
        raise FileNotFoundError(
            f"{report_path}: no validation report; run `ctrflow validate` first (the gate must pass "
            f"before preprocessing)")
    report = json.loads(report_path.read_text())
    if not report.get("success", False):
        raise RuntimeError(f"{report_path}: the last validation failed; fix the input and re-validate")
    if parts:
        from components.data.partitioned import require_validated

        require_validated(report, parts, report_path)
        return
    validated = [str(Path(f).resolve()) for f in report.get("files", [])]
    current = [str(Path(f).resolve()) for f in files]
    if validated and validated[0] != current[0]:
        raise RuntimeError(f"{report_path} validated {validated[0]}, not the current input "
                           f"{current[0]}; run `ctrflow validate` first")


def preprocess_stage(params: Params, require_gate: bool = True) -> StageResult:
    """Split, fit vocabularies on train, encode → Parquet splits + feature_map.json.

    A partitioned input reads the window's partitions; ``preprocess.split: partition`` trains on the
    older ones and holds out the newest (:mod:`components.data.preprocess`); feature_map.json then
    records ``partitions`` (name, sha256, rows, role) and ``window``. Its partitions are counted and
    encoded one by one here, or in parallel by ``preprocess.parallel`` (a process pool or a Dask
    cluster, :mod:`components.executors`): the same bytes either way.
    """
    from components.data.preprocess import preprocess, preprocess_partitions
    from components.executors import parallel_executor

    out = Path(params.preprocess.out_dir)
    parts = input_partitions(params)
    if parts is None:
        table = read_raw(params)
        if require_gate:
            _require_passed_gate(params, table.files)
        return preprocess_result(preprocess(table, params.preprocess, out), out, params.train.embedding_dim,
                                 str(table.main_file))
    if require_gate:
        _require_passed_gate(params, [p.path for p in parts], parts)
    with parallel_executor(params.preprocess.parallel) as executor:
        fmap = preprocess_partitions(params, parts, out, executor=executor)
    return preprocess_result(fmap, out, params.train.embedding_dim)


def preprocess_result(fmap, out: Path, embedding_dim: int, source: str | None = None) -> StageResult:
    """The preprocess stage's result (one summary line, with the teacher's embedding-table memory at
    ``embedding_dim``) from the feature map it wrote."""
    from components.data.embedding_memory import table_memory

    rows = {k: v.get("rows") for k, v in fmap.splits.items()}
    if fmap.partitions:
        source = f"{len(fmap.partitions)} partition(s) {fmap.partitions[0]['name']} … {fmap.partitions[-1]['name']}"
    memory = table_memory(fmap, embedding_dim)
    summary = (f"preprocessed {source} → {out}: {fmap.num_fields} fields, "
               f"{sum(fmap.vocab_sizes):,} ids, rows {rows}; {memory.summary()}")
    emb = fmap.embedding or {}
    if "hash_buckets" in emb:
        hb = emb["hash_buckets"]
        summary += (f"; hashed into {hb['buckets']:,} buckets (vocabulary > {hb['min_vocab']:,}): "
                    f"{', '.join(hb['fields']) or 'no field'}")
    if "budget" in emb:
        b = emb["budget"]
        summary += (f"; budget {b['budget_mb']} MB at dim {b['embedding_dim']}: min_count {b['min_count']} → "
                    f"{b['table_mb']:.2f} MB (was {b['table_mb_before']:.2f} MB)")
    return StageResult((str(out),), summary, {"splits": fmap.splits, "num_fields": fmap.num_fields,
                                              "partitions": fmap.partitions,
                                              "embedding_memory": memory.as_dict(),
                                              "embedding": fmap.embedding})


# The preprocess stage as steps, for the Prefect flow's fan-out over partitions (flows/preprocess.py):
# prepare → count (per partition) [→ cut → count again: time split] → merge → encode (per partition)
# → finish, with digest (the input hash) beside them. Each step but prepare takes the work directory
# that prepare returns, so it runs in any process that sees it (components/data/partwise.py).


def preprocess_fans_out(params: Params) -> bool:
    """Does the flow's preprocess step fan out over partitions? (a partitioned input and
    ``preprocess.parallel.runner`` other than ``none``)"""
    return params.preprocess.parallel.runner != "none" and input_partitions(params, hashed=False) is not None


def preprocess_prepare_stage(params: Params, require_gate: bool = True) -> StageResult:
    """Check the gate and create the job's work directory; ``details``: ``work``, ``units`` (the
    partition names) and ``split``."""
    from components.data.preprocess import prepare_partitions

    parts = input_partitions(params)
    if parts is None:
        raise ValueError(f"data.input {params.data.input} is one file: nothing to fan out over")
    if require_gate:
        _require_passed_gate(params, [p.path for p in parts], parts)
    work = prepare_partitions(params, parts, params.preprocess.out_dir)
    summary = f"preprocessing {len(parts)} partition(s) {parts[0].name} … {parts[-1].name} in {work}"
    return StageResult((str(work),), summary, {"work": str(work), "units": [p.name for p in parts],
                                               "split": params.preprocess.split})


def preprocess_count_stage(work: str, k: int) -> dict:
    """Stage partition k and count its train rows' values (:func:`components.data.partwise.count_partition`)."""
    from components.data.partwise import count_partition

    return count_partition(work, k)


def preprocess_cut_stage(work: str) -> dict:
    """The split plan from every partition's rows (time split: before its counting pass)."""
    from components.data.partwise import plan_splits

    return plan_splits(work)


def preprocess_merge_stage(work: str) -> dict:
    """The partitions' counts merged into the vocabularies and dense statistics."""
    from components.data.partwise import merge_counts

    return merge_counts(work)


def preprocess_encode_stage(work: str, k: int) -> dict:
    """Encode partition k into its part files."""
    from components.data.partwise import encode_partition

    return encode_partition(work, k)


def preprocess_digest_stage(work: str) -> str:
    """sha256 of the input files' bytes (for the feature map's source_hash)."""
    from components.data.partwise import digest_inputs

    return digest_inputs(work)


def preprocess_finish_stage(work: str, files_digest: str | None = None,
                            embedding_dim: int = 16) -> StageResult:
    """Assemble the splits, write feature_map.json and publish ``preprocess.out_dir`` atomically
    (``embedding_dim``: train.embedding_dim, for the table memory in the summary)."""
    from components.data.partwise import finish, load_job

    out = load_job(work).out_dir
    return preprocess_result(finish(work, files_digest), out, embedding_dim)


def preprocess_abort_stage(work: str) -> None:
    """Remove a failed job's work directory (``preprocess.out_dir`` was never touched)."""
    from components.data.partwise import abort

    abort(work)


def new_data_stage(params: Params) -> StageResult:
    """Is there something new to train on since the last successful run? (flow start)

    ``details``: ``new`` (bool), ``skip`` (True when the flow should end early: nothing new and
    ``run.if_nothing_new: skip``), ``reason``, ``partitions``, ``added``, ``changed``,
    ``last_success``. A single-file input is always new (the check is for partitioned inputs).
    """
    from components.data.partitions import check_new_data

    check = check_new_data(params)
    skip = not check.new and params.run.if_nothing_new == "skip"
    if check.new:
        summary = f"new data: {check.reason}"
    elif skip:
        summary = f"{check.reason}: ending the run early (run.if_nothing_new: skip)"
    else:
        summary = f"{check.reason}: running anyway (run.if_nothing_new: run)"
    return StageResult((), summary, {**check.as_dict(), "skip": skip})


def record_success_stage(params: Params) -> StageResult:
    """Record what this successful run used in ``run.state_file`` (flow end, after the last stage)."""
    from components.data.partitions import record_successful_run

    path = record_successful_run(params)
    summary = (f"recorded the run's partitions in {path}" if path else
               "single-file input: no partition state to record")
    return StageResult((str(path),) if path else (), summary, {})


def train_stage(params: Params, model: str | None = None, resume: bool = True) -> StageResult:
    """Train the teacher (``train.model`` or ``model``) on the preprocessed splits.

    With ``train.tune.n_trials`` > 0 an Optuna study over ``train.tune.search_space`` picks it
    instead (:func:`components.train.tuning.tune_teacher`: resumed from its storage, its best
    trial's checkpoint kept); ``resume`` applies to a single run only (each trial starts afresh).
    With ``train.distributed`` nproc × nnodes > 1 it launches torchrun and trains data-parallel
    (:func:`components.train.teacher_ddp.train_teacher_distributed`: the same outputs); on a node
    other than node 0 it only runs that node's ranks.
    """
    tp = params.train if model is None else params.train.model_copy(update={"model": model})
    dp = tp.distributed
    if tp.tune.n_trials > 0:
        from components.train.tuning import tune_teacher

        res = tune_teacher(tp, params.tune, params.preprocess.out_dir)
    elif dp.world_size > 1:
        from components.train.teacher_ddp import train_teacher_distributed

        res = train_teacher_distributed(params, tp, resume=resume)
        if res is None:
            return StageResult((), f"node {dp.node_rank} of {dp.nnodes}: its {dp.nproc} rank(s) of "
                                   f"{tp.model} finished; node 0 wrote {tp.out_dir} and {tp.metrics}",
                               {"node_rank": dp.node_rank, "warnings": []})
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

    return distill_summary_stage(params, distill_students(params))


def distill_student_stage(params: Params, name: str) -> StageResult:
    """One student (or ``baseline_<name>``) of the distill stage; the Prefect flow runs one task per
    name (:func:`components.distill.students.distill_names`), then :func:`distill_summary_stage`."""
    from components.distill.students import distill_one

    s = distill_one(params, name)
    test = s.get("test") or {}
    summary = f"{name}: test AUC {test.get('auc', float('nan')):.4f}, LogLoss {test.get('logloss', float('nan')):.4f}"
    return StageResult((str(Path(params.distill.out_dir) / name),), summary, {"student": s})


def distill_summary_stage(params: Params, summaries: list[dict]) -> StageResult:
    """Write ``distill.metrics`` (one entry per student / baseline summary) atomically."""
    path = Path(params.distill.metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({s["student"]: s for s in summaries}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    lines = [f"{s['student']}: test AUC {s['test']['auc']:.4f}, LogLoss {s['test']['logloss']:.4f}"
             for s in summaries if s.get("test")]
    summary = f"distilled {len(summaries)} student run(s) → {params.distill.out_dir}, {path}: " + "; ".join(lines)
    return StageResult((params.distill.out_dir, str(path)), summary, {"students": summaries})


TEACHER_STUDY = "teacher"
"""The name :func:`tune_worker_stage` takes for the teacher's study (``train.tune``)."""


def tune_worker_stage(params: Params, studies: list[str] | None = None) -> StageResult:
    """A tuning worker (``ctrflow distill --worker``, ``ctrflow train --worker``, the Prefect
    deployment ``tune-worker``): join each named study — a tuned student of ``distill.students``, or
    ``teacher`` for ``train.tune`` — and run its trials until it holds its ``n_trials`` finished
    trials in total; write none of the stage's outputs (the normal train / distill stage afterwards,
    or running beside the workers, finds the trials finished and keeps the best one).

    ``studies`` defaults to every tuned student. Raises
    :class:`components.tune.worker.SharedStorageError` on an SQLite ``tune.storage``
    (components/tune/worker.py says why). Takes no run lock: any number of workers may run at once,
    on one checkout or many. ``details``: one entry per study (counts, best trial, ``ran``: the trial
    numbers this worker ran).
    """
    from components.distill.students import join_student_study, tuned_students
    from components.tune.worker import require_shared_storage, worker_index, worker_presence

    require_shared_storage(params.tune)
    names = list(studies) if studies else tuned_students(params)
    if not names:
        raise ValueError("no study to join: no student of distill.students has a tune.search_space "
                         "entry (name `teacher` for the train.tune study)")
    worker = worker_index()
    out: dict[str, dict] = {}
    with worker_presence(params.run.lock_file):  # a stage run's leftover sweep then spares our files
        for name in names:
            if name == TEACHER_STUDY:
                from components.train.tuning import join_teacher_study

                if params.train.tune.n_trials < 1:
                    raise ValueError("the teacher has no study to join: train.tune.n_trials is 0")
                out[name] = join_teacher_study(params.train, params.tune, params.preprocess.out_dir,
                                               worker=worker)
            else:
                out[name] = join_student_study(params, name, worker=worker)
    lines = [f"{name}: study {s['study']} holds {s['n_complete'] + s['n_pruned']}/{s['n_trials']} "
             f"finished trials ({s['n_complete']} complete, {s['n_pruned']} pruned"
             + (f", {s['n_running']} still running elsewhere" if s["n_running"] else "")
             + f"); this worker ran {s['ran'] or 'none'}; best so far trial {s['best_trial']}"
             for name, s in out.items()]
    summary = ("tuning worker done (no stage outputs written; run the stage to keep the best trials): "
               + "; ".join(lines))
    return StageResult(tuple(s["trials_dir"] for s in out.values()), summary, {"studies": out})


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


def promote_stage(params: Params, rollback: bool = False, version: str | None = None) -> StageResult:
    """Champion / challenger promotion into the model registry (components/registry/promote.py).

    Scores the champion (``<promote.registry_dir>/production``) on the challenger's test rows through
    its own vocabularies and promotes the challenger (``promote.candidate``) only when the run's
    gates passed and its test AUC is at most ``promote.max_auc_drop`` below the champion's; writes
    the decision to ``promote.out``. A refusal is not an error: the champion keeps serving and the
    summary says why. ``rollback``: point production back at ``version`` (default: the version the
    champion replaced) instead.
    """
    from components.registry.promote import promote, summary_line
    from components.registry.promote import rollback as do_rollback

    decision = do_rollback(params, version) if rollback else promote(params)
    outputs = (params.promote.registry_dir,) if rollback else (params.promote.registry_dir, params.promote.out)
    return StageResult(outputs, summary_line(decision), decision)


def gc_stage(params: Params, dry_run: bool = False, root: str | Path = ".",
             before_dvc_commit: bool = False) -> StageResult:
    """Apply the retention policy (params.yaml ``retention``, :mod:`components.gc`) to the repository.

    Removes the Optuna trial checkpoints and teacher-logit caches of runs older than the last
    ``retention.keep_runs`` (and their studies from the Optuna storage), leftovers of killed runs and
    old Prefect result files, then prunes the DVC cache with ``dvc gc`` (keeping the workspace's
    dvc.lock, the last ``retention.dvc_keep_commits`` commits and every tag). Never touches anything
    under ``models/registry/`` (registered versions, the champion) nor any file the current dvc.lock
    references. ``dry_run`` lists what would go, with the bytes, and removes nothing.

    At the end of a flow run call it right *before* ``dvc commit`` with ``before_dvc_commit=True``:
    the logit-cache directory is a DVC output, so its old caches are listed in dvc.lock; only then
    may they leave the workspace (their content stays in the DVC cache), and the commit records the
    pruned directory. By hand (``ctrflow gc``) every file dvc.lock lists stays.
    """
    from components.gc import collect_garbage, format_report

    report = collect_garbage(params, root, dry_run=dry_run, before_dvc_commit=before_dvc_commit,
                             log=lambda msg: None)
    text = format_report(report)
    return StageResult(tuple(r.path for r in report.removed), text,
                       {"bytes": report.bytes, "dry_run": dry_run,
                        "removed": [r.__dict__ for r in report.removed],
                        "kept": report.kept, "studies_deleted": report.studies_deleted,
                        "dvc": {k: v for k, v in report.dvc.items() if k != "paths"}})
