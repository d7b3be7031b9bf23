"""`ctrflow`: the command-line entry point, one subcommand per pipeline stage.

Every subcommand reads params.yaml (``--params``), accepts ``--set key=value`` overrides, and calls
the same stage function (components/stages.py) that the DVC stages and the Prefect flow call.
Bad input ends with a one-paragraph error on stderr (file, line, column, rule) and exit status 1;
a bad params.yaml with exit status 2; a run lock held by another run (components/runlock.py) with
exit status 3.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path

import click
import yaml

from flows import _env  # noqa: F401  (offline-safe env defaults before prefect/GX are imported)


def _overrides(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _nest(dotted: dict) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _load(ctx: click.Context):
    from components.config import ConfigError, load_params

    params_path = Path(ctx.obj["params"])
    if ctx.obj["params"] == "params.yaml" and not params_path.exists():
        # Outside a ctrflow checkout (e.g. `ctrflow validate --format criteo some.txt`): the built-in
        # (library) defaults; the repository's params.yaml differs in its measured recipe
        # (train.logistic_base: true, train.embedding_l2: 1e-3).
        click.echo("note: no params.yaml here; using the built-in defaults", err=True)
        from components.config import Params

        ctx.obj["no_checkout"] = True  # not a ctrflow checkout: no run lock (nothing of a run to protect)

        try:
            return Params.model_validate(_nest(ctx.obj["overrides"]))
        except ValueError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
    try:
        return load_params(params_path, ctx.obj["overrides"])
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        ctx.exit(2)


def _run_lock(params):
    """The run lock (components/runlock.py, params.yaml `run:`) for a command that writes pipeline
    outputs: one run at a time per checkout. Its notes (waiting, taking over a killed run's lock) go
    to stderr."""
    from components.runlock import run_lock

    ctx = click.get_current_context(silent=True)
    if ctx is not None and (ctx.obj or {}).get("no_checkout"):
        return contextlib.nullcontext()
    return run_lock(params.run, log=lambda msg: click.echo(f"note: {msg}", err=True))


def _sweep(fn, params) -> None:
    """Under the run lock: delete the temp files a killed run left among this stage's outputs."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and (ctx.obj or {}).get("no_checkout"):
        return
    from components.stages import output_paths, sweep_leftovers

    stage = {"train_stage": "train_teacher"}.get(fn.__name__, fn.__name__.removesuffix("_stage"))
    if stage == "train_teacher" and params.train.distributed.node_rank > 0:
        return  # a follower node of multi-node training: node 0 owns (and tidies) the shared outputs
    if stage in output_paths(params):  # a pipeline stage (not check-new, gc, registry commands)
        sweep_leftovers(params, [stage], log=lambda msg: click.echo(f"note: {msg}", err=True))


EXIT_BUSY = 3  # another run holds the run lock (run.on_busy: fail, or run.wait_timeout_s passed)


_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (the file size limit, ulimit -f)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_WRITE_STRERRORS = {os.strerror(n).lower(): cause for n, cause in _WRITE_ERRNOS.items()
                    if n not in (errno.EACCES, errno.EPERM)}  # too common in messages of other errors


def _stage_outputs(fn, params) -> str:
    """Where stage ``fn`` writes (named in a write error when the OS error carries no path)."""
    outs = {
        "generate_stage": lambda p: p.generate.out,
        "validate_stage": lambda p: p.validation.out_dir,
        "preprocess_stage": lambda p: p.preprocess.out_dir,
        "train_stage": lambda p: f"{p.train.out_dir} / {p.train.metrics}",
        "distill_stage": lambda p: f"{p.distill.out_dir} / {p.distill.logit_cache_dir} / {p.tune.trials_dir}",
        "evaluate_stage": lambda p: f"{p.evaluate.out} / {p.evaluate.plots_dir}",
        "profile_stage": lambda p: p.evaluate.profile_out,
        "report_stage": lambda p: p.evaluate.report_dir,
    }.get(getattr(fn, "__name__", ""))
    try:
        return outs(params) if outs else "the stage's outputs"
    except AttributeError:
        return "the stage's outputs"


def write_error_message(exc: BaseException, where: str) -> str | None:
    """One line for a failed write (disk full, file size limit, read-only, no permission): the cause
    and the path (the OS error's own, else ``where``); None when ``exc`` is not such an error. Looks
    through the exception's causes: pyarrow/polars/torch wrap the OS error or only keep its text."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _WRITE_ERRNOS:
            path = seen.filename or where
            verb = "on" if seen.errno in (errno.EACCES, errno.EPERM) else "writing"
            return f"{_WRITE_ERRNOS[seen.errno]} {verb} {path} ({seen.strerror or seen})"
        text = str(seen).lower()
        for strerror, cause in _WRITE_STRERRORS.items():
            if strerror in text:
                return f"{cause} writing {where} ({str(seen).strip().splitlines()[0][:300]})"
        seen = seen.__cause__ or seen.__context__
    return None


def _run_stage(fn, *args, **kwargs):
    """Call a stage under the run lock; turn the data layer's typed errors into a clean message and
    exit 1 (3 when another run holds the lock). A failed write (disk full, file size limit,
    read-only or unwritable output directory) ends with one line naming the path and the cause,
    exit 1. ``args[0]`` is the Params."""
    return _call_stage(fn, args, kwargs, locked=True)


def _run_worker(fn, *args, **kwargs):
    """:func:`_run_stage` without the run lock and the leftover sweep: for tuning workers, of which
    any number run at once on one checkout (they write only their own trials' directories and the
    shared logit cache, both safe under concurrency: components/tune/worker.py)."""
    return _call_stage(fn, args, kwargs, locked=False)


def _call_stage(fn, args, kwargs, *, locked: bool):
    from components.runlock import RunLockBusy

    try:
        with _run_lock(args[0]) if locked else contextlib.nullcontext():
            if locked:
                _sweep(fn, args[0])
            result = fn(*args, **kwargs)
    except RunLockBusy as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_BUSY)
    except Exception as e:
        message = write_error_message(e, _stage_outputs(fn, args[0]))
        if message is None or os.environ.get("CTRFLOW_DEBUG"):
            return _stage_error(e)
        click.echo(f"error: {message}; earlier outputs are left as they were", err=True)
        sys.exit(1)
    click.echo(result.summary)
    return result


def _stage_error(e: Exception):
    """The typed errors of a stage: a clean message and exit 1; anything else propagates."""
    from components.data.errors import CtrflowDataError

    try:
        raise e
    except CtrflowDataError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except (FileNotFoundError, RuntimeError, ValueError, TypeError) as e:
        # User-facing errors (missing inputs, bad hyperparameters); CTRFLOW_DEBUG=1 shows the traceback.
        if os.environ.get("CTRFLOW_DEBUG"):
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="The parameter file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a parameter, e.g. --set preprocess.min_count=5 (repeatable).")
@click.pass_context
def main(ctx: click.Context, params_path: str, sets: tuple[str, ...]) -> None:
    """ctrflow: CTR teacher training and distillation, versioned by DVC, orchestrated by Prefect."""
    ctx.ensure_object(dict)
    ctx.obj["params"] = params_path
    ctx.obj["overrides"] = _overrides(sets)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["criteo", "avazu", "movielens"]),
              help="Raw format to write [default: generate.format].")
@click.option("--rows", type=click.IntRange(min=1), help="Number of rows [default: generate.rows].")
@click.option("--seed", type=int, help="Random seed [default: generate.seed].")
@click.option("--partitions", type=click.IntRange(min=0),
              help="0: one file; N: a directory OUT of N drifting partitions day_0 … day_{N-1}, "
                   "--rows rows each [default: generate.partitions].")
@click.argument("out", required=False, type=click.Path())
@click.pass_context
def generate(ctx, fmt, rows, seed, partitions, out):
    """Write a synthetic raw log with planted interactions to OUT [default: generate.out].

    Also writes OUT.proba.parquet (each row's true click probability) and OUT.oracle.json (the
    oracle AUC/LogLoss: the best any model can reach on this log). Same seed, same bytes.
    For movielens, OUT is a directory in the MovieLens-100K layout. With --partitions N (criteo,
    avazu), OUT is a directory of N partition files whose CTR and planted interactions drift from
    one to the next; N+1 partitions leave the first N byte-identical.
    """
    from components.stages import generate_stage

    _run_stage(generate_stage, _load(ctx), fmt, rows, seed, out, partitions)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["criteo", "avazu", "movielens", "schema"]),
              help="Raw format of PATH [default: the pipeline's input format].")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Where validation.json and data_docs/ go [default: validate.out_dir].")
@click.argument("path", required=False, type=click.Path())
@click.pass_context
def validate(ctx, fmt, out_dir, path):
    """Run the validation gate (structure + Great Expectations suite) on PATH.

    Without PATH, validates the pipeline's raw input (data.source / data.input, or generate.out for
    the synthetic default). Exit status 0 when the input passes; 1 with the broken rule (file, line,
    column) on stderr when it does not. A failed run leaves earlier reports untouched. A directory
    or glob of partitions is validated partition by partition (data.window applied); a partition
    that passed before with the same bytes is not validated again (validate.cache_dir).
    """
    from components.stages import validate_stage

    _run_stage(validate_stage, _load(ctx), fmt, path, out_dir)


@main.command()
@click.option("--skip-gate", is_flag=True,
              help="Do not require a passed validation report for the same input (not recommended).")
@click.pass_context
def preprocess(ctx, skip_gate):
    """Split, fit vocabularies on train only, encode → Parquet + feature_map.json.

    Reads the raw input named in params.yaml and writes preprocess.out_dir atomically: a failure
    leaves the previous outputs intact. Requires a passed validation gate for the same input.
    """
    from components.stages import preprocess_stage

    _run_stage(preprocess_stage, _load(ctx), require_gate=not skip_gate)


@main.command()
@click.option("--model", help="Any name from `ctrflow models` [default: train.model].")
@click.option("--fresh", is_flag=True, help="Ignore a resume state (a killed run's, kept in the staged "
              ".<train.out_dir>.partial, or the last finished run's) and start over.")
@click.option("--worker", is_flag=True, help="Only run trials of the teacher's study (train.tune) until it "
              "holds train.tune.n_trials finished trials, on a shared PostgreSQL tune.storage; keep no "
              "teacher, write no metrics (docs/scale.md, 'Distributed tuning workers').")
@click.pass_context
def train(ctx, model, fresh, worker):
    """Train a zoo model (the teacher) on the preprocessed splits.

    Writes the checkpoint (safetensors + JSON) to train.out_dir, metrics to train.metrics and the
    per-epoch curve to train.curve, all three only once training is complete (it runs in the sibling
    .<name>.partial). A killed run restarts from its last finished epoch and reaches the same result. With train.tune.n_trials > 0 an Optuna study (resumable; --fresh does not
    reset it) trains that many teachers and keeps the best one. With train.distributed (nproc x nnodes > 1) it
    launches torchrun and trains data-parallel (DDP) with the same outputs, e.g. --set train.distributed.nproc=4.
    """
    params = _load(ctx)
    if worker:
        from components.stages import TEACHER_STUDY, tune_worker_stage

        if model:
            params = params.model_copy(update={"train": params.train.model_copy(update={"model": model})})
        _run_worker(tune_worker_stage, params, [TEACHER_STUDY])
        return
    from components.stages import train_stage

    _run_stage(train_stage, params, model, resume=not fresh)


@main.command()
@click.option("--worker", is_flag=True, help="Only run trials of the students' studies until each holds "
              "tune.n_trials finished trials, on a shared PostgreSQL tune.storage; promote no checkpoint, "
              "write no metrics (docs/scale.md, 'Distributed tuning workers').")
@click.option("--student", "students", multiple=True, metavar="NAME",
              help="With --worker: the study to join (repeatable) [default: every tuned student].")
@click.pass_context
def distill(ctx, worker, students):
    """Distil the trained teacher into the students (DAGFM, KD-DAGFM+, FSDNet), tuned by Optuna.

    Students with a tune.search_space entry get a resumable Optuna study (tune.n_trials trials in
    total, the reference defaults first, pruned on validation AUC, storage tune.storage: SQLite by
    default, PostgreSQL for several workers); the best trial's checkpoints land in
    distill.out_dir/<student>. Baselines (distill.baselines) are the same students without
    distillation. Writes distill.metrics.

    With --worker: a tuning worker (start one per machine, all on one PostgreSQL study database):
    it joins the studies and runs trials until each holds tune.n_trials finished trials, then exits
    without writing the stage's outputs; `ctrflow distill` afterwards (or beside the workers) runs
    no trial twice and keeps the best ones. Takes no run lock. SQLite storage is refused.
    """
    if students and not worker:
        raise click.UsageError("--student needs --worker (the stage itself distils every student)")
    if worker:
        from components.stages import tune_worker_stage

        _run_worker(tune_worker_stage, _load(ctx), list(students) or None)
        return
    from components.stages import distill_stage

    _run_stage(distill_stage, _load(ctx))


@main.command()
@click.pass_context
def evaluate(ctx):
    """Score the teacher, students and baselines on the test split.

    AUC, LogLoss, expected calibration error and reliability curve, predicted vs observed positive
    rate, gAUC where the data has a user field, agreement of each student with the teacher; with
    evaluate.seed_runs, mean ± std over seeds and a paired student-vs-teacher comparison. Writes
    evaluate.out and the DVC plot data in evaluate.plots_dir.
    """
    from components.stages import evaluate_stage

    _run_stage(evaluate_stage, _load(ctx))


@main.command()
@click.pass_context
def profile(ctx):
    """FLOPs per sample (matmuls and every element-wise/gather op), parameters, latency of every model.

    Also where the time goes (achieved GFLOP/s, torch.profiler time shares embedding / interaction /
    MLP, top ops by self CPU time) and each student's FLOPs, throughput and p50 latency relative to
    the teacher's. Writes evaluate.profile_out and the AUC-vs-FLOPs Pareto data.
    """
    from components.stages import profile_stage

    _run_stage(profile_stage, _load(ctx))


@main.command()
@click.pass_context
def report(ctx):
    """Write reports/report.md and the self-contained reports/report.html; print the headline table."""
    from components.stages import report_stage

    _run_stage(report_stage, _load(ctx))


EXIT_NOTHING_NEW = 4  # `ctrflow check-new`: no new partition since the last successful run


@main.command("check-new")
@click.pass_context
def check_new(ctx):
    """Is there new data since the last successful run? (partitioned data.input)

    Compares the window's partitions (names, sha256) and the parameters with what the last
    successful run recorded in run.state_file. Prints the verdict; exit status 0 when a run should
    go on (something new, a single-file input, or run.if_nothing_new: run), 4 when it should end
    early ("nothing new"), e.g. `ctrflow check-new && ctrflow run` in a cron job.
    """
    from components.stages import new_data_stage

    result = _run_stage(new_data_stage, _load(ctx))
    if result.details["skip"]:
        sys.exit(EXIT_NOTHING_NEW)


@main.command()
@click.option("--rollback", "rollback_to", is_flag=False, flag_value="previous", default=None,
              metavar="[VERSION]",
              help="Point production back at VERSION (default: the version the champion replaced) "
                   "instead of promoting.")
@click.pass_context
def promote(ctx, rollback_to):
    """Champion / challenger promotion into the model registry (promote.registry_dir).

    Scores the champion (registry `production`) on the challenger's test rows through its own
    vocabularies and promotes the challenger (promote.candidate) when the run's gates passed and its
    test AUC is at most promote.max_auc_drop below the champion's; otherwise keeps the champion and
    says why (exit status 0 either way). The decision goes to promote.out. With --rollback, points
    production back at an earlier version and records it in the history.
    """
    from components.stages import promote_stage

    if rollback_to is None:
        _run_stage(promote_stage, _load(ctx))
    else:
        _run_stage(promote_stage, _load(ctx), rollback=True,
                   version=None if rollback_to == "previous" else rollback_to)


@main.command()
@click.option("--history", is_flag=True, help="Also print the decision history (promotions, refusals, rollbacks).")
@click.pass_context
def registry(ctx, history):
    """List the model registry's versions with their metrics; `*` marks production."""
    from components.registry.store import Registry

    params = _load(ctx)
    reg = Registry(params.promote.registry_dir)
    index = reg.index()
    prod = reg.production()
    known = {v["version"]: v for v in index["versions"]}
    names = sorted(set(known) | set(reg.version_dirs()), key=lambda n: int(n[1:]))
    if not names:
        click.echo(f"{reg.root}: no versions yet (nothing promoted)")
    else:
        rows = [("", "version", "model", "created", "test AUC", "LogLoss", "FLOPs/sample", "% teacher", "status")]
        for n in names:
            v = known.get(n, {})
            test = v.get("test") or {}
            flops, frac = v.get("flops_per_sample"), v.get("flops_fraction")
            rows.append(("*" if n == prod else "", n, f"{v.get('name')} ({v.get('model')})", v.get("created") or "",
                         f"{test['auc']:.4f}" if "auc" in test else "", f"{test['logloss']:.4f}" if "logloss" in test else "",
                         f"{flops:,.0f}" if flops is not None else "", f"{frac:.1%}" if frac is not None else "",
                         "production" if n == prod else v.get("status", "")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if history:
        for e in index["history"]:
            flag = " (interrupted)" if e.get("interrupted") else ""
            click.echo(f"{e.get('time')}  {e.get('action')}{flag}  {e.get('version') or '-'}  "
                       f"(from {e.get('from') or '-'}): {e.get('reason')}")


@main.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed, with the bytes; remove nothing.")
@click.pass_context
def gc(ctx, dry_run):
    """Apply the retention policy (params.yaml `retention:`) by hand; prints what it freed.

    Removes the Optuna trial checkpoints and teacher-logit caches of runs older than the last
    retention.keep_runs, leftovers of killed runs (.*.tmp*, .*.old*, .*.partial-*), old Prefect
    result files, and prunes the DVC cache with `dvc gc` (keeping the current dvc.lock, the last
    retention.dvc_keep_commits commits and every tag). Never removes anything under models/registry/
    nor any file the current dvc.lock references. Holds the run lock.
    """
    from components.stages import gc_stage

    _run_stage(gc_stage, _load(ctx), dry_run=dry_run)


@main.command()
@click.option("--no-dvc-commit", is_flag=True, help="Do not record the outputs in dvc.lock.")
@click.option("--force", is_flag=True,
              help="Run every stage, also those DVC reports unchanged since dvc.lock (run.skip_unchanged).")
@click.pass_context
def run(ctx, no_dvc_commit, force):
    """Run the whole pipeline end to end as a Prefect flow.

    No server needed: without PREFECT_API_URL, Prefect starts a temporary local server. Set
    PREFECT_API_URL to a running `prefect server start` to watch the run in the Prefect UI.
    Each stage's outputs are recorded in dvc.lock (`dvc commit`) as soon as it completes, so `dvc
    repro` afterwards is a no-op and `dvc push` versions them; a stage DVC reports unchanged since its
    last complete run is skipped (run.skip_unchanged; --force runs all), so a rerun after a crash or
    a kill redoes only the unfinished stages. With --set or another --params nothing is recorded or
    skipped (dvc.lock describes params.yaml's run). Holds the run lock (params.yaml `run:`) from start to end:
    another run on this checkout waits or refuses. A failed write (disk full, file size limit,
    read-only output directory) ends the run with one line naming the path and the cause, exit 1.
    """
    from components.config import ConfigError
    from components.runlock import RunLockBusy
    from flows.pipeline import pipeline

    try:
        params = _load(ctx)  # fail fast on a bad params.yaml, before the Prefect server starts
        with _run_lock(params):  # before the Prefect server starts, too: a waiting run costs nothing
            summary = pipeline(params_path=str(Path(ctx.obj["params"])), overrides=ctx.obj["overrides"],
                               dvc_commit=not no_dvc_commit, force=force)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except RunLockBusy as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_BUSY)
    except Exception as e:  # the flow already logged the traceback; print the cause plainly
        from components.data.errors import CtrflowDataError

        message = write_error_message(e, "the run's outputs")
        if message is not None and not os.environ.get("CTRFLOW_DEBUG"):
            click.echo(f"error: {message}; earlier outputs are left as they were", err=True)
            sys.exit(1)
        if isinstance(e, CtrflowDataError | FileNotFoundError | RuntimeError | ValueError):
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        raise
    click.echo("\n".join(summary))


@main.command()
@click.option("--verbose", "-v", is_flag=True, help="Also print each model's default hyperparameters.")
def models(verbose):
    """List every registered model: name, family and paper (one a line)."""
    from components.models.registry import list_models

    infos = list_models()
    width = max(len(m.name) for m in infos)
    fam = max(len(m.family) for m in infos)
    for m in infos:
        click.echo(f"{m.name:<{width}}  {m.family:<{fam}}  {m.paper}")
        if verbose:
            click.echo(f"{'':<{width}}  {'':<{fam}}  defaults: {m.hyperparameters}")


def _call(fn, *args, **kwargs):
    """Like _run_stage, but returns the result and prints nothing on stdout."""
    from components.data.errors import CtrflowDataError

    try:
        return fn(*args, **kwargs)
    except CtrflowDataError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except (FileNotFoundError, RuntimeError, ValueError, TypeError, ImportError) as e:
        if os.environ.get("CTRFLOW_DEBUG"):
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@main.command()
@click.option("--model", "model_dir", type=click.Path(file_okay=False),
              help="Checkpoint directory (holds model.json) [default: train.out_dir].")
@click.option("--processed", "processed_dir", type=click.Path(file_okay=False),
              help="Processed directory the model was trained on [default: preprocess.out_dir].")
@click.option("--verify-split", default="test", show_default=True,
              help="Split of the processed directory on which onnxruntime is checked against "
                   "PyTorch; '' skips the check.")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.pass_context
def export(ctx, model_dir, processed_dir, verify_split, out_dir):
    """Export a checkpoint to OUT_DIR: model.onnx (dynamic batch), the safetensors checkpoint,
    feature_map.json and vocab/ — a self-contained directory for `ctrflow predict --model OUT_DIR`.

    Any teacher or student checkpoint works (for a KD-DAGFM run pass its finetune/ directory).
    Written atomically: a failed export leaves an earlier OUT_DIR intact.
    """
    from components.serve.export import export_model, verify_onnx

    params = _load(ctx)
    model_dir = model_dir or params.train.out_dir
    out = _call(export_model, model_dir, out_dir, processed_dir=processed_dir, params=params)
    click.echo(f"exported {model_dir} → {out} (model.onnx, model.safetensors, feature_map.json, vocab/)")
    if verify_split:
        source = processed_dir or params.preprocess.out_dir
        diff = _call(verify_onnx, out, source, verify_split)
        click.echo(f"onnxruntime vs PyTorch on {source}/{verify_split}: max |Δ probability| = {diff:.3g}")
        if diff > 1e-5:
            click.echo("error: the ONNX model disagrees with PyTorch by more than 1e-5", err=True)
            sys.exit(1)


def _registry_model(ref: str, params) -> str:
    """``production`` or a registry version name (v0003) → that version's export directory in
    promote.registry_dir; an existing directory of that name wins, anything else is returned as is."""
    from components.registry.store import PRODUCTION, VERSION_RE, Registry

    if Path(ref).is_dir() or not (ref == PRODUCTION or VERSION_RE.fullmatch(ref)):
        return ref
    return str(_call(Registry(params.promote.registry_dir).resolve, ref))


def _passive_omp_wait() -> None:
    """Default OMP_WAIT_POLICY to PASSIVE before torch (and its OpenMP runtime) is loaded.

    predict alternates Polars parsing/encoding with short torch calls on the same cores; spinning
    OpenMP workers then steal the cores Polars needs. Measured on 300k synthetic Criteo rows,
    DAGFM-inner, 2 busy cores: 7.9-11.8 s PASSIVE vs 16.5-49.6 s with the default policy. A value
    already in the environment wins; no effect when torch is already imported.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="An export directory (ctrflow export), a checkpoint directory, or a registry "
                   "version: `production` (the champion) or a version name such as v0003.")
@click.option("--processed", "processed_dir", type=click.Path(file_okay=False),
              help="Processed directory whose vocabularies to use [default: the model directory "
                   "when it is an export, else preprocess.out_dir].")
@click.option("--out", "out", default="-", show_default=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file, one probability per line ('-': stdout).")
@click.option("--format", "fmt", type=click.Choice(["criteo", "avazu", "movielens", "schema"]),
              help="Raw format of RAW_FILE [default: the format the model was trained on].")
@click.option("--runtime", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="Score with PyTorch, or with onnxruntime on the export's model.onnx; auto: "
                   "onnxruntime when the model directory holds a model.onnx (an export, a registry "
                   "version), else PyTorch.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=65_536, show_default=True,
              help="Rows encoded and scored at a time (bounds memory).")
@click.argument("raw_file", type=click.Path())
@click.pass_context
def predict(ctx, model_dir, processed_dir, out, fmt, runtime, batch_rows, raw_file):
    """Score RAW_FILE (any supported raw format, labelled or not; labels are ignored): one click
    probability per input line, in input order.

    Values never kept in training map to the OOV id, empty ones to the missing id, exactly as
    preprocessing encoded the training data. Bad input fails before any output, naming file, line
    and column. How the model runs (BatchNorm folding, int8, torch.compile, onnxruntime
    optimisation level, threads, rows per model call) is set in params.yaml `inference:`.
    """
    _passive_omp_wait()
    from components.serve.predict import predict_file

    params = _load(ctx)
    model_dir = _registry_model(model_dir, params)
    rows = _call(predict_file, model_dir, raw_file, out, fmt=fmt, processed_dir=processed_dir,
                 params=params, batch_rows=batch_rows, runtime=runtime)
    click.echo(f"scored {rows:,} rows of {raw_file} with {model_dir} → {'stdout' if out == '-' else out}",
               err=True)


@main.command()
@click.option("--name", default="nightly", show_default=True, help="Deployment name.")
@click.option("--cron", default="0 3 * * *", show_default=True, help="Cron schedule (UTC).")
@click.pass_context
def serve(ctx, name, cron):
    """Serve the pipeline as a scheduled Prefect deployment (needs a running Prefect server).

    Start the server with `make server`, export PREFECT_API_URL=http://127.0.0.1:4200/api, then run
    this; scheduled and manual runs (`prefect deployment run 'ctrflow-pipeline/NAME'`) show in the UI.
    """
    from flows.serve import serve as serve_flow

    if not os.environ.get("PREFECT_API_URL"):
        click.echo("error: PREFECT_API_URL is not set; schedules need a running Prefect server "
                   "(make server; export PREFECT_API_URL=http://127.0.0.1:4200/api)", err=True)
        sys.exit(2)
    serve_flow(name=name, cron=cron, params_path=ctx.obj["params"])


if __name__ == "__main__":
    main()
