"""Benchmark: what one `ctrflow predict` call costs on a small file, ONNX Runtime vs PyTorch runtime.

Usage (after `make run`, which leaves a registry version with ``model.onnx``)::

    .venv/bin/python benchmarks/predict_startup.py                       # production, 2,000 rows
    .venv/bin/python benchmarks/predict_startup.py --model exported/ --raw new_log.txt --rows 20000

Each run is the real CLI in a fresh process (``ctrflow predict --model M --runtime R --out F RAW``),
the two runtimes alternating, ``--repeats`` times each. Measured per process: wall seconds from
start to exit and peak RSS (``ru_maxrss`` of that child, from ``os.wait4``). A small file is where
the fixed cost of a call shows: the ONNX path imports no torch (components/serve/predict.py), the
PyTorch path does. Printed: the median wall time and the largest peak RSS per runtime, and their
ratios onnx / torch. Both runtimes' outputs are compared (they agree within 1e-5; ``--runtime
torch`` scores the checkpoint beside the graph). No assertion on the figures; on a shared box the
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CTRFLOW = Path(sys.executable).with_name("ctrflow")


def run_once(model: Path, raw: Path, out: Path, runtime: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `ctrflow predict` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(CTRFLOW), "predict", "--model", str(model), "--runtime", runtime,
                             "--out", str(out), str(raw)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ctrflow predict --runtime {runtime} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "registry" / "production",
                    help="an export or registry version (holds model.onnx)")
    ap.add_argument("--raw", type=Path, default=REPO / "data" / "raw" / "synthetic.txt")
    ap.add_argument("--rows", type=int, default=2000, help="first N lines of --raw are scored")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.model.is_file():  # the registry's `production` pointer names its version
        args.model = args.model.parent / args.model.read_text().strip()
    if not (args.model / "model.onnx").is_file():
        raise SystemExit(f"{args.model / 'model.onnx'}: no exported graph here; run `make run` or `ctrflow export`")
    with tempfile.TemporaryDirectory(prefix="ctrflow-startup-") as tmp:
        raw = Path(tmp) / "head.txt"
        with open(args.raw) as src, open(raw, "w") as dst:
            for i, line in enumerate(src):
                if i >= args.rows:
                    break
                dst.write(line)
        print(f"load average before: {os.getloadavg()[0]:.2f}; {args.model}, {args.rows:,} rows", flush=True)
        seen: dict[str, list[tuple[float, float]]] = {"onnx": [], "torch": []}
        for _ in range(args.repeats):
            for runtime in seen:
                wall, rss = run_once(args.model, raw, Path(tmp) / f"{runtime}.txt", runtime)
                seen[runtime].append((wall, rss))
                print(f"  {runtime:5s}  {wall:6.2f} s  {rss:7.1f} MiB", flush=True)
        probs = {r: np.loadtxt(Path(tmp) / f"{r}.txt", ndmin=1) for r in seen}
        diff = float(np.max(np.abs(probs["onnx"] - probs["torch"])))
    wall = {r: statistics.median(w for w, _ in v) for r, v in seen.items()}
    rss = {r: max(m for _, m in v) for r, v in seen.items()}
    for r in seen:
        print(f"{r:5s}: median {wall[r]:.2f} s, peak RSS {rss[r]:.0f} MiB")
    print(f"onnx / torch: wall {wall['onnx'] / wall['torch']:.2f}x, peak RSS {rss['onnx'] / rss['torch']:.2f}x; "
          f"max |p_onnx - p_torch| {diff:.2e}; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
