"""Benchmark: distillation quality — teacher vs distilled students vs the same students without it.

Usage::

    .venv/bin/python benchmarks/distillation.py                      # synthetic (2M rows), criteo117k, frappe; 3 seeds
    .venv/bin/python benchmarks/distillation.py --datasets frappe --seeds 2024 \\
        --students dagfm_outer,baseline_dagfm_outer,fsdnet
    .venv/bin/python benchmarks/distillation.py --datasets synthetic --synthetic-rows 100000 --seeds 2024 \\
        --max-epochs 1 --out-dir /tmp/distill-smoke                # end-to-end smoke test (minutes)
    .venv/bin/python benchmarks/distillation.py --report-only       # re-render distillation.md from the JSON
    .venv/bin/python benchmarks/distillation.py --drop synthetic --merge /tmp/s_2024 /tmp/s_2025 /tmp/s_2026
                                # replace the synthetic rows by those of three per-seed processes

Per dataset and seed (seed-major: every run of a seed finishes before the next seed starts, so a
partial benchmark still holds complete paired comparisons), in process, with the product's own
functions and the settings of the repository's ``params.yaml`` (every change is recorded):

1. **teacher** (``--teacher``, default DCNv2): the ``train_teacher`` stage
   (:func:`components.train.teacher.train_teacher`, the ``ctrflow train`` recipe) with
   ``train.seed`` = the seed. Trained once per (dataset, seed) and reused by every student of that
   seed; its logits for every split are cached once (:mod:`components.distill.logit_cache`).
2. **distilled students** (:func:`components.distill.students.run_student` with params.yaml's
   ``distill`` block, ``distill.seed`` = the seed):

   - ``dagfm_inner`` / ``dagfm_outer`` / ``dagfm_kernel``: the KD-DAGFM chain (teacher →
     distillation on the frozen teacher embeddings with α·BCE + β·logit-MSE → finetuning with BCE)
     with ``distill.dagfm.interaction_type`` = inner / outer / kernel;
   - ``dagfm_inner_full``: ``dagfm_inner`` with its own epoch budget of 6 + 3 (params.yaml's), which
     neither ``--max-epochs`` nor ``--set`` caps: to show what the capped rows of a CPU run give away
     (its twin ``baseline_dagfm_inner_full`` has the same 9 epochs);
   - ``dagfm_inner_tuned``: ``dagfm_inner`` tuned by Optuna exactly as the ``distill`` stage tunes
     it (:func:`components.distill.students.tune_student`: ``tune.search_space.dagfm``, TPE seeded
     with the benchmark seed, median pruning on per-epoch valid AUC, params.yaml's defaults as trial
     0 so the untuned row is one of the candidates), ``--tune-trials`` trials (default 10), the best
     trial picked on validation AUC; its study (SQLite) sits beside the run, so it resumes;
   - ``kd_dagfm_plus``: the same chain with the DAGFM + MLP student;
   - ``fsdnet``: FSDNet with its self-distillation only (``external_teacher_weight`` 0);
   - ``fsdnet_ext``: FSDNet self-distillation plus the external teacher's logit-MSE term
     (``external_teacher_weight`` = ``--fsdnet-external-weight``, default 1.0: no published value).
   - ``fsdnet_teacher_recipe``: FSDNet self-distillation on the teacher's recipe instead of the FuxiCTR
     Criteo config's (no MLP BatchNorm and no dropout, as the DCNv2 teacher; params.yaml has BatchNorm
     and dropout 0.2; the embedding L2 is already the teacher's), to separate the architecture from
     the regulariser in the FSDNet-vs-DCNv2 goal.
3. **no-distillation twins** (:func:`components.distill.baseline.run_student_baseline`, BCE only,
   from scratch, the teacher's embedding_dim): ``baseline_dagfm_{inner,outer,kernel}``,
   ``baseline_kd_dagfm_plus`` (trained with the block's distillation ``lr`` for the chain's total
   epoch budget, ``distill_max_epochs + finetune_max_epochs``, as the product does) and ``baseline_fsdnet`` (BCE on FSDNet's inference
   output, no KL, no hint: FSDNet without its self-distillation).

For every model: test AUC and LogLoss of the checkpoint the procedure selects (best validation
AUC), FLOPs per sample of the whole forward pass and parameters from the profiling component
(:func:`components.profile.flops.count_flops` at batch ``evaluate.flops_batch_size``,
:func:`components.profile.size.model_size`), FLOPs as % of the teacher's, ΔAUC vs the teacher and vs
the model's no-distillation twin, both paired by seed. The Markdown report checks the product goals
explicitly — a KD-DAGFM student within 0.001 AUC of its teacher at ≤ 20 % of its FLOPs; FSDNet above
DCNv2 — and says met / NOT met, or "not judged" where the teacher failed the baseline gate in any
seed (the run keeps the gate's record: ``baseline_gate``) or its mean test AUC is below
``TEACHER_MIN_AUC`` (0.55: a teacher at chance level, against which "within 0.001" or "above" means
nothing; Avazu's 10k rows did that to the DCNv2 of 2026-11-23). On the synthetic set the oracle AUC / LogLoss (score = the true click
probability) on exactly the test rows is reported too.

Apart from ``dagfm_inner_tuned``, every student runs once per seed with params.yaml's reference
defaults: tuning every row (``tune.n_trials`` full procedures each) is out of reach of a CPU benchmark
over several datasets × 3 seeds × 15 rows.

Datasets are prepared by ``benchmarks/quality.py``'s functions (imported, not copied): ``synthetic``
(``--synthetic-rows`` rows, generator seed 2024, Criteo layout), ``criteo117k``, ``frappe`` (trained
on Frappe_x1 valid, tested on Frappe_x1 test; see quality.py), ``movielens100k``, ``avazu10k``; the
real files are read from ``/work/shared/data`` and never copied into the repository (a dataset whose
files are absent is skipped with a message).

Results are written after every run (atomically) to ``--out-dir``: ``distillation.json`` (every run,
aggregates, goal checks, settings, invocations) and ``distillation.md``. Runs already present with
the same settings (their teacher's included) are skipped, so an interrupted benchmark resumes;
``--fresh`` re-runs them. A student whose teacher checkpoint is gone from ``--work-dir`` gets the
teacher retrained first (deterministic on one machine's CPU: the same weights; on another machine's
kernels it may be another model, and a student is only compared with the teacher it learned from).
A teacher's identity holds the ``train`` section and the ``--set`` keys outside ``distill.``: a
student-only change re-runs the students over the stored teachers. Torch runs on ``--threads``
threads (default 1), polars too unless ``POLARS_MAX_THREADS`` is set.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fnmatch
import hashlib
import io
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.quality import (  # noqa: E402  (needs REPO on sys.path)
    ALL_DATASETS,
    _atomic,
    _csv,
    _key_value,
    _pm,
    _scratch_params,
    _stamp,
    begin_invocation,
    cpu_kernels,
    fill_constant_baselines,
    find_run,
    kernel_counts,
    load_results,
    log,
    prepare,
    put_run,
)

DEFAULT_WORK = Path(tempfile.gettempdir()) / "ctrflow-bench-distillation"
DEFAULT_OUT = REPO / "benchmarks" / "results"
DEFAULT_DATASETS = ("synthetic", "criteo117k", "frappe")
DEFAULT_SEEDS = (2024, 2025, 2026)
DEFAULT_SYNTHETIC_ROWS = 2_000_000
DEFAULT_TEACHER = "dcnv2"
DEFAULT_EXTERNAL_WEIGHT = 1.0
DEFAULT_TUNE_TRIALS = 10
AUC_TOLERANCE = 0.001   # goal 1: within 0.001 AUC of the teacher ...
FLOPS_GOAL = 0.20       # ... at <= 20 % of its FLOPs (total FLOPs per sample, gathers included)
TEACHER_MIN_AUC = 0.55  # below this mean test AUC the teacher learned next to nothing: neither goal is judged
RESULTS_JSON = "distillation.json"
RESULTS_MD = "distillation.md"


@dataclass(frozen=True)
class RunSpec:
    """One row of the comparison: how it is trained and which row is its no-distillation twin."""

    name: str
    kind: str                      # teacher | kd | fsdnet | baseline
    student: str | None = None     # distill block / registry name: dagfm, kd_dagfm_plus, fsdnet
    block: dict = field(default_factory=dict)   # overrides of the student's distill block
    twin: str | None = None        # the same student trained without distillation
    what: str = ""
    tuned: bool = False            # an Optuna study (the distill stage's tune_student), --tune-trials trials

    @property
    def checkpoint(self) -> str:
        """Subdirectory of the run's output holding the model the procedure selected."""
        leaf = {"kd": "finetune", "fsdnet": "self_distill", "baseline": "baseline", "teacher": "."}[self.kind]
        return f"{self.student}/{leaf}" if self.tuned else leaf


SPECS: dict[str, RunSpec] = {s.name: s for s in (
    RunSpec("teacher", "teacher", what="train_teacher stage"),
    RunSpec("dagfm_inner", "kd", "dagfm", {"interaction_type": "inner"}, "baseline_dagfm_inner",
            "KD-DAGFM chain, inner"),
    RunSpec("dagfm_outer", "kd", "dagfm", {"interaction_type": "outer"}, "baseline_dagfm_outer",
            "KD-DAGFM chain, outer"),
    RunSpec("dagfm_kernel", "kd", "dagfm", {"interaction_type": "kernel"}, "baseline_dagfm_kernel",
            "KD-DAGFM chain, kernel"),
    RunSpec("dagfm_inner_full", "kd", "dagfm", {"interaction_type": "inner", "distill_max_epochs": 6,
                                                "finetune_max_epochs": 3},
            "baseline_dagfm_inner_full",
            "KD-DAGFM chain, inner, with params.yaml's epoch budget (6 + 3) even where the other rows are capped"),
    RunSpec("dagfm_inner_tuned", "kd", "dagfm", {"interaction_type": "inner"}, "baseline_dagfm_inner",
            "KD-DAGFM chain, inner, tuned by Optuna (tune.search_space.dagfm; trial 0 = the dagfm_inner row)",
            tuned=True),
    RunSpec("kd_dagfm_plus", "kd", "kd_dagfm_plus", {}, "baseline_kd_dagfm_plus", "KD-DAGFM+ chain"),
    RunSpec("fsdnet", "fsdnet", "fsdnet", {"external_teacher_weight": 0.0}, "baseline_fsdnet",
            "FSDNet self-distillation"),
    RunSpec("fsdnet_ext", "fsdnet", "fsdnet", {}, "baseline_fsdnet",
            "FSDNet self-distillation + teacher logit-MSE"),
    RunSpec("fsdnet_teacher_recipe", "fsdnet", "fsdnet",
            {"external_teacher_weight": 0.0, "dropout": 0.0, "batch_norm": False}, None,
            "FSDNet self-distillation on the teacher's recipe (no BatchNorm, no dropout)"),
    RunSpec("baseline_dagfm_inner", "baseline", "dagfm", {"interaction_type": "inner"}, what="BCE only"),
    RunSpec("baseline_dagfm_outer", "baseline", "dagfm", {"interaction_type": "outer"}, what="BCE only"),
    RunSpec("baseline_dagfm_kernel", "baseline", "dagfm", {"interaction_type": "kernel"}, what="BCE only"),
    RunSpec("baseline_dagfm_inner_full", "baseline", "dagfm",
            {"interaction_type": "inner", "distill_max_epochs": 6, "finetune_max_epochs": 3},
            what="BCE only, 6 + 3 epochs (the twin of dagfm_inner_full)"),
    RunSpec("baseline_kd_dagfm_plus", "baseline", "kd_dagfm_plus", {}, what="BCE only"),
    RunSpec("baseline_fsdnet", "baseline", "fsdnet", {}, what="BCE only (no KL, no hint)"),
)}
ALL_STUDENTS = tuple(n for n in SPECS if n != "teacher")
KD_GOAL_MODELS = ("dagfm_inner", "dagfm_outer", "dagfm_kernel", "dagfm_inner_full", "dagfm_inner_tuned",
                  "kd_dagfm_plus")
FSD_GOAL_MODELS = ("fsdnet", "fsdnet_ext", "fsdnet_teacher_recipe")
ROW_ORDER = tuple(SPECS)


# ------------------------------------------------------------------------------------------------
# settings of one run


def epoch_cap(caps: dict, dataset: str, run: str) -> int | None:
    """The ``--max-epochs`` cap for (dataset, run): the most specific matching key wins.

    Keys: ``*`` (all) < a dataset < a run name or glob (``baseline_*``) < ``dataset/run-glob``.
    """
    best, rank = None, -1
    for key, n in caps.items():
        if key == "*":
            ok, r = True, 0
        elif "/" in key:
            d, pat = key.split("/", 1)
            ok, r = d == dataset and fnmatch.fnmatchcase(run, pat), 3
        elif key in ALL_DATASETS:
            ok, r = key == dataset, 1
        else:
            ok, r = fnmatch.fnmatchcase(run, key), 2
        if ok and r > rank:
            best, rank = n, r
    return best


def _epoch_keys(spec: RunSpec, base, recipe: str) -> dict:
    """Dotted params keys of the run's epoch budgets (and lr, for a matched baseline) → default values."""
    if spec.kind == "teacher":
        return {"train.max_epochs": base.train.max_epochs}
    block = base.distill.block(spec.student)
    pre = f"distill.{spec.student}"
    if spec.kind == "kd":
        return {f"{pre}.distill_max_epochs": block.distill_max_epochs,
                f"{pre}.finetune_max_epochs": block.finetune_max_epochs}
    if spec.student == "fsdnet":
        return {f"{pre}.max_epochs": block.max_epochs}
    # KD baseline: since 2026-11-23 the product trains it with the block's lr for distill + finetune epochs
    # (the chain's budget), so "matched" and "product" are the same recipe; both keys carry the caps.
    return {f"{pre}.distill_max_epochs": block.distill_max_epochs,
            f"{pre}.finetune_max_epochs": block.finetune_max_epochs}


def run_settings(dataset: str, run: str, seed: int, args: argparse.Namespace, base, base_sha: str) -> dict:
    """Everything that defines one run besides its paths (the run's identity for skipping)."""
    spec = SPECS[run]
    cap = epoch_cap(args.max_epochs, dataset, run)
    ov: dict = {}
    if spec.kind == "teacher":
        ov.update({"train.model": args.teacher, "train.seed": seed, "train.num_threads": args.threads,
                   "train.device": "cpu"})
    else:
        ov.update({"distill.seed": seed, "distill.num_threads": args.threads, "distill.device": "cpu"})
        block = {**spec.block}
        if run == "fsdnet_ext":
            block["external_teacher_weight"] = args.fsdnet_external_weight
        ov.update({f"distill.{spec.student}.{k}": v for k, v in block.items()})
    for key, default in _epoch_keys(spec, base, args.baseline_recipe).items():
        own = spec.block.get(key.rsplit(".", 1)[1])   # a row with its own budget is not capped
        ov[key] = own if own is not None else default if cap is None else min(default, cap)
    if spec.tuned:
        ov.update({"tune.n_trials": args.tune_trials, "tune.seed": seed, "tune.timeout_s": None})
    s: dict = {"overrides": ov, "max_epochs_cap": cap, "params_sha": base_sha}
    if spec.kind == "baseline":
        s["baseline_recipe"] = args.baseline_recipe
    if dataset == "synthetic":
        s["synthetic_rows"] = args.synthetic_rows
    own = {k: v for k, v in args.set if spec.kind != "teacher" or not k.startswith("distill.")}
    if own:
        s["set"] = own
    return s


def merge_results(into: dict, other: dict) -> None:
    """Add ``other``'s runs, datasets (teacher-logit statistics per seed united) and invocations to ``into``.

    Of two runs of one (dataset, model, seed) the later ``finished`` one is kept, whatever the order of
    the merge: a result set copied from the committed file before a parallel process re-ran a run also
    carries the older copy of that run.
    """
    for run in other["runs"]:
        mine = find_run(into, run["dataset"], run["model"], run["seed"])
        if mine is None or (run.get("finished") or "") >= (mine.get("finished") or ""):
            put_run(into, run)
    for ds, info in other["datasets"].items():
        mine = into["datasets"].setdefault(ds, {})
        stats = {**mine.get("teacher_logits_test", {}), **info.get("teacher_logits_test", {})}
        mine.update(info)
        if stats:
            mine["teacher_logits_test"] = stats
    # one invocation seen twice (a results file copied from a process still running, then its final
    # one) is kept once, with the larger run count
    for inv in other["invocations"]:
        key = (inv.get("command"), inv.get("started"))
        same = [i for i in into["invocations"] if (i.get("command"), i.get("started")) == key]
        if not same:
            into["invocations"].append(inv)
        elif inv.get("runs_done", 0) > same[0].get("runs_done", 0):
            into["invocations"][into["invocations"].index(same[0])] = inv
    into.setdefault("context", other.get("context"))


def _invocation_datasets(command: str) -> list[str] | None:
    """The ``--datasets`` an invocation's recorded command line ran (None if it cannot be parsed)."""
    argv = shlex.split(command)
    while argv and not argv[0].endswith("distillation.py"):
        argv.pop(0)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return parse_args(argv[1:]).datasets
    except SystemExit:
        return None


def drop_dataset(results: dict, dataset: str) -> int:
    """Remove ``dataset``'s runs and description, and the invocations that ran only it; return runs removed.

    For replacing a dataset's results wholesale (e.g. the synthetic set at another ``--synthetic-rows``):
    runs of two sizes must never be aggregated together, and a run kept by mistake would be.
    """
    before = len(results["runs"])
    results["runs"] = [r for r in results["runs"] if r["dataset"] != dataset]
    results["datasets"].pop(dataset, None)
    results["invocations"] = [i for i in results["invocations"]
                              if _invocation_datasets(i.get("command", "")) != [dataset]]
    return before - len(results["runs"])


def _seedless(settings: dict) -> dict:
    """``settings`` without the per-seed keys (train.seed / distill.seed / tune.seed), to compare seeds' settings."""
    out = {k: (_seedless(v) if isinstance(v, dict) and "overrides" in v else v) for k, v in settings.items()}
    out["overrides"] = {k: v for k, v in settings.get("overrides", {}).items()
                        if k not in ("train.seed", "distill.seed", "tune.seed")}  # fmt: skip
    return out


def base_params_sha(base, *, teacher: bool = False) -> str:
    """Hash of the resolved ``train`` and ``distill`` sections (params.yaml + --set): a change re-runs.

    ``teacher=True``: of the ``train`` section only — a student's setting (a ``distill`` default, a
    ``--set distill....``) does not re-train the teachers (an hour a seed on the 2M-row set).
    """
    sections = {"train": base.train.model_dump(mode="json"), "flops_batch_size": _flops_batch(base)}
    if not teacher:
        sections["distill"] = base.distill.model_dump(mode="json")
    blob = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flops_batch(params) -> int:
    from components.evaluate.settings import evaluate_settings

    return evaluate_settings(params).flops_batch_size


# ------------------------------------------------------------------------------------------------
# one run


def _profile(model_dir: Path, processed: Path, batch: int) -> dict:
    """FLOPs per sample and parameter counts of the checkpoint in ``model_dir`` (profiling component)."""
    from components.distill.workspace import load_feature_map
    from components.profile.flops import count_flops
    from components.profile.size import model_size
    from components.train.checkpoint import MODEL_WEIGHTS, load_model

    fmap = load_feature_map(processed)
    model, meta = load_model(model_dir, fmap, device="cpu")
    flops = count_flops(model, fmap, batch)
    size = model_size(model, model_dir / MODEL_WEIGHTS)
    emb = [p.detach().double() for p in model.embedding_parameters()] if hasattr(model, "embedding_parameters") else []
    n_emb = sum(p.numel() for p in emb)
    emb_rms = (sum(float(p.pow(2).sum()) for p in emb) / n_emb) ** 0.5 if n_emb else None
    return {"flops_per_sample": flops.flops_per_sample,
            "flops_excl_gather_per_sample": flops.flops_excluding_gather_per_sample,
            "matmul_flops_per_sample": flops.matmul_flops_per_sample,
            "uncounted_ops": flops.uncounted_ops,
            "parameters": size.total_parameters, "embedding_parameters": size.embedding_parameters,
            "dense_parameters": size.dense_parameters, "checkpoint_bytes": size.file_bytes,
            "embedding_rms": emb_rms, "hparams": meta.get("hparams")}


def _precision(setting: str | None) -> str | None:
    """The training autocast a CPU run gets under ``setting`` (train/distill.precision), where the code has it."""
    if setting is None:
        return None
    try:
        import torch

        from components.train.loop import resolve_precision
    except ImportError:
        return None
    return "bf16" if resolve_precision(torch.device("cpu"), setting) is not None else "fp32"


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _phase_summary(name: str, ph: dict, max_epochs: int | None) -> dict:
    hist = ph.get("history") or []
    return {"phase": name, "best_epoch": ph.get("best_epoch"), "epochs": ph.get("epochs"), "max_epochs": max_epochs,
            "samples_per_s": _mean([h.get("samples_per_s") for h in hist]),
            "test_auc": (ph.get("test") or {}).get("auc"), "valid_auc": (ph.get("valid") or {}).get("auc")}


@dataclass
class SeedDirs:
    """Where one (dataset, seed) lives under --work-dir: the teacher, its logit cache, the students."""

    root: Path

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def logits(self) -> Path:
        return self.root / "teacher_logits"

    def student(self, run: str, settings: dict) -> Path:
        return self.root / "students" / f"{run}_{_stamp(settings)}"


def seed_dirs(work: Path, dataset: str, seed: int, teacher_settings: dict) -> SeedDirs:
    """``<work>/runs/<dataset>/seed<seed>_<hash of the teacher's settings>``."""
    return SeedDirs(work / "runs" / dataset / f"seed{seed}_{_stamp(teacher_settings)}")


def _params(prep, settings: dict, dirs: SeedDirs, run_dir: Path):
    # the row's own overrides win over --set (a --set cannot turn dagfm_inner into another row)
    over = {**prep.overrides, **settings.get("set", {}), **settings["overrides"],
            "train.out_dir": str(dirs.teacher / "model"), "train.metrics": str(dirs.teacher / "metrics.json"),
            "train.curve": str(dirs.teacher / "curve.csv"), "distill.logit_cache_dir": str(dirs.logits),
            "distill.out_dir": str(dirs.root / "students")}
    return _scratch_params(run_dir, over)


def _context(t0: float, cpu0: float, load0: float) -> dict:
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
            "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2),
            "finished": _dt.datetime.now().isoformat(timespec="seconds"), "cpu_kernels": cpu_kernels()}


def train_teacher_run(prep, seed: int, settings: dict, dirs: SeedDirs, flops_batch: int) -> dict:
    """Train the teacher with the train_teacher stage; metrics, FLOPs, parameters, context."""
    from components.train.teacher import train_teacher

    params = _params(prep, settings, dirs, dirs.teacher)
    log_path = dirs.teacher / "train.log"
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with open(log_path, "w") as fh:
        res = train_teacher(params.train, prep.processed, resume=False, log=lambda m: print(m, file=fh, flush=True))
    ctx = _context(t0, cpu0, load0)
    m = res.metrics
    meta = json.loads((res.model_dir / "model.json").read_text())
    return {
        "dataset": prep.name, "model": "teacher", "kind": "teacher", "teacher_model": params.train.model,
        "seed": seed, "settings": settings,
        "test_auc": m["test"]["auc"], "test_logloss": m["test"]["logloss"],
        "valid_auc": m["valid"]["auc"], "valid_logloss": m["valid"]["logloss"],
        "phases": [{"phase": "train", "best_epoch": m["best_epoch"], "epochs": m["epochs"],
                    "max_epochs": params.train.max_epochs, "samples_per_s": m.get("train_samples_per_s")}],
        "train_samples_per_s": m.get("train_samples_per_s"), "epochs_total": m["epochs"],
        "precision": m.get("precision") or _precision(getattr(params.train, "precision", None)),
        "teacher_sha": meta.get("weights_sha256"),
        "baseline_gate": teacher_gate_record(m),
        **_profile(res.model_dir, prep.processed, flops_batch),
        **ctx, "out_dir": str(res.model_dir), "log": str(log_path),
    }


def teacher_gate_record(metrics: dict) -> dict | None:
    """The baseline gate of a teacher's metrics JSON, as a run keeps it: passed, the valid-AUC gain
    over LR and the gate LR's epochs (None when the metrics have no gate)."""
    gate = metrics.get("gate")
    if not gate:
        return None
    lr = (metrics.get("baselines") or {}).get("lr") or {}
    return {"passed": bool(gate["passed"]), "valid_auc_gain": gate.get("auc_gain_over_lr"),
            "lr_best_epoch": lr.get("best_epoch"),
            "lr_epochs": lr.get("epochs"), "lr_max_epochs": lr.get("max_epochs")}


def train_student_run(prep, run: str, seed: int, settings: dict, dirs: SeedDirs, flops_batch: int) -> dict:
    """One distilled student or no-distillation twin with the product's functions; metrics + profile."""
    from components.distill.baseline import run_student_baseline
    from components.distill.students import run_student, tune_student, with_overrides

    spec = SPECS[run]
    out = dirs.student(run, settings)
    params = _params(prep, settings, dirs, out.with_name(out.name + ".params"))
    teacher_dir = Path(params.train.out_dir)
    teacher_meta = json.loads((teacher_dir / "model.json").read_text())
    log_path = out.with_name(out.name + ".log")
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with open(log_path, "w") as fh:
        def log_to_file(msg: str) -> None:
            print(msg, file=fh, flush=True)

        tuned = None
        if spec.kind == "baseline":
            metrics = run_student_baseline(spec.student, prep.processed, params.distill, out,
                                           embedding_dim=teacher_meta["hparams"].get("embedding_dim"), log=log_to_file)
        elif spec.tuned:
            # the distill stage's own path; the study (SQLite) and its trials sit beside the run, so an
            # interrupted benchmark resumes the study instead of starting it again
            params = params.model_copy(update={"tune": params.tune.model_copy(update={
                "storage": f"sqlite:///{out.with_name(out.name + '.optuna.db').resolve()}",
                "trials_dir": str(out.with_name(out.name + ".trials"))})})
            tuned = tune_student(spec.student, params, teacher_dir, prep.processed, out, log=log_to_file)["tuned"]
            metrics = json.loads((out / spec.student / "metrics.json").read_text())
        else:
            metrics = run_student(spec.student, params.distill, teacher_dir, prep.processed, out, log=log_to_file)
    ctx = _context(t0, cpu0, load0)
    block = params.distill.block(spec.student)
    caps = {"distill": getattr(block, "distill_max_epochs", None), "finetune": getattr(block, "finetune_max_epochs", None),
            "self_distill": getattr(block, "max_epochs", None),
            "baseline": block.max_epochs if spec.student == "fsdnet" else getattr(block, "finetune_max_epochs", None)}
    final = metrics["final"]
    test = final["test"]
    rec = {
        "dataset": prep.name, "model": run, "kind": spec.kind, "student": spec.student, "seed": seed,
        "settings": settings,
        "test_auc": test["auc"], "test_logloss": test["logloss"],
        "valid_auc": final["valid"]["auc"], "valid_logloss": final["valid"]["logloss"],
        "teacher_logit_mse_test": test.get("teacher_logit_mse"),
        "phases": [_phase_summary(n, ph, caps.get(n)) for n, ph in metrics["phases"].items()],
        "teacher_sha": teacher_meta.get("weights_sha256"),
        "block": block.model_dump(mode="json"),
        "precision": _precision(getattr(params.distill, "precision", None)),
        **_profile(out / spec.checkpoint, prep.processed, flops_batch),
        **ctx, "out_dir": str(out), "log": str(log_path),
    }
    if tuned is not None:
        rec["tuned"] = tuned
        block = with_overrides(params.distill, spec.student, tuned["params"]).block(spec.student)
        rec["block"] = block.model_dump(mode="json")
    rec["train_samples_per_s"] = rec["phases"][0]["samples_per_s"] if rec["phases"] else None
    rec["epochs_total"] = sum(p.get("epochs") or 0 for p in rec["phases"])
    if spec.kind == "kd":
        import math

        from components.train.recipe import resolve_batch_size

        ph = metrics["phases"]["distill"]
        train_rows = json.loads((prep.processed / "feature_map.json").read_text())["splits"]["train"]["rows"]
        rec["distill_phase"] = {
            "test_auc": (ph.get("test") or {}).get("auc"),
            "test_teacher_logit_mse": (ph.get("test") or {}).get("teacher_logit_mse"),
            "adam_steps": ph["epochs"] * math.ceil(train_rows / resolve_batch_size(block.batch_size, train_rows)),
            "batch_size": resolve_batch_size(block.batch_size, train_rows), "lr": block.lr,
        }
    return rec


def _teacher_ready(run: dict | None, model_dir: Path) -> bool:
    """``model_dir`` (where this invocation's students look) holds the stored teacher run's weights."""
    if run is None:
        return False
    meta = model_dir / "model.json"
    return meta.exists() and json.loads(meta.read_text()).get("weights_sha256") == run.get("teacher_sha")


# ------------------------------------------------------------------------------------------------
# aggregation, goal checks


def _by_model(results: dict, dataset: str) -> dict[str, dict[int, dict]]:
    by: dict[str, dict[int, dict]] = {}
    for r in results["runs"]:
        if r["dataset"] == dataset:
            by.setdefault(r["model"], {})[r["seed"]] = r
    return by


def _ordered_models(results: dict, dataset: str) -> list[str]:
    present = {r["model"] for r in results["runs"] if r["dataset"] == dataset}
    return [m for m in ROW_ORDER if m in present] + sorted(present - set(ROW_ORDER))


def _datasets(results: dict) -> list[str]:
    present = {r["dataset"] for r in results["runs"]}
    return [d for d in ALL_DATASETS if d in present] + sorted(present - set(ALL_DATASETS))


def paired(a: dict[int, dict], b: dict[int, dict], metric: str = "test_auc") -> dict | None:
    """a − b on ``metric`` over their common seeds (paired t-test p when n ≥ 2 and Δ varies), or None."""
    from components.evaluate.aggregate import paired_comparison

    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    cmp = paired_comparison({s: a[s] for s in seeds}, {s: b[s] for s in seeds}, metric)
    diffs = cmp["differences"]
    return {"n": cmp["n"], "seeds": seeds, "differences": diffs, "mean_diff": cmp["mean_diff"],
            "std_diff": cmp["std_diff"], "p_value": cmp["p_value"], "wins": sum(d > 0 for d in diffs)}


def _distilled_from_the_teacher(runs: dict[int, dict], teacher: dict[int, dict]) -> dict[int, dict]:
    """The seeds of ``runs`` whose teacher weights are the stored teacher run's of that seed.

    A student is compared with the teacher it learned from: after a merge, or a teacher re-trained on
    another machine (torch's CPU kernels differ between machines: the same seed may train another
    model; ``cpu_kernels`` in each run), a seed's student may hold another teacher's hash. Runs without a recorded hash
    (older records) are kept.
    """
    out = {}
    for seed, run in runs.items():
        mine, theirs = run.get("teacher_sha"), (teacher.get(seed) or {}).get("teacher_sha")
        if not mine or not theirs or mine == theirs:
            out[seed] = run
    return out


def aggregate(results: dict) -> dict:
    """{dataset: {model: mean ± std of the metrics, FLOPs/params, Δ vs teacher and vs twin (paired)}}."""
    from components.evaluate.aggregate import aggregate_seeds

    out: dict = {}
    for ds in _datasets(results):
        by = _by_model(results, ds)
        teacher = by.get("teacher", {})
        t_flops = _mean([r["flops_per_sample"] for r in teacher.values()])
        t_arith = _mean([r["flops_excl_gather_per_sample"] for r in teacher.values()])
        out[ds] = {}
        for model in _ordered_models(results, ds):
            runs = by[model]
            agg = aggregate_seeds(runs, ["test_auc", "test_logloss", "valid_auc", "wall_s", "epochs_total"])
            flops = _mean([r["flops_per_sample"] for r in runs.values()])
            arith = _mean([r["flops_excl_gather_per_sample"] for r in runs.values()])
            spec = SPECS.get(model)
            twin = spec.twin if spec else None
            same_teacher = _distilled_from_the_teacher(runs, teacher)
            a = {**agg,
                 "kind": runs[next(iter(runs))]["kind"],
                 "flops_per_sample": flops, "flops_excl_gather_per_sample": arith,
                 "parameters": _mean([r["parameters"] for r in runs.values()]),
                 "dense_parameters": _mean([r["dense_parameters"] for r in runs.values()]),
                 "train_samples_per_s": _mean([r.get("train_samples_per_s") for r in runs.values()]),
                 "flops_fraction": flops / t_flops if t_flops else None,
                 "flops_fraction_excl_gather": arith / t_arith if t_arith else None,
                 "vs_teacher": paired(same_teacher, teacher) if model != "teacher" else None,
                 "other_teacher_seeds": sorted(set(runs) - set(same_teacher)) if model != "teacher" else [],
                 "twin": twin if twin in by else None,
                 "vs_twin": paired(runs, by[twin]) if twin in by else None,
                 "settings": [json.loads(s) for s in sorted({json.dumps(_seedless(r["settings"]), sort_keys=True)
                                                             for r in runs.values()})]}
            out[ds][model] = a
    return out


def goal_checks(results: dict) -> dict:
    """Per dataset: goal 1 (KD-DAGFM ≤ 0.001 AUC below the teacher at ≤ 20 % FLOPs) and goal 2 (FSDNet > DCNv2)."""
    out: dict = {}
    for ds, models in results["aggregates"].items():
        teacher_model = next((r.get("teacher_model") for r in results["runs"]
                              if r["dataset"] == ds and r["model"] == "teacher"), None)
        teachers = [r for r in results["runs"] if r["dataset"] == ds and r["model"] == "teacher"]
        teacher_auc = _mean([r["test_auc"] for r in teachers])
        # "student ≈ teacher" and "FSDNet > teacher" say nothing against a teacher at chance level, nor
        # against one that lost to LR (the baseline gate; runs recorded before the gate had no record)
        gate_failed = sorted(r["seed"] for r in teachers if (r.get("baseline_gate") or {}).get("passed") is False)
        judged = (teacher_auc is None or teacher_auc >= TEACHER_MIN_AUC) and not gate_failed
        kd_rows = []
        for m in KD_GOAL_MODELS:
            a = models.get(m)
            if not a or not a["vs_teacher"]:
                continue
            v = a["vs_teacher"]
            auc_ok = v["mean_diff"] >= -AUC_TOLERANCE
            flops_ok = a["flops_fraction"] is not None and a["flops_fraction"] <= FLOPS_GOAL
            kd_rows.append({"model": m, "n": v["n"], "mean_diff": v["mean_diff"], "std_diff": v["std_diff"],
                            "p_value": v["p_value"],
                            "seeds_within": sum(d >= -AUC_TOLERANCE for d in v["differences"]),
                            "flops_fraction": a["flops_fraction"],
                            "flops_fraction_excl_gather": a["flops_fraction_excl_gather"],
                            "auc_ok": auc_ok, "flops_ok": flops_ok, "met": auc_ok and flops_ok})
        fsd_rows = []
        for m in FSD_GOAL_MODELS:
            a = models.get(m)
            if not a or not a["vs_teacher"]:
                continue
            v = a["vs_teacher"]
            fsd_rows.append({"model": m, "n": v["n"], "mean_diff": v["mean_diff"], "std_diff": v["std_diff"],
                             "p_value": v["p_value"], "wins": v["wins"],
                             "flops_fraction": a["flops_fraction"], "met": v["mean_diff"] > 0})
        fsd_applicable = judged and teacher_model == "dcnv2"
        out[ds] = {
            "teacher_model": teacher_model,
            "teacher_auc": teacher_auc,
            "gate_failed_seeds": gate_failed,
            "gate_passed_seeds": sorted(r["seed"] for r in teachers if (r.get("baseline_gate") or {}).get("passed")),
            "judged": judged,
            "kd": {"rows": kd_rows, "met_by": [r["model"] for r in kd_rows if r["met"]] if judged else [],
                   "met": (any(r["met"] for r in kd_rows) if kd_rows else None) if judged else None},
            "fsdnet": {"rows": fsd_rows, "applicable": fsd_applicable,
                       "met_by": [r["model"] for r in fsd_rows if r["met"]] if fsd_applicable else [],
                       "met": (any(r["met"] for r in fsd_rows) if fsd_rows else None)
                       if fsd_applicable else None},
        }
    return out


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("**met**" if met else "**NOT met**")


def _not_judged(g: dict) -> str:
    if g.get("gate_failed_seeds"):
        return f"not judged (teacher failed the baseline gate: seeds {', '.join(map(str, g['gate_failed_seeds']))})"
    return f"not judged (teacher AUC {g['teacher_auc']:.4f} < {TEACHER_MIN_AUC})"


def _cap_notes(results: dict, ds: str) -> list[str]:
    """Runs whose selected phase was still improving at its epoch cap (their numbers are lower bounds)."""
    hit: dict[str, dict[str, list[str]]] = {}  # "phase (cap N)" → model → seeds
    for r in results["runs"]:
        if r["dataset"] != ds:
            continue
        for p in r["phases"]:
            cap = p.get("max_epochs")
            if cap and p.get("epochs") == cap and p.get("best_epoch") == cap:
                hit.setdefault(f"{p['phase']} (cap {cap})", {}).setdefault(r["model"], []).append(str(r["seed"]))
    if not hit:
        return []
    parts = [f"{ph}: " + ", ".join(f"{m} [{' '.join(seeds)}]" for m, seeds in models.items())
             for ph, models in hit.items()]
    return ["Still improving when a phase hit its epoch cap (best epoch = last epoch; a lower bound on what the "
            "recipe reaches), model [seeds]: " + "; ".join(parts) + "."]


def _distill_phase_notes(results: dict, ds: str) -> list[str]:
    """How closely each KD student matched the teacher's test logits after its distillation phase, and why."""
    stats = results["datasets"].get(ds, {}).get("teacher_logits_test", {})
    teachers = {r["seed"]: r for r in results["runs"] if r["dataset"] == ds and r["model"] == "teacher"}
    out = []
    for m in KD_GOAL_MODELS:
        runs = sorted((r for r in results["runs"] if r["dataset"] == ds and r["model"] == m and r.get("distill_phase")
                       and str(r["seed"]) in stats), key=lambda r: r["seed"])
        if not runs or runs[0]["distill_phase"].get("test_teacher_logit_mse") is None:
            continue
        r = runs[0]
        st, dp = stats[str(r["seed"])], r["distill_phase"]
        var = st["std"] ** 2
        text = (f"{m} (seed {r['seed']}): after the distillation phase its test logits are at MSE "
                f"{dp['test_teacher_logit_mse']:.3f} from the teacher's (teacher logits mean {st['mean']:+.2f}, std "
                f"{st['std']:.2f}: predicting their mean would score {var:.3f}, predicting 0 {st['mean_square']:.3f}"
                + (f"; R² = {1 - dp['test_teacher_logit_mse'] / var:.2f}" if st["std"] >= 0.1 else "")
                + f"); test AUC {dp['test_auc']:.4f} after distillation, {r['test_auc']:.4f} after finetuning. "
                f"Distillation budget: {dp['adam_steps']} Adam steps at lr {dp['lr']:g}, so no weight (the readout bias "
                f"included) moves much more than {dp['adam_steps'] * dp['lr']:.2g}")
        emb = (teachers.get(r["seed"]) or {}).get("embedding_rms")
        rescaled = (r.get("block") or {}).get("teacher_embedding_rms")
        if emb is not None and rescaled is not None:
            text += (f"; the teacher's embeddings (RMS {emb:.4f}) were rescaled to RMS {rescaled:g} before freezing "
                     "(distill.<student>.teacher_embedding_rms)")
        elif emb is not None:
            text += (f"; the frozen teacher embeddings have RMS {emb:.4f}, and a DAG layer-t state is a product of "
                     "t+1 of them, so the higher-order terms start orders of magnitude below the first-order ones")
        out.append(text + ".")
    return out


def finetune_keep_counterfactual(results: dict, ds: str) -> dict[str, dict]:
    """Per KD student run without ``finetune_must_improve``: what that option would have returned.

    Derived from the recorded per-phase scores, not a re-run: the option changes nothing in either
    phase, it only returns the distillation phase's checkpoint when finetuning's best valid AUC does not
    beat it, so that checkpoint's recorded test AUC is what the chain would have ended with.
    {model: {"n", "kept" (seeds where it would keep the distilled student), "default", "keep"}} — the
    last two are the mean Δ test AUC vs the same seed's teacher.
    """
    teachers = {r["seed"]: r["test_auc"] for r in results["runs"] if r["dataset"] == ds and r["model"] == "teacher"}
    out: dict[str, dict] = {}
    for m in KD_GOAL_MODELS:
        rows = []
        for r in results["runs"]:
            if (r["dataset"] != ds or r["model"] != m or r["seed"] not in teachers
                    or (r.get("block") or {}).get("finetune_must_improve")):
                continue
            ph = {p["phase"]: p for p in r.get("phases", [])}
            d, f = ph.get("distill"), ph.get("finetune")
            if not d or not f or None in (d.get("valid_auc"), f.get("valid_auc"), d.get("test_auc")):
                continue
            keep = not f["valid_auc"] > d["valid_auc"]
            t = teachers[r["seed"]]
            rows.append((keep, r["test_auc"] - t, (d["test_auc"] if keep else r["test_auc"]) - t))
        if rows:
            out[m] = {"n": len(rows), "kept": sum(k for k, _, _ in rows),
                      "default": _mean([a for _, a, _ in rows]), "keep": _mean([b for _, _, b in rows])}
    return out


def _finetune_keep_notes(results: dict, ds: str) -> list[str]:
    cf = {m: c for m, c in finetune_keep_counterfactual(results, ds).items() if c["kept"]}
    if not cf:
        return []
    parts = [f"{m} {c['default']:+.4f} → {c['keep']:+.4f} ({c['kept']}/{c['n']} seeds keep the distilled student)"
             for m, c in cf.items()]
    return ["Finetuning did not beat the distilled student on validation in some runs, and the chain kept it "
            "anyway (finetune_must_improve false, the reference procedure). With finetune_must_improve true the "
            "Δ test AUC vs the teacher would be, read from the recorded per-phase scores (not a re-run): "
            + "; ".join(parts) + "."]


def _tuned_notes(results: dict, ds: str) -> list[str]:
    """Per Optuna-tuned row: trials per seed, the best trial and its hyperparameters."""
    out = []
    for m in (name for name, spec in SPECS.items() if spec.tuned):
        runs = sorted((r for r in results["runs"] if r["dataset"] == ds and r["model"] == m and r.get("tuned")),
                      key=lambda r: r["seed"])
        if not runs:
            continue
        per_seed = "; ".join(
            f"seed {r['seed']}: {r['tuned']['complete']} complete + {r['tuned']['pruned']} pruned, best trial "
            f"{r['tuned']['best_trial']} (valid AUC {r['tuned']['best_valid_auc']:.4f}) "
            + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in sorted(r["tuned"]["params"].items()))
            for r in runs)
        out.append(f"{m}: Optuna (TPE, median pruning; trial 0 = params.yaml's defaults, i.e. the untuned row), "
                   f"selected on validation AUC — {per_seed}.")
    return out


def notes(results: dict) -> dict[str, list[str]]:
    """Per-dataset findings derived from the numbers: why a goal falls short, what distillation changed."""
    out: dict[str, list[str]] = {}
    for ds, models in results["aggregates"].items():
        n: list[str] = []
        g = results["goals"].get(ds, {})
        teacher = models.get("teacher")
        if teacher:
            t_runs = _by_model(results, ds).get("teacher", {})
            best = ", ".join(f"{s}: {r['phases'][0]['best_epoch']}/{r['phases'][0]['epochs']}"
                             for s, r in sorted(t_runs.items()))
            n.append(f"Teacher ({g.get('teacher_model')}): test AUC {_pm(teacher, 'test_auc')}; best epoch / epochs "
                     f"per seed {best}.")
        gates = {s_: r.get("baseline_gate") for s_, r in sorted(_by_model(results, ds).get("teacher", {}).items())}
        if any(gates.values()):
            n.append("Baseline gate (the teacher's valid AUC against the gate's LR, components/train/gate.py): "
                     + "; ".join(f"seed {s_}: " + ("no record" if not v else
                                 f"{'passed' if v['passed'] else 'FAILED'}"
                                 + (f" ({v['valid_auc_gain']:+.4f})" if v.get("valid_auc_gain") is not None else "")
                                 + (f", LR {v['lr_epochs']} epochs" + (f" of {v['lr_max_epochs']}" if v.get("lr_max_epochs")
                                                                        else "") if v.get("lr_epochs") else ""))
                                 for s_, v in gates.items()) + ".")
        if g and not g["judged"] and g.get("gate_failed_seeds"):
            n.append(f"Neither goal is judged here: the teacher failed the baseline gate (seeds "
                     f"{', '.join(map(str, g['gate_failed_seeds']))}), and a student \"within 0.001 of\" or \"above\" "
                     "a teacher that loses to LR says nothing about distillation.")
        elif g and not g["judged"]:
            n.append(f"Neither goal is judged here: the teacher's mean test AUC {g['teacher_auc']:.4f} is below "
                     f"{TEACHER_MIN_AUC}, so it learned next to nothing, and a student \"within 0.001 of\" or \"above\" "
                     "it says nothing about distillation.")
        for row in g["kd"]["rows"] if g and g["judged"] else []:
            if row["met"]:
                continue
            why = []
            if not row["auc_ok"]:
                why.append(f"AUC {row['mean_diff']:+.4f} vs the teacher (short of the −{AUC_TOLERANCE} tolerance by "
                           f"{-AUC_TOLERANCE - row['mean_diff']:.4f})")
            if not row["flops_ok"]:
                why.append(f"FLOPs {100 * row['flops_fraction']:.1f} % of the teacher's (> {100 * FLOPS_GOAL:.0f} %; "
                           f"arithmetic only {100 * row['flops_fraction_excl_gather']:.1f} %)")
            n.append(f"{row['model']} misses goal 1: {' and '.join(why)}.")
        for m, a in models.items():
            v = a.get("vs_twin")
            if v is None:
                continue
            if v["mean_diff"] <= 0:
                n.append(f"{m}: distillation did not help here — its no-distillation twin {a['twin']} scores "
                         f"{-v['mean_diff']:.4f} AUC higher on average (twin ≥ student in {v['n'] - v['wins']}/{v['n']} "
                         "seeds).")
        n += _tuned_notes(results, ds)
        n += _distill_phase_notes(results, ds)
        n += _finetune_keep_notes(results, ds)
        n += _cap_notes(results, ds)
        unc = sorted({op for r in results["runs"] if r["dataset"] == ds for op in (r.get("uncounted_ops") or {})})
        if unc:
            n.append(f"FLOP counter: ops without a cost rule (counted 0): {', '.join(unc)}.")
        out[ds] = n
    return out


DATASET_NOTES = {
    "synthetic": "Criteo-layout log from the project's generator with planted 2nd/3rd-order interactions; the "
                 "oracle scores with the true click probability, the best any model can do on these rows.",
    "criteo117k": "117k-row random sample of Kaggle Criteo (≈94k train rows): far below the 30M+ rows the "
                  "recipes were tuned for; deep teachers peak after 1–2 epochs here (see quality.md).",
    "frappe": "Trained on 90 % of Frappe_x1 valid (51,950 rows), early-stopped on the other 10 %, tested on "
              "Frappe_x1 test (benchmarks/quality.py's protocol; not BARS's).",
    "movielens100k": "ML-100K, label = rating ≥ 4, rating 3 dropped; ≈ 8k test rows.",
    "avazu10k": "9,999 rows of one hour (≈1,000 test rows): seed spreads exceed most gaps, and the split moves a "
                "comparison more than the seeds do (quality.md's pooled section: over 10 random splits LR is ahead "
                "of the DCNv2 teacher on test although the teacher passes the gate on this split's valid rows).",
}


def deviations(results: dict) -> list[str]:
    """Every setting that differs from params.yaml, from the stored runs."""
    runs = results["runs"]
    out = []
    threads = sorted({r["settings"]["overrides"].get("train.num_threads", r["settings"]["overrides"].get(
        "distill.num_threads")) for r in runs})
    if threads:
        out.append(f"train/distill.num_threads = {', '.join(map(str, threads))} and device = cpu (params.yaml: 0 = all "
                   "cores, auto): on the shared 2-core machine that many torch threads per run.")
    out.append("train.seed and distill.seed = the benchmark seed (params.yaml: 2024 and 2022), so each seed has its "
               "own teacher and its own students; the data split is the same for every seed (preprocess.seed 2022).")
    capped: dict[str, dict[int, list[str]]] = {}  # dataset → cap → runs it lowered a phase budget of
    for r in runs:
        cap = r["settings"].get("max_epochs_cap")
        if cap is not None and any(p.get("max_epochs") == cap for p in r["phases"]):
            capped.setdefault(r["dataset"], {}).setdefault(cap, []).append(r["model"])
    if capped:
        parts = []
        for ds, by_cap in capped.items():
            n_models = len({r["model"] for r in runs if r["dataset"] == ds})
            for cap, models in sorted(by_cap.items()):
                models = list(dict.fromkeys(models))
                who = "every run" if len(models) == n_models else ", ".join(models)
                parts.append(f"{ds}: {who} at ≤ {cap} epoch(s) per phase")
        out.append("Epoch caps below params.yaml (--max-epochs, for CPU time; each phase's budget = min(params.yaml, "
                   "cap)): " + "; ".join(parts) + ". Such numbers are not the recipe's.")
    weights = sorted({r["settings"]["overrides"].get("distill.fsdnet.external_teacher_weight")
                      for r in runs if r["model"] == "fsdnet_ext"})
    if weights:
        out.append(f"fsdnet_ext: distill.fsdnet.external_teacher_weight = {', '.join(map(str, weights))} (params.yaml 0 = "
                   "pure self-distillation; no published value, not tuned).")
    if any(r["settings"].get("baseline_recipe") == "matched" for r in runs):
        out.append("KD-DAGFM twins with --baseline-recipe matched: the distillation lr for distill_max_epochs + "
                   "finetune_max_epochs epochs, the chain's budget (what the product's baseline does since 2026-11-23).")
    for who, kinds, key in (("teacher", ("teacher",), "train.precision"),
                            ("students", ("kd", "fsdnet", "baseline"), "distill.precision")):
        precs = sorted({str(r.get("precision")) for r in runs if r["kind"] in kinds and r.get("precision")})
        if precs:
            out.append(f"Training forward precision of the {who} ({key} resolved on this CPU): {', '.join(precs)} "
                       "(bf16 autocast where the CPU has native bf16; weights, optimizer and scoring in fp32).")
    sets = sorted({json.dumps(r["settings"].get("set"), sort_keys=True) for r in runs if r["settings"].get("set")})
    out += [f"Extra overrides (--set) on some runs: {s}" for s in sets]
    out.append("No Optuna tuning: every student runs once per seed with params.yaml's reference defaults (the tuned "
               "path is `ctrflow distill` with tune.search_space, tune.n_trials full procedures per student — "
               "not affordable here for every dataset × seed × model on a 2-core CPU).")
    return out


def _compact_caps(caps: dict[tuple[str, str], int | None]) -> str:
    """The shortest ``--max-epochs`` value giving each (dataset, run) its recorded cap ('' for none)."""
    values = set(caps.values())
    if values == {None}:
        return ""
    if len(values) == 1:
        return str(values.pop())
    parts = []
    for ds in dict.fromkeys(d for d, _ in caps):
        mine = {m: c for (d, m), c in caps.items() if d == ds}
        if len(set(mine.values())) == 1:
            parts += [] if None in mine.values() else [f"{ds}={next(iter(mine.values()))}"]
        else:
            parts += [f"{ds}/{m}={c}" for m, c in mine.items() if c is not None]
    return ",".join(parts)


def reproduce_commands(results: dict) -> list[str]:
    """Commands that regenerate the stored runs with their settings."""
    runs = results["runs"]
    if not runs:
        return []
    groups: dict[tuple, list[str]] = {}
    for ds in _datasets(results):
        mine = [r for r in runs if r["dataset"] == ds]
        students = tuple(m for m in _ordered_models(results, ds) if m != "teacher")
        teacher = next((r.get("teacher_model") for r in mine if r["model"] == "teacher"), DEFAULT_TEACHER)
        ext = sorted({r["settings"]["overrides"].get("distill.fsdnet.external_teacher_weight")
                      for r in mine if r["model"] == "fsdnet_ext"})
        recipe = sorted({r["settings"].get("baseline_recipe") for r in mine if r["kind"] == "baseline"})
        sets = sorted({json.dumps(r["settings"].get("set") or {}, sort_keys=True) for r in mine})
        trials = sorted({r["settings"]["overrides"]["tune.n_trials"] for r in mine
                         if "tune.n_trials" in r["settings"]["overrides"]})
        key = (students, tuple(sorted({r["seed"] for r in mine})), teacher, tuple(ext), tuple(recipe), tuple(sets),
               tuple(trials))
        groups.setdefault(key, []).append(ds)
    cmds = []
    for (students, seeds, teacher, ext, recipe, sets, trials), datasets in groups.items():
        mine = [r for r in runs if r["dataset"] in datasets]
        threads = mine[0]["settings"]["overrides"].get("train.num_threads",
                                                       mine[0]["settings"]["overrides"].get("distill.num_threads"))
        cmd = (f".venv/bin/python benchmarks/distillation.py --datasets {','.join(datasets)} "
               f"--students {','.join(students)} --seeds {','.join(map(str, seeds))} --teacher {teacher} "
               f"--threads {threads}")
        caps = _compact_caps({(r["dataset"], r["model"]): r["settings"].get("max_epochs_cap") for r in mine})
        if caps:
            cmd += f" --max-epochs {caps}"
        syn = sorted({r["settings"]["synthetic_rows"] for r in mine if "synthetic_rows" in r["settings"]})
        if syn:
            cmd += f" --synthetic-rows {syn[0]}"
        if ext and ext[0] != DEFAULT_EXTERNAL_WEIGHT:
            cmd += f" --fsdnet-external-weight {ext[0]}"
        if trials and trials[0] != DEFAULT_TUNE_TRIALS:
            cmd += f" --tune-trials {trials[0]}"
        if recipe and recipe[0] != "product":
            cmd += f" --baseline-recipe {recipe[0]}"
        for k, v in json.loads(sets[0]).items():
            cmd += f" --set {shlex.quote(f'{k}={v}')}"
        cmds.append(cmd)
    return [*cmds, "# runs already in distillation.json with the same settings are skipped; --fresh re-runs them"]


# ------------------------------------------------------------------------------------------------
# rendering


def _fmt_int(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _delta(v: dict | None) -> str:
    if not v:
        return "—"
    std = "" if v["std_diff"] is None else f" ± {v['std_diff']:.4f}"
    return f"{v['mean_diff']:+.4f}{std} ({v['wins']}/{v['n']} up)"


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}"


def render_markdown(results: dict) -> str:
    """distillation.md from the results (goal checks first, then one table per dataset)."""
    agg, goals, runs = results["aggregates"], results["goals"], results["runs"]
    lines = ["# ctrflow distillation: teacher vs distilled students vs the same students without distillation", "",
             "Generated by `benchmarks/distillation.py` (do not edit by hand; rerun it). Test metrics of the checkpoint",
             "each procedure selects (its early-stopping monitor on the validation split), mean ± sample std (ddof 1) over seeds; Δ columns are",
             "paired by seed (student − reference on the same seed); \"k/n up\" = seeds where the student is higher.",
             "FLOPs per sample of the whole forward pass (embedding gathers included) from `components/profile/flops.py`;",
             "\"arith.\" drops the gathers. Parameters include the embedding tables.", ""]
    lines += ["## Product goals", "",
              f"1. A KD-DAGFM student within {AUC_TOLERANCE} AUC of its teacher at ≤ {100 * FLOPS_GOAL:.0f} % of the "
              "teacher's FLOPs (mean paired Δ test AUC ≥ −0.001 and total FLOPs fraction ≤ 0.20).",
              "2. FSDNet above DCNv2 (mean paired Δ test AUC > 0 vs the DCNv2 teacher of the same seed).", ""]
    if goals:
        lines += ["| dataset | goal 1 (KD-DAGFM ≈ teacher at ≤ 20 % FLOPs) | met by | goal 2 (FSDNet > DCNv2) | met by |",
                  "|---|---|---|---|---|"]
        for ds, g in goals.items():
            g2 = g["fsdnet"]
            g1v = _verdict(g["kd"]["met"]) if g["judged"] else _not_judged(g)
            g2v = (_verdict(g2["met"]) if g2["applicable"] else
                   _not_judged(g) if not g["judged"] else f"n/a (teacher {g['teacher_model']})")
            lines.append(f"| {ds} | {g1v} | {', '.join(g['kd']['met_by']) or '—'} | {g2v} | "
                         f"{', '.join(g2['met_by']) or '—'} |")
        lines += ["", "### Goal 1 per student", "",
                  "| dataset | student | seeds | Δ test AUC vs teacher | seeds within 0.001 | p | FLOPs % of teacher "
                  "(arith.) | AUC ok | FLOPs ok | met |", "|---|---|---|---|---|---|---|---|---|---|"]
        for ds, g in goals.items():
            for r in g["kd"]["rows"]:
                std = "" if r["std_diff"] is None else f" ± {r['std_diff']:.4f}"
                lines.append(f"| {ds} | {r['model']} | {r['n']} | {r['mean_diff']:+.4f}{std} | {r['seeds_within']}/{r['n']} | "
                             f"{_p(r['p_value'])} | {_pct(r['flops_fraction'])} ({_pct(r['flops_fraction_excl_gather'])}) | "
                             f"{'yes' if r['auc_ok'] else 'no'} | {'yes' if r['flops_ok'] else 'no'} | "
                             f"{('yes' if r['met'] else '**no**') if g['judged'] else 'not judged'} |")
        lines += ["", "### Goal 2 per FSDNet variant", "",
                  "| dataset | variant | seeds | Δ test AUC vs teacher | seeds above | p | FLOPs % of teacher | met |",
                  "|---|---|---|---|---|---|---|---|"]
        for ds, g in goals.items():
            for r in g["fsdnet"]["rows"]:
                std = "" if r["std_diff"] is None else f" ± {r['std_diff']:.4f}"
                met = (("yes" if r["met"] else "**no**") if g["fsdnet"]["applicable"] else
                       "not judged" if not g["judged"] else f"n/a ({g['teacher_model']})")
                lines.append(f"| {ds} | {r['model']} | {r['n']} | {r['mean_diff']:+.4f}{std} | {r['wins']}/{r['n']} | "
                             f"{_p(r['p_value'])} | {_pct(r['flops_fraction'])} | {met} |")
        lines.append("")
        single = sorted({a["test_auc"]["n"] for m in agg.values() for a in m.values()}) == [1]
        if single:
            lines += ["Only one seed so far: the verdicts above are single runs, without a spread.", ""]
    lines += ["## Reproduce", "", "```bash", *results.get("reproduce", []), "```", "",
              "Each invocation below appended to the results (runs already present with the same settings are skipped):", ""]
    lines += [f"- `{inv['command']}` ({inv['started']}, {inv.get('runs_done', 0)} runs"
              + ("" if "load_avg_end" in inv else "; stopped before its end or still running") + ")"
              for inv in results["invocations"]]
    loads = [x for r in runs for x in (r["load_avg_start"], r["load_avg_end"])]
    ctx = results.get("context", {})
    wall = sum(r["wall_s"] for r in runs)
    lines += ["", "## Machine and load", "",
              f"- {ctx.get('cpu_count')} CPU cores ({ctx.get('machine')}), no GPU used; torch {ctx.get('torch')} on "
              f"{ctx.get('threads')} thread(s) per run; the runs of one invocation are sequential, and "
              "invocations merged with --merge ran as parallel processes on the same cores.",
              (f"- Shared machine: other jobs ran at the same time. 1-minute load average over the runs: min "
               f"{min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f}.") if loads else "- no runs yet",
              f"- {len(runs)} runs, {wall / 60:.1f} min of wall time in total; s/run and samples/s are under that load.",
              f"- torch's CPU kernels: {kernel_counts(runs)}.", ""]
    lines += ["## Deviations from params.yaml", ""] + [f"- {d}" for d in results["deviations"]] + [""]
    for ds, models in agg.items():
        info = results["datasets"].get(ds, {})
        lines += [f"## {ds}", ""]
        if DATASET_NOTES.get(ds):
            lines.append(DATASET_NOTES[ds])
        if info.get("splits"):
            lines.append(f"Split rows: {info['splits']}. Validation gate: {info.get('gate', 'n/a')}.")
        if info.get("protocol"):
            lines.append(f"Protocol: {info['protocol']}.")
        const = info.get("constant")
        if const:
            lines.append(f"Test CTR {const['test_ctr']:.4f}; predicting it for every row scores LogLoss {const['logloss']:.4f}.")
        oracle = info.get("oracle")
        if oracle:
            lines.append(f"Oracle on the test rows (score = the true click probability): AUC **{oracle['auc']:.4f}**, "
                         f"LogLoss **{oracle['logloss']:.4f}** ({oracle['rows']:,} rows).")
        lines.append("")
        head = ("| model | seeds | test AUC | test LogLoss | Δ AUC vs teacher | Δ AUC vs no-distill twin | FLOPs/sample "
                "| % teacher FLOPs (arith.) | params (dense) | epochs | s/run | train samples/s |")
        sep = "|---|---|---|---|---|---|---|---|---|---|---|---|"
        if oracle:
            head += " AUC gap to oracle |"
            sep += "---|"
        lines += [head, sep]
        for model, a in models.items():
            twin = f"{_delta(a['vs_twin'])}" if a["vs_twin"] else "—"
            row = (f"| {model} | {a['test_auc']['n']} | {_pm(a, 'test_auc')} | {_pm(a, 'test_logloss')} | "
                   f"{_delta(a['vs_teacher']) if model != 'teacher' else '—'} | {twin} | {_fmt_int(a['flops_per_sample'])} | "
                   f"{_pct(a['flops_fraction'])} ({_pct(a['flops_fraction_excl_gather'])}) | "
                   f"{_fmt_int(a['parameters'])} ({_fmt_int(a['dense_parameters'])}) | {a['epochs_total']['mean']:.1f} | "
                   f"{a['wall_s']['mean']:.0f} | {_fmt_int(a['train_samples_per_s'])} |")
            if oracle:
                row += f" {a['test_auc']['mean'] - oracle['auc']:+.4f} |"
            lines.append(row)
        mixed = [m for m, a in models.items() if len(a["settings"]) > 1]
        if mixed:
            lines.append(f"\nWarning: the seeds of {mixed} ran under different settings (see {RESULTS_JSON}).")
        other = {m: a["other_teacher_seeds"] for m, a in models.items() if a.get("other_teacher_seeds")}
        if other:
            lines.append("\nLeft out of the Δ vs teacher columns and the goals (distilled from another teacher than "
                         "this table's, by its weights' hash; re-run them): "
                         + "; ".join(f"{m} seeds {', '.join(map(str, s))}" for m, s in other.items()) + ".")
        lines += ["", "Rows: teacher = train_teacher stage; dagfm_* / kd_dagfm_plus = KD chain (distill → finetune); "
                      "dagfm_inner_full = params.yaml's 6 + 3 epochs, never capped; dagfm_inner_tuned = the dagfm_inner "
                      "chain tuned by Optuna (trial 0 = the untuned row; epochs and samples/s are its best trial's, "
                      "s/run the whole study's); fsdnet = self-distillation; fsdnet_ext = + teacher logit-MSE; "
                      "fsdnet_teacher_recipe = fsdnet on the teacher's recipe (no BatchNorm, no dropout); baseline_* = the same student, BCE "
                      "only, from scratch. \"epochs\" sums the phases; train samples/s is the first phase's.", ""]
        lines += [f"- {n}" for n in results["notes"].get(ds, [])]
        lines.append("")
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, out_dir: Path) -> None:
    """Recompute aggregates, goal checks and notes, then write distillation.json and .md atomically."""
    fill_constant_baselines(results)
    results["aggregates"] = aggregate(results)
    results["goals"] = goal_checks(results)
    results["deviations"] = deviations(results)
    results["notes"] = notes(results)
    results["reproduce"] = reproduce_commands(results)
    _atomic(out_dir / RESULTS_JSON, json.dumps(results, indent=2, default=str) + "\n")
    _atomic(out_dir / RESULTS_MD, render_markdown(results))


# ------------------------------------------------------------------------------------------------
# CLI


def _max_epochs(s: str) -> dict:
    """``"2"`` → {"*": 2}; ``"3,synthetic=2,baseline_*=2,frappe/teacher=5"`` → all / dataset / run glob / both."""
    out = {}
    for part in _csv(s):
        k, v = part.split("=", 1) if "=" in part else ("*", part)
        try:
            out[k.strip()] = int(v)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{part!r}: expected N or KEY=N") from e
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=_csv, default=list(DEFAULT_DATASETS),
                   help=f"subset of {','.join(ALL_DATASETS)} [{','.join(DEFAULT_DATASETS)}]")
    p.add_argument("--students", type=_csv, default=list(ALL_STUDENTS),
                   help=f"rows besides the teacher (always run) [{','.join(ALL_STUDENTS)}]")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _csv(s)], default=list(DEFAULT_SEEDS),
                   help="seeds of teacher and students [2024,2025,2026]")
    p.add_argument("--synthetic-rows", type=int, default=DEFAULT_SYNTHETIC_ROWS,
                   help=f"rows of the generated log [{DEFAULT_SYNTHETIC_ROWS}]")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"teacher model (registry name) [{DEFAULT_TEACHER}]")
    p.add_argument("--fsdnet-external-weight", type=float, default=DEFAULT_EXTERNAL_WEIGHT,
                   help=f"external_teacher_weight of fsdnet_ext (> 0) [{DEFAULT_EXTERNAL_WEIGHT}]")
    p.add_argument("--baseline-recipe", choices=("product", "matched"), default="product",
                   help="KD-DAGFM twins' recipe, recorded with each run: since 2026-11-23 run_student_baseline "
                        "itself gives them the distillation lr and the chain's total epochs, so both values run "
                        "that (the results of 2026-11-23 ran 'matched' on the older code: the same recipe) [product]")
    p.add_argument("--max-epochs", type=_max_epochs, default={},
                   help="epoch caps (each phase's max epochs = min(params.yaml, cap)): N for all, or "
                        "dataset=N / run-glob=N / dataset/run-glob=N, comma-separated [none]")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run [1]")
    p.add_argument("--tune-trials", type=int, default=DEFAULT_TUNE_TRIALS,
                   help=f"Optuna trials per *_tuned row (tune.n_trials; trial 0 = the defaults) [{DEFAULT_TUNE_TRIALS}]")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help=f"scratch data, checkpoints [{DEFAULT_WORK}]")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"where {RESULTS_JSON} / {RESULTS_MD} go")
    p.add_argument("--fresh", action="store_true", help=f"re-run runs already present in {RESULTS_JSON}")
    p.add_argument("--report-only", action="store_true", help=f"only re-render from {RESULTS_JSON}")
    p.add_argument("--rerun", type=_csv, default=[], metavar="RUNS",
                   help="re-run these rows (comma-separated) even if present, reusing the teacher (e.g. after a "
                        "code change that the run settings do not capture)")
    p.add_argument("--merge", type=Path, nargs="+", default=[], metavar="DIR",
                   help=f"merge the {RESULTS_JSON} of these --out-dir's (runs of parallel processes) into --out-dir, "
                        "then re-render; a run present in both is taken from the merged directory")
    p.add_argument("--drop", type=_csv, default=[], metavar="DATASETS",
                   help=f"first remove these datasets' runs (and the invocations that ran only them) from "
                        f"{RESULTS_JSON}, e.g. before --merge of the synthetic set rerun at another size")
    p.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="extra params override for every run, e.g. distill.dagfm.lr=1e-4 (repeatable; recorded, part "
                        "of the run settings; a distill.* key is not the teacher's, so it keeps the teachers)")
    args = p.parse_args(argv)
    bad = [d for d in args.datasets if d not in ALL_DATASETS]
    if bad:
        p.error(f"unknown dataset(s) {bad}; choose from {list(ALL_DATASETS)}")
    bad = [s for s in args.students if s not in ALL_STUDENTS]
    if bad:
        p.error(f"unknown student row(s) {bad}; choose from {list(ALL_STUDENTS)}")
    if "fsdnet_ext" in args.students and args.fsdnet_external_weight <= 0:
        p.error("--fsdnet-external-weight must be > 0 for fsdnet_ext")
    if args.tune_trials < 1:
        p.error(f"--tune-trials must be >= 1 (trial 0 is params.yaml's defaults), got {args.tune_trials}")
    for key in args.max_epochs:
        pat = key.split("/", 1)[-1] if "/" in key else key
        if key != "*" and key not in ALL_DATASETS and not fnmatch.filter(SPECS, pat):
            p.error(f"--max-epochs key {key!r} matches no dataset and no run ({', '.join(SPECS)})")
    return args


def main(argv: list[str] | None = None) -> None:
    """Prepare each dataset; per seed train the teacher, then every student; rewrite the results after each run."""
    args = parse_args(argv)
    os.environ.setdefault("POLARS_MAX_THREADS", str(args.threads))
    import torch

    from components.config import load_params
    from components.distill.logit_cache import ensure_teacher_logits

    torch.set_num_threads(args.threads)
    out_json = args.out_dir / RESULTS_JSON
    results = load_results(out_json)
    for ds in args.drop:
        log(f"[{ds}] dropped {drop_dataset(results, ds)} run(s) from {out_json}")
    if args.merge:
        for directory in args.merge:
            merge_results(results, load_results(directory / RESULTS_JSON))
        write_outputs(results, args.out_dir)
        print(f"merged {len(args.merge)} result set(s) into {out_json}")
        return
    if args.report_only:
        write_outputs(results, args.out_dir)
        print(f"re-rendered {args.out_dir / RESULTS_MD} from {out_json}")
        return
    base = load_params(REPO / "params.yaml", dict(args.set))
    base_sha = base_params_sha(base)
    teacher_sha = base_params_sha(base, teacher=True)
    flops_batch = _flops_batch(base)
    inv = begin_invocation(results, "benchmarks/distillation.py", argv, args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    def done(run: dict) -> None:
        put_run(results, run)
        inv["runs_done"] += 1
        write_outputs(results, args.out_dir)

    for ds in args.datasets:
        try:
            prep = prepare(ds, args.work_dir, args.synthetic_rows, log)
        except FileNotFoundError as e:
            log(f"[{ds}] skipped: {e}")
            continue
        results["datasets"][ds] = {**prep.info, "overrides": prep.overrides}
        oracle = prep.info.get("oracle")
        for seed in args.seeds:  # seed-major: the teacher and every student of a seed before the next seed
            t_settings = run_settings(ds, "teacher", seed, args, base, teacher_sha)
            dirs = seed_dirs(args.work_dir, ds, seed, t_settings)
            teacher = find_run(results, ds, "teacher", seed)
            todo = []
            for run in args.students:
                s = {**run_settings(ds, run, seed, args, base, base_sha), "teacher": t_settings}
                old = find_run(results, ds, run, seed)
                if args.fresh or run in args.rerun or old is None or old["settings"] != s:
                    todo.append((run, s))
            stale = teacher is None or teacher["settings"] != t_settings or args.fresh
            if stale or (todo and not _teacher_ready(teacher, dirs.teacher / "model")):
                if not stale:
                    log(f"[{ds}] seed {seed}: teacher checkpoint missing from {dirs.teacher}; retraining it")
                teacher = train_teacher_run(prep, seed, t_settings, dirs, flops_batch)
                done(teacher)
                log(f"[{ds}] teacher {teacher['teacher_model']} seed {seed}: test AUC {teacher['test_auc']:.4f} "
                    f"LogLoss {teacher['test_logloss']:.4f} (best epoch {teacher['phases'][0]['best_epoch']}/"
                    f"{teacher['phases'][0]['epochs']}, {_fmt_int(teacher['flops_per_sample'])} FLOPs/sample, "
                    f"{teacher['wall_s']:.0f} s, {_fmt_int(teacher['phases'][0]['samples_per_s'])} samples/s, "
                    f"load {teacher['load_avg_end']:.1f}"
                    + (f", gap to oracle {teacher['test_auc'] - oracle['auc']:+.4f}" if oracle else "") + ")")
            if not todo:
                continue
            t0 = time.perf_counter()
            with open(dirs.root / "teacher_logits.log", "a") as fh:
                cache = ensure_teacher_logits(dirs.teacher / "model", prep.processed, dirs.logits,
                                              batch_size=base.distill.eval_batch_size, device="cpu",
                                              log=lambda m: print(m, file=fh, flush=True))
            z = cache.load("test").double()
            results["datasets"][ds].setdefault("teacher_logits_test", {})[str(seed)] = {
                "mean": float(z.mean()), "std": float(z.std()), "mean_square": float(z.pow(2).mean()),
                "cache_s": round(time.perf_counter() - t0, 1)}
            for run, s in todo:
                r = train_student_run(prep, run, seed, s, dirs, flops_batch)
                done(r)
                dt = r["test_auc"] - teacher["test_auc"]
                frac = r["flops_per_sample"] / teacher["flops_per_sample"]
                eps = "+".join(f"{p['best_epoch']}/{p['epochs']}" for p in r["phases"])
                log(f"[{ds}] {run} seed {seed}: test AUC {r['test_auc']:.4f} LogLoss {r['test_logloss']:.4f} "
                    f"(Δ vs teacher {dt:+.4f}, FLOPs {100 * frac:.1f} % of teacher, best/epochs {eps}, "
                    f"{r['wall_s']:.0f} s, {_fmt_int(r['train_samples_per_s'])} samples/s, load {r['load_avg_end']:.1f})")
    inv["load_avg_end"] = round(os.getloadavg()[0], 2)
    write_outputs(results, args.out_dir)
    log(f"results → {out_json} and {args.out_dir / RESULTS_MD}")


if __name__ == "__main__":
    main()
