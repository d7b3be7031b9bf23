"""Benchmark: a Criteo log of Kaggle size (45.8M rows) through the whole pipeline by ``dvc repro``.

Usage::

    .venv/bin/python benchmarks/scale.py                               # 45,840,617 rows in 7 day partitions
    .venv/bin/python benchmarks/scale.py --rows 2000000 --work-dir /tmp/scale-smoke   # a quick rehearsal
    .venv/bin/python benchmarks/scale.py --report-only                 # re-render scale.md from the JSON

What it does, in ``--work-dir`` (default ``/tmp/ctrflow-scale``; needs ≈ 2.2× the raw log's size of
free disk: the log, the processed Parquet, and DVC's cache as hard links):

1. A clone of this repository at ``HEAD`` (``git clone``; the virtualenv is linked, not copied) whose
   ``params.yaml`` is changed for the run — every change is printed and recorded: the ``generate``
   stage writes ``--partitions`` drifting day files of Criteo rows at the Kaggle train set's own
   cardinalities (``generate.cardinality: kaggle``, up to 10.1M values in C3), ``data.input`` reads
   that directory, its day partitions are validated two at a time (``validate.workers: 2``), each by GX on a
   seeded sample of 300k rows (``validate.gx_max_rows`` is per partition: 2.1M rows over the 7 days,
   about the 2M default of one file; the aggregate checks stay exhaustive),
   training and distillation stream Parquet row groups (``in_memory: false``), the
   teacher trains one epoch (its gate LR one epoch too), distillation is capped (the DAGFM student
   only, one distillation and one finetuning epoch over at most 4,194,304 training rows —
   ``distill.max_train_rows``: 64 row groups spread over the whole train split — one trial, no
   baseline twin; the teacher's logits are computed for those training rows only). DVC's cache links
   files instead of copying them (``cache.type hardlink,symlink``).
2. ``dvc repro --single-item <stage>`` for each stage of ``dvc.yaml`` in order, then ``ctrflow predict``
   of the promoted model on the newest raw day file (``--batch-rows`` 65,536), each in a
   measuring child (``--measure``) that reports the stage's wall time, the peak RSS of its largest
   process (``RUSAGE_CHILDREN``), the bytes its processes wrote (``/proc`` I/O accounting of every
   descendant, sampled) and the size of its outputs; rows/s is over the rows the stage reads.
   A stage that DVC finds up to date is not run again (the workspace persists: a rerun of the
   benchmark resumes where it stopped); its earlier measurement is kept.
3. The streaming-vs-in-memory training comparison: the teacher's training loop on the first
   ``--slice-rows`` training rows (the full Kaggle-size tables), with ``in_memory: true``, with
   ``false``, and in memory with dense Adam (``train.sparse_embeddings: off``; the default ``auto``
   trains these tables with sparse gradients + lazy Adam), alternated in one process, best of
   ``--repeats``: samples/s of each.
4. The memory of the default teacher's embedding tables (components/data/embedding_memory.py:
   vocabulary sizes × embedding_dim × 4 bytes, and ×4 while training with Adam).

Results: ``benchmarks/results/scale.json`` and ``scale.md`` (the table, the targets judged, and the
extrapolation to a GPU and to Criteo-1TB from the measured rates; see also docs/scale.md).

Targets (issue 15 §1): validate + preprocess ≤ 3 min with peak RSS ≤ 4 GB; streaming training
≥ 0.8× the in-memory samples/s on a slice that fits; evaluation and prediction stream with bounded
memory. The script prints each target with the measured value; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KAGGLE_ROWS = 45_840_617
RESULTS = REPO / "benchmarks" / "results"
STAGES = ("generate", "validate", "preprocess", "train_teacher", "distill", "evaluate", "profile",
          "report", "promote", "predict")
PREDICT_BATCH_ROWS = 65_536
DISTILL_ROWS = 4_194_304  # distill.max_train_rows: 64 row groups of 65,536 rows spread over the train split


# ---- the workspace -----------------------------------------------------------------------------


def scale_overrides(rows: int, partitions: int, slice_rows: int) -> dict[str, object]:
    """params.yaml keys (dotted) the scale run sets, with their values."""
    per_part = -(-rows // partitions)
    return {
        "generate.cardinality": "kaggle",
        "generate.partitions": partitions,
        "generate.rows": per_part,
        "generate.out": "data/raw/kaggle",
        "data.input": "data/raw/kaggle",
        "validate.workers": 2,
        "validate.gx_max_rows": 300_000,
        "validate.gx_chunk_rows": 300_000,  # the partition's GX sample in one pandas chunk, one GX run
        "train.in_memory": False,
        "train.max_epochs": 1,
        "train.gate.baseline_max_epochs": 1,
        "distill.in_memory": False,
        "distill.students": ["dagfm"],
        "distill.baselines": [],
        "distill.dagfm.distill_max_epochs": 1,
        "distill.dagfm.finetune_max_epochs": 1,
        "distill.max_train_rows": DISTILL_ROWS,
        "tune.n_trials": 1,
    }


def _set(tree: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    node = tree
    for key in head:
        node = node[key]
    if last not in node:
        raise KeyError(f"params.yaml has no key {dotted}")
    node[last] = value


def prepare_workspace(work: Path, overrides: dict[str, object]) -> Path:
    """A clone of this repository at HEAD in ``work/repo`` with ``overrides`` in its params.yaml."""
    repo = work / "repo"
    if not (repo / ".git").exists():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    venv = repo / ".venv"
    if not venv.exists():
        venv.symlink_to(REPO / ".venv")
    subprocess.run(["dvc", "config", "--local", "cache.type", "hardlink,symlink"], cwd=repo,
                   check=True, env=_env(repo))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in overrides.items():
        _set(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{repo / '.venv' / 'bin'}:{env['PATH']}"
    env["PYTHONPATH"] = str(repo)
    env.setdefault("PREFECT_HOME", str(repo / ".prefect"))
    return env


# ---- measuring one command ---------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        kids = [int(c) for c in children]
        out += kids
        todo += kids
    return out


def _write_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run ``cmd``; its wall time, the peak RSS of its largest process, bytes written by its processes.

    Bytes written are summed over every process seen (sampled every 0.5 s: a process living less than
    that is missed, so the figure is a lower bound next to the outputs' size).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    written: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            for pid in [proc.pid, *_descendants(proc.pid)]:
                b = _write_bytes(pid)
                if b:
                    written[pid] = max(written.get(pid, 0), b)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cmd": cmd, "rc": rc, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "written_mb": round(sum(written.values()) / 2**20), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def du_mb(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return round(total / 2**20)


def stage_command(repo: Path, stage: str, partitions: int) -> list[str]:
    """``dvc repro --single-item stage``; ``predict`` (not a DVC stage): ``ctrflow predict`` of the
    production model (the teacher when nothing was promoted) on the newest raw day file, streamed in
    blocks of PREDICT_BATCH_ROWS rows."""
    if stage == "predict":
        day = repo / "data" / "raw" / "kaggle" / f"day_{partitions - 1}"
        model = "production" if (repo / "models" / "registry" / "production").exists() else "models/teacher"
        return ["ctrflow", "predict", "--model", model, "--batch-rows", str(PREDICT_BATCH_ROWS),
                "--out", str(repo / "data" / "scale-predictions.txt"), str(day)]
    return ["dvc", "repro", "--single-item", stage]


def run_stage(repo: Path, stage: str, partitions: int) -> dict:
    """One stage (:func:`stage_command`) in a measuring child process (its own RUSAGE_CHILDREN)."""
    cmd = [sys.executable, __file__, "--measure", "--cwd", str(repo), "--",
           *stage_command(repo, stage, partitions)]
    out = subprocess.run(cmd, env=_env(repo), capture_output=True, text=True)
    sys.stderr.write(out.stderr[-4000:])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"stage {stage}: no measurement\n{out.stdout[-2000:]}")
    return json.loads(lines[-1])


def stage_up_to_date(repo: Path, stage: str) -> bool:
    if stage == "predict":  # predictions of the model that predict would use now (a later promotion reruns it)
        out = repo / "data" / "scale-predictions.txt"
        production = repo / "models" / "registry" / "production"
        model = production.resolve() if production.exists() else repo / "models" / "teacher"
        return out.exists() and (not model.exists() or out.stat().st_mtime >= model.stat().st_mtime)
    out = subprocess.run(["dvc", "status", stage], cwd=repo, env=_env(repo), capture_output=True,
                         text=True)
    return out.returncode == 0 and "changed" not in out.stdout and "modified" not in out.stdout \
        and "deleted" not in out.stdout


# ---- what each stage read ----------------------------------------------------------------------


def stage_rows(repo: Path, params: dict) -> dict[str, int]:
    """Rows each stage reads (from the outputs of the run)."""
    per_partition = int(params["generate"]["rows"])
    fmap = json.loads((repo / params["preprocess"]["out_dir"] / "feature_map.json").read_text())
    splits = {k: int(v.get("rows", 0)) for k, v in fmap["splits"].items()}
    total = sum(splits.values())
    return {"generate": total, "validate": total, "preprocess": total,
            "train_teacher": splits.get("train", 0), "distill": splits.get("train", 0),
            "evaluate": splits.get(params["evaluate"]["split"], 0), "profile": 0, "report": 0,
            "promote": splits.get("test", 0), "predict": per_partition}


def embedding_memory(repo: Path, params: dict) -> dict:
    """The teacher's embedding tables (components/data/embedding_memory.py): total MB (fp32), MB while
    training with Adam (weights, gradient, two moments) and the largest fields."""
    from components.data.embedding_memory import table_memory
    from components.data.preprocess import load_feature_map

    dim = int(params["train"].get("embedding_dim") or 16)
    m = table_memory(load_feature_map(repo / params["preprocess"]["out_dir"]), dim)
    return {"embedding_dim": dim, "ids": m.total_ids, "table_mb": round(m.total_mb, 1),
            "training_mb": round(m.training_mb, 1),
            "largest_fields": [{"field": f, "ids": n, "mb": round(mb, 1)} for f, n, mb in m.largest(6)]}


# ---- streaming vs in-memory on a slice ---------------------------------------------------------


def streaming_slice(repo: Path, slice_rows: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--slice-worker", "--cwd", str(repo), "--slice-rows", str(slice_rows),
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=_env(repo), capture_output=True, text=True)
    sys.stderr.write(out.stderr[-3000:])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"streaming slice failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def slice_worker(repo: Path, slice_rows: int, repeats: int) -> dict:
    """Samples/s of one teacher epoch on ``slice_rows`` training rows, streamed vs in memory."""
    import pyarrow.parquet as pq

    from components.config import load_params
    from components.train.teacher import train_teacher

    os.chdir(repo)
    params = load_params(repo / "params.yaml")
    src = repo / params.preprocess.out_dir
    sliced = repo / "data" / "scale-slice"
    if sliced.exists():
        shutil.rmtree(sliced)
    shutil.copytree(src, sliced, ignore=shutil.ignore_patterns("train.parquet", "valid.parquet", "test.parquet"))
    for split, n in (("train", slice_rows), ("valid", slice_rows // 8), ("test", slice_rows // 8)):
        pf = pq.ParquetFile(src / f"{split}.parquet")
        with pq.ParquetWriter(sliced / f"{split}.parquet", pf.schema_arrow) as w:
            left = n
            for rg in range(pf.num_row_groups):
                if left <= 0:
                    break
                t = pf.read_row_group(rg)
                t = t.slice(0, min(left, t.num_rows))
                w.write_table(t, row_group_size=pf.metadata.row_group(0).num_rows)
                left -= t.num_rows
    fm = json.loads((sliced / "feature_map.json").read_text())
    for split in ("train", "valid", "test"):
        fm["splits"][split]["rows"] = pq.ParquetFile(sliced / f"{split}.parquet").metadata.num_rows
    (sliced / "feature_map.json").write_text(json.dumps(fm, indent=2))
    modes = {"in_memory": {"train.in_memory": True}, "streaming": {"train.in_memory": False},
             "in_memory_dense_adam": {"train.in_memory": True, "train.sparse_embeddings": "off"}}
    speeds: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeats):
        for mode, extra in modes.items():
            p = load_params(repo / "params.yaml", {
                "preprocess.out_dir": str(sliced), "train.max_epochs": 1,
                "train.out_dir": str(repo / "models" / f"scale-slice-{mode}"),
                "train.metrics": str(repo / "metrics" / f"scale-slice-{mode}.json"),
                "train.curve": str(repo / "metrics" / f"scale-slice-{mode}.csv"), **extra})
            train_teacher(p.train, sliced, resume=False, with_gate=False, log=lambda *a, **k: None)
            m = json.loads(Path(p.train.metrics).read_text())
            speeds[mode].append(float(m["train_samples_per_s"]))
    best = {k: max(v) for k, v in speeds.items()}
    return {"slice_rows": slice_rows, "repeats": repeats, "samples_per_s": speeds, "best": best,
            "ratio": round(best["streaming"] / best["in_memory"], 3),
            "sparse_speedup": round(best["in_memory"] / best["in_memory_dense_adam"], 2)}


# ---- the report --------------------------------------------------------------------------------


def render(result: dict) -> str:
    rows = result["rows"]
    lines = ["# Kaggle-size Criteo through the pipeline on 2 cores (benchmarks/scale.py)", "",
             f"Measured {result['when']} on {result['machine']}. Input: {rows:,} synthetic Criteo rows at the "
             f"Kaggle train set's cardinalities, {result['partitions']} day partitions "
             f"({result.get('raw_gb', '?')} GB of text), through `dvc repro --single-item <stage>` stage by stage "
             "in a clone with these params.yaml changes:", ""]
    lines += [f"- `{k}: {json.dumps(v)}`" for k, v in result["overrides"].items()]
    lines += ["", "| stage | wall s | rows read | rows/s | peak RSS MB | MB written (processes) | outputs MB |",
              "|---|---|---|---|---|---|---|"]
    for name in STAGES:
        s = result["stages"].get(name)
        if not s:
            continue
        rate = f"{s['rows'] / s['wall_s']:,.0f}" if s.get("rows") and s["wall_s"] else "–"
        lines.append(f"| {name} | {s['wall_s']:,.1f} | {s.get('rows', 0):,} | {rate} | {s['peak_rss_mb']:,} | "
                     f"{s['written_mb']:,} | {s.get('outputs_mb', 0):,} |")
    lines += [""]
    targets = result.get("targets", [])
    if targets:
        lines += ["| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in targets]
        lines += [""]
    emb = result.get("embedding")
    if emb:
        lines += [f"Default teacher's embedding tables (dim {emb['embedding_dim']}): {emb['ids']:,} ids, "
                  f"{emb['table_mb']:,} MB fp32, {emb['training_mb']:,} MB while training with Adam (weights, gradient, "
                  "two moments). Largest: "
                  + ", ".join(f"{f['field']} {f['ids']:,} ids ({f['mb']} MB)" for f in emb["largest_fields"]) + ".", ""]
    sl = result.get("slice")
    if sl:
        lines += [f"Streaming vs in-memory training on the first {sl['slice_rows']:,} training rows (best of "
                  f"{sl['repeats']}, alternated): {sl['best']['streaming']:,.0f} vs {sl['best']['in_memory']:,.0f} "
                  f"samples/s = {sl['ratio']:.2f}× (sparse embedding gradients + lazy Adam, on by "
                  "`train.sparse_embeddings: auto` at this table size)."]
        if "in_memory_dense_adam" in sl["best"]:
            lines += [f"The same in-memory epoch with dense Adam (`train.sparse_embeddings: off`): "
                      f"{sl['best']['in_memory_dense_adam']:,.0f} samples/s; sparse gradients + lazy Adam are "
                      f"{sl['sparse_speedup']:.2f}× faster at these tables."]
        lines += [""]
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def judge(result: dict) -> list[dict]:
    st = result["stages"]
    out = []
    if "validate" in st and "preprocess" in st:
        wall = st["validate"]["wall_s"] + st["preprocess"]["wall_s"]
        rss = max(st["validate"]["peak_rss_mb"], st["preprocess"]["peak_rss_mb"])
        out.append({"target": "validate + preprocess ≤ 180 s", "measured": f"{wall:,.0f} s", "met": wall <= 180})
        out.append({"target": "validate / preprocess peak RSS ≤ 4,096 MB", "measured": f"{rss:,} MB",
                    "met": rss <= 4096})
    if result.get("slice"):
        r = result["slice"]["ratio"]
        out.append({"target": "streaming training ≥ 0.8× in-memory samples/s", "measured": f"{r:.2f}×",
                    "met": r >= 0.8})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/ctrflow-scale"))
    ap.add_argument("--rows", type=int, default=KAGGLE_ROWS)
    ap.add_argument("--partitions", type=int, default=7)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in dvc.yaml order")
    ap.add_argument("--slice-rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-slice", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--slice-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cwd", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    if args.measure:
        cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
        print(json.dumps(measure(cmd, args.cwd, dict(os.environ))))
        return
    if args.slice_worker:
        print(json.dumps(slice_worker(args.cwd, args.slice_rows, args.repeats)))
        return
    md = args.out.with_suffix(".md")
    if args.report_only:
        md.write_text(render(json.loads(args.out.read_text())))
        print(md.read_text())
        return

    overrides = scale_overrides(args.rows, args.partitions, args.slice_rows)
    repo = prepare_workspace(args.work_dir, overrides)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    state = args.work_dir / "scale.json"
    result = json.loads(state.read_text()) if state.exists() else {"stages": {}}
    import platform
    result.update({"rows": args.rows, "partitions": args.partitions, "overrides": overrides,
                   "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "machine": f"{os.cpu_count()} cores, {platform.machine()}"})
    outs = {"generate": ["data/raw/kaggle"], "validate": ["data/validation"], "preprocess": ["data/processed"],
            "train_teacher": ["models/teacher"], "distill": ["models/students", "data/teacher_logits"],
            "evaluate": ["metrics/evaluation.json"], "profile": ["metrics/profile.json"], "report": ["reports"],
            "promote": ["models/registry"], "predict": ["data/scale-predictions.txt"]}
    for stage in [s for s in args.stages.split(",") if s]:
        if stage in result["stages"] and stage_up_to_date(repo, stage):
            print(f"[scale] {stage}: up to date, keeping its measurement", flush=True)
            continue
        print(f"[scale] {stage} …", flush=True)
        m = run_stage(repo, stage, args.partitions)
        if m["rc"] != 0:
            result["stages"][stage] = {**m, "failed": True}
            state.write_text(json.dumps(result, indent=2))
            raise SystemExit(f"[scale] stage {stage} failed (rc {m['rc']}); measurements so far in {state}")
        m["outputs_mb"] = du_mb([repo / p for p in outs.get(stage, [])])
        result["stages"][stage] = m
        state.write_text(json.dumps(result, indent=2))
        print(f"[scale] {stage}: {m['wall_s']} s, peak RSS {m['peak_rss_mb']} MB", flush=True)
    if (repo / params["preprocess"]["out_dir"] / "feature_map.json").exists():
        rows = stage_rows(repo, params)
        for name, s in result["stages"].items():
            s["rows"] = rows.get(name, 0)
        result["embedding"] = embedding_memory(repo, params)
        raw = repo / "data/raw/kaggle"
        if raw.exists():
            result["raw_gb"] = round(du_mb([raw]) / 1024, 1)
        if not args.no_slice and not result.get("slice"):
            result["slice"] = streaming_slice(repo, args.slice_rows, args.repeats)
    result["targets"] = judge(result)
    state.write_text(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(render(result))
    print(md.read_text())


if __name__ == "__main__":
    main()
