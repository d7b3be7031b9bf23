"""Benchmark: model quality (test AUC / LogLoss, mean ± std over seeds) on real and synthetic data.

Usage::

    .venv/bin/python benchmarks/quality.py                                   # everything (hours on 2 cores)
    .venv/bin/python benchmarks/quality.py --datasets synthetic --models lr,fm,deepfm,dcnv2 \\
        --synthetic-rows 500000
    .venv/bin/python benchmarks/quality.py --datasets criteo117k,frappe --seeds 2024,2025,2026

For each dataset × model × seed it runs the pipeline's own stages, in process, with the settings a
``ctrflow`` user gets from the repository's ``params.yaml`` plus the per-dataset overrides listed
below (every override is recorded in the results):

1. once per dataset: (``generate``), ``validate`` (the gate; skipped for the generated synthetic
   log), ``preprocess`` → ``<work-dir>/<dataset>/processed`` (cached; a changed setting redoes it);
2. per seed, then per model (seed-major, so a partial run still holds complete paired
   comparisons): ``train_teacher`` (the ``ctrflow train`` stage: params.yaml's ``train``
   recipe — Adam 1e-3, batch size auto, d = 16, patience 2, LR ×0.1 on a plateau, the best
   checkpoint by ``train.monitor`` restored) with ``train.seed`` = the seed, then test AUC / LogLoss of the restored model.

Seeds vary model initialisation and batch order only; the data split is the same for every seed
(``preprocess.seed`` 2022), so the std is the training noise, as in BARS's multi-run tables.

Datasets (paths under ``/work/shared/data``, never copied into the repository):

- ``synthetic``: ``components.data.generate`` Criteo-layout log of ``--synthetic-rows`` rows (seed
  2024) with planted 2nd/3rd-order interactions; the **oracle** AUC / LogLoss (scores = the true click
  probabilities) is computed on exactly the test rows (``random_split_expr`` on the line numbers,
  cross-checked against ``test.parquet``'s labels), and every model's gap to it is reported.
- ``criteo117k``: the 117,139-row random sample of Kaggle Criteo; params.yaml preprocessing
  (random 8:1:1, min count 10, floor(ln²) buckets = the BARS x4_001 rules, plus each integer's
  standardised dense copy: ``preprocess.numeric_also_dense``).
- ``avazu10k``: the 9,999-row first-hour head of Avazu; params.yaml preprocessing (random 8:1:1).
- ``movielens100k``: ML-100K, label = rating ≥ 4, rating 3 dropped (params.yaml), random 8:1:1.
- ``frappe``: BARS Frappe_x1 ships here without its train split, so the model **trains on
  Frappe_x1's valid split** (a seeded random 90 % of it; the other 10 % is the early-stopping
  validation set) and is **tested on Frappe_x1's test split** unchanged. The two files are joined
  in ``<work-dir>`` into one CSV (``schema`` format) with an ``order_key`` column that the ``time``
  split cuts exactly at those boundaries; min count 1 (BARS Frappe_x1's ``min_categr_count``).
  Training on 51,950 rows instead of 202,027 is a different protocol from BARS: compared, not equal.
- ``<dataset>@split<seed>`` (criteo117k, avazu10k, movielens100k): the same rows split at random
  with ``preprocess.seed`` = that seed (benchmarks/resplit.py). A dataset run on several splits
  gets a pooled section: each model's test AUC / LogLoss as the mean over the splits of the mean
  over the seeds every model ran on every split, and its difference to LR split by split — on
  Avazu 10k's 1,017 test rows the split moves a comparison more than the seeds do::

      .venv/bin/python benchmarks/quality.py --datasets avazu10k,avazu10k@split2023,avazu10k@split2024 \\
          --models lr,deepfm,dcnv2 --seeds 2024,2025

Results are written after every run (atomically) to ``--out-dir``: ``quality.json`` (every run, the
aggregates, the settings, the invocations) and ``quality.md`` (tables, BARS comparison, oracle gaps,
the interaction-vs-LR/FM check, the load context). Runs already in ``quality.json`` with the same
settings are skipped, so an interrupted or partial benchmark resumes; ``--fresh`` re-runs them.
Torch runs on ``--threads`` threads (default 1: on this shared 2-core box 2 threads under load
measured 3–8× slower per step than 1).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.resplit import (  # noqa: E402  (needs REPO on sys.path)
    bases_with_variants,
    known_dataset,
    pooled_difference,
    pooled_means,
    split_variant,
    splits_of,
    variant_dir_name,
)

SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_WORK = Path(tempfile.gettempdir()) / "ctrflow-bench-quality"
DEFAULT_OUT = REPO / "benchmarks" / "results"
ALL_DATASETS = ("synthetic", "criteo117k", "frappe", "movielens100k", "avazu10k")
ALL_MODELS = ("lr", "fm", "deepfm", "dcnv2", "xdeepfm", "autoint_plus")
INTERACTION_MODELS = ("deepfm", "dcnv2", "xdeepfm", "autoint_plus")
DEFAULT_SEEDS = (2024, 2025, 2026)
DEFAULT_SYNTHETIC_ROWS = 500_000
SYNTHETIC_SEED = 2024
# CIN at its registry default (200, 200, 200) builds a B·200·F·d Hadamard tensor per layer
# (2 GB at B=4096, F=39, d=16) and ~15 s per step on one core; BARS/FuxiCTR xDeepFM configs on
# Criteo use much narrower CINs too. Overridable with --xdeepfm-cin-units.
DEFAULT_CIN_UNITS = (32, 32)
FRAPPE_FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
                 "country", "city")
FRAPPE_HOLDOUT = 0.1  # share of Frappe_x1 valid held out for early stopping
FRAPPE_HOLDOUT_SEED = 2022

# BARS x1 leaderboard, run 1 (anchors.md §2.2; reczoo/BARS docs/CTR/leaderboard/*_x1.csv):
# (test AUC, test LogLoss). Our model names → BARS rows.
BARS_X1 = {
    "frappe": ("Frappe_x1", {
        "dcnv2": (0.9845, 0.1491), "autoint_plus": (0.9848, 0.1490), "xdeepfm": (0.9845, 0.1466),
        "deepfm": (0.9842, 0.1482), "fm": (0.9671, 0.2065), "lr": (0.9356, 0.3076)}),
    "criteo117k": ("Criteo_x1", {
        "dcnv2": (0.8142, 0.4378), "autoint_plus": (0.8139, 0.4379), "xdeepfm": (0.8139, 0.4380),
        "deepfm": (0.8137, 0.4381), "fm": (0.8022, 0.4491), "lr": (0.7886, 0.4609)}),
    "avazu10k": ("Avazu_x1", {
        "dcnv2": (0.7656, 0.3664), "autoint_plus": (0.7645, 0.3668), "xdeepfm": (0.7647, 0.3671),
        "deepfm": (0.7648, 0.3667), "fm": (0.7613, 0.3677), "lr": (0.7516, 0.3735)}),
}


# ------------------------------------------------------------------------------------------------
# datasets


@dataclass
class Prepared:
    """A dataset ready for training: its processed directory and what the report needs to know."""

    name: str
    processed: Path
    overrides: dict
    info: dict = field(default_factory=dict)


def _scratch_params(ds_dir: Path, overrides: dict):
    """params.yaml of the repository + ``overrides``, with a copy written to ``ds_dir`` for the record."""
    from components.config import load_params

    ds_dir.mkdir(parents=True, exist_ok=True)
    copy = ds_dir / "params.yaml"
    copy.write_text((REPO / "params.yaml").read_text())
    return load_params(copy, overrides)


def _stamp(overrides: dict, extra: dict | None = None) -> str:
    blob = json.dumps({"overrides": overrides, **(extra or {})}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _split_rows(processed: Path) -> dict:
    fmap = json.loads((processed / "feature_map.json").read_text())
    return {k: v.get("rows") for k, v in fmap["splits"].items()}


def _build(name: str, ds_dir: Path, overrides: dict, *, gate: bool, log: Callable[[str], None],
           stamp_extra: dict | None = None) -> Prepared:
    """Validate (when ``gate``) and preprocess with ``overrides`` unless the cached output matches."""
    from components.stages import preprocess_stage, validate_stage

    processed = Path(overrides["preprocess.out_dir"])
    stamp_file = ds_dir / "prepared.json"
    params = _scratch_params(ds_dir, overrides)
    # params.yaml's preprocessing (a changed default) is part of the key, not only the overrides
    stamp = _stamp(overrides, {**(stamp_extra or {}), "preprocess": params.preprocess.model_dump(mode="json")})
    if (processed / "feature_map.json").exists() and stamp_file.exists():
        if json.loads(stamp_file.read_text()).get("stamp") == stamp:
            log(f"[{name}] processed data cached in {processed}")
            return Prepared(name, processed, overrides, {"splits": _split_rows(processed)})
    t0 = time.perf_counter()
    if gate:
        log(f"[{name}] {validate_stage(params).summary}")
    log(f"[{name}] {preprocess_stage(params, require_gate=gate).summary}")
    stamp_file.write_text(json.dumps({"stamp": stamp, "seconds": round(time.perf_counter() - t0, 1)}))
    return Prepared(name, processed, overrides, {"splits": _split_rows(processed)})


def _base_overrides(ds_dir: Path, fmt: str, path: Path) -> dict:
    return {
        "data.format": fmt,
        "data.input": str(path),
        "validate.out_dir": str(ds_dir / "validation"),
        "preprocess.out_dir": str(ds_dir / "processed"),
    }


def generator_fingerprint() -> str:
    """12 hex digits of sha256 over the synthetic generator's source files (its code is its version)."""
    h = hashlib.sha256()
    root = REPO / "components" / "data"
    for path in [root / "generate.py", *sorted((root / "synthetic").glob("*.py"))]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def prepare_synthetic(work: Path, rows: int, log: Callable[[str], None], *,
                      extra: dict | None = None) -> Prepared:
    """Generate (cached) and preprocess the synthetic log; attach the oracle metrics on its test rows."""
    from components.data.generate import generate

    ds_dir = work / f"synthetic_{rows}"
    # the generator's code is part of the cache key: a changed hidden model must not reuse an old log
    raw = ds_dir / "raw" / f"synthetic_criteo_{rows}_{SYNTHETIC_SEED}_{generator_fingerprint()}.txt"
    if not (raw.exists() and Path(f"{raw}.oracle.json").exists()):
        t0 = time.perf_counter()
        g = generate("criteo", rows, SYNTHETIC_SEED, raw)
        log(f"[synthetic] generated {rows:,} rows in {time.perf_counter() - t0:.0f} s "
            f"(oracle AUC over all rows {g.oracle_auc:.4f})")
    overrides = {**_base_overrides(ds_dir, "criteo", raw),
                 "generate.out": str(raw), "generate.rows": rows, "generate.seed": SYNTHETIC_SEED,
                 **(extra or {})}
    prep = _build("synthetic", ds_dir, overrides, gate=False, log=log)
    prep.info["oracle"] = oracle_on_test(raw, prep.processed)
    prep.info["oracle_all_rows"] = json.loads(Path(f"{raw}.oracle.json").read_text())
    prep.info["gate"] = "skipped (log written by the project's own generator)"
    log(f"[synthetic] oracle on the test split: AUC {prep.info['oracle']['auc']:.4f}, "
        f"LogLoss {prep.info['oracle']['logloss']:.4f} ({prep.info['oracle']['rows']:,} rows)")
    return prep


def oracle_on_test(raw: Path, processed: Path) -> dict:
    """Oracle AUC / LogLoss (score = true probability) over the rows ``preprocess`` put in test
    (components.evaluate.oracle, the same function the evaluate stage uses)."""
    from components.evaluate.oracle import oracle_on_split

    return oracle_on_split(raw, processed, "test")


REAL_SOURCES = {  # dataset → (data.format, path under SHARED_DATA)
    "criteo117k": ("criteo", "criteo/criteo_kaggle_train_sample117k.txt.gz"),
    "avazu10k": ("avazu", "avazu/avazu_train_head10k.csv.gz"),
    "movielens100k": ("movielens", "movielens/ml-100k"),
}


def prepare_real(name: str, work: Path, log: Callable[[str], None], *, extra: dict | None = None,
                 dir_name: str | None = None) -> Prepared:
    """criteo117k / avazu10k / movielens100k with params.yaml's preprocessing (+ ``extra`` overrides,
    processed under ``<work>/<dir_name or name>``); ``name`` may be a split variant
    ``<dataset>@split<seed>`` (``preprocess.seed`` = that seed, see benchmarks/resplit.py)."""
    base, split_seed = split_variant(name)
    fmt, rel = REAL_SOURCES[base]
    path = SHARED_DATA / rel
    if not path.exists():
        raise FileNotFoundError(f"{path}: the shared real-data sample is absent; see SOURCES.md")
    ds_dir = work / (dir_name or variant_dir_name(name))
    over = {**_base_overrides(ds_dir, fmt, path), **(extra or {})}
    if split_seed is not None:  # a split variant (benchmarks/resplit.py): the same rows, another random split
        over["preprocess.seed"] = split_seed
    prep = _build(name, ds_dir, over, gate=True, log=log)
    prep.info["gate"] = "passed"
    return prep


def frappe_split_ratios(n_valid: int, n_test: int, holdout: float = FRAPPE_HOLDOUT) -> tuple[list[float], dict]:
    """Ratios for the ``time`` split over ``order_key`` = [0, n_valid) valid rows then test rows.

    Keys are distinct integers, so the cut-offs fall exactly after the ``n_train``-th and the
    ``n_valid``-th key; half a row of slack keeps float rounding from moving a boundary.
    """
    n = n_valid + n_test
    n_train = int(round(n_valid * (1 - holdout)))
    r0 = (n_train - 0.5) / n
    r1 = (n_valid - n_train) / n
    return [r0, r1, 1.0 - r0 - r1], {"train": n_train, "valid": n_valid - n_train, "test": n_test}


def prepare_frappe(work: Path, log: Callable[[str], None], *, extra: dict | None = None) -> Prepared:
    """Frappe_x1 valid (train + early-stopping holdout) and test, through the ``schema`` format."""
    import numpy as np
    import polars as pl

    src = {s: SHARED_DATA / "frappe" / f"frappe_x1_{s}.csv" for s in ("valid", "test")}
    for p in src.values():
        if not p.exists():
            raise FileNotFoundError(f"{p}: the shared Frappe_x1 sample is absent; see SOURCES.md")
    ds_dir = work / "frappe"
    ds_dir.mkdir(parents=True, exist_ok=True)
    valid = pl.read_csv(src["valid"], infer_schema=False)
    test = pl.read_csv(src["test"], infer_schema=False)
    key_valid = np.random.default_rng(FRAPPE_HOLDOUT_SEED).permutation(valid.height)
    joined = pl.concat([
        valid.with_columns(order_key=pl.Series(key_valid, dtype=pl.Int64)),
        test.with_columns(order_key=pl.int_range(valid.height, valid.height + test.height, dtype=pl.Int64)),
    ])
    combined = ds_dir / "frappe_x1_valid_then_test.csv"
    tmp = combined.with_name(combined.name + ".tmp")
    joined.write_csv(tmp)
    tmp.replace(combined)
    ratios, want = frappe_split_ratios(valid.height, test.height)
    overrides = {
        **_base_overrides(ds_dir, "schema", combined),
        "schema.separator": ",", "schema.has_header": True, "schema.label": "label",
        "schema.categorical": list(FRAPPE_FIELDS), "schema.numeric": [], "schema.time_column": "order_key",
        "preprocess.split": "time", "preprocess.split_ratios": ratios, "preprocess.min_count": 1,
        **(extra or {}),
    }
    prep = _build("frappe", ds_dir, overrides, gate=True, log=log,
                  stamp_extra={"holdout": FRAPPE_HOLDOUT, "seed": FRAPPE_HOLDOUT_SEED})
    if prep.info["splits"] != want:
        raise RuntimeError(f"frappe split sizes {prep.info['splits']} differ from the intended {want}")
    prep.info["gate"] = "passed"
    prep.info["protocol"] = (f"train = {want['train']:,} random rows of Frappe_x1 valid, early-stopping "
                             f"valid = the other {want['valid']:,}, test = Frappe_x1 test ({want['test']:,})")
    return prep


def prepare(name: str, work: Path, synthetic_rows: int, log: Callable[[str], None],
            extra: dict | None = None) -> Prepared:
    """Dispatch to the dataset's preparation; ``extra``: ``preprocess.*`` overrides from ``--set``
    (applied after the dataset's own, part of the processed data's stamp)."""
    base, split_seed = split_variant(name)
    if split_seed is not None and base not in REAL_SOURCES:
        raise ValueError(f"dataset {name!r}: split variants exist for {sorted(REAL_SOURCES)} only (frappe keeps "
                         "BARS's files as its split, the synthetic log's test rows carry the oracle)")
    if name == "synthetic":
        return prepare_synthetic(work, synthetic_rows, log, extra=extra)
    if name == "frappe":
        return prepare_frappe(work, log, extra=extra)
    return prepare_real(name, work, log, extra=extra)


# ------------------------------------------------------------------------------------------------
# runs


def run_settings(dataset: str, model: str, args: argparse.Namespace) -> dict:
    """The train overrides that define one run (besides the seed); part of the run's identity."""
    caps = args.max_epochs
    dataset = split_variant(dataset)[0]  # a split variant has its dataset's caps
    epochs = caps.get(f"{dataset}/{model}", caps.get(dataset, caps.get("*", default_max_epochs(model))))
    s: dict = {"train.max_epochs": epochs,
               "train.num_threads": args.threads, "train.device": "cpu"}
    if model == "xdeepfm":
        s["train.model_params"] = {"cin_units": list(args.xdeepfm_cin_units)}
    if dataset == "synthetic":
        s["synthetic_rows"] = args.synthetic_rows
    if args.set:
        s["set"] = dict(args.set)
    if model != "lr":  # params.yaml's default is part of a deep model's identity: a changed default re-runs it
        s["train.logistic_base"] = bool(dict(args.set).get("train.logistic_base", _yaml_train()["logistic_base"]))
    return s


def default_max_epochs(model: str) -> int:
    """A run's epoch cap without ``--max-epochs``: params.yaml's ``train.max_epochs``; for ``lr`` the
    gate's ``train.gate.baseline_max_epochs``, so the LR row is the LR every teacher is gated against
    (its lr and patience are the train section's, equal to the gate's by default)."""
    teacher_cap, lr_cap = _yaml_caps()
    return lr_cap if model == "lr" else teacher_cap


@functools.lru_cache(maxsize=1)
def _yaml_caps() -> tuple[int, int]:
    train = _yaml_train()
    return int(train["max_epochs"]), int(train["gate"]["baseline_max_epochs"])


def _yaml_train() -> dict:
    """params.yaml's ``train`` section, validated (defaults filled in)."""
    from components.config import load_params

    return load_params(REPO / "params.yaml").train.model_dump()


def train_one(prep: Prepared, model: str, seed: int, settings: dict, work: Path) -> dict:
    """Train one model/seed with the train_teacher stage; return its metrics and context."""
    from components.train.teacher import train_teacher

    run_dir = work / "runs" / prep.name / f"{model}_{seed}_{_stamp(settings)}"
    train_over = {k: v for k, v in settings.items() if k.startswith("train.")}
    train_over.update(settings.get("set", {}))
    overrides = {**prep.overrides, **train_over, "train.model": model, "train.seed": seed,
                 "train.out_dir": str(run_dir / "model"), "train.metrics": str(run_dir / "metrics.json"),
                 "train.curve": str(run_dir / "curve.csv")}
    params = _scratch_params(run_dir, overrides)
    log_path = run_dir / "train.log"
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with open(log_path, "w") as fh:
        res = train_teacher(params.train, prep.processed, resume=False, log=lambda m: print(m, file=fh, flush=True))
    m = res.metrics
    curve = _curve({"log": str(log_path)})
    return {
        "dataset": prep.name, "model": model, "seed": seed, "settings": settings,
        "test_auc": m["test"]["auc"], "test_logloss": m["test"]["logloss"],
        "valid_auc": m["valid"]["auc"], "valid_logloss": m["valid"]["logloss"],
        "best_epoch": m["best_epoch"], "epochs": m["epochs"],
        "train_samples_per_s": m["train_samples_per_s"], "parameters": m["parameters"]["total"],
        "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
        "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2),
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu_kernels": cpu_kernels(), "precision": m.get("precision"),
        "log": str(log_path),
        "curve": curve,
    }


# ------------------------------------------------------------------------------------------------
# results


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_results(path: Path) -> dict:
    """The existing quality.json (or an empty skeleton)."""
    if path.exists():
        return json.loads(path.read_text())
    return {"runs": [], "datasets": {}, "invocations": []}


def find_run(results: dict, dataset: str, model: str, seed: int) -> dict | None:
    """The stored run of (dataset, model, seed), if any."""
    for r in results["runs"]:
        if (r["dataset"], r["model"], r["seed"]) == (dataset, model, seed):
            return r
    return None


def put_run(results: dict, run: dict) -> None:
    """Insert ``run``, replacing an older run of the same (dataset, model, seed)."""
    results["runs"] = [r for r in results["runs"]
                       if (r["dataset"], r["model"], r["seed"]) != (run["dataset"], run["model"], run["seed"])]
    results["runs"].append(run)


def aggregate(results: dict) -> dict:
    """{dataset: {model: aggregate_seeds(...) of test/valid AUC and LogLoss + context}}."""
    from components.evaluate.aggregate import aggregate_seeds

    out: dict = {}
    for ds in _ordered(results, "dataset", ALL_DATASETS):
        out[ds] = {}
        for model in _ordered(results, "model", ALL_MODELS, dataset=ds):
            runs = {r["seed"]: r for r in results["runs"] if r["dataset"] == ds and r["model"] == model}
            agg = aggregate_seeds(runs, ["test_auc", "test_logloss", "valid_auc", "best_epoch", "epochs",
                                         "wall_s", "train_samples_per_s"])
            settings = {json.dumps(r["settings"], sort_keys=True) for r in runs.values()}
            out[ds][model] = {**agg, "settings": [json.loads(s) for s in sorted(settings)]}
    return out


def _ordered(results: dict, key: str, order: tuple[str, ...], dataset: str | None = None) -> list[str]:
    present = {r[key] for r in results["runs"] if dataset is None or r["dataset"] == dataset}
    return [x for x in order if x in present] + sorted(present - set(order))


def _pm(a: dict, metric: str, digits: int = 4) -> str:
    m = a[metric]
    std = "—" if m["std"] is None else f"{m['std']:.{digits}f}"
    return f"{m['mean']:.{digits}f} ± {std}"


def interaction_check(results: dict, dataset: str = "synthetic") -> list[dict]:
    """Paired-by-seed test AUC differences of each interaction model vs LR and vs FM."""
    from components.evaluate.aggregate import paired_comparison

    rows = []
    by = {}
    for r in results["runs"]:
        if r["dataset"] == dataset:
            by.setdefault(r["model"], {})[r["seed"]] = r
    for model in INTERACTION_MODELS:
        for base in ("lr", "fm"):
            if model not in by or base not in by:
                continue
            seeds = sorted(set(by[model]) & set(by[base]))
            if not seeds:
                continue
            cmp = paired_comparison({s: by[model][s] for s in seeds}, {s: by[base][s] for s in seeds}, "test_auc")
            wins = sum(d > 0 for d in cmp["differences"])
            rows.append({"model": model, "baseline": base, "n": cmp["n"], "mean_diff": cmp["mean_diff"],
                         "std_diff": cmp["std_diff"], "p_value": cmp["p_value"], "wins": wins,
                         "beats": cmp["mean_diff"] > 0 and wins == cmp["n"]})
    return rows


def render_markdown(results: dict) -> str:
    """quality.md from the results (tables, comparisons, context); see the module docstring."""
    agg = results["aggregates"]
    runs = results["runs"]
    lines = ["# ctrflow model quality: test AUC / LogLoss, mean ± std over seeds", ""]
    lines += [
        "Generated by `benchmarks/quality.py` (do not edit by hand; rerun it). Every number below is a test",
        "metric of the best checkpoint by `train.monitor` (valid AUC − LogLoss by default), mean ± sample std (ddof 1) over the seeds listed;",
        "seeds change model initialisation and batch order, not the data split.", "",
        "## Reproduce", "",
        "```bash", *results.get("reproduce", []), "```", "",
        "Each invocation below appended to the results (runs already present with the same settings are",
        "skipped):", "",
    ]
    lines += [f"- `{inv['command']}` ({inv['started']}, {inv.get('runs_done', 0)} runs"
              + ("" if "load_avg_end" in inv else "; stopped before its end, the rest was rerun by a later line")
              + ")" for inv in results["invocations"]]
    loads = [x for r in runs for x in (r["load_avg_start"], r["load_avg_end"]) if x is not None]
    wall = sum(r["wall_s"] for r in runs)
    ctx = results["context"]
    lines += ["", "## Machine and load", "",
              f"- {ctx['cpu_count']} CPU cores ({ctx['machine']}), no GPU; torch {ctx['torch']} on "
              f"{ctx['threads']} thread(s) per run, runs sequential.",
              f"- Shared machine: other engineers' jobs ran at the same time. 1-minute load average over the "
              f"runs: min {min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f}"
              if loads else "- no runs yet",
              f"- {len(runs)} runs, {wall / 60:.1f} min of training wall time in total; the per-run time and "
              "samples/s in the tables are under that load (not quiet-machine speed).",
              f"- torch's CPU kernels: {kernel_counts(runs)} (runs on different kernel paths need not be bit-identical: "
              "the same seed may train a slightly different model on another machine).", ""]
    lines += ["## Deviations from the default recipe (params.yaml)", ""] + [f"- {d}" for d in results["deviations"]]
    lines += ["", "## Reading the numbers (observations from the 2026-12-06 runs)", ""]
    lines += [f"{i}. {o}" for i, o in enumerate(OBSERVATIONS, 1)]
    lines.append("")
    for ds, models in agg.items():
        if split_variant(ds)[1] is not None:
            continue  # a split variant: in its dataset's pooled section below
        info = results["datasets"].get(ds, {})
        lines += [f"## {ds}", ""]
        if info.get("splits"):
            lines.append(f"Split rows: {info['splits']}. Validation gate: {info.get('gate', 'n/a')}.")
        if info.get("protocol"):
            lines.append(f"Protocol: {info['protocol']}.")
        oracle = info.get("oracle")
        bars = BARS_X1.get(ds)
        const = info.get("constant")
        if const:
            lines.append(f"Test CTR {const['test_ctr']:.4f}; predicting it for every row scores LogLoss "
                         f"{const['logloss']:.4f} (the no-skill reference for the LogLoss column).")
        if oracle:
            lines.append(f"Oracle on the test rows (score = the true click probability): AUC "
                         f"**{oracle['auc']:.4f}**, LogLoss **{oracle['logloss']:.4f}**.")
        lines.append("")
        head = "| model | seeds | test AUC | test LogLoss | valid AUC | best epoch / epochs | s per run | samples/s |"
        sep = "|---|---|---|---|---|---|---|---|"
        if oracle:
            head += " AUC gap to oracle | LogLoss gap to oracle |"
            sep += "---|---|"
        if bars:
            head += f" BARS {bars[0]} AUC / LogLoss | Δ AUC vs BARS |"
            sep += "---|---|"
        lines += [head, sep]
        for model, a in models.items():
            row = (f"| {model} | {a['test_auc']['n']} | {_pm(a, 'test_auc')} | {_pm(a, 'test_logloss')} | "
                   f"{_pm(a, 'valid_auc')} | {a['best_epoch']['mean']:.1f} / {a['epochs']['mean']:.1f} | "
                   f"{a['wall_s']['mean']:.0f} | {a['train_samples_per_s']['mean']:,.0f} |")
            if oracle:
                row += (f" {a['test_auc']['mean'] - oracle['auc']:+.4f} | "
                        f"{a['test_logloss']['mean'] - oracle['logloss']:+.4f} |")
            if bars:
                ref = bars[1].get(model)
                row += (f" {ref[0]:.4f} / {ref[1]:.4f} | {a['test_auc']['mean'] - ref[0]:+.4f} |" if ref
                        else " — | — |")
            lines.append(row)
        mixed = [m for m, a in models.items() if len(a["settings"]) > 1]
        if mixed:
            lines.append(f"\nWarning: the seeds of {mixed} ran under different settings (see quality.json).")
        lines.append("")
        lines += [f"- {n}" for n in results["notes"].get(ds, [])]
        if ds == "synthetic":
            lines += ["", "### Do the interaction models beat LR and FM on the planted interactions?", "",
                      "Paired by seed (same seeds, test AUC); p from a two-sided paired t-test.", "",
                      "| model | vs | Δ test AUC (mean) | std of Δ | seeds won | p | beats? |",
                      "|---|---|---|---|---|---|---|"]
            for c in results.get("interaction_check", []):
                std = "—" if c["std_diff"] is None else f"{c['std_diff']:.4f}"
                p = "—" if c["p_value"] is None else f"{c['p_value']:.2g}"
                lines.append(f"| {c['model']} | {c['baseline']} | {c['mean_diff']:+.4f} | {std} | "
                             f"{c['wins']}/{c['n']} | {p} | {'yes' if c['beats'] else '**no**'} |")
        lines.append("")
    for base in bases_with_variants(agg):
        lines += pooled_section(results, base)
    return "\n".join(lines) + "\n"


def pooled_section(results: dict, base: str) -> list[str]:
    """quality.md's section of ``base`` over its random splits (benchmarks/resplit.py): each model's
    pooled test AUC / LogLoss and its difference to LR, split by split."""
    runs = results["runs"]
    splits = splits_of({r["dataset"] for r in runs}, base)
    models = [m for m in _ordered(results, "model", ALL_MODELS, dataset=splits[0])
              if all(any(r["dataset"] == d and r["model"] == m for r in runs) for d in splits)]
    pool = pooled_means(runs, base, {m: (lambda r, m=m: r["model"] == m) for m in models}) if models else None
    lines = [f"## {base} over {len(splits)} random splits (pooled)", ""]
    if pool is None:
        return lines + ["No seed ran on every split for these models yet.", ""]
    labels = {d: ("default" if d == base else f"seed {split_variant(d)[1]}") for d in pool["splits"]}
    lines += [f"The same rows split at random by ctrflow {len(splits)} times (`preprocess.seed`: params.yaml's "
              f"for `{base}`, then {', '.join(str(split_variant(d)[1]) for d in splits[1:])}: the datasets "
              f"`{base}@split<seed>`, benchmarks/resplit.py); per split the mean over the training seeds "
              f"{', '.join(map(str, pool['seeds']))}, then the mean over the splits. A small test split's own "
              "sampling moves a comparison more than the seeds do; this is the comparison that does not hang "
              "on one split's test rows.", ""]
    has_lr = "lr" in pool["groups"]
    head = "| model | test AUC | test LogLoss |" + (" Δ AUC vs LR | Δ LogLoss vs LR | splits with AUC ≥ LR |"
                                                   if has_lr else "")
    lines += [head, "|---|---|---|" + ("---|---|---|" if has_lr else "")]
    for m, g in pool["groups"].items():
        row = f"| {m} | {g['test_auc']:.4f} | {g['test_logloss']:.4f} |"
        if has_lr and m != "lr":
            auc, ll = pooled_difference(pool, m, "lr"), pooled_difference(pool, m, "lr", "test_logloss")
            row += f" {auc['diff']:+.4f} | {ll['diff']:+.4f} | {auc['splits_ahead']}/{auc['splits']} |"
        elif has_lr:
            row += " – | – | – |"
        lines.append(row)
    lines += ["", "Test AUC per split (mean over the seeds above):", "",
              "| split | " + " | ".join(pool["groups"]) + " |", "|---|" + "---|" * len(pool["groups"])]
    for d in pool["splits"]:
        lines.append(f"| {labels[d]} | " + " | ".join(f"{g['per_split'][d]['test_auc']:.4f}"
                                                      for g in pool["groups"].values()) + " |")
    return lines + [""]


# Hand-written reading of the 2026-11-23 results (checked against the curves in each run's curve.csv);
# rendered as-is, so it must be revisited when the results are regenerated under another recipe.
OBSERVATIONS = [
    "**`preprocess.min_count: 5`** (default since 2026-12-07, was 10: with the embedding L2 holding rarely "
    "seen rows near zero, ids for values seen 5–9 times pay on the real samples), 3-seed test AUC 10 → 5: "
    "criteo117k LR 0.7546 → 0.7561, FM 0.7553 → 0.7567, DeepFM 0.7556 → 0.7571, DCNv2 0.7566 → 0.7586 "
    "(peers.md's FuxiCTR column 0.7595 / 0.7594 on its own split); DCNv2 now beats LR in AUC and LogLoss on "
    "valid and test in every seed (test AUC +0.0022 / +0.0026 / +0.0027, valid +0.0032 / +0.0029 / +0.0027), "
    "DeepFM by +0.0004 to +0.0016 AUC. avazu10k DCNv2 0.7208 → 0.7235, DeepFM 0.7222 → 0.7205 (LR 0.7248); "
    "movielens100k DCNv2 0.8687 → 0.8662, DeepFM 0.8669 → 0.8676. Swept on criteo117k (DCNv2, seed 2024; "
    "min count 1 / 3 / 5 / 10: 0.7569 / 0.7579 / 0.7583 / 0.7562; DeepFM at 3: 0.7572, the same as at 5). "
    "The synthetic log goes the other way (its planted terms live on frequent values; rarer ids are noise "
    "there): 100k rows, 3 seeds, DCNv2 0.7675 → 0.7576, DeepFM 0.7840 → 0.7741 (`make run`'s teacher "
    "0.7663 → 0.7619); 2M rows (1 seed) DCNv2 0.8752 → 0.8743, DeepFM 0.8766 → 0.8757, LR 0.6905 → 0.6897. The real samples decide the default. Also measured on criteo117k "
    "without a gain (DeepFM, seed 2024, min count 5, test 0.7564–0.7585 vs 0.7571): fp32 instead of bf16 "
    "autocast, lr 5e-4 / 2e-3, embedding L2 5e-4 / 2e-3, dropout 0.1, net L2 1e-5, validation every half "
    "epoch (seeds 2024 / 2025: 0.7567 / 0.7571), no first-order terms of its own over the frozen LR (0.7531 / "
    "0.7520). Until `train.first_order_l2: auto` (default since 2026-12-07's evening: the embedding L2 also on "
    "a model's own first-order weights, its residual over the frozen LR, when that base is the converged LR) "
    "DeepFM's test LogLoss here was LR's (0.4852 vs 0.4851): it beat LR in AUC only; with it criteo117k "
    "DeepFM 0.7571 / 0.4852 → 0.7576 / 0.4843 (within 0.002 of FuxiCTR's column, LogLoss below LR's), FM "
    "0.7567 → 0.7567, the 2M-row synthetic log DeepFM 0.8757 / 0.3677 → 0.8768 / 0.3666 (the embedded 100k "
    "log, 3 seeds: DeepFM 0.7741 → 0.7770, FM 0.7515 → 0.7565). `auto` leaves them free where the base is LR "
    "stopped at 20 of its ~60 epochs (movielens100k, frappe, avazu10k): always on, it cost movielens100k "
    "0.8676 → 0.8662 (LogLoss 0.3695 → 0.3718) and frappe 0.9394 → 0.9371 (seeds 2025 / 2026 −0.0020 / "
    "−0.0048): there the model's first-order terms make up for the base's missing epochs; FM the same way "
    "(movielens100k −0.0026).",
    "**The embedding L2** (`train.embedding_l2: 1e-3`, default since 2026-12-07: λ/2·‖W‖² on the embedding "
    "vectors, whole tables every step; first-order weights unpenalised), 3-seed test AUC / LogLoss before → "
    "after: frappe DCNv2 0.9285 / 0.2955 → 0.9401 / 0.2898, DeepFM 0.9284 / 0.2961 → 0.9394 / 0.2862, FM "
    "0.9259 → 0.9284; movielens100k DCNv2 0.8653 → 0.8687, DeepFM 0.8642 → 0.8669, FM 0.8609 → 0.8491 (its "
    "one loss: still improving at the 20-epoch cap); criteo117k DCNv2 0.7562 → 0.7566, DeepFM 0.7558 → 0.7556, "
    "FM 0.7557 → 0.7553; avazu10k DCNv2 0.7209 → 0.7208, DeepFM 0.7231 → 0.7222, FM 0.7187 → 0.7214; synthetic "
    "2M (1 seed) DCNv2 0.8490 → 0.8752. LR is unchanged (with its first-order weights penalised it lost 0.03 on "
    "frappe). On frappe seed 2024 still stops at epoch 2 of 4 (0.9319; seeds 2025 / 2026 train to epoch 6-7, "
    "0.944): its validation AUC − LogLoss is flat at epoch 3, the LR decays to 1e-4 and the run does not recover "
    "(patience 3, lr_decay 0.5 or validation every half epoch measured: 0.9319 / 0.9350 / 0.9319). Swept on "
    "one seed (DCNv2 unless named): 1e-4 changes nothing; 3e-3 was better still for DCNv2 (movielens100k "
    "0.7984 vs 0.7935 on peers.md's protocol, the embedded log 0.7827) but DeepFM on movielens100k collapsed "
    "onto its logistic base (0.7705, with a 100× larger init too); 3e-2 collapsed DCNv2 onto LR on the embedded "
    "log and on avazu10k.",
    "**The recipe of 2026-12-06** (batch_size auto = 256–512 on these samples instead of 4096, no BatchNorm) "
    "moved every deep model on the real samples, 3-seed test AUC before → after: criteo117k DeepFM 0.7286 → "
    "0.7516, DCNv2 0.7303 → 0.7515; movielens100k DeepFM 0.8168 → 0.8615, DCNv2 0.8510 → 0.8586; frappe DeepFM "
    "0.9350 → 0.9386, DCNv2 0.9244 → 0.9318; avazu10k DCNv2 0.4934 → 0.7183 (the old runs: this file of "
    "2026-11-23, same splits and seeds).",
    "**The logistic base** (`train.logistic_base`, default since 2026-12-06's fourth change: the gate's LR "
    "is fitted first and added, frozen, to the teacher's logit, so the network learns the residual over it), "
    "3-seed test AUC / LogLoss before → after: criteo117k DCNv2 0.7558 / 0.4863 → 0.7562 / 0.4856, DeepFM "
    "0.7556 → 0.7558, FM 0.7505 / 0.4896 → 0.7557 / 0.4857; movielens100k DCNv2 0.8583 / 0.3836 → 0.8653 / "
    "0.3771, DeepFM 0.8608 → 0.8642, FM 0.8468 → 0.8609; frappe DCNv2 and DeepFM unchanged in AUC (0.9284 → "
    "0.9285 / 0.9284) with LogLoss 0.301 → 0.296, FM 0.9284 → 0.9259 (its one loss); avazu10k DeepFM 0.7184 → "
    "0.7231, DCNv2 0.7202 → 0.7209, FM 0.7194 → 0.7187.",
    "**criteo117k: with the logistic base DCNv2 clears LR on the validation split in every seed, by little.** "
    "With the integers' dense copies (`preprocess.numeric_also_dense`, default since 2026-12-06's third change; "
    "the models fold each copy into its bucket's vector) every model gained: test AUC DeepFM 0.7516 → 0.7556, "
    "DCNv2 0.7515 → 0.7558, LR 0.7511 → 0.7546 (as 13 fields of their own instead of folded: DeepFM 0.7562, "
    "DCNv2 0.7560, at 28 % fewer teacher samples/s). On the validation split (the gate's) the plain DCNv2 was "
    "−0.0014 / −0.0003 / +0.0010 from LR (seeds 2024 / 2025 / 2026), so the gate failed on the default seed; "
    "with the base it is +0.0004 / +0.0006 / +0.0009 in AUC and −0.0002 / −0.0011 / −0.0006 in LogLoss (these "
    "runs, 1 thread; at 2 threads seed 2024 lands at −0.0005: the per-seed margin is within run-to-run float "
    "noise). DeepFM, which has a first-order term of its own, is −0.0021 / −0.0002 / +0.0002. Every deep run "
    "peaks in epoch 1 or 2 and over-fits from the first "
    "batches of epoch 2 (the one-epoch phenomenon). Measured without a gain (DCNv2, seed 2024, separate "
    "copies, valid AUC 0.7652–0.7658 each vs 0.7655): lr 5e-4 / 2e-3, DNN dropout 0.2, embedding L2 1e-6, "
    "validation every half epoch, batch 1024, embedding_dim 32; min count 20 / 50 cost 0.002–0.003 (before "
    "the dense copies: validation every quarter epoch, rolling back on each LR decay, 3x/10x embedding LR, "
    "embedding L2 1e-5, init std 1e-2/1e-3, bf16, batch 256, min count 1/2; BatchNorm + dropout + L2 cost "
    "0.004–0.006). `numeric: dense` alone (no buckets, missing imputed with the mean) gains less: DeepFM "
    "0.7553, DCNv2 0.7547, LR 0.7533. Until 2026-12-06 dense fields started at the Xavier scale, which broke "
    "LR and DeepFM with dense inputs (0.7477 / 0.7224); they now start at the embedding std.",
    "**movielens100k**: DeepFM and DCNv2 beat LR and FM in AUC and LogLoss in every seed (DeepFM 0.8669 / 0.3707, "
    "DCNv2 0.8687 / 0.3683 at min count 10, 0.8676 / 0.3695 and 0.8662 / 0.3712 now, vs LR 0.8447 / 0.3935, "
    "converged at epoch 57–59 since the gate's cap of 100; 0.8323 / 0.4128 at the 20-epoch cap before).",
    "**frappe**: the deep models beat LR in AUC and LogLoss in every seed (DeepFM 0.9394 / 0.2862, DCNv2 "
    "0.9401 / 0.2898 vs LR 0.9269 / 0.3017 converged at epoch 59–61; 0.9244 / 0.3720 at the 20-epoch cap "
    "before). Before the embedding L2, selected by valid AUC alone "
    "(`train.monitor: auc`, the default before 2026-12-06's second change) they scored 0.9386 / 0.9318 AUC but "
    "ended over-confident (LogLoss 0.48 / 0.39, worse than LR): the AUC kept creeping up for epochs after the "
    "LogLoss had turned; the L2 gives both.",
    "**`train.monitor: auc_minus_logloss`** (FuxiCTR/BARS's `{AUC: 1, logloss: -1}`) is the default since "
    "2026-12-06: an evaluation that gains AUC but loses more LogLoss is not kept. Against the AUC monitor, same "
    "seeds: frappe −0.0034 (DCNv2) / −0.0102 (DeepFM) AUC for −0.09 / −0.18 LogLoss; movielens100k −0.0003 / "
    "−0.0007 AUC, −0.008 LogLoss; criteo117k, avazu10k, the 2M-row synthetic set and the embedded 100k log "
    "(`make run`) keep the same checkpoints (identical numbers).",
    "**avazu10k: on 8k training rows LR is as good as the deep models, and one split cannot tell them "
    "apart**: 8,009 training rows, a test split of 1,017 rows. On the default split the converged LR (epoch "
    "28–30) scores 0.7233 / 0.4026 test AUC / LogLoss vs DCNv2 0.7235 / 0.4023 and DeepFM 0.7204 / 0.4039, and "
    "on valid (the gate's split) 0.7026 vs DCNv2 0.7012 / 0.7039 / 0.7023 per seed and DeepFM 0.7052–0.7056: "
    "the gate now fails DCNv2 on some seeds (distillation.md: seed 2026's teacher fails it by 0.0001). Against "
    "the 20-epoch LR of before (0.7248 test, 0.6948 valid) both deep models were ahead on valid by +0.0065 to "
    "+0.0094. Over 10 random splits of the same rows (the pooled section at the end, 3 seeds each) the split "
    "moves DCNv2 − LR from −0.016 to +0.017, and pooled the converged LR leads: DCNv2 −0.0028 AUC / +0.0014 "
    "LogLoss (ahead on 3 of 10 splits), DeepFM −0.0019 / +0.0020 (3 of 10); against the 20-epoch LR it was "
    "−0.0019 / −0.0011. "
    "DeepCTR-Torch's DCNv2 does worse still (peers.md: ctrflow +0.0015 over it on the same 10 splits). A "
    "stronger embedding L2 moves the deep models towards their frozen LR (pooled, `--set "
    "train.embedding_l2=...`, not kept in this file): 3e-3 DCNv2 −0.0019 / DeepFM −0.0006 vs LR; 1e-2 "
    "DCNv2 −0.0010, DeepFM +0.0013 AUC and −0.0012 LogLoss; the default stays 1e-3 (the larger samples "
    "lose with it: MovieLens DeepFM collapsed onto its base at 3e-3). Batch 128 (below `auto`'s floor of "
    "256) lifts every model by about 0.003 pooled (LR 0.7101, DCNv2 0.7082, DeepFM 0.7103, LogLoss −0.002) "
    "and leaves the ranking as it is (DCNv2 −0.0019, DeepFM +0.0002 vs LR).",
    "**The gate compares with a converged LR; the teachers learn over its 20-epoch fit** (2026-12-07): at "
    "Adam 1e-3 with the gate's old cap of 20 epochs LR was still improving at the cap on movielens100k, frappe "
    "and avazu10k (best epoch 20 / 20). With a cap of 100 (`train.gate.baseline_max_epochs`, default since "
    "2026-12-07's evening; the lr rows above) it converges at epoch 57–61: movielens100k LR 0.8323 / 0.4128 → 0.8447 / 0.3935, frappe 0.9244 / 0.3720 → "
    "0.9269 / 0.3017, avazu10k pooled over its 10 splits 0.7076 → 0.7085 (criteo117k and the synthetic logs "
    "stop before 20: unchanged); a higher LR rate is no substitute (1e-2: movielens100k 0.8448 in 8 epochs, "
    "but criteo117k 0.7469). The teachers still clear the converged LR where they cleared the capped one "
    "(movielens100k DCNv2 0.8662 / DeepFM 0.8676 vs 0.8447; frappe 0.9401 / 0.9394 vs 0.9269), so the gate's "
    "verdicts stand, with smaller margins than the lr rows show. But as the teachers' frozen base the "
    "converged LR hurts where it helps the comparison: movielens100k DCNv2 collapses onto it (0.8447 / "
    "0.8447 / 0.8464, best epoch 1–9: the network never clears the base on validation) and DeepFM falls to "
    "0.8625; frappe gains (DCNv2 0.9416 / LogLoss 0.2749, DeepFM 0.9407 / 0.2744; seed 2024 no longer stops "
    "at epoch 2), avazu10k pooled DCNv2 −0.0022 / DeepFM −0.0006 vs the converged LR. So one LR fit now "
    "gives both: the gate scores its converged best, the teacher's frozen base is its best of the first 20 "
    "epochs (`train.logistic_base_max_epochs`, the checkpoint on disk at epoch 20; the teachers are "
    "bit-identical to those over the old 20-epoch gate LR, checked on movielens100k seed 2024).",
    "**synthetic (2M rows, 1 seed)**: the deep models beat LR by far (DCNv2 0.8743, DeepFM 0.8768 vs LR 0.6897, "
    "oracle 0.8914: 92 % of the LR → oracle gap closed; 0.8752 / 0.8766 / 0.6905 at min count 10). The "
    "embedding L2 lifted them from 0.8490 / 0.8518 "
    "(best epoch 6 of 8 instead of 2 of 4: without it they memorised the rows from epoch 2; λ = 1.25e-4, the "
    "1/rows scaling of 1e-3 from 100k rows, gave DCNv2 0.8651: the L2 is a frequency floor, not a per-row "
    "budget); the logistic base had lifted them from 0.8401 / 0.8394; the integers' dense copies (folded into their buckets' fields) lifted DCNv2 from 0.8293 "
    "and DeepFM from 0.8308 (bucket-only, same seed; as fields of their own 0.8391 / 0.8355). The old "
    "BatchNorm recipe scored DeepFM 0.8393. The recipe follows the real samples; `model_params: {batch_norm: "
    "true}` or the teacher study can still be tried on synthetic logs.",
    "**BatchNorm: no one setting wins** (2026-12-07 night, DCNv2, 3 seeds, `--set 'train.model_params={batch_norm: "
    "true}'` against the same machine's runs without it; not kept in this file): test AUC frappe 0.9343 → "
    "**0.9446** (LogLoss 0.2905 → 0.2595; every seed, and none stops early: the fragile frappe teacher of "
    "observation 2 and 13 is a BatchNorm question), movielens100k 0.8669 → 0.8582, criteo117k 0.7576 → "
    "0.7544, avazu10k 0.7248 → 0.7219. The default stays off (three samples of four lose with it); the "
    "teacher study (`train.tune`, whose space holds `model_params.batch_norm`) is how a user gets frappe's "
    "gain: `ctrflow --set train.tune.n_trials=10 train` on frappe's split (one thread, about 4 minutes: 3"
    " trials finished, 7 pruned after their first evaluation) picks trial 1 — BatchNorm, MLP 256-256, "
    "dropout 0.09, lr 5.7e-4, embedding L2 3.8e-5 — at valid AUC 0.9485 against trial 0's (params.yaml's "
    "recipe) 0.9325: test AUC **0.9474** / LogLoss 0.2691 (peers.md's FuxiCTR 0.9462 is on another split:"
    " context only).",
    "**The machine moves the numbers**: this file's runs were made on machines with native bf16, where "
    "`train.precision: auto` trains under bf16 autocast (each run now records its `precision` and torch's "
    "CPU kernel path, `cpu_kernels`). Re-trained on a machine without it (AVX2 kernels, so `auto` trains in "
    "fp32; 2026-12-07 night), the same seeds and code train other models — DCNv2 test AUC per seed "
    "criteo117k 0.7583 / 0.7589 / 0.7588 → 0.7574 / 0.7576 / 0.7579, movielens100k 0.8676 / 0.8658 / "
    "0.8651 → 0.8689 / 0.8662 / 0.8655, frappe 0.9319 / 0.9449 / 0.9435 → 0.9318 / 0.9365 / 0.9345 "
    "(seeds 2025 / 2026 peak at epoch 4 / 3 there instead of 7 / 6), avazu10k 0.7224 / 0.7214 / 0.7268 → "
    "0.7252 / 0.7221 / 0.7271 (mean 0.7248, ahead of that machine's LR, 0.7233). Compare runs of one "
    "machine; a difference below about 0.001 AUC (0.01 on frappe's teachers) is within what the machine "
    "alone moves.",
]

DEVIATIONS_TEXT = {
    "threads": "train.num_threads = {threads} (params.yaml: 0 = all cores) and train.device = cpu: on this "
               "shared 2-core machine 2 torch threads under load measured 3–8× slower per step than 1.",
    "xdeepfm": "xDeepFM: CIN widths {cin} instead of the registry default (200, 200, 200), for CPU feasibility "
               "(the default builds a 2 GB Hadamard tensor per layer at batch 4096 on 39 fields); DNN part unchanged.",
    "frappe": "frappe: preprocess.min_count = 1 (BARS Frappe_x1's min_categr_count; params.yaml's is 5, "
              "10 until 2026-12-07), time split over a synthetic order key so that train/valid come from Frappe_x1 valid "
              "and test is Frappe_x1 test (see its section).",
    "synthetic_gate": "synthetic: the validation gate is skipped (preprocess --skip-gate): the log is written by "
                      "the project's own generator; the real datasets all pass through the gate.",
}


def deviations(results: dict) -> list[str]:
    """Human-readable list of every setting that differs from params.yaml, from the stored runs."""
    out = []
    threads = sorted({r["settings"].get("train.num_threads") for r in results["runs"]})
    if threads:
        out.append(DEVIATIONS_TEXT["threads"].format(threads=", ".join(map(str, threads))))
    epochs: dict = {}
    off_default = [r for r in results["runs"] if r["settings"]["train.max_epochs"] != default_max_epochs(r["model"])]
    for r in off_default:
        epochs.setdefault(r["settings"]["train.max_epochs"], set()).add(f"{r['dataset']}/{r['model']}")
    for e, ds in sorted(epochs.items()):
        capped = [r for r in off_default if r["settings"]["train.max_epochs"] == e]
        hit = sum(r["epochs"] >= e for r in capped)
        out.append(f"train.max_epochs = {e} (params.yaml: {default_max_epochs('')}, LR the gate's "
                   f"{default_max_epochs('lr')}) for {', '.join(sorted(ds))}, for CPU time; "
                   + (f"{hit} of {len(capped)} such runs reached the cap (flagged in the notes when still "
                      "improving)." if hit else f"none of the {len(capped)} such runs reached it (all early-"
                                                "stopped before), so the cap did not change any result."))
    cins = sorted({tuple(r["settings"]["train.model_params"]["cin_units"])
                   for r in results["runs"] if r["model"] == "xdeepfm"})
    if cins:
        out.append(DEVIATIONS_TEXT["xdeepfm"].format(cin=", ".join(str(c) for c in cins)))
    present = {r["dataset"] for r in results["runs"]}
    if "frappe" in present:
        out.append(DEVIATIONS_TEXT["frappe"])
    if "synthetic" in present:
        out.append(DEVIATIONS_TEXT["synthetic_gate"])
    sets = sorted({json.dumps(r["settings"].get("set"), sort_keys=True) for r in results["runs"] if r["settings"].get("set")})
    for s in sets:
        out.append(f"extra overrides (--set) on some runs: {s}")
    out.append("Everything else is params.yaml as committed (the recipe of 2026-12-07): embedding_dim 16, "
               "batch_size auto (2^round(log2(train rows / 160)) within [256, 4096]: 256 on Avazu 10k and Frappe, "
               "512 on MovieLens-100K and Criteo 117k, 4096 on the 2M-row synthetic log), Adam lr 1e-3, embedding "
               "L2 1e-3 (train.embedding_l2, since 2026-12-07; no L2 on the network; on a model's own first-order "
               "weights too over a converged base: first_order_l2 auto, since 2026-12-07's evening), monitor valid "
               "AUC − LogLoss, patience 2, lr_decay 0.1, grad_clip 10, each model's registry defaults (no "
               "BatchNorm, no dropout), every model but LR on the gate LR's best of its first 20 epochs, frozen "
               "(logistic_base, since 2026-12-06's fourth change), the lr rows trained like the gate's LR (up to 100 "
               "epochs since 2026-12-07's evening, 20 before); "
               "preprocessing random 8:1:1 (seed 2022), min count 5 (since 2026-12-07; 10 before), floor(ln²) "
               "numeric buckets plus each integer's standardised dense copy (numeric_also_dense, since "
               "2026-12-06's third change).")
    return out


def notes(results: dict) -> dict[str, list[str]]:
    """Per-dataset notes derived from the numbers (caps hit, comparisons, protocol gaps)."""
    out: dict[str, list[str]] = {}
    agg = results["aggregates"]
    for r in results["runs"]:
        if r["epochs"] >= r["settings"]["train.max_epochs"] and r["best_epoch"] == r["epochs"]:
            out.setdefault(r["dataset"], []).append(
                f"{r['model']} seed {r['seed']} was still improving when it hit max_epochs = {r['epochs']}: "
                "its numbers are a lower bound on what the recipe reaches.")
    static = {
        "frappe": [
            "Not the BARS protocol: BARS trains on Frappe_x1 train (202,027 rows) with per-model tuned "
            "regularisation (embedding/net L2, dropout) and d = 10; here the models see a quarter of that data "
            "(51,950 rows of Frappe_x1 valid), d = 16, no regularisation, params.yaml's recipe untuned, and "
            "users/items seen only in Frappe_x1 train are OOV here. A lower AUC than BARS follows from the smaller "
            "training set and the untuned recipe; the ranking of models is the comparable part.",
        ],
        "criteo117k": [
            "BARS Criteo_x1 numbers are for 33M training rows; this is a 117k-row random sample (≈94k train "
            "rows, a different random split), so absolute AUCs are expected to be well below BARS: the BARS "
            "column is context, not a target.",
        ],
        "avazu10k": [
            "9,999 rows of one hour (≈1,000 test rows): the test AUC std across seeds is large, the split itself "
            "moves a comparison more (the pooled section over random splits below, when run), and min count 5 "
            "maps most device/site ids to OOV. BARS Avazu_x1 (28M train rows) is context only.",
        ],
        "movielens100k": [
            "ML-100K with rating 3 dropped, label = rating ≥ 4, 8 categorical fields (user, item, gender, age, "
            "occupation, zip, first genre, year). No BARS x1 counterpart (BARS uses MovielensLatest_x1, a "
            "different dataset and task).",
        ],
        "synthetic": [
            "The oracle is the best any model can do on these rows (it scores with the true probability). "
            "Gaps to it come from finite data (rare values of the high-cardinality fields fall under min count 10 → "
            "OOV; the planted interaction terms live on fields of modest cardinality), from the models memorising "
            "the training rows after their first epoch (notes below) and from each model's inductive bias.",
        ],
    }
    for ds in agg:
        out.setdefault(ds, [])
        out[ds] = static.get(ds, []) + out[ds] + one_epoch_notes(results, ds) + calibration_notes(results, ds)
        bars = BARS_X1.get(ds)
        if ds in ("frappe", "criteo117k") and bars and agg[ds]:
            ours = sorted(agg[ds], key=lambda m: -agg[ds][m]["test_auc"]["mean"])
            theirs = sorted([m for m in ours if m in bars[1]], key=lambda m: -bars[1][m][0])
            out[ds].append(f"Ranking by mean test AUC here: {' > '.join(ours)}; BARS {bars[0]}: "
                           f"{' > '.join(theirs)}.")
    return out


def cpu_kernels() -> str:
    """torch's CPU kernel path on this machine (AVX2, AVX512, ...). Runs on different paths need not be
    bit-identical: the same seed may train a slightly different model on another machine."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def kernel_counts(runs: list[dict]) -> str:
    """'AVX2 (12 runs), AVX512 (3 runs)'; runs recorded before the field count as 'not recorded'."""
    counts: dict[str, int] = {}
    for r in runs:
        k = r.get("cpu_kernels") or "not recorded"
        counts[k] = counts.get(k, 0) + 1
    return ", ".join(f"{k} ({n} runs)" for k, n in sorted(counts.items())) or "no runs"


def _curve(run: dict) -> list[dict]:
    """The run's per-epoch curve (stored in the run, else curve.csv beside its train.log; [] when absent)."""
    import csv

    if run.get("curve"):
        return run["curve"]
    path = Path(run["log"]).with_name("curve.csv")
    if not path.exists():
        return []
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items() if k in ("epoch", "train_loss", "valid_auc", "valid_logloss")}
                for row in csv.DictReader(fh)]


def one_epoch_notes(results: dict, dataset: str) -> list[str]:
    """Models whose every seed peaked at epoch 1, with the epoch 1 → 2 train/valid numbers of one seed."""
    out = []
    by: dict[str, list[dict]] = {}
    for r in results["runs"]:
        if r["dataset"] == dataset:
            by.setdefault(r["model"], []).append(r)
    for model, runs in by.items():
        if not runs or any(r["best_epoch"] != 1 for r in runs):
            continue
        run = min(runs, key=lambda r: r["seed"])
        c = _curve(run)
        if len(c) >= 2:
            out.append(
                f"{model} peaked after the first epoch in all {len(runs)} seeds. Seed {run['seed']}, epoch 1 → 2: "
                f"train loss {c[0]['train_loss']:.3f} → {c[1]['train_loss']:.3f}, valid LogLoss "
                f"{c[0]['valid_logloss']:.3f} → {c[1]['valid_logloss']:.3f}, valid AUC {c[0]['valid_auc']:.4f} → "
                f"{c[1]['valid_auc']:.4f}: the model memorises the training rows from the second pass on "
                "(params.yaml trains with embedding_l2 = net_l2 = 0 and no dropout), so early stopping keeps an "
                "epoch-1 model.")
        else:
            out.append(f"{model} peaked after the first epoch in all {len(runs)} seeds.")
    return out


def reproduce_commands(results: dict) -> list[str]:
    """The single command that regenerates every stored run with its settings."""
    runs = results["runs"]
    if not runs:
        return []
    groups: dict[tuple, list[str]] = {}  # (models, seeds) → datasets run with exactly those
    for ds in _ordered(results, "dataset", ALL_DATASETS):
        mine = [r for r in runs if r["dataset"] == ds]
        key = (tuple(_ordered(results, "model", ALL_MODELS, dataset=ds)), tuple(sorted({r["seed"] for r in mine})))
        groups.setdefault(key, []).append(ds)
    s0 = runs[0]["settings"]
    cmds = []
    for (models, seeds), datasets in groups.items():
        mine = [r for r in runs if r["dataset"] in datasets]
        caps = sorted({(r["dataset"], r["model"], r["settings"]["train.max_epochs"]) for r in mine
                       if r["settings"]["train.max_epochs"] != 20})
        cmd = (f".venv/bin/python benchmarks/quality.py --datasets {','.join(datasets)} --models {','.join(models)} "
               f"--seeds {','.join(map(str, seeds))} --threads {s0['train.num_threads']}")
        if caps:
            cmd += " --max-epochs " + ",".join(f"{d}/{m}={e}" for d, m, e in caps)
        syn = sorted({r["settings"]["synthetic_rows"] for r in mine if "synthetic_rows" in r["settings"]})
        if syn:
            cmd += f" --synthetic-rows {syn[0]}"
        cins = sorted({tuple(r["settings"]["train.model_params"]["cin_units"]) for r in mine if r["model"] == "xdeepfm"})
        if cins:
            cmd += f" --xdeepfm-cin-units {','.join(map(str, cins[0]))}"
        cmds.append(cmd)
    return [*cmds, "# runs already in benchmarks/results/quality.json with the same settings are skipped; "
                   "--fresh re-runs them"]


def constant_baseline(processed: Path) -> dict | None:
    """Test CTR and the LogLoss of predicting it for every test row (the no-skill reference; the
    formula of the baseline gate, components/train/gate.py)."""
    import pyarrow.parquet as pq

    from components.train.gate import constant_logloss

    fm_path = processed / "feature_map.json"
    if not fm_path.exists():
        return None
    fmap = json.loads(fm_path.read_text())
    labels = pq.read_table(processed / fmap["splits"]["test"]["path"], columns=[fmap["label"]]).column(0)
    y = labels.to_numpy()
    p = float(y.mean())
    return {"test_ctr": p, "logloss": constant_logloss(p, y)}


def calibration_notes(results: dict, dataset: str) -> list[str]:
    """Flag models whose test LogLoss is no better than the constant predictor, and wide seed spreads."""
    out = []
    const = results["datasets"].get(dataset, {}).get("constant")
    best = {}
    for r in results["runs"]:
        if r["dataset"] == dataset:
            best.setdefault(r["model"], {})[r["seed"]] = r["best_epoch"]
    for model, a in results["aggregates"].get(dataset, {}).items():
        ll = a["test_logloss"]["mean"]
        if const and ll > const["logloss"] - 0.02:
            out.append(f"{model}: mean test LogLoss {ll:.4f} is no better than predicting the test CTR for every "
                       f"row ({const['logloss']:.4f}) although its AUC is {a['test_auc']['mean']:.4f}: the checkpoint "
                       "early stopping keeps is badly calibrated (under-trained or already over-confident).")
        std = a["test_auc"]["std"]
        if std is not None and std > 0.005:
            vals = ", ".join(f"{s}: {v:.4f} (best epoch {best[model].get(s)})"
                             for s, v in zip(a["test_auc"]["seeds"], a["test_auc"]["values"], strict=True))
            out.append(f"{model}: wide seed spread, test AUC per seed {vals}.")
    return out


def fill_constant_baselines(results: dict) -> None:
    """Add each dataset's constant-predictor LogLoss (``constant``) where it is missing."""
    for info in results["datasets"].values():
        if "constant" not in info and info.get("overrides", {}).get("preprocess.out_dir"):
            info["constant"] = constant_baseline(Path(info["overrides"]["preprocess.out_dir"]))


def merge_from_disk(results: dict, path: Path) -> None:
    """Fold into ``results`` what another quality.py process wrote to ``path`` since this one loaded it
    (two invocations at once each rewrote the file from their own copy, and the earlier one's runs
    were lost): runs this copy lacks or holds an older version of, and invocations it lacks (one
    invocation = its command and start time)."""
    if not path.exists():
        return
    disk = json.loads(path.read_text())
    for r in disk.get("runs", []):
        mine = find_run(results, r["dataset"], r["model"], r["seed"])
        if mine is None or str(r.get("finished") or "") > str(mine.get("finished") or ""):
            put_run(results, r)
    known = {(i.get("command"), i.get("started")) for i in results["invocations"]}
    results["invocations"] += [i for i in disk.get("invocations", []) if (i.get("command"), i.get("started")) not in known]
    results["invocations"].sort(key=lambda i: str(i.get("started") or ""))


def write_outputs(results: dict, out_dir: Path) -> None:
    """Recompute aggregates and notes, then write quality.json and quality.md atomically."""
    fill_constant_baselines(results)
    merge_from_disk(results, out_dir / "quality.json")
    results["aggregates"] = aggregate(results)
    results["interaction_check"] = interaction_check(results)
    results["deviations"] = deviations(results)
    results["notes"] = notes(results)
    results["reproduce"] = reproduce_commands(results)
    _atomic(out_dir / "quality.json", json.dumps(results, indent=2, default=str) + "\n")
    _atomic(out_dir / "quality.md", render_markdown(results))


# ------------------------------------------------------------------------------------------------
# CLI


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _key_value(s: str) -> tuple[str, object]:
    import yaml

    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    value = yaml.safe_load(v)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    return k.strip(), value


def _max_epochs(s: str) -> dict:
    """``"10"`` → {"*": 10}; ``"synthetic=8,synthetic/dcnv2=4"`` → per dataset or dataset/model (others:
    :func:`default_max_epochs`)."""
    if "=" not in s:
        return {"*": int(s)}
    out = {}
    for part in _csv(s):
        k, v = part.split("=", 1)
        out[k.strip()] = int(v)
    return out


def log(msg: str) -> None:
    """A timestamped progress line on stdout."""
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def begin_invocation(results: dict, script: str, argv: list[str] | None, threads: int) -> dict:
    """Record the machine context and a new invocation (its command line) in ``results``; return it."""
    import torch

    results["context"] = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
                          "threads": threads, "python": platform.python_version()}
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv if argv is None else [script, *argv]))
    inv = {"command": f".venv/bin/python {argv_text}" if not argv_text.startswith(".venv") else argv_text,
           "started": _dt.datetime.now().isoformat(timespec="seconds"),
           "load_avg_start": round(os.getloadavg()[0], 2), "runs_done": 0}
    results["invocations"].append(inv)
    return inv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=_csv, default=list(ALL_DATASETS), help=f"subset of {','.join(ALL_DATASETS)}")
    p.add_argument("--models", type=_csv, default=list(ALL_MODELS), help=f"registry names [{','.join(ALL_MODELS)}]")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _csv(s)], default=list(DEFAULT_SEEDS),
                   help="train seeds [2024,2025,2026]")
    p.add_argument("--synthetic-rows", type=int, default=DEFAULT_SYNTHETIC_ROWS,
                   help=f"rows of the generated log [{DEFAULT_SYNTHETIC_ROWS}]")
    p.add_argument("--max-epochs", type=_max_epochs, default={},
                   help="train.max_epochs: N for all, or dataset=N / dataset/model=N, comma-separated "
                        "(others: params.yaml's train.max_epochs, LR the gate's baseline_max_epochs)")
    p.add_argument("--xdeepfm-cin-units", type=lambda s: tuple(int(x) for x in _csv(s)), default=DEFAULT_CIN_UNITS,
                   help=f"CIN widths for xdeepfm [{','.join(map(str, DEFAULT_CIN_UNITS))}]")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run [1]")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help=f"scratch data and runs [{DEFAULT_WORK}]")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where quality.json / quality.md go")
    p.add_argument("--fresh", action="store_true", help="re-run runs already present in quality.json")
    p.add_argument("--report-only", action="store_true", help="only re-render quality.md/json from quality.json")
    p.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="extra params override for every run, e.g. train.embedding_l2=1e-4 (repeatable; part of "
                        "the run settings: use another --out-dir to keep such runs apart)")
    args = p.parse_args(argv)
    bad = [d for d in args.datasets if not _known_dataset(d)]
    if bad:
        p.error(f"unknown dataset(s) {bad}; choose from {list(ALL_DATASETS)} or a split variant "
                f"<dataset>@split<seed> of {', '.join(sorted(REAL_SOURCES))}")
    return args


def _known_dataset(name: str) -> bool:
    return known_dataset(name, ALL_DATASETS, REAL_SOURCES)


def main(argv: list[str] | None = None) -> None:
    """Prepare each dataset, run every model × seed not yet done, and rewrite the results after each."""

    from components.models.registry import list_models

    args = parse_args(argv)
    known = {m.name for m in list_models()}
    unknown = [m for m in args.models if m not in known]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; `ctrflow models` lists {sorted(known)}")
    out_json = args.out_dir / "quality.json"
    results = load_results(out_json)
    if args.report_only:
        write_outputs(results, args.out_dir)
        print(f"re-rendered {args.out_dir / 'quality.md'} from {out_json}")
        return
    inv = begin_invocation(results, "benchmarks/quality.py", argv, args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    for ds in args.datasets:
        try:
            prep = prepare(ds, args.work_dir, args.synthetic_rows, log,
                           extra={k: v for k, v in args.set if k.startswith("preprocess.")})
        except FileNotFoundError as e:
            log(f"[{ds}] skipped: {e}")
            continue
        results["datasets"][ds] = {**prep.info, "overrides": prep.overrides}
        for seed in args.seeds:  # seed-major: every model of a seed finishes before the next seed
            for model in args.models:
                settings = run_settings(ds, model, args)
                old = find_run(results, ds, model, seed)
                if old is not None and old["settings"] == settings and not args.fresh:
                    continue
                run = train_one(prep, model, seed, settings, args.work_dir)
                put_run(results, run)
                inv["runs_done"] += 1
                write_outputs(results, args.out_dir)
                extra = ""
                if prep.info.get("oracle"):
                    extra = f", gap to oracle {run['test_auc'] - prep.info['oracle']['auc']:+.4f}"
                log(f"[{ds}] {model} seed {seed}: test AUC {run['test_auc']:.4f} LogLoss {run['test_logloss']:.4f} "
                    f"(best epoch {run['best_epoch']}/{run['epochs']}, {run['wall_s']:.0f} s, "
                    f"load {run['load_avg_end']:.1f}{extra})")
    inv["load_avg_end"] = round(os.getloadavg()[0], 2)
    write_outputs(results, args.out_dir)
    log(f"results → {out_json} and {args.out_dir / 'quality.md'}")


if __name__ == "__main__":
    main()
