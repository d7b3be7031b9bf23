"""Benchmark: ctrflow against its peer DeepCTR-Torch 0.3.0, same split, same budget, one process.

Usage::

    make bench-peers                                   # installs the [bench] extra, then runs this
    .venv/bin/python benchmarks/peers.py               # 4 datasets × dcnv2, deepfm × 3 seeds × 2 libraries
    .venv/bin/python benchmarks/peers.py --datasets criteo117k --models dcnv2 --seeds 2024 \\
        --max-epochs 1 --threads 1 --work-dir /tmp/peers-smoke --out-dir /tmp/peers-smoke/out   # smoke

For each dataset × seed × model (seed-major, then ctrflow and DeepCTR-Torch back to back, so both
sides of a pair see the same machine load) it trains:

- **ctrflow**: the ``train_teacher`` stage (via ``benchmarks/quality.py``'s ``train_one``) with the
  repository's ``params.yaml`` ``train`` section *as committed* (the default recipe, read when the
  benchmark starts and hashed: a changed recipe is a new run) plus ``train.device=cpu``,
  ``train.num_threads=--threads`` and ``train.seed`` = the seed (``--max-epochs`` / ``--batch-size``
  override the epoch cap / batch size of both sides when given);
- **DeepCTR-Torch 0.3.0** (the optional ``[bench]`` extra, ``pip install -c constraints.txt -e
  '.[bench]'``) on the SAME processed Parquet splits and feature map: every categorical id column a
  ``SparseFeat`` (vocabulary size from ``feature_map.json``), every dense column a ``DenseFeat``,
  used by both the linear and the deep part; ``DCN(cross_num=3, cross_parameterization="matrix")``
  (DCNv2, full rank, cross ∥ DNN) and ``DeepFM``, DNN 400-400-400 ReLU, no batch norm, no dropout,
  no L2 (peers.md's recipe), DeepCTR's own embedding init (N(0, 1e-4)); embedding dim, batch size,
  Adam learning rate, epoch cap, early-stopping patience and monitored value (``train.monitor``:
  valid AUC − LogLoss by default, or valid AUC) taken from ctrflow's train section;
  ``torch.set_num_threads(--threads)``, the model built with ``seed`` = the seed. The epoch loop
  calls ``model.fit(epochs=1, shuffle=True)`` (DeepCTR's own training step and DataLoader), scores
  the valid split with ``model.predict`` after each epoch, stops after ``patience`` epochs without a
  gain of the monitored value and restores the best epoch's weights before the test split is scored.

Metrics: test / valid AUC and LogLoss with ctrflow's metric functions (``evaluate_logits``) on both
sides. **Training samples/s** = the mean over the epochs run of (training rows / seconds of that
epoch's training pass), validation excluded, on both sides: what ctrflow's ``fit`` reports as
``train_samples_per_s``; for DeepCTR-Torch the timed pass is the ``fit(epochs=1)`` call.

Datasets (``/work/shared/data``, found as in quality.py; each skipped with a message when absent):
``criteo117k``, ``avazu10k`` with params.yaml's preprocessing; ``movielens100k`` with
``preprocess.drop_neutral_rating=false`` (label rating ≥ 4, rating 3 kept, as peers.md);
``frappe`` = Frappe_x1 valid + test pooled into one CSV in ``--work-dir`` (``schema`` format), split
at random 80/10/10 by ctrflow with ``preprocess.min_count=1`` (peers.md's protocol).

Split variants (benchmarks/resplit.py): ``--datasets avazu10k,avazu10k@split2023,avazu10k@split2024``
runs the same protocol on the same rows re-split with ``preprocess.seed`` 2023, 2024 (criteo117k,
movielens100k and avazu10k; Frappe's split is fixed). The default run adds nine (``RESAMPLED_SPLITS``:
avazu10k@split2023 … @split2031, about 5 minutes more). A dataset with variants gets a pooled row in
the summary (ctrflow − DeepCTR-Torch test AUC: per split the mean over the seeds both libraries ran
on every split, then the mean over the splits) and a section split by split; that row is the
dataset's AUC verdict, as a 1,017-row test split (Avazu 10k) moves the comparison more than the
seeds do.

Targets (issue 11 §5): ctrflow's mean test AUC ≥ DeepCTR-Torch's on every dataset (and model), and
ctrflow's training samples/s ≥ 2× DeepCTR-Torch's at batch 1024 on the CPU.

Results go to ``--out-dir`` after every run (atomically): ``peers.json`` (every run, aggregates,
comparisons, the recipe, the invocations) and ``peers.md``; the ratios are printed. Runs already in
``peers.json`` with the same settings (threads, caps, recipe hash) are skipped; ``--fresh`` reruns
them, ``--report-only`` re-renders.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import benchmarks.quality as quality  # noqa: E402  (needs REPO on sys.path)
from benchmarks.quality import (  # noqa: E402
    FRAPPE_FIELDS,
    Prepared,
    _atomic,
    _base_overrides,
    _build,
    _csv,
    begin_invocation,
    load_results,
    log,
    prepare_real,
)
from benchmarks.resplit import (  # noqa: E402
    bases_with_variants,
    known_dataset,
    pooled_difference,
    pooled_means,
    split_variant,
    variant_dir_name,
    variant_name,
)

DEFAULT_WORK = Path(tempfile.gettempdir()) / "ctrflow-bench-peers"
DEFAULT_OUT = REPO / "benchmarks" / "results"
ALL_DATASETS = ("criteo117k", "movielens100k", "frappe", "avazu10k")
ALL_MODELS = ("dcnv2", "deepfm")
FIXED_SPLIT = ("frappe",)  # datasets without split variants (benchmarks/resplit.py)
# the default run's extra random splits of a dataset (benchmarks/resplit.py): Avazu 10k's test split is 1,017 rows
RESAMPLED_SPLITS = {"avazu10k": tuple(range(2023, 2032))}
DEFAULT_DATASETS = ALL_DATASETS + tuple(variant_name(ds, seed) for ds, seeds in RESAMPLED_SPLITS.items()
                                        for seed in seeds)
CTRFLOW, DEEPCTR = "ctrflow", "deepctr_torch"
LIBRARIES = (CTRFLOW, DEEPCTR)
LIBRARY_NAMES = {CTRFLOW: "ctrflow", DEEPCTR: "DeepCTR-Torch 0.3.0"}
DEFAULT_SEEDS = (2024, 2025, 2026)
DEFAULT_THREADS = 2
SPEED_TARGET = 2.0          # ctrflow training samples/s ≥ 2× DeepCTR-Torch's ...
SPEED_TARGET_BATCH = 1024   # ... at this batch size (CPU)
RESULTS_JSON, RESULTS_MD = "peers.json", "peers.md"
INSTALL_HINT = "pip install -c constraints.txt -e '.[bench]'  (or: make bench-peers)"

# DeepCTR-Torch side (peers.md "Recipe the peers ran"); the rest comes from ctrflow's train section.
PEER_RECIPE = {"dnn_hidden_units": [400, 400, 400], "dnn_activation": "relu", "dnn_use_bn": False,
               "dnn_dropout": 0.0, "l2_reg": 0.0, "regularization": "none (every registered strength set to 0)",
               "cross_num": 3, "cross_parameterization": "matrix",
               "init_std": 1e-4, "optimizer": "adam (constant lr)", "loss": "binary_crossentropy (DeepCTR: sum)",
               "linear_part": True}
# ctrflow train keys the DeepCTR-Torch side takes over
SHARED_KEYS = ("embedding_dim", "batch_size", "lr", "max_epochs", "patience", "monitor")
# keys of ctrflow's train section that do not change a run's recipe
NOT_RECIPE = ("model", "seed", "out_dir", "metrics", "curve")

# peers.md (FuxiCTR 2.3.9 / DeepCTR-Torch 0.3.0, their own 80/10/10 split): test AUC (mean, std, n)
PEERS_MD_AUC = {
    ("criteo117k", "dcnv2"): {"fuxictr": (0.7594, 0.0021, 2), DEEPCTR: (0.7522, 0.0007, 2)},
    ("criteo117k", "deepfm"): {"fuxictr": (0.7595, 0.0011, 2), DEEPCTR: (0.7542, 0.0001, 2)},
    ("movielens100k", "dcnv2"): {"fuxictr": (0.7898, 0.0009, 2), DEEPCTR: (0.7848, 0.0042, 2)},
    ("movielens100k", "deepfm"): {"fuxictr": (0.7901, 0.0005, 2), DEEPCTR: (0.7850, 0.0010, 2)},
    ("frappe", "dcnv2"): {"fuxictr": (0.9462, None, 1), DEEPCTR: (0.9299, None, 1)},
    ("frappe", "deepfm"): {"fuxictr": (0.9476, None, 1), DEEPCTR: (0.9280, None, 1)},
    ("avazu10k", "dcnv2"): {"fuxictr": (0.7026, None, 1), DEEPCTR: (0.6968, None, 1)},
    ("avazu10k", "deepfm"): {"fuxictr": (0.7127, None, 1), DEEPCTR: (0.7141, None, 1)},
}
# peers.md training speed (train samples/s, best unloaded run, batch 1024, 2 threads)
PEERS_MD_SPEED = {
    ("criteo117k", "dcnv2"): {"fuxictr": 13_600, DEEPCTR: 17_200},
    ("criteo117k", "deepfm"): {"fuxictr": 19_800, DEEPCTR: 25_400},
    ("movielens100k", "dcnv2"): {"fuxictr": 42_700, DEEPCTR: 49_000},
    ("movielens100k", "deepfm"): {"fuxictr": 49_000, DEEPCTR: 55_800},
}
PEERS_MD_PROTOCOL = {
    "criteo117k": "peers.md: own random 80/10/10 split (93.7k/11.7k/11.7k), min count 1, numerics dense "
                  "sign(x)·log1p(|x|) min-max scaled",
    "movielens100k": "peers.md: random 80/10/10 (80k/10k/10k), label rating ≥ 4, 8 side fields, min count 1",
    "frappe": "peers.md: Frappe_x1 valid+test pooled, random 80/10/10 (69k/8.7k/8.7k), min count 1",
    "avazu10k": "peers.md: random 80/10/10 (8k/1k/1k; noise ≈ ±0.02 AUC), min count 1",
}
PROTOCOL = {
    "criteo117k": "params.yaml's preprocessing unchanged (the ctrflow split)",
    "movielens100k": "params.yaml's preprocessing with `preprocess.drop_neutral_rating=false` (label rating ≥ 4, "
                     "rating 3 kept as a negative, as peers.md; 8 side fields)",
    "frappe": "Frappe_x1 valid + test pooled into one CSV (`schema` format) and split by ctrflow at random "
              "(params.yaml's split ratios and seed) with `preprocess.min_count=1` (peers.md's protocol)",
    "avazu10k": "params.yaml's preprocessing unchanged (the ctrflow split)",
}


# ------------------------------------------------------------------------------------------------
# datasets


def data_paths(name: str, root: Path | None = None) -> list[Path]:
    """The shared files a dataset is built from."""
    root = quality.SHARED_DATA if root is None else root
    if name == "frappe":
        return [root / "frappe" / f"frappe_x1_{s}.csv" for s in ("valid", "test")]
    return [root / quality.REAL_SOURCES[name][1]]


def missing_data(name: str, root: Path | None = None) -> str | None:
    """None when the dataset's shared files are present, else the message its skip prints."""
    absent = [p for p in data_paths(name, root) if not p.exists()]
    if not absent:
        return None
    return (f"[{name}] skipped: {', '.join(map(str, absent))} absent (the real-data samples live in "
            f"../shared/data beside the checkout, never in the repository; see its SOURCES.md)")


def prepare_frappe_pooled(work: Path, log: Callable[[str], None]) -> Prepared:
    """Frappe_x1 valid + test in one ``schema`` CSV, split at random by ctrflow, min count 1."""
    import polars as pl

    ds_dir = work / "frappe_pooled"
    ds_dir.mkdir(parents=True, exist_ok=True)
    src = data_paths("frappe")
    pooled = ds_dir / "frappe_x1_valid_and_test.csv"
    if not pooled.exists():
        joined = pl.concat([pl.read_csv(p, infer_schema=False) for p in src])
        tmp = pooled.with_name(pooled.name + ".tmp")
        joined.write_csv(tmp)
        tmp.replace(pooled)
    overrides = {
        **_base_overrides(ds_dir, "schema", pooled),
        "schema.separator": ",", "schema.has_header": True, "schema.label": "label",
        "schema.categorical": list(FRAPPE_FIELDS), "schema.numeric": [], "schema.time_column": None,
        "preprocess.split": "random", "preprocess.min_count": 1,
    }
    prep = _build("frappe", ds_dir, overrides, gate=True, log=log,
                  stamp_extra={"pooled": [str(p) for p in src]})
    prep.info["gate"] = "passed"
    return prep


def prepare_dataset(name: str, work: Path, log: Callable[[str], None]) -> Prepared:
    """The dataset's ctrflow split (see PROTOCOL); FileNotFoundError when its files are absent.
    ``name`` may be a split variant ``<dataset>@split<seed>`` (benchmarks/resplit.py) of criteo117k,
    movielens100k or avazu10k: the same protocol with ``preprocess.seed`` = that seed."""
    base, split_seed = split_variant(name)
    why = missing_data(base)
    if why:
        raise FileNotFoundError(why.replace(f"[{base}]", f"[{name}]", 1))
    if name == "frappe":
        prep = prepare_frappe_pooled(work, log)
    elif base == "movielens100k":
        prep = prepare_real(name, work, log, extra={"preprocess.drop_neutral_rating": False},
                            dir_name=f"{variant_dir_name(name)}_keep3")
    else:
        prep = prepare_real(name, work, log)
    fmap = json.loads((prep.processed / "feature_map.json").read_text())
    pp = fmap["params"]
    prep.info["protocol"] = PROTOCOL[base] + (f", split with `preprocess.seed={split_seed}`" if split_seed is not None else "")
    keys = ["split", "split_ratios", "seed", "min_count", "numeric"]
    if fmap.get("format") == "movielens":
        keys += ["rating_threshold", "drop_neutral_rating"]
    prep.info["preprocess"] = {k: pp.get(k) for k in keys if k in pp}
    prep.info["fields"] = {"categorical": sum(f["type"] == "categorical" for f in fmap["fields"]),
                           "dense": sum(f["type"] == "dense" for f in fmap["fields"])}
    return prep


# ------------------------------------------------------------------------------------------------
# the recipe


def train_recipe(args: argparse.Namespace) -> dict:
    """ctrflow's effective train section for these runs (params.yaml + the benchmark's overrides)."""
    from components.config import load_params

    params = load_params(REPO / "params.yaml", train_overrides(args))
    d = params.train.model_dump(mode="json")
    return {k: v for k, v in sorted(d.items()) if k not in NOT_RECIPE}


def train_overrides(args: argparse.Namespace) -> dict:
    """The train.* overrides of every ctrflow run (the seed and model are set per run)."""
    over: dict = {"train.device": "cpu", "train.num_threads": args.threads}
    if args.max_epochs is not None:
        over["train.max_epochs"] = args.max_epochs
    if args.batch_size is not None:
        over["train.batch_size"] = args.batch_size
    return over


def recipe_hash(recipe: dict) -> str:
    """16 hex digits over the ctrflow recipe and the DeepCTR-Torch side's fixed settings."""
    blob = json.dumps({"train": recipe, "peer": PEER_RECIPE}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_settings(args: argparse.Namespace, recipe: dict) -> dict:
    """What defines a run besides (dataset, library, model, seed); equal settings → the run is skipped."""
    return {**train_overrides(args), "train_params_hash": recipe_hash(recipe)}


# ------------------------------------------------------------------------------------------------
# DeepCTR-Torch


@contextlib.contextmanager
def _offline_version_check():
    """DeepCTR-Torch starts a thread at import that asks the package index for its latest version;
    offline that waits on the network. ``requests.get`` fails at once while the import and the thread
    it started run (the thread is joined before ``requests.get`` is restored)."""
    import requests

    original = requests.get
    before = set(threading.enumerate())

    def refuse(*_a, **_k):
        raise requests.ConnectionError("offline benchmark: no version check")

    requests.get = refuse
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its "check the latest version manually" line
            yield
            for t in set(threading.enumerate()) - before:
                t.join(timeout=10)
    finally:
        requests.get = original


def import_deepctr():
    """``(deepctr_torch module, None)``, or ``(None, why)`` when the [bench] extra is not installed."""
    if "deepctr_torch" in sys.modules:
        return sys.modules["deepctr_torch"], None
    try:
        with _offline_version_check():
            import deepctr_torch
            import deepctr_torch.inputs  # noqa: F401
            import deepctr_torch.models  # noqa: F401
    except ImportError as e:
        return None, f"DeepCTR-Torch is not installed ({e}); install the optional extra: {INSTALL_HINT}"
    return deepctr_torch, None


def column_spec(fmap: dict, embedding_dim: int) -> list[tuple]:
    """``("sparse", name, vocabulary_size, embedding_dim)`` per categorical field and ``("dense", name,
    1)`` per dense field of a feature_map.json dict, in its field order."""
    out: list[tuple] = []
    for f in fmap["fields"]:
        if f["type"] == "categorical":
            out.append(("sparse", f["name"], int(f["vocab_size"]), int(embedding_dim)))
        elif f["type"] == "dense":
            out.append(("dense", f["name"], 1))
        else:
            raise ValueError(f"field {f['name']!r}: unknown type {f['type']!r}")
    return out


def deepctr_columns(fmap: dict, embedding_dim: int) -> list:
    """DeepCTR-Torch feature columns (SparseFeat / DenseFeat) of :func:`column_spec`."""
    dc, why = import_deepctr()
    if dc is None:
        raise ImportError(why)
    from deepctr_torch.inputs import DenseFeat, SparseFeat

    return [SparseFeat(s[1], vocabulary_size=s[2], embedding_dim=s[3]) if s[0] == "sparse" else DenseFeat(s[1], s[2])
            for s in column_spec(fmap, embedding_dim)]


def build_deepctr(model: str, columns: list, seed: int):
    """DeepCTR-Torch's DCN (DCNv2: matrix cross) or DeepFM with PEER_RECIPE, seeded."""
    from deepctr_torch.models import DCN, DeepFM

    r = PEER_RECIPE
    common = dict(dnn_hidden_units=tuple(r["dnn_hidden_units"]), dnn_activation=r["dnn_activation"],
                  dnn_use_bn=r["dnn_use_bn"], dnn_dropout=r["dnn_dropout"], l2_reg_linear=r["l2_reg"],
                  l2_reg_embedding=r["l2_reg"], l2_reg_dnn=r["l2_reg"], init_std=r["init_std"], seed=seed,
                  task="binary", device="cpu")
    if model == "dcnv2":
        net = DCN(columns, columns, cross_num=r["cross_num"], cross_parameterization=r["cross_parameterization"],
                  l2_reg_cross=r["l2_reg"], **common)
    elif model == "deepfm":
        net = DeepFM(columns, columns, use_fm=True, **common)
    else:
        raise ValueError(f"no DeepCTR-Torch twin for {model!r}; choose from {list(ALL_MODELS)}")
    # DCN does not pass its l2_reg_linear to BaseModel, whose default (1e-5) then regularises the linear
    # part: no L2 anywhere (peers.md's recipe) means setting every registered strength to l2_reg
    net.regularization_weight = [(w, r["l2_reg"], r["l2_reg"]) for w, _l1, _l2 in net.regularization_weight]
    return net


def read_split(processed: Path, fmap: dict, split: str) -> tuple[dict, object]:
    """{field: float32 column} and the float32 labels of one processed split (DeepCTR's input)."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(processed / fmap["splits"][split]["path"])
    x = {f["name"]: np.asarray(table.column(f["name"]).to_numpy(), dtype=np.float32) for f in fmap["fields"]}
    y = np.asarray(table.column(fmap["label"]).to_numpy(), dtype=np.float32)
    return x, y


def _scores(model, x: dict, y, batch_size: int) -> dict:
    """AUC / LogLoss of DeepCTR's probabilities with ctrflow's metric functions."""
    import numpy as np
    from scipy.special import logit

    from components.train.metrics import LOGLOSS_EPS, evaluate_logits

    p = model.predict(x, batch_size=batch_size).reshape(-1)
    return evaluate_logits(y, logit(np.clip(p, LOGLOSS_EPS, 1 - LOGLOSS_EPS)))


def train_deepctr(prep: Prepared, model_name: str, seed: int, recipe: dict, settings: dict, work: Path) -> dict:
    """Train one DeepCTR-Torch model on the processed splits with early stopping; the run record."""
    import random

    import numpy as np
    import torch

    from components.train.recipe import resolve_batch_size

    dc, why = import_deepctr()
    if dc is None:
        raise ImportError(why)
    run_dir = work / "runs" / prep.name / f"deepctr_{model_name}_{seed}_{quality._stamp(settings)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    threads = settings["train.num_threads"]
    bs, patience, max_epochs = recipe["batch_size"], recipe["patience"], recipe["max_epochs"]
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

    fmap = json.loads((prep.processed / "feature_map.json").read_text())
    data = {s: read_split(prep.processed, fmap, s) for s in ("train", "valid", "test")}
    model = build_deepctr(model_name, deepctr_columns(fmap, recipe["embedding_dim"]), seed)
    model.compile(torch.optim.Adam(model.parameters(), lr=recipe["lr"]), "binary_crossentropy", metrics=[])
    rows = len(data["train"][1])
    bs = resolve_batch_size(bs, int(fmap["splits"]["train"]["rows"]))  # "auto": ctrflow's rule, same rows
    best_score, best_epoch, best_state, bad, curve = -math.inf, 0, None, 0, []
    with open(log_path, "w") as fh, contextlib.redirect_stdout(fh):
        epoch = 0
        while epoch < max_epochs and bad < patience:
            epoch += 1
            start = time.perf_counter()
            hist = model.fit(data["train"][0], data["train"][1], batch_size=bs, epochs=1, verbose=0, shuffle=True)
            secs = time.perf_counter() - start
            valid = _scores(model, data["valid"][0], data["valid"][1], bs)
            score = valid["auc"] - (valid["logloss"] if recipe["monitor"] == "auc_minus_logloss" else 0.0)
            improved = score > best_score  # ctrflow's train.monitor, as its own loop selects
            if improved:
                best_score, best_epoch, bad = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            train_loss = hist.history["loss"][-1] if hist.history.get("loss") else float("nan")
            curve.append({"epoch": epoch, "train_loss": train_loss, "valid_auc": valid["auc"],
                          "valid_logloss": valid["logloss"], "samples_per_s": rows / max(secs, 1e-9),
                          "train_seconds": secs})
            print(f"epoch {epoch}/{max_epochs}: train_loss {train_loss:.6f}  valid AUC {valid['auc']:.6f}  "
                  f"LogLoss {valid['logloss']:.6f}  {rows / max(secs, 1e-9):,.0f} samples/s  {secs:.1f}s"
                  + ("  *best*" if improved else f"  (no gain {bad}/{patience})"), flush=True)
        if best_state is None:
            raise RuntimeError(f"DeepCTR-Torch {model_name} seed {seed}: no epoch gave a valid AUC; see {log_path}")
        model.load_state_dict(best_state)
        valid = _scores(model, data["valid"][0], data["valid"][1], bs)
        test = _scores(model, data["test"][0], data["test"][1], bs)
        print(f"best epoch {best_epoch}: valid AUC {valid['auc']:.6f}, test AUC {test['auc']:.6f}", flush=True)
    sps = [c["samples_per_s"] for c in curve]
    return {
        "dataset": prep.name, "library": DEEPCTR, "model": model_name, "seed": seed, "settings": settings,
        "test_auc": test["auc"], "test_logloss": test["logloss"],
        "valid_auc": valid["auc"], "valid_logloss": valid["logloss"],
        "best_epoch": best_epoch, "epochs": epoch,
        "train_samples_per_s": round(sum(sps) / len(sps), 1),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "precision": "fp32", "threads": threads, "batch_size": bs,
        "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
        "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2),
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "log": str(log_path), "curve": curve,
    }


# ------------------------------------------------------------------------------------------------
# ctrflow


def train_ctrflow(prep: Prepared, model: str, seed: int, settings: dict, work: Path) -> dict:
    """quality.py's train_one (the train_teacher stage) + the library name and the precision it ran in."""
    from components.config import load_params

    run = quality.train_one(prep, model, seed, settings, work)
    run_dir = Path(run["log"]).parent
    # the run's copy of params.yaml (taken when it started) with the run's train overrides
    over = {k: v for k, v in settings.items() if k.startswith("train.")}
    used = load_params(run_dir / "params.yaml", over).train.model_dump(mode="json")
    used_hash = recipe_hash({k: v for k, v in sorted(used.items()) if k not in NOT_RECIPE})
    if used_hash != settings["train_params_hash"]:
        raise RuntimeError(f"params.yaml's train section changed while the benchmark ran (run {run_dir}: "
                           f"{used_hash}, benchmark {settings['train_params_hash']}); rerun the benchmark")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**run, "library": CTRFLOW, "precision": metrics.get("precision"),
            "threads": settings["train.num_threads"], "batch_size": metrics.get("batch_size", used["batch_size"])}


# ------------------------------------------------------------------------------------------------
# results


def run_key(r: dict) -> tuple:
    return (r["dataset"], r["library"], r["model"], r["seed"])


def find_run(results: dict, dataset: str, library: str, model: str, seed: int) -> dict | None:
    for r in results["runs"]:
        if run_key(r) == (dataset, library, model, seed):
            return r
    return None


def put_run(results: dict, run: dict) -> None:
    """Insert ``run``, replacing an older run of the same (dataset, library, model, seed)."""
    results["runs"] = [r for r in results["runs"] if run_key(r) != run_key(run)]
    results["runs"].append(run)


def _ordered(values, order) -> list:
    present = set(values)
    return [x for x in order if x in present] + sorted(present - set(order))


AGG_METRICS = ("test_auc", "test_logloss", "valid_auc", "best_epoch", "epochs", "train_samples_per_s", "wall_s")


def aggregate(results: dict) -> dict:
    """{dataset: {model: {library: aggregate_seeds(...) + settings}}} over the stored runs."""
    from components.evaluate.aggregate import aggregate_seeds

    out: dict = {}
    runs = results["runs"]
    for ds in _ordered({r["dataset"] for r in runs}, ALL_DATASETS):
        out[ds] = {}
        for model in _ordered({r["model"] for r in runs if r["dataset"] == ds}, ALL_MODELS):
            out[ds][model] = {}
            for lib in LIBRARIES:
                mine = {r["seed"]: r for r in runs if (r["dataset"], r["model"], r["library"]) == (ds, model, lib)}
                if not mine:
                    continue
                agg = aggregate_seeds(dict(sorted(mine.items())), list(AGG_METRICS))
                settings = sorted({json.dumps(r["settings"], sort_keys=True) for r in mine.values()})
                agg["settings"] = [json.loads(s) for s in settings]
                agg["precision"] = sorted({str(r.get("precision")) for r in mine.values()})
                agg["batch_sizes"] = sorted({r["batch_size"] for r in mine.values()})
                out[ds][model][lib] = agg
    return out


def compare(agg: dict) -> dict:
    """Per dataset and model with both libraries: Δ mean test AUC (ctrflow − DeepCTR), paired Δ over common
    seeds, the samples/s ratio ctrflow/DeepCTR and both target verdicts."""
    out: dict = {}
    for ds, models in agg.items():
        for model, libs in models.items():
            if CTRFLOW not in libs or DEEPCTR not in libs:
                continue
            a, b = libs[CTRFLOW], libs[DEEPCTR]
            diff = a["test_auc"]["mean"] - b["test_auc"]["mean"]
            ratio = a["train_samples_per_s"]["mean"] / b["train_samples_per_s"]["mean"]
            pa = dict(zip(a["test_auc"]["seeds"], a["test_auc"]["values"], strict=True))
            pb = dict(zip(b["test_auc"]["seeds"], b["test_auc"]["values"], strict=True))
            common = sorted(set(pa) & set(pb))
            batches = sorted(set(a["batch_sizes"]) | set(b["batch_sizes"]))
            out.setdefault(ds, {})[model] = {
                "auc_diff": diff,
                "auc_diff_per_seed": {str(s): pa[s] - pb[s] for s in common},
                "seeds_won": sum(pa[s] >= pb[s] for s in common), "seeds_common": len(common),
                "speed_ratio": ratio,
                "auc_pass": diff >= 0,
                "speed_pass": ratio >= SPEED_TARGET,
                "batch_sizes": batches,
                "at_target_batch": batches == [SPEED_TARGET_BATCH],
            }
    return out


def pooled_comparisons(runs: list[dict]) -> dict:
    """{dataset: {model: ...}} for every dataset run on several random splits (its ``@split``
    variants, benchmarks/resplit.py): ctrflow − DeepCTR-Torch test AUC / LogLoss pooled over the
    splits (the seeds both libraries ran on every split), split by split, and the AUC verdict."""
    out: dict = {}
    for base in bases_with_variants(r["dataset"] for r in runs):
        for model in _ordered({r["model"] for r in runs}, ALL_MODELS):
            groups = {lib: (lambda r, lib=lib, model=model: r["library"] == lib and r["model"] == model)
                      for lib in LIBRARIES}
            pool = pooled_means(runs, base, groups)
            if pool is None:
                continue
            auc = pooled_difference(pool, CTRFLOW, DEEPCTR)
            out.setdefault(base, {})[model] = {
                "splits": pool["splits"], "seeds": pool["seeds"],
                "test_auc": {lib: pool["groups"][lib]["test_auc"] for lib in LIBRARIES},
                "test_logloss": {lib: pool["groups"][lib]["test_logloss"] for lib in LIBRARIES},
                "auc_diff": auc["diff"], "auc_diff_per_split": auc["per_split"],
                "splits_ahead": auc["splits_ahead"],
                "logloss_diff": pooled_difference(pool, CTRFLOW, DEEPCTR, "test_logloss")["diff"],
                "auc_pass": auc["diff"] >= 0,
            }
    return out


def pooled_lines(pooled: dict) -> list[str]:
    """One printable line per pooled dataset/model comparison."""
    return [f"{ds:14s} {model:7s} over {len(c['splits'])} splits: Δ test AUC ctrflow − DeepCTR-Torch "
            f"{c['auc_diff']:+.4f} ({'PASS' if c['auc_pass'] else 'MISS'}, ≥ 0; ahead on {c['splits_ahead']}/"
            f"{len(c['splits'])} splits), Δ LogLoss {c['logloss_diff']:+.4f}"
            for ds, models in pooled.items() for model, c in models.items()]


def ratio_lines(cmp: dict) -> list[str]:
    """One printable line per dataset/model comparison."""
    lines = []
    for ds, models in cmp.items():
        for model, c in models.items():
            lines.append(f"{ds:14s} {model:7s} Δ test AUC ctrflow − DeepCTR-Torch {c['auc_diff']:+.4f} "
                         f"({'PASS' if c['auc_pass'] else 'MISS'}, ≥ 0); training samples/s ctrflow/DeepCTR-Torch "
                         f"{c['speed_ratio']:.2f}× ({'PASS' if c['speed_pass'] else 'MISS'}, ≥ {SPEED_TARGET:g}×)")
    return lines


def _pm(a: dict, metric: str, digits: int = 4) -> str:
    m = a[metric]
    std = "—" if m["std"] is None else f"{m['std']:.{digits}f}"
    return f"{m['mean']:.{digits}f} ± {std}"


def _ref(v: tuple) -> str:
    mean, std, _n = v
    return f"{mean:.4f} ± " + ("—" if std is None else f"{std:.4f}")


def _k(x: float) -> str:
    return f"{x / 1000:.1f}k"


def render_markdown(results: dict) -> str:
    """peers.md from the stored runs (see the module docstring)."""
    agg, cmp = results["aggregates"], results["comparisons"]
    runs = results["runs"]
    recipe = results.get("recipe") or {}
    batch = sorted({r["batch_size"] for r in runs})
    lines = ["# ctrflow vs DeepCTR-Torch 0.3.0: same split, same budget, one process", "",
             "Generated by `benchmarks/peers.py` (do not edit by hand; rerun it, or `--report-only` to re-render "
             "from peers.json). Issue 11 §5 targets: ctrflow's test AUC ≥ DeepCTR-Torch's on every dataset, and "
             f"ctrflow's training samples/s ≥ {SPEED_TARGET:g}× DeepCTR-Torch's at batch {SPEED_TARGET_BATCH} (CPU).", ""]
    lines += ["## Summary", ""]
    if cmp:
        lines += ["| dataset | model | ctrflow test AUC | DeepCTR-Torch test AUC | Δ AUC | AUC ≥ DeepCTR's | "
                  "samples/s ratio | ≥ 2× |", "|---|---|---|---|---|---|---|---|"]
        for ds, models in cmp.items():
            if split_variant(ds)[1] is not None:
                continue  # in its dataset's pooled rows
            for model, c in models.items():
                a = agg[ds][model]
                lines.append(f"| {ds} | {model} | {_pm(a[CTRFLOW], 'test_auc')} | {_pm(a[DEEPCTR], 'test_auc')} | "
                             f"{c['auc_diff']:+.4f} | {'**PASS**' if c['auc_pass'] else '**MISS**'} | "
                             f"{c['speed_ratio']:.2f}× | {'**PASS**' if c['speed_pass'] else '**MISS**'}"
                             + ("" if c["at_target_batch"] else f" (batch {', '.join(map(str, c['batch_sizes']))})")
                             + " |")
        if batch != [SPEED_TARGET_BATCH]:
            lines += ["", f"Note: these runs trained at batch {', '.join(map(str, batch))} "
                      f"(ctrflow's train.batch_size, both sides), not at the target's batch {SPEED_TARGET_BATCH}: the "
                      f"speed verdicts above are for that batch size (rerun with `--batch-size {SPEED_TARGET_BATCH}` "
                      "for the target's)."]
    else:
        lines.append("No dataset has runs of both libraries yet.")
    pooled = results.get("pooled") or {}
    if pooled:
        lines += ["", "Pooled over random splits (benchmarks/resplit.py: the same rows split by ctrflow with other "
                  "`preprocess.seed`s, both libraries on each; per split the mean over the common seeds, then the "
                  "mean over the splits). Where a dataset has this row, it is that dataset's AUC verdict: its "
                  "test split is small enough that one split's rows move the comparison more than the seeds do "
                  "(the section below shows it split by split).", "",
                  "| dataset | model | splits × seeds | ctrflow test AUC | DeepCTR-Torch test AUC | Δ AUC | "
                  "splits ahead | Δ LogLoss | AUC ≥ DeepCTR's |", "|---|---|---|---|---|---|---|---|---|"]
        for ds, models in pooled.items():
            for model, c in models.items():
                lines.append(f"| {ds} | {model} | {len(c['splits'])} × {len(c['seeds'])} | "
                             f"{c['test_auc'][CTRFLOW]:.4f} | {c['test_auc'][DEEPCTR]:.4f} | {c['auc_diff']:+.4f} | "
                             f"{c['splits_ahead']}/{len(c['splits'])} | {c['logloss_diff']:+.4f} | "
                             f"{'**PASS**' if c['auc_pass'] else '**MISS**'} |")
    lines += ["", "## How it was run", ""]
    lines += [f"- `{inv['command']}` ({inv['started']}, {inv.get('runs_done', 0)} runs"
              + ("" if "load_avg_end" in inv else "; stopped before its end") + ")"
              for inv in results["invocations"]]
    ctx = results.get("context", {})
    loads = [x for r in runs for x in (r["load_avg_start"], r["load_avg_end"])]
    lines += [
        "",
        f"- Machine: {ctx.get('cpu_count')} CPU cores ({ctx.get('machine')}), no GPU, torch {ctx.get('torch')}, "
        f"Python {ctx.get('python')}; every run on {ctx.get('threads')} torch thread(s), runs sequential, ctrflow "
        "and DeepCTR-Torch of the same seed and model back to back.",
        (f"- Shared machine: 1-minute load average over the runs min {min(loads):.2f}, max {max(loads):.2f}; "
         "samples/s are under that load (the ratio, measured side by side, is the robust number)." if loads else
         "- No runs yet."),
        "- **Training samples/s** (both libraries): mean over the epochs run of training rows / seconds of "
        "that epoch's training pass, validation excluded (ctrflow: `train_samples_per_s` of its `fit`; "
        "DeepCTR-Torch: the `model.fit(epochs=1)` call, its DataLoader included).",
        "- Test AUC / LogLoss of the weights of the best epoch by ctrflow's `train.monitor` (valid AUC − LogLoss by default; AUC before 2026-12-06 15:44), with ctrflow's metric functions on both "
        "sides; mean ± sample std (ddof 1) over the seeds; seeds change initialisation and batch order, not the split.",
        "",
        "### ctrflow side: params.yaml's train section (the default recipe) as used",
        "",
    ]
    for h, rec in recipe.items():
        lines.append(f"- recipe `{h}`: " + ", ".join(f"{k}={v}" for k, v in rec.items()))
    prec = sorted({str(r.get("precision")) for r in runs if r["library"] == CTRFLOW})
    if prec:
        lines.append(f"- ctrflow trained in {', '.join(prec)} (its `train.precision`: `auto` = bf16 autocast where "
                     "the CPU has native bf16), DeepCTR-Torch in fp32 (it has no mixed precision).")
    lines += ["- ctrflow's models: the registry's `dcnv2` / `deepfm` with their default hyperparameters "
              "(+ train.model_params), trained by `components.train.teacher.train_teacher` "
              "(via benchmarks/quality.py's `train_one`).", "",
              "### DeepCTR-Torch side", "",
              "- " + ", ".join(f"{k}={v}" for k, v in PEER_RECIPE.items()) + ".",
              f"- From ctrflow's train section: {', '.join(SHARED_KEYS)} (early stopping on the monitored value, best "
              "epoch restored); every categorical id column of the processed splits a SparseFeat (vocabulary size from "
              "feature_map.json), every dense column a DenseFeat, in the linear and the deep part.",
              "- DCNv2 = `DCN(cross_parameterization='matrix', cross_num=3)` (cross ∥ DNN), DeepFM = `DeepFM(use_fm=True)`; "
              "no LR decay and no gradient clipping (DeepCTR-Torch has neither). DeepCTR-Torch 0.3.0's DCN does not "
              "pass `l2_reg_linear` to its base model, which then puts L2 1e-5 on the linear part; the benchmark sets "
              "every registered regularisation strength to 0 after building the model.", ""]
    for ds, models in agg.items():
        if split_variant(ds)[1] is not None:
            continue  # a split variant: in its dataset's pooled section
        info = results["datasets"].get(ds, {})
        lines += [f"## {ds}", ""]
        if info.get("protocol"):
            lines.append(f"Protocol: {info['protocol']}. Preprocess settings used: "
                         + ", ".join(f"{k} {v}" for k, v in info.get("preprocess", {}).items())
                         + f"; fields {info.get('fields')}.")
        if info.get("splits"):
            lines.append(f"Split rows (train/valid/test, the same files for both libraries): {info['splits']}.")
        if ds in PEERS_MD_PROTOCOL:
            lines.append(f"Reference rows are quoted from shared/design/peers.md ({PEERS_MD_PROTOCOL[ds]}): "
                         "another split and preprocessing, context only.")
        lines += ["", "| model | library | seeds | test AUC | test LogLoss | valid AUC | best epoch / epochs | "
                  "train samples/s | s per run |", "|---|---|---|---|---|---|---|---|---|"]
        for model, libs in models.items():
            for lib, a in libs.items():
                lines.append(f"| {model} | {LIBRARY_NAMES[lib]} | {a['test_auc']['n']} | {_pm(a, 'test_auc')} | "
                             f"{_pm(a, 'test_logloss')} | {_pm(a, 'valid_auc')} | {a['best_epoch']['mean']:.1f} / "
                             f"{a['epochs']['mean']:.1f} | {a['train_samples_per_s']['mean']:,.0f} | "
                             f"{a['wall_s']['mean']:.0f} |")
            ref_auc, ref_speed = PEERS_MD_AUC.get((ds, model)), PEERS_MD_SPEED.get((ds, model), {})
            if ref_auc:
                for lib, label in (("fuxictr", "FuxiCTR 2.3.9"), (DEEPCTR, "DeepCTR-Torch 0.3.0")):
                    sp = ref_speed.get(lib)
                    lines.append(f"| {model} | {label} (peers.md, reference) | {ref_auc[lib][2]} | {_ref(ref_auc[lib])} | — "
                                 f"| — | — | {_k(sp) if sp else '—'} | — |")
        lines.append("")
        for model, c in cmp.get(ds, {}).items():
            per = ", ".join(f"{s}: {d:+.4f}" for s, d in c["auc_diff_per_seed"].items())
            lines += [f"- **{model}**: Δ test AUC ctrflow − DeepCTR-Torch **{c['auc_diff']:+.4f}** (per seed {per}; "
                      f"ctrflow ≥ in {c['seeds_won']}/{c['seeds_common']}); training samples/s ratio "
                      f"ctrflow/DeepCTR-Torch **{c['speed_ratio']:.2f}×**.",
                      f"  - AUC ≥ DeepCTR-Torch's: **{'PASS' if c['auc_pass'] else 'MISS'}**",
                      f"  - samples/s ≥ {SPEED_TARGET:g}× (batch {', '.join(map(str, c['batch_sizes'])) or '?'}): "
                      f"**{'PASS' if c['speed_pass'] else 'MISS'}**"]
        mixed = [f"{m}/{lib}" for m, libs in models.items() for lib, a in libs.items() if len(a["settings"]) > 1]
        if mixed:
            lines.append(f"- Warning: the seeds of {mixed} ran under different settings (see peers.json).")
        lines.append("")
    for ds, models in pooled.items():
        splits = next(iter(models.values()))["splits"]
        lines += [f"## {ds} over {len(splits)} random splits", "",
                  "Test AUC, ctrflow − DeepCTR-Torch, per split (mean over the seeds both ran on every split; "
                  "`default` = params.yaml's `preprocess.seed`, the split of the section above):", "",
                  "| model | seeds | " + " | ".join("default" if d == ds else f"seed {split_variant(d)[1]}"
                                                    for d in splits) + " | pooled |",
                  "|---|---|" + "---|" * (len(splits) + 1)]
        for model, c in models.items():
            lines.append(f"| {model} | {', '.join(map(str, c['seeds']))} | "
                         + " | ".join(f"{c['auc_diff_per_split'][d]:+.4f}" for d in splits)
                         + f" | **{c['auc_diff']:+.4f}** |")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, out_dir: Path) -> None:
    """Recompute aggregates and comparisons, then write peers.json and peers.md atomically."""
    results["aggregates"] = aggregate(results)
    results["comparisons"] = compare(results["aggregates"])
    results["pooled"] = pooled_comparisons(results["runs"])
    _atomic(out_dir / RESULTS_JSON, json.dumps(results, indent=2, default=str) + "\n")
    _atomic(out_dir / RESULTS_MD, render_markdown(results))


# ------------------------------------------------------------------------------------------------
# CLI


def _known_dataset(name: str) -> bool:
    return known_dataset(name, ALL_DATASETS, [d for d in ALL_DATASETS if d not in FIXED_SPLIT])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=_csv, default=list(DEFAULT_DATASETS),
                   help=f"subset of {','.join(ALL_DATASETS)}, or split variants <dataset>@split<seed> "
                        f"[the four, and avazu10k@split2023 … @split2031]")
    p.add_argument("--models", type=_csv, default=list(ALL_MODELS), help=f"subset of {','.join(ALL_MODELS)}")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _csv(s)], default=list(DEFAULT_SEEDS),
                   help="train seeds [2024,2025,2026]")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=f"torch threads per run [{DEFAULT_THREADS}]")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epoch cap of both sides [params.yaml's train.max_epochs]")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size of both sides [params.yaml's train.batch_size]")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help=f"scratch data and runs [{DEFAULT_WORK}]")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where peers.json / peers.md go "
                                                                      "[benchmarks/results]")
    p.add_argument("--fresh", action="store_true", help="re-run runs already present in peers.json")
    p.add_argument("--report-only", action="store_true", help="only re-render peers.md/json from peers.json")
    args = p.parse_args(argv)
    bad = [d for d in args.datasets if not _known_dataset(d)]
    if bad:
        p.error(f"unknown dataset(s) {bad}; choose from {list(ALL_DATASETS)} or a split variant "
                f"<dataset>@split<seed> of {', '.join(d for d in ALL_DATASETS if d not in FIXED_SPLIT)}")
    bad = [m for m in args.models if m not in ALL_MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {list(ALL_MODELS)} (the models both libraries have)")
    if args.threads < 1:
        p.error("--threads must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Prepare each dataset, run every seed × model × library not yet done, rewrite the results after each."""
    args = parse_args(argv)
    out_json = args.out_dir / RESULTS_JSON
    results = load_results(out_json)
    results.setdefault("recipe", {})
    if args.report_only:
        write_outputs(results, args.out_dir)
        print("\n".join(ratio_lines(results["comparisons"]) + pooled_lines(results["pooled"])))
        print(f"re-rendered {args.out_dir / RESULTS_MD} from {out_json}")
        return
    dc, why = import_deepctr()
    if dc is None:
        raise SystemExit(why)
    recipe = train_recipe(args)
    settings = run_settings(args, recipe)
    results["recipe"][settings["train_params_hash"]] = recipe
    inv = begin_invocation(results, "benchmarks/peers.py", argv, args.threads)
    log(f"ctrflow train recipe {settings['train_params_hash']}: "
        + ", ".join(f"{k}={recipe[k]}" for k in (*SHARED_KEYS, "precision")))
    args.work_dir.mkdir(parents=True, exist_ok=True)

    for ds in args.datasets:
        try:
            prep = prepare_dataset(ds, args.work_dir, log)
        except FileNotFoundError as e:
            log(str(e) if str(e).startswith(f"[{ds}]") else f"[{ds}] skipped: {e}")
            continue
        results["datasets"][ds] = {**prep.info, "overrides": prep.overrides}
        for seed in args.seeds:
            for model in args.models:
                for lib in LIBRARIES:
                    old = find_run(results, ds, lib, model, seed)
                    if old is not None and old["settings"] == settings and not args.fresh:
                        continue
                    if lib == CTRFLOW:
                        run = train_ctrflow(prep, model, seed, settings, args.work_dir)
                    else:
                        run = train_deepctr(prep, model, seed, recipe, settings, args.work_dir)
                    put_run(results, run)
                    inv["runs_done"] += 1
                    write_outputs(results, args.out_dir)
                    log(f"[{ds}] {LIBRARY_NAMES[lib]} {model} seed {seed}: test AUC {run['test_auc']:.4f} "
                        f"LogLoss {run['test_logloss']:.4f} (best epoch {run['best_epoch']}/{run['epochs']}, "
                        f"{run['train_samples_per_s']:,.0f} train samples/s, {run['wall_s']:.0f} s, "
                        f"load {run['load_avg_end']:.1f})")
        for line in ratio_lines({ds: results["comparisons"].get(ds, {})}):
            log(line)
    inv["load_avg_end"] = round(os.getloadavg()[0], 2)
    write_outputs(results, args.out_dir)
    print("\n".join(ratio_lines(results["comparisons"]) + pooled_lines(results["pooled"])), flush=True)
    log(f"results → {out_json} and {args.out_dir / RESULTS_MD}")


if __name__ == "__main__":
    main()
