"""Benchmark: the AUC cost of the embedding-table remedies (issue 15 §1) on the synthetic Criteo set.

Usage::

    nice -n 10 .venv/bin/python benchmarks/embedding_remedies.py                  # 2M rows, ~20-30 min on 2 cores
    .venv/bin/python benchmarks/embedding_remedies.py --rows 100000 --max-epochs 1   # a quick smoke run

The synthetic log is made as ``benchmarks/quality.py`` makes it (:func:`benchmarks.quality.
prepare_synthetic`: ``components.data.generate`` Criteo layout, generator seed 2024, cached under
``<work-dir>/synthetic_<rows>`` by the generator's code fingerprint). It is then preprocessed three
times with the repository's ``params.yaml`` (``preprocess`` section as is) plus one remedy each:

- ``default``: no remedy;
- ``hash``: ``preprocess.hash_buckets`` = ``{min_vocab: --hash-min-vocab, buckets: --hash-buckets}``
  (defaults 10,000 and 8,192: on this set the largest vocabularies after ``min_count`` 10 hold 12-24k
  values, so a 100k threshold would hash nothing; 8,192 buckets make the tables about half the default's);
- ``budget``: ``preprocess.embedding_budget_mb`` = ``--budget-fraction`` (0.5) × the default's table MB,
  at ``train.embedding_dim``.

Each trains the default teacher (``train`` section as is: DCNv2, its early stopping) with one seed,
epochs capped at ``--max-epochs`` (2: the default teacher's valid AUC peaks at epoch 2 on this set and
falls after, benchmarks/results/quality.md runs), without the baseline gate (it does not change the
teacher). Printed and written to ``benchmarks/results/embedding_remedies.{json,md}``: table MB, test
AUC / LogLoss, and the AUC / LogLoss cost vs ``default``. Finished configurations are cached in
``<work-dir>/embedding_remedies.json`` (a rerun skips them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.quality import _scratch_params, prepare_synthetic  # noqa: E402  (needs REPO on sys.path)

DEFAULT_WORK = Path(tempfile.gettempdir()) / "ctrflow-bench-embedding"
RESULTS = REPO / "benchmarks" / "results"
CONFIGS = ("default", "hash", "budget")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def preprocess_config(name: str, base: dict, ds_dir: Path, extra: dict, default_dir: Path) -> tuple[Path, dict]:
    """Preprocess the synthetic log with ``extra`` preprocess overrides into ``ds_dir/processed_<name>``
    (no overrides: ``default_dir``, what prepare_synthetic already wrote)."""
    from components.data.embedding_memory import table_memory
    from components.data.preprocess import load_feature_map
    from components.stages import preprocess_stage

    out = ds_dir / f"processed_{name}" if extra else default_dir
    overrides = {**base, **extra, "preprocess.out_dir": str(out)}
    params = _scratch_params(ds_dir / f"params_{name}", overrides)
    t0 = time.perf_counter()
    if extra:
        res = preprocess_stage(params, require_gate=False)
        log(f"[{name}] {res.summary} ({time.perf_counter() - t0:.0f} s)")
    fmap = load_feature_map(out)
    mem = table_memory(fmap, params.train.embedding_dim)
    return out, {"overrides": extra, "total_ids": mem.total_ids, "table_mb": mem.total_mb,
                 "training_mb": mem.training_mb, "embedding": fmap.embedding,
                 "largest_fields": [[n, i] for n, i, _ in mem.largest(10)],
                 "preprocess_s": round(time.perf_counter() - t0, 1)}


def train_config(name: str, processed: Path, base: dict, work: Path, seed: int, max_epochs: int) -> dict:
    from components.train.teacher import train_teacher

    run = work / "runs" / name
    overrides = {**base, "train.seed": seed, "train.max_epochs": max_epochs,
                 "train.out_dir": str(run / "model"), "train.metrics": str(run / "metrics.json"),
                 "train.curve": str(run / "curve.csv")}
    params = _scratch_params(run, overrides)
    t0, cpu0 = time.perf_counter(), time.process_time()
    with open(run / "train.log", "w") as fh:
        res = train_teacher(params.train, processed, resume=False, with_gate=False,
                            log=lambda m: print(m, file=fh, flush=True))
    m = res.metrics
    out = {"model": params.train.model, "seed": seed, "max_epochs": max_epochs,
           "test_auc": m["test"]["auc"], "test_logloss": m["test"]["logloss"],
           "valid_auc": m["valid"]["auc"], "best_epoch": m["best_epoch"], "epochs": m["epochs"],
           "parameters": m["parameters"]["total"], "train_wall_s": round(time.perf_counter() - t0, 1),
           "train_cpu_s": round(time.process_time() - cpu0, 1)}
    log(f"[{name}] test AUC {out['test_auc']:.4f} LogLoss {out['test_logloss']:.4f} "
        f"(best epoch {out['best_epoch']}/{out['epochs']}, {out['train_wall_s']:.0f} s)")
    return out


def render_markdown(res: dict) -> str:
    d = res["configs"]["default"]
    lines = [
        "# Embedding-table remedies: memory vs AUC",
        "",
        f"`{res['command']}` — {res['rows']:,}-row synthetic Criteo log (generator seed 2024; oracle test AUC "
        f"{res['oracle_test_auc']:.4f}), `params.yaml` defaults (DCNv2, embedding_dim {res['embedding_dim']}, "
        f"min_count {res['min_count']}), seed {res['seed']}, epochs capped at {res['max_epochs']}, "
        f"no baseline gate; {res['machine']}. Table MB = ids × dim × 4 bytes / 2^20 "
        "(fp32 weights; training with Adam holds ~4×).",
        "",
        "| config | remedy | ids | table MB | vs default | test AUC | test LogLoss | AUC cost | LogLoss cost "
        "| best epoch | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in CONFIGS:
        c = res["configs"].get(name)
        if c is None or "test_auc" not in c:
            continue
        emb = c.get("embedding") or {}
        if "hash_buckets" in emb:
            hb = emb["hash_buckets"]
            remedy = (f"hash_buckets {{min_vocab: {hb['min_vocab']}, buckets: {hb['buckets']}}}: "
                      f"{len(hb['fields'])} fields ({', '.join(hb['fields'])})")
        elif "budget" in emb:
            b = emb["budget"]
            remedy = f"embedding_budget_mb {b['budget_mb']:.3f} → min_count {b['min_count']}"
        else:
            remedy = "none"
        lines.append(
            f"| {name} | {remedy} | {c['total_ids']:,} | {c['table_mb']:.2f} | {c['table_mb'] / d['table_mb']:.0%} "
            f"| {c['test_auc']:.4f} | {c['test_logloss']:.4f} | {d['test_auc'] - c['test_auc']:+.4f} "
            f"| {c['test_logloss'] - d['test_logloss']:+.4f} | {c['best_epoch']}/{c['epochs']} | {c['train_wall_s']:.0f} |")
    lines += ["", "AUC cost = default's test AUC − this config's (positive: the remedy loses AUC); LogLoss cost ="
              " this − default (positive: worse). One seed: differences under ~0.001 AUC are within seed noise.", ""]
    top = ", ".join(f"{n} {i:,}" for n, i in d["largest_fields"][:6])
    lines += [f"Default's largest tables (ids): {top}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--max-epochs", type=int, default=2)
    p.add_argument("--hash-min-vocab", type=int, default=10_000)
    p.add_argument("--hash-buckets", type=int, default=8_192)
    p.add_argument("--budget-fraction", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=RESULTS / "embedding_remedies")
    args = p.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    cache = args.work_dir / "embedding_remedies.json"
    res = json.loads(cache.read_text()) if cache.exists() else {}
    if res.get("rows") != args.rows:
        res = {"rows": args.rows, "configs": {}}
    prep = prepare_synthetic(args.work_dir, args.rows, log)
    base = {k: v for k, v in prep.overrides.items() if k != "preprocess.out_dir"}
    params = _scratch_params(args.work_dir / "base", base)
    res.update({"command": "benchmarks/embedding_remedies.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "seed": args.seed, "max_epochs": args.max_epochs, "embedding_dim": params.train.embedding_dim,
                "min_count": params.preprocess.min_count, "oracle_test_auc": prep.info["oracle"]["auc"],
                "machine": f"{os.cpu_count()} CPUs, torch threads = train.num_threads ({params.train.num_threads})"})
    ds_dir = prep.processed.parent
    for name in CONFIGS:
        done = res["configs"].get(name)
        if done and "test_auc" in done and done.get("max_epochs") == args.max_epochs:
            log(f"[{name}] cached: test AUC {done['test_auc']:.4f}")
            continue
        if name == "default":
            extra = {}
        elif name == "hash":
            extra = {"preprocess.hash_buckets": {"min_vocab": args.hash_min_vocab, "buckets": args.hash_buckets}}
        else:
            extra = {"preprocess.embedding_budget_mb": res["configs"]["default"]["table_mb"] * args.budget_fraction}
        processed, info = preprocess_config(name, base, ds_dir, extra, prep.processed)
        info.update(train_config(name, processed, base, args.work_dir, args.seed, args.max_epochs))
        res["configs"][name] = info
        cache.write_text(json.dumps(res, indent=2, sort_keys=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    md = render_markdown(res)
    Path(f"{args.out}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
