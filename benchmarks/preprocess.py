"""Benchmark: raw Criteo TSV → encoded Parquet, ctrflow vs a FuxiCTR-style baseline.

Usage::

    .venv/bin/python benchmarks/preprocess.py                       # 10M rows, baseline on 1M
    .venv/bin/python benchmarks/preprocess.py --rows 2000000 --baseline-rows 500000
    .venv/bin/python benchmarks/preprocess.py --mode scaling --scaling-rows 2000000,10000000

Inputs are synthetic Criteo-format logs (label, I1–I13, C1–C26 as 8-hex strings, empty = missing)
from ``components.data.generate.generate`` when that module is importable, otherwise from the
stand-in :func:`standin_generate_criteo` below. They are cached in ``--work-dir`` by size and seed.

Every measurement runs in its own subprocess (``python benchmarks/preprocess.py --worker ...``),
which reports its wall time, the CPU time of the same timed section (imports excluded on both
sides; the whole-process figure is kept as ``process_cpu_seconds``) and its own peak RSS
(``VmHWM``, see :func:`peak_rss_mb`, imports included), so one run's memory can never leak into
another's figure. The 1-minute load average is sampled before and after each run: wall-clock
figures on a shared 2-core machine are only comparable at similar load, CPU-seconds per row are
not affected by it.

- **ctrflow**: ``read_source("criteo", path)`` (falls back to a typed ``pl.scan_csv`` when the
  reader is not importable) → ``preprocess`` with ``preset=bars_x4_001`` (random 8:1:1,
  floor(ln²) buckets, min count 10 on all 39 fields). Timed from reading to the renamed outputs,
  input hashing included; the reader's share (its structural and integer checks, which the
  baseline does not do) and the peak RSS of each part are reported too (the peak is reset
  between the two with ``/proc/self/clear_refs``).
- **baseline** (what FuxiCTR 2.3 does, ``build_dataset.py`` + ``tokenizer.py``): Polars scan with
  fill-null + bucketing by ``pl.col(c).map_elements(_convert_to_bucket)`` (a per-value Python
  function, as the ``convert_to_bucket`` of FuxiCTR's Criteo x4 ``CustomizedFeatureProcessor``;
  until 2026-11-23 this baseline used a vectorised Polars expression instead, which made it faster
  than FuxiCTR), ``collect().to_pandas()`` of the whole file, ``np.random.shuffle`` split
  with ``.loc``, vocab per column from ``value_counts`` sorted by count (min count 10), and per-value
  ``series.map(lambda x: vocab.get(x, oov))`` for each split, then ``to_parquet``. It may run on
  fewer rows (``--baseline-rows``, default 1M): rows/s is what is compared.

Modes: ``compare`` (ctrflow at ``--rows`` vs baseline at ``--baseline-rows``), ``scaling``
(ctrflow at each of ``--scaling-rows``; prints the peak-RSS ratio, target ≤ 1.5×), ``all`` (both).
The run ends with a summary table: rows/s ratio (target ≥ 10×) and peak-RSS ratio (target ≤ 1.5×),
each with the measured value and whether it is met.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

INT_COLUMNS = [f"I{i}" for i in range(1, 14)]
CAT_COLUMNS = [f"C{i}" for i in range(1, 27)]
# Criteo Kaggle cardinalities per C field, capped so the stand-in stays quick to generate.
_CRITEO_CARD = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
                27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
_STANDIN_CARD_CAP = 1_000_000
_INT_NULL_RATE = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22]
_CAT_NULL_RATE = [0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.03, 0.0, 0.03, 0.0, 0.0, 0.0,
                  0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44]


# ------------------------------------------------------------------------------------------------
# input generation


def standin_generate_criteo(rows: int, seed: int, out: Path, chunk_rows: int = 500_000) -> Path:
    """STAND-IN for ``components.data.generate.generate("criteo", ...)``: Criteo-format TSV.

    Used only while the real generator is not importable. Labels are random (25 % positives):
    this input is for throughput, not for model quality. Vectorised numpy + Polars ``write_csv``.
    """
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    cards = [min(c, _STANDIN_CARD_CAP) for c in _CRITEO_CARD]
    hex_tables = []
    for card in cards:
        codes = rng.integers(0, 1 << 32, card, dtype=np.uint64)
        hex_tables.append(pl.Series([f"{v:08x}" for v in codes.tolist()]))
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            cols: dict[str, pl.Series] = {"label": pl.Series((rng.random(n) < 0.25).astype(np.int8))}
            for i, name in enumerate(INT_COLUMNS):
                v = np.floor(rng.pareto(1.2, n) * 3).astype(np.int64) - (1 if i == 1 else 0)
                s = pl.Series(name, v)
                cols[name] = s.scatter(np.flatnonzero(rng.random(n) < _INT_NULL_RATE[i]), None)
            for i, name in enumerate(CAT_COLUMNS):
                idx = (rng.zipf(1.15, n) - 1) % cards[i]
                s = hex_tables[i].gather(idx).rename(name)
                cols[name] = s.scatter(np.flatnonzero(rng.random(n) < _CAT_NULL_RATE[i]), None)
            pl.DataFrame(cols).write_csv(fh, separator="\t", include_header=False, null_value="", quote_style="never")
    tmp.replace(out)
    return out


def generate_input(rows: int, seed: int, work_dir: Path) -> tuple[Path, str]:
    """The cached Criteo-format input of ``rows`` rows and which generator made it."""
    try:
        from components.data.generate import generate
    except ImportError:
        generate = None
    which = "components.data.generate" if generate is not None else "standin_generate_criteo"
    out = work_dir / f"criteo_{rows}_{seed}_{which.split('.')[-1]}.txt"
    if not out.exists():
        t0 = time.perf_counter()
        if generate is not None:
            generate("criteo", rows, seed, out)
        else:
            standin_generate_criteo(rows, seed, out)
        print(f"  generated {rows:,} rows with {which} in {time.perf_counter() - t0:.1f} s -> {out}", flush=True)
    return out, which


def head_lines(src: Path, rows: int, dst: Path) -> Path:
    """Copy the first ``rows`` lines of ``src`` to ``dst`` (chunked; no per-line Python)."""
    if dst.exists():
        return dst
    remaining = rows
    with open(src, "rb") as fin, open(dst.with_suffix(".tmp"), "wb") as fout:
        while remaining > 0 and (chunk := fin.read(1 << 24)):
            n = chunk.count(b"\n")
            if n >= remaining:
                cut = -1
                for _ in range(remaining):
                    cut = chunk.index(b"\n", cut + 1)
                fout.write(chunk[: cut + 1])
                remaining = 0
            else:
                fout.write(chunk)
                remaining -= n
    dst.with_suffix(".tmp").replace(dst)
    return dst


# ------------------------------------------------------------------------------------------------
# workers (each runs in its own process)


def _criteo_scan(path: Path):
    import polars as pl

    schema = {"label": pl.Int8, **dict.fromkeys(INT_COLUMNS, pl.Int64), **dict.fromkeys(CAT_COLUMNS, pl.String)}
    return pl.scan_csv(path, separator="\t", has_header=False, new_columns=list(schema), schema=schema,
                       quote_char=None)


def _cpu() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ctrflow(path: Path, out_dir: Path, batch_rows: int) -> dict:
    """read_source (or the fallback scan) + preprocess(preset=bars_x4_001).

    ``read_seconds`` is the reader's share (its structural scan and integer checks, which the
    baseline does not do); ``seconds`` includes it.
    """
    import polars as pl

    from components.config import PreprocessParams
    from components.data.formats.base import LINE_COLUMN, FieldSpec, SourceTable
    from components.data.preprocess import preprocess

    try:
        from components.data.formats import read_source
    except ImportError:
        read_source = None

    cpu0 = _cpu()
    t0 = time.perf_counter()
    if read_source is not None:
        table = read_source("criteo", path, work_dir=out_dir.parent / "reader_work")
        reader = "components.data.formats.read_source"
    else:
        lazy = _criteo_scan(path).with_row_index(LINE_COLUMN, offset=1).with_columns(pl.col(LINE_COLUMN).cast(pl.UInt64))
        fields = tuple(FieldSpec(c, "numeric") for c in INT_COLUMNS) + tuple(FieldSpec(c, "categorical") for c in CAT_COLUMNS)
        table = SourceTable(format="criteo", files=(path,), lazy=lazy, fields=fields)
        reader = "fallback pl.scan_csv"
    t_read = time.perf_counter() - t0
    read_cpu = _cpu() - cpu0
    reader_peak = peak_rss_mb()
    reset = reset_peak_rss()
    fmap = preprocess(table, PreprocessParams(preset="bars_x4_001", batch_rows=batch_rows), out_dir)
    total = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    rows = sum(s["rows"] for s in fmap.splits.values())
    return {"rows": rows, "seconds": total, "cpu_seconds": cpu, "read_seconds": t_read,
            "read_cpu_seconds": read_cpu, "reader": reader,
            "total_vocab": sum(fmap.vocab_sizes), "reader_peak_rss_mb": reader_peak,
            "preprocess_peak_rss_mb": peak_rss_mb() if reset else None}


def run_baseline(path: Path, out_dir: Path, min_count: int = 10, seed: int = 2022) -> dict:
    """FuxiCTR-style: whole split in pandas, value_counts vocab, per-value Python map."""
    import numpy as np
    import pandas as pd
    import polars as pl

    cpu0 = _cpu()
    t0 = time.perf_counter()
    lf = _criteo_scan(path)

    def _convert_to_bucket(value):  # FuxiCTR's Criteo x4 CustomizedFeatureProcessor, per value
        if value > 2:
            value = int(np.floor(np.log(value) ** 2))
        else:
            value = int(value)
        return value

    bucket = [
        pl.col(c).fill_null(0).map_elements(_convert_to_bucket, return_dtype=pl.Int64)
        .cast(pl.String)
        .alias(c)
        for c in INT_COLUMNS
    ]
    lf = lf.with_columns([*bucket, *[pl.col(c).fill_null("") for c in CAT_COLUMNS]])
    df = lf.collect().to_pandas()
    ids = np.arange(len(df))
    np.random.seed(seed)
    np.random.shuffle(ids)
    n_test = n_valid = int(len(df) * 0.1)
    n_train = len(df) - n_test - n_valid
    parts = {
        "train": df.loc[ids[:n_train], :].reset_index(),
        "valid": df.loc[ids[n_train:n_train + n_valid], :].reset_index(),
        "test": df.loc[ids[n_train + n_valid:], :].reset_index(),
    }
    del df
    vocabs = {}
    for c in INT_COLUMNS + CAT_COLUMNS:
        counts = parts["train"][c].value_counts()
        words = [w for w, n in counts.items() if n >= min_count and w != ""]
        vocab = {w: i for i, w in enumerate(words, 1)}
        vocab["__PAD__"] = 0
        vocab["__OOV__"] = len(words) + 1
        vocabs[c] = vocab
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        enc = {}
        for c, vocab in vocabs.items():
            oov = vocab["__OOV__"]
            enc[c] = part[c].map(lambda x, v=vocab, o=oov: v.get(x, o)).values
        enc["label"] = part["label"].values
        pd.DataFrame(enc).to_parquet(out_dir / f"{name}.parquet", index=False, engine="pyarrow")
    total = time.perf_counter() - t0
    return {"rows": int(sum(len(p) for p in parts.values())), "seconds": total, "cpu_seconds": _cpu() - cpu0,
            "total_vocab": int(sum(len(v) for v in vocabs.values()))}


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` of /proc/self/status.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux that value survives ``exec`` and so starts
    at the parent's RSS at fork time (measured here: every worker reported the 1.9 GB of the
    parent that had just generated the input). ``VmHWM`` belongs to the new address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's current RSS in MiB (``VmRSS``); 0.0 where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker_main(argv: list[str]) -> None:
    """``--worker IMPL INPUT OUT_DIR BATCH_ROWS``: run one measurement and print its JSON."""
    impl, path, out_dir, batch_rows = argv[0], Path(argv[1]), Path(argv[2]), int(argv[3])
    import numpy  # noqa: F401  - the libraries both sides use, so the RSS floor below is comparable
    import polars  # noqa: F401

    if impl == "ctrflow":
        import components.data.preprocess  # noqa: F401
    else:
        import pandas  # noqa: F401
    rss_after_imports = current_rss_mb()
    result = run_ctrflow(path, out_dir, batch_rows) if impl == "ctrflow" else run_baseline(path, out_dir)
    result["rss_after_imports_mb"] = rss_after_imports
    result["peak_rss_mb"] = max(peak_rss_mb(), result.get("reader_peak_rss_mb") or 0.0)
    result["process_cpu_seconds"] = _cpu()  # whole process, imports included
    result["impl"] = impl
    print("RESULT " + json.dumps(result), flush=True)


def measure(impl: str, path: Path, work_dir: Path, batch_rows: int) -> dict:
    """Run one worker subprocess and return its result (plus rows/s)."""
    out_dir = work_dir / f"out_{impl}_{path.stem}"
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, str(path), str(out_dir), str(batch_rows)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    res["rows_per_s"] = res["rows"] / res["seconds"]
    res["load_before"], res["load_after"] = load_before, load_after
    shutil.rmtree(out_dir, ignore_errors=True)
    return res


def _row(label: str, r: dict) -> str:
    cpu_per_m = r["cpu_seconds"] / r["rows"] * 1e6
    load = f"{r['load_before']:.1f} → {r['load_after']:.1f}"
    return (f"| {label:<36} | {r['rows']:>11,} | {r['seconds']:>8.1f} | {r['rows_per_s']:>10,.0f} "
            f"| {cpu_per_m:>10.2f} | {r['peak_rss_mb']:>11,.0f} | {r['rss_after_imports_mb']:>10,.0f} | {load:>12} |")


_HEADER = (
    "| run                                  |        rows |   wall s |     rows/s | CPU s / 1M | peak RSS MB | import MB |  load (1 min) |\n"
    "|--------------------------------------|-------------|----------|------------|------------|-------------|-----------|---------------|"
)


def main(argv: list[str] | None = None) -> int:
    """Parse the CLI, generate inputs, run the measurements and print the tables."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="ctrflow input rows (compare mode)")
    ap.add_argument("--baseline-rows", type=int, default=1_000_000,
                    help="baseline input rows (the first N rows of the same log; rows/s is compared)")
    ap.add_argument("--mode", choices=["compare", "scaling", "all"], default="all")
    ap.add_argument("--scaling-rows", default="2000000,10000000", help="comma-separated ctrflow sizes for the RSS-scaling mode")
    ap.add_argument("--work-dir", type=Path, default=None, help="where inputs (cached) and outputs go (default: a temp dir)")
    ap.add_argument("--baseline-scaling", action="store_true",
                    help="scaling mode: also run the baseline at --baseline-rows and twice that")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--batch-rows", type=int, default=500_000, help="preprocess.batch_rows for ctrflow")
    args = ap.parse_args(argv)

    work_dir = args.work_dir or Path(tempfile.gettempdir()) / "ctrflow-bench-preprocess"
    work_dir.mkdir(parents=True, exist_ok=True)
    sizes = sorted({args.rows} | ({int(x) for x in args.scaling_rows.split(",")} if args.mode != "compare" else set()))
    biggest = max(sizes)
    print(f"inputs in {work_dir}", flush=True)
    big, which = generate_input(biggest, args.seed, work_dir)
    inputs = {biggest: big}
    for n in sizes + [args.baseline_rows, 2 * args.baseline_rows]:
        if n not in inputs:
            inputs[n] = head_lines(big, n, work_dir / f"{big.stem}_head{n}.txt")
    print(f"generator: {which}; cpu: {os.cpu_count()} cores", flush=True)

    results: dict[str, dict] = {}
    if args.mode in ("compare", "all"):
        results["ctrflow"] = measure("ctrflow", inputs[args.rows], work_dir, args.batch_rows)
        print(f"  ctrflow {args.rows:,}: {results['ctrflow']}", flush=True)
        results["baseline"] = measure("baseline", inputs[args.baseline_rows], work_dir, args.batch_rows)
        print(f"  baseline {args.baseline_rows:,}: {results['baseline']}", flush=True)
    scaling = []
    if args.mode in ("scaling", "all"):
        for n in sorted(int(x) for x in args.scaling_rows.split(",")):
            r = results["ctrflow"] if (n == args.rows and "ctrflow" in results) else measure("ctrflow", inputs[n], work_dir, args.batch_rows)
            print(f"  ctrflow {n:,}: {r}", flush=True)
            scaling.append((n, r))
    base_scaling = []
    if args.mode in ("scaling", "all") and args.baseline_scaling:
        for n in (args.baseline_rows, 2 * args.baseline_rows):
            r = results["baseline"] if (n == args.baseline_rows and "baseline" in results) else measure("baseline", inputs[n], work_dir, args.batch_rows)
            print(f"  baseline {n:,}: {r}", flush=True)
            base_scaling.append((n, r))

    print("\nRaw Criteo TSV -> encoded Parquet (train/valid/test + vocab), one subprocess per run")
    print(f"input generator: {which}; reader: {results.get('ctrflow', scaling[0][1] if scaling else {}).get('reader')}")
    summary: list[tuple[str, str, str, str]] = []  # metric, measured, target, met
    print(_HEADER)
    if "ctrflow" in results:
        c, b = results["ctrflow"], results["baseline"]
        print(_row("ctrflow read_source + preprocess", c))
        print(_row("baseline FuxiCTR-style (pandas map)", b))
        ratio = c["rows_per_s"] / b["rows_per_s"]
        pre_only = c["rows"] / (c["seconds"] - c["read_seconds"])
        cpu_ratio = (b["cpu_seconds"] / b["rows"]) / (c["cpu_seconds"] / c["rows"])
        pre_cpu_ratio = (b["cpu_seconds"] / b["rows"]) / ((c["cpu_seconds"] - c["read_cpu_seconds"]) / c["rows"])
        print(f"\nwall-clock throughput ratio ctrflow / baseline: {ratio:.1f}x (target >= 10x)"
              f"{'' if args.baseline_rows == args.rows else f'; baseline ran on {args.baseline_rows:,} rows'}")
        print(f"  preprocess() alone (without read_source's checks, {c['read_seconds']:.1f} s): "
              f"{pre_only:,.0f} rows/s = {pre_only / b['rows_per_s']:.1f}x baseline")
        print(f"  CPU-seconds per row, baseline / ctrflow: {cpu_ratio:.1f}x with read_source, "
              f"{pre_cpu_ratio:.1f}x preprocess() alone (load-independent; ctrflow uses both cores "
              "when they are free, the baseline one)")
        print(f"  machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        summary.append((f"rows/s ctrflow {c['rows']:,} rows / baseline {b['rows']:,} rows (wall clock)",
                        f"{c['rows_per_s']:,.0f} / {b['rows_per_s']:,.0f} = {ratio:.1f}x", ">= 10x",
                        "yes" if ratio >= 10 else "NO"))
        summary.append(("CPU-s per row, baseline / ctrflow (load-independent)", f"{cpu_ratio:.1f}x", "-", "-"))
    if scaling:
        print("\nRSS scaling (ctrflow):")
        print(_HEADER)
        for n, r in scaling:
            print(_row(f"ctrflow {n:,} rows", r))
        for n, r in base_scaling:
            print(_row(f"baseline {n:,} rows", r))
        pre = [(n, r.get("preprocess_peak_rss_mb"), r.get("reader_peak_rss_mb")) for n, r in scaling]
        if all(p is not None for _, p, _ in pre):
            print("\nctrflow peak RSS by stage (MB): "
                  + "; ".join(f"{n:,} rows: read_source {rd:,.0f}, preprocess {p:,.0f}" for n, p, rd in pre))
            if len(pre) >= 2:
                print(f"preprocess() peak RSS ratio {pre[-1][0]:,} / {pre[0][0]:,} rows: {pre[-1][1] / pre[0][1]:.2f}x")
        for name, runs in (("ctrflow", scaling), ("baseline", base_scaling)):
            if len(runs) >= 2:
                lo, hi = runs[0], runs[-1]
                rss_ratio = hi[1]["peak_rss_mb"] / lo[1]["peak_rss_mb"]
                print(f"{name} peak RSS ratio {hi[0]:,} / {lo[0]:,} rows: "
                      f"{rss_ratio:.2f}x for {hi[0] / lo[0]:.1f}x the rows"
                      + (" (target <= 1.5x)" if name == "ctrflow" else ""))
                if name == "ctrflow":
                    summary.append((f"ctrflow peak RSS {hi[0]:,} rows / {lo[0]:,} rows",
                                    f"{hi[1]['peak_rss_mb']:,.0f} / {lo[1]['peak_rss_mb']:,.0f} MB = {rss_ratio:.2f}x",
                                    "<= 1.5x", "yes" if rss_ratio <= 1.5 else "NO"))
    if summary:
        print("\nSummary (issue 2 §5 targets):")
        print("| metric | measured | target | met |\n|---|---|---|---|")
        for row in summary:
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
