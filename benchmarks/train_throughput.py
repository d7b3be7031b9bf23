"""Benchmark: training samples/s, ctrflow's BatchLoader + ``fit`` vs a DataLoader/TensorDataset baseline.

Usage::

    .venv/bin/python benchmarks/train_throughput.py                      # dcnv2 + deepfm, 200k rows
    .venv/bin/python benchmarks/train_throughput.py --models deepfm --rows 100000 --repeats 2

What is measured, for each model (default DCNv2 and DeepFM at their registry defaults, batch 4096),
in ONE run so every side sees the same machine load:

- **ctrflow**: :class:`components.data.loader.BatchLoader` (whole-tensor ``index_select`` batches,
  no per-row Python, no collation) feeding :func:`components.train.loop.fit` at the default
  ``train.precision: auto`` (bf16 autocast on a CPU with native bf16, AVX512-BF16/AMX; fp32 on
  other CPUs — the run prints which it got).
- **baseline** (what DeepCTR-Torch's ``fit`` does): ``torch.utils.data.DataLoader`` over a
  ``TensorDataset`` of the same tensors, ``shuffle=True``, default collation, ``num_workers=0``:
  every batch is 4096 ``dataset[i]`` calls (one tuple of row tensors each) and a
  ``default_collate`` that re-stacks them, trained in fp32 as DeepCTR-Torch does. Its batches are
  handed to the very same ``fit`` (same model class, seed, optimizer, loss, gradient clipping).
- **ctrflow_fp32**: ctrflow's loader with ``precision: fp32``, so the table separates the two
  effects: loader (ctrflow_fp32 vs baseline) and precision (ctrflow vs ctrflow_fp32).

The best validation AUC of every fit is stored as well, so a speed-up that cost accuracy would
show (same seed, same epochs on every side).

Both sides train on the same processed synthetic set (``components.data.generate`` Criteo layout,
``--rows`` rows, split 8:1:1 by ``preprocess``: the train split is timed, the valid split only feeds
fit's per-epoch evaluation, which is outside the timed window). Each repeat builds a fresh model
(same seed) and runs ``fit`` for ``1 + --epochs`` epochs; the first epoch is warm-up and dropped,
and the figure is fit's own per-epoch ``samples_per_s`` (train steps only). The reported number is
the median over all timed epochs of all repeats; repeats alternate which side goes first. A
loader-only pass (iterate one epoch, no model) is timed too, median of ``--repeats``.

Torch runs on ``--threads`` threads (default 1: with other jobs on this 2-core machine, 2 threads
measured 3–8× slower per train step than 1). The machine's load average is printed before and after and stored with the results: on a shared
2-core box other jobs shift absolute numbers, the ratio is the robust figure. Results go to stdout
and to ``--json`` (default ``benchmarks/results/train_throughput.json``, written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from components.config import PreprocessParams, TrainParams  # noqa: E402
from components.data.feature_map import FeatureMap  # noqa: E402
from components.data.loader import Batch, BatchLoader  # noqa: E402
from components.train.loop import cpu_supports_bf16  # noqa: E402

DEFAULT_WORK = Path(tempfile.gettempdir()) / "ctrflow-bench-throughput"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "train_throughput.json"
TARGET_RATIO = 3.0


# ------------------------------------------------------------------------------------------------
# data


def prepare_processed(rows: int, seed: int, work_dir: Path) -> Path:
    """A processed synthetic Criteo-layout set of ``rows`` rows in ``work_dir`` (cached by size/seed)."""
    from components.data.formats import read_source
    from components.data.generate import generate
    from components.data.preprocess import preprocess

    work_dir.mkdir(parents=True, exist_ok=True)
    raw = work_dir / f"synthetic_criteo_{rows}_{seed}.txt"
    out = work_dir / f"processed_{rows}_{seed}"
    if not raw.exists():
        t0 = time.perf_counter()
        generate("criteo", rows, seed, raw)
        print(f"generated {rows:,} synthetic rows in {time.perf_counter() - t0:.1f} s → {raw}", flush=True)
    if not (out / "feature_map.json").exists():
        t0 = time.perf_counter()
        preprocess(read_source("criteo", raw, work_dir=work_dir), PreprocessParams(), out)
        print(f"preprocessed in {time.perf_counter() - t0:.1f} s → {out}", flush=True)
    return out


def split_tensors(path: Path, fmap: FeatureMap) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(categorical int32 [N, F], dense float32 [N, F_dense], label float32 [N]) of one split file."""
    table = pq.read_table(path)
    cat_names = [f.name for f in fmap.categorical_fields]
    dense_names = [f.name for f in fmap.dense_fields]
    n = table.num_rows
    cat = np.stack([table.column(c).to_numpy() for c in cat_names], axis=1).astype(np.int32) if cat_names \
        else np.empty((n, 0), np.int32)
    dense = np.stack([table.column(c).to_numpy() for c in dense_names], axis=1).astype(np.float32) \
        if dense_names else np.empty((n, 0), np.float32)
    label = table.column(fmap.label).to_numpy().astype(np.float32)
    return torch.from_numpy(cat), torch.from_numpy(dense), torch.from_numpy(label)


class CollatedLoader:
    """The baseline: DataLoader(TensorDataset, shuffle=True, default collation), batches as :class:`Batch`.

    Wrapping the collated list ``[cat, dense, label]`` into the ``Batch`` namedtuple that ``fit``
    reads is a constant-time tuple construction; the DataLoader does all the per-row work.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int) -> None:
        self.dataset = TensorDataset(*tensors)
        self.loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                                 generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.loader)

    def __iter__(self):
        for cat, dense, label in self.loader:
            yield Batch(cat, dense, label)


# ------------------------------------------------------------------------------------------------
# measurement


def loader_only(make, repeats: int) -> float:
    """Median samples/s of iterating one epoch of ``make()`` (no model), over ``repeats`` epochs."""
    rates = []
    loader = make()
    for _ in range(repeats + 1):  # first pass is warm-up
        t0 = time.perf_counter()
        n = sum(b.label.shape[0] for b in loader)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates[1:])


def fit_rates(model_name: str, fmap: FeatureMap, train_loader, valid_loader, params: TrainParams,
              out_dir: Path) -> tuple[list[float], float]:
    """(per-epoch train samples/s with epoch 1, the warm-up, dropped; best valid AUC) of one ``fit``."""
    from components.models import build_model
    from components.train.loop import fit, seed_everything

    seed_everything(params.seed)
    model = build_model(model_name, fmap, embedding_dim=params.embedding_dim, **params.model_params)
    result = fit(model, train_loader, valid_loader, params, out_dir, resume=False,
                 log=lambda _m: None, progress=False, device="cpu")
    return [h["samples_per_s"] for h in result.history[1:]], float(result.best_valid_auc)


def load_avg() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def run(args: argparse.Namespace) -> dict:
    """Run the whole benchmark and return its results (also printed)."""
    processed = prepare_processed(args.rows, args.seed, args.work_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    train_path = processed / fmap.splits["train"]["path"]
    valid_path = processed / fmap.splits["valid"]["path"]
    bs = args.batch_size
    train_tensors = split_tensors(train_path, fmap)
    n_train = int(train_tensors[2].shape[0])
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)

    def ctrflow_loader() -> BatchLoader:
        return BatchLoader(train_path, fmap, bs, shuffle=True, seed=args.seed)

    def baseline_loader() -> CollatedLoader:
        return CollatedLoader(train_tensors, bs, args.seed)

    valid = BatchLoader(valid_path, fmap, bs, shuffle=False)
    results: dict = {
        "benchmark": "train_throughput",
        "rows_generated": args.rows,
        "train_rows": n_train,
        "fields": fmap.num_fields,
        "vocabulary": int(sum(fmap.vocab_sizes)),
        "batch_size": bs,
        "torch_threads": threads,
        "torch": torch.__version__,
        "cpu_native_bf16": cpu_supports_bf16(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "epochs_timed_per_repeat": args.epochs,
        "repeats": args.repeats,
        "load_avg_start": round(load_avg(), 2),
        "loader_only": {},
        "models": {},
    }
    print(f"train split: {n_train:,} rows × {fmap.num_fields} fields, batch {bs}, torch {torch.__version__} "
          f"on {threads} thread(s); load average {results['load_avg_start']:.2f} on {os.cpu_count()} cores",
          flush=True)

    lo_ctr = loader_only(ctrflow_loader, args.repeats)
    lo_base = loader_only(baseline_loader, args.repeats)
    results["loader_only"] = {"ctrflow_samples_per_s": round(lo_ctr), "baseline_samples_per_s": round(lo_base),
                              "ratio": round(lo_ctr / lo_base, 2)}
    print(f"\nloader only (no model): ctrflow {lo_ctr:,.0f} samples/s, baseline {lo_base:,.0f} samples/s "
          f"→ {lo_ctr / lo_base:.1f}×", flush=True)

    with tempfile.TemporaryDirectory(prefix="ctrflow-throughput-") as tmp:
        for name in args.models:
            base = dict(model=name, batch_size=bs, max_epochs=1 + args.epochs, patience=1 + args.epochs,
                        num_threads=threads, device="cpu", seed=args.seed)
            sides = {"ctrflow": TrainParams(**base, precision="auto"),
                     "baseline": TrainParams(**base, precision="fp32"),
                     "ctrflow_fp32": TrainParams(**base, precision="fp32")}
            rates: dict[str, list[float]] = {k: [] for k in sides}
            aucs: dict[str, list[float]] = {k: [] for k in sides}
            loads = [load_avg()]
            for rep in range(args.repeats):
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                for side in order:
                    loader = baseline_loader() if side == "baseline" else ctrflow_loader()
                    r, auc = fit_rates(name, fmap, loader, valid, sides[side], Path(tmp) / f"{name}-{side}")
                    rates[side] += r
                    aucs[side].append(auc)
                    loads.append(load_avg())
            med = {k: statistics.median(v) for k, v in rates.items()}
            ratio = med["ctrflow"] / med["baseline"]
            results["models"][name] = {
                "ctrflow_samples_per_s": round(med["ctrflow"]),
                "baseline_samples_per_s": round(med["baseline"]),
                "ctrflow_fp32_samples_per_s": round(med["ctrflow_fp32"]),
                "ratio": round(ratio, 3),
                "loader_effect": round(med["ctrflow_fp32"] / med["baseline"], 3),
                "precision_effect": round(med["ctrflow"] / med["ctrflow_fp32"], 3),
                "meets_target": ratio >= TARGET_RATIO,
                "best_valid_auc": {k: [round(a, 5) for a in v] for k, v in aucs.items()},
                "epochs": {k: [round(r) for r in v] for k, v in rates.items()},
                "load_avg_during": [round(x, 2) for x in loads],
            }
            print(f"\n{name}: ctrflow {med['ctrflow']:,.0f} samples/s, baseline {med['baseline']:,.0f} samples/s "
                  f"→ {ratio:.2f}× (target ≥ {TARGET_RATIO:.0f}×: {'met' if ratio >= TARGET_RATIO else 'NOT met'})"
                  f"\n  ctrflow at fp32 {med['ctrflow_fp32']:,.0f} samples/s: loader effect "
                  f"{med['ctrflow_fp32'] / med['baseline']:.2f}×, precision effect {med['ctrflow'] / med['ctrflow_fp32']:.2f}×"
                  f"\n  best valid AUC per fit: {results['models'][name]['best_valid_auc']}"
                  f"\n  per-epoch samples/s: {results['models'][name]['epochs']}"
                  f"\n  load average during: {[round(x, 2) for x in loads]}", flush=True)
    results["load_avg_end"] = round(load_avg(), 2)
    print("\nnote: every side runs the same fit() train step (forward, BCE, backward, clip, Adam); the "
          "baseline differs by its per-row TensorDataset indexing + default_collate and by fp32.\n"
          f"load average at the end: {results['load_avg_end']:.2f}", flush=True)
    return results


def write_json(path: Path, results: dict) -> None:
    """Write ``results`` to ``path`` atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
                   default=["dcnv2", "deepfm"], help="comma-separated registry names [dcnv2,deepfm]")
    p.add_argument("--rows", type=int, default=200_000, help="synthetic rows generated (train = 80%%) [200000]")
    p.add_argument("--seed", type=int, default=2024, help="data, model and shuffle seed [2024]")
    p.add_argument("--batch-size", type=int, default=4096, help="[4096]")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per fit run, after 1 warm-up [2]")
    p.add_argument("--repeats", type=int, default=2, help="fit runs per side and model [2]")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 0 = all cores [1: on a shared, loaded 2-core box 2 threads measured "
                        "3-8x slower per step than 1, from oversubscription]")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help=f"data cache [{DEFAULT_WORK}]")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file ('' to skip)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    results = run(args)
    if str(args.json):
        write_json(args.json, results)
        print(f"results → {args.json}")


if __name__ == "__main__":
    main()
