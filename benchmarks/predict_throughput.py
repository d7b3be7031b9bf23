"""Benchmark: `ctrflow predict` rows/s and peak RSS on a raw Criteo log (parse + encode + score + write).

Usage::

    .venv/bin/python benchmarks/predict_throughput.py                          # dagfm student, 300k rows
    .venv/bin/python benchmarks/predict_throughput.py --model dagfm --hparams '{"interaction_type": "inner"}'
    .venv/bin/python benchmarks/predict_throughput.py --checkpoint exported/ --raw ../shared/data/criteo/criteo_kaggle_train_sample117k.txt.gz
    .venv/bin/python benchmarks/predict_throughput.py --set inference.threads=1 --set inference.score_rows=65536

What is measured: :func:`components.serve.predict.predict_file` — exactly what
``ctrflow predict --model M RAW --out F --batch-rows N`` runs after loading params — on a raw log,
``--repeats`` times per ``--batch-rows`` value (order alternating), each in a FRESH Python process, so its peak RSS (``ru_maxrss``) is
that run's own. The timed window is the whole ``predict_file`` call: model and vocabulary loading,
the structural check and parse of the raw file (Polars), encoding through the vocabularies, the
model calls, and writing the text output. Per-phase seconds (stage = parse + transform + scratch
Parquet, encode, score, format) are printed beside the total; the summary gives the median rows/s
and the largest peak RSS per ``--batch-rows`` value.

Without ``--checkpoint``, the input is a synthetic Criteo log (``components.data.generate``,
``--rows`` rows, written once into ``--work``), preprocessed with the default settings, and the
model is a freshly initialised ``--model`` (default ``dagfm``: the KD-DAGFM student at its
params.yaml settings, outer interaction, depth 3, embedding 16) saved as a checkpoint. Throughput
does not depend on the weights' values, only on the architecture (and, for int8, on the settings).

Like ``ctrflow predict``, each run gets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it
(pass ``OMP_WAIT_POLICY=ACTIVE`` to measure the spinning default). Inference settings: params.yaml
``inference:`` defaults (``--set inference.KEY=VALUE`` overrides,
e.g. ``threads``, ``score_rows``, ``quantize``, ``compile``). ``--runtime`` defaults to ``onnx``,
what ``ctrflow predict`` runs on an export or registry version (its ``auto``); a checkpoint without
``model.onnx`` is exported first. ``--runtime torch`` measures the PyTorch runtime.
On a shared 2-core box other jobs shift the numbers; the load average is printed before and after.
No assertion is made on the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
import components.serve.encode as E
import components.serve.predict as P
from components.config import Params

phases = {{}}

def timed(owner, name, key):
    fn = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            phases[key] = phases.get(key, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)

timed(E, "stage", "stage")
timed(E.RawEncoder, "encode", "encode")
timed(P.Scorer, "probabilities", "score")
timed(P, "_csv_bytes", "format")
params = Params.model_validate({params!r})
t = time.perf_counter()
rows = P.predict_file({model!r}, {raw!r}, {out!r}, processed_dir={processed!r}, params=params,
                      batch_rows={batch_rows}, runtime={runtime!r})
seconds = time.perf_counter() - t
print(json.dumps({{"rows": rows, "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "phases": phases}}))
"""


def _nest(pairs: list[str]) -> dict:
    import yaml

    out: dict = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _prepare(args, work: Path) -> tuple[Path, Path, Path | None]:
    """(raw log, model dir, processed dir or None for a self-contained export)."""
    if args.checkpoint:
        raw = Path(args.raw) if args.raw else None
        if raw is None:
            sys.exit("--checkpoint needs --raw (a raw log in the checkpoint's format)")
        return raw, Path(args.checkpoint), Path(args.processed) if args.processed else None
    import torch

    from components.config import PreprocessParams
    from components.data.formats import read_source
    from components.data.generate import generate
    from components.data.preprocess import FEATURE_MAP_FILE, load_feature_map, preprocess
    from components.models import build_model
    from components.train.checkpoint import feature_map_hash, save_model

    raw = Path(args.raw) if args.raw else work / f"synthetic-{args.rows}.txt"
    if not raw.exists():
        print(f"generating {args.rows:,} synthetic Criteo rows → {raw}", flush=True)
        generate("criteo", args.rows, 2024, raw)
    processed = work / f"processed-{raw.stem}"
    if not (processed / FEATURE_MAP_FILE).is_file():
        print(f"preprocessing → {processed}", flush=True)
        preprocess(read_source("criteo", raw), PreprocessParams(), processed)
    fmap = load_feature_map(processed)
    hparams = {"embedding_dim": 16, **(
        {"interaction_type": "outer", "depth": 3} if args.model in ("dagfm", "kd_dagfm_plus") else {}),
        **json.loads(args.hparams)}  # fmt: skip
    torch.manual_seed(0)
    model = build_model(args.model, fmap, **hparams).eval()
    model_dir = work / f"model-{args.model}"
    save_model(model, model_dir, model_name=args.model, hparams=hparams,
               feature_map_hash=feature_map_hash(fmap), epoch=1, metrics={})
    print(f"model: {args.model} {json.dumps(hparams)} (random init)", flush=True)
    return raw, model_dir, processed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300_000, help="synthetic rows (ignored with --raw)")
    ap.add_argument("--raw", help="raw log to score [default: a generated synthetic Criteo log]")
    ap.add_argument("--model", default="dagfm", help="registry name of the random-init model")
    ap.add_argument("--hparams", default="{}", help="JSON hyperparameters of --model")
    ap.add_argument("--checkpoint", help="score this checkpoint/export instead (needs --raw)")
    ap.add_argument("--processed", help="processed dir of --checkpoint (not needed for an export)")
    ap.add_argument("--batch-rows", type=int, nargs="+", default=[65_536, 8_192])
    ap.add_argument("--repeats", type=int, default=3, help="runs per --batch-rows value (median reported)")
    ap.add_argument("--runtime", choices=["onnx", "torch", "auto"], default="onnx",
                    help="onnx (default: what `ctrflow predict --model production` runs, an export's "
                         "model.onnx; exported first when the model has none), torch, or auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="params override, e.g. inference.threads=1")
    ap.add_argument("--work", help="scratch directory [default: a temporary one]")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ctrflow-predict-bench-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        raw, model_dir, processed = _prepare(args, work)
        params = _nest(args.set)
        if args.runtime == "onnx" and not (model_dir / "model.onnx").is_file():
            from components.config import Params
            from components.serve.export import export_model

            model_dir = export_model(model_dir, work / "export", processed_dir=processed,
                                     params=Params.model_validate(params))
            processed = None
        print(f"load average before: {os.getloadavg()}", flush=True)
        results = []
        runs = [b for r in range(args.repeats) for b in (args.batch_rows if r % 2 == 0 else args.batch_rows[::-1])]
        for batch_rows in runs:
            out = work / f"scores-{batch_rows}.txt"
            code = _CHILD.format(repo=str(REPO), params=params, model=str(model_dir), raw=str(raw),
                                 out=str(out), processed=str(processed) if processed else None,
                                 batch_rows=batch_rows, runtime=args.runtime)
            t = time.perf_counter()
            env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}  # as `ctrflow predict` sets it (cli.py)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                return proc.returncode
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res.update(batch_rows=batch_rows, process_seconds=time.perf_counter() - t,
                       rows_per_s=res["rows"] / res["seconds"])
            results.append(res)
            ph = " ".join(f"{k} {v:.2f}s" for k, v in res["phases"].items())
            print(f"--batch-rows {batch_rows:>7}: {res['rows']:,} rows in {res['seconds']:.2f} s = "
                  f"{res['rows_per_s']:,.0f} rows/s, peak RSS {res['peak_rss_mib']:.0f} MiB  ({ph})",
                  flush=True)
        print(f"load average after: {os.getloadavg()}")
        summary = []
        for batch_rows in args.batch_rows:
            mine = [r for r in results if r["batch_rows"] == batch_rows]
            med = statistics.median(r["rows_per_s"] for r in mine)
            rss = max(r["peak_rss_mib"] for r in mine)
            summary.append({"batch_rows": batch_rows, "median_rows_per_s": med, "max_peak_rss_mib": rss,
                            "runs": len(mine)})
            print(f"SUMMARY --batch-rows {batch_rows:>7}: median {med:,.0f} rows/s over {len(mine)} runs, "
                  f"peak RSS {rss:.0f} MiB")
        if args.json:
            Path(args.json).write_text(json.dumps({"settings": params, "runtime": args.runtime, "raw": str(raw),
                                                   "summary": summary, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
