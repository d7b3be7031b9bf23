"""Benchmark: inference speed of the students against the teacher, in PyTorch and ONNX Runtime.

Usage::

    make bench-inference                                   # installs the [bench] extra, then runs this
    .venv/bin/python benchmarks/inference.py               # embedded + criteo117k, 1 thread and all threads
    .venv/bin/python benchmarks/inference.py --datasets embedded --threads 1 --repeats 1   # quick look

What is measured, per dataset and thread count, in ONE process so every number sees the same load:

- the models of ``params.yaml``, built by the same hyperparameter functions the stages use: the
  teacher (``train.model`` + ``train.model_params``, with its frozen LR when ``train.logistic_base``), the students ``dagfm`` and ``kd_dagfm_plus``
  (``distill.dagfm`` / ``distill.kd_dagfm_plus`` via :func:`components.distill.kd_dagfm.student_hparams`)
  and ``fsdnet`` (``distill.fsdnet``), plus ``dagfm_reference``: the DAGFM student running its
  einsum specification (``reference_interact``), i.e. the propagation before the batched-matmul
  rewrite, to show what the rewrite bought. Weights are seeded, not trained: fp32 CPU inference
  time does not depend on the weight values (no data-dependent branch in any of these forwards).
  Every model is first put in its serving form by :func:`components.serve.optimize.prepare_for_inference`
  with params.yaml's ``inference:`` settings (BatchNorm folded into the Linear before it);
- **PyTorch eager**: ``model(categorical, dense)`` under ``torch.inference_mode`` on
  ``--threads`` threads; samples/s at each ``--batch-sizes`` (batch / median time of
  ``--runs`` calls) and the batch-1 p50 latency (median of ``--single-runs`` calls);
- **ONNX Runtime**: the same serving model exported by :func:`components.serve.export.export_onnx`
  (what ``ctrflow export`` writes), opened as ctrflow opens it
  (:func:`components.serve.onnx_runtime.open_onnx`: params.yaml's ``inference.onnx_graph_optimization``,
  default ``all``; ``threads`` intra-op threads; idle threads per ``inference.onnx_spinning``,
  default ``within_call``: they spin while a call runs and sleep after it; single rows on a
  one-thread session sharing the embedding tables, ``inference.onnx_one_row_threads``) and called
  the way ``ctrflow predict --runtime onnx`` calls it: ``session.run`` per block of
  ``inference.score_rows`` rows (:func:`components.serve.predict.in_row_blocks`; the PyTorch models
  split a batch into the same blocks internally, ``CTRModel.block_rows``). These rows are measured
  in a child process that runs only onnxruntime, as a serving process runs one runtime: in the
  PyTorch process, once PyTorch's OpenMP threads had run, the sessions measured after them were
  slower (DAGFM student, 2 threads, 4096 rows: 410k vs 484k samples/s, even 3 s later).
  ``--onnx-spinning`` / ``--onnx-one-row-threads`` override the two settings. How they move the
  2-thread ratios (embedded, 2026-12-07, DAGFM student vs teacher): idle threads always asleep
  (``false``) cost the student every node's wake-up (4096 rows 3.7–3.9×); always spinning
  (``true``) with several sessions in one process lets the idle ones' workers compete for the two
  cores (DAGFM 400k → 221k samples/s); a one-row call on the 2-thread session pays a hand-off per
  batched matmul or grouped convolution (teacher 0.100–0.110 vs 0.086 ms, student 0.050 vs
  0.037 ms; with spinning the teacher's one-row GEMMs split well, 0.060 ms, the student's tiny
  ones do not: 0.56×);
- **DeepCTR-Torch 0.3.0 DCN** (the ``[bench]`` extra; skipped with a message when it is not
  installed): its ``DCN`` with the teacher's architecture (``cross_parameterization="matrix"``, the
  teacher's cross layers and MLP widths, embedding 16, no BatchNorm), on the same rows and threads,
  through its own ``forward``: the teacher must be at least as fast.

Inputs are real rows: the first rows of the dataset's processed test split (tiled when a batch is
larger than the split), the same rows for every model and runtime. Datasets (prepared by
``benchmarks/quality.py``'s functions, imported, not copied): ``embedded`` = the embedded default
of ``make run`` (the 100k-row synthetic Criteo-format log, generator seed 2024, params.yaml's
preprocessing) and ``criteo117k`` (../shared/data, skipped with a message when absent).

Each measurement is repeated ``--repeats`` times (default 5) with the models in rotating order;
the figure is the median over repeats (a 2-core box is shared: the ratios, measured side by side,
are the robust numbers; on this one a burst of load can take the second core for seconds: on
2026-12-07 the DAGFM student's 2-thread ONNX ratio at batch 4096 was 4.3–5.2× in 10 of 16
dataset-runs and 2.1–3.9× in the others). The targets of the issue "Students as fast as their FLOPs" are judged on them:

- DAGFM student ≥ 4× the teacher's samples/s at batch 4096 and ≤ 0.5× its batch-1 p50 latency,
  in PyTorch and in ONNX Runtime, on every dataset and thread count;
- KD-DAGFM+ faster than the teacher at every batch size (PyTorch and ONNX Runtime);
- the teacher ≥ DeepCTR-Torch's DCN samples/s at batch 4096 (PyTorch, same rows and threads).

With ``--quantize`` (default on when the embedded run's trained checkpoints exist, i.e. after
``make run``): the optional ``inference.quantize: dynamic_int8`` is measured on those trained
checkpoints, with its AUC cost on the test split (:func:`components.serve.optimize.quantization_auc_cost`)
and its PyTorch samples/s at batch 4096 vs fp32. With ``--compile``: the teacher and the DAGFM
student also run under the optional ``inference.compile: true`` (``torch.compile``; PyTorch rows
``teacher+compile`` and ``dagfm+compile``).

Results go to stdout and to ``--out-dir`` (default ``benchmarks/results``): ``inference.json`` and
``inference.md``, written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_WORK = Path(tempfile.gettempdir()) / "ctrflow-bench-inference"
DEFAULT_OUT = REPO / "benchmarks" / "results"
DEFAULT_DATASETS = ("embedded", "criteo117k")
DEFAULT_BATCH_SIZES = (1, 16, 256, 1024, 4096)
EMBEDDED_ROWS = 100_000
TEACHER = "teacher"
STUDENTS = ("dagfm", "kd_dagfm_plus", "fsdnet")
REFERENCE = "dagfm_reference"
DEEPCTR = "deepctr_dcn"
COMPILED = "+compile"
THROUGHPUT_GOAL = 4.0   # DAGFM student samples/s >= 4x the teacher's at batch 4096
LATENCY_GOAL = 0.5      # ... and batch-1 p50 <= 0.5x the teacher's
GOAL_BATCH = 4096


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# models


class _ReferenceDAGFM(torch.nn.Module):
    """A DAGFM student that runs its einsum specification (what the model ran before the rewrite)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, categorical, dense=None):
        return self.model.reference_interact(self.model.embed(categorical, dense))


def build_models(params, fmap, seed: int = 0, compiled: bool = False) -> dict[str, torch.nn.Module]:
    """params.yaml's teacher and students (seeded, untrained) in their serving form, plus the
    reference DAGFM and, with ``compiled``, the teacher and DAGFM under ``torch.compile``."""
    from components.distill.kd_dagfm import student_hparams
    from components.models import build_model
    from components.serve.optimize import prepare_for_inference
    from components.train.teacher import teacher_hparams

    torch.manual_seed(seed)
    t = params.train
    raw = {TEACHER: build_model(t.model, fmap, **teacher_hparams(t))}  # the stage's teacher, logistic base included
    based = params.distill.logistic_base and raw[TEACHER].logistic_base is not None
    for s in ("dagfm", "kd_dagfm_plus"):  # as the distill stage builds them: the teacher's LR base too
        raw[s] = build_model(s, fmap, **student_hparams(s, params.distill, t.embedding_dim), logistic_base=based)
    raw["fsdnet"] = build_model("fsdnet", fmap, **params.distill.block("fsdnet").model_hparams())
    models = {name: prepare_for_inference(m.eval(), params.inference) for name, m in raw.items()}
    models[REFERENCE] = _ReferenceDAGFM(models["dagfm"]).eval()
    if compiled:  # the optional inference.compile, off by default: measured, PyTorch only
        on = params.inference.model_copy(update={"compile": True})
        for name in (TEACHER, "dagfm"):
            models[f"{name}{COMPILED}"] = prepare_for_inference(raw[name].eval(), on)
    return models


def build_deepctr_dcn(params, fmap) -> tuple[torch.nn.Module | None, str]:
    """DeepCTR-Torch 0.3.0's DCN with the teacher's architecture, or (None, why) when unavailable."""
    try:
        with _no_version_check():
            from deepctr_torch.inputs import DenseFeat, SparseFeat
            from deepctr_torch.models import DCN
    except ImportError as e:
        return None, f"DeepCTR-Torch is not installed ({e}); `pip install -c constraints.txt -e '.[bench]'`"
    hp = {"num_cross_layers": 3, "hidden_units": (400, 400, 400), **params.train.model_params}
    if params.train.model != "dcnv2":
        return None, f"the teacher is {params.train.model}, not dcnv2: no DeepCTR-Torch twin"
    columns = [SparseFeat(f.name, f.vocab_size, embedding_dim=params.train.embedding_dim)
               for f in fmap.categorical_fields]
    columns += [DenseFeat(f.name, 1) for f in fmap.dense_fields]
    torch.manual_seed(0)
    model = DCN(columns, columns, cross_num=int(hp["num_cross_layers"]), cross_parameterization="matrix",
                dnn_hidden_units=tuple(hp["hidden_units"]), dnn_use_bn=False, device="cpu")
    return model.eval(), "DeepCTR-Torch 0.3.0 DCN(matrix)"


@contextlib.contextmanager
def _no_version_check():
    """DeepCTR-Torch asks the package index for its latest version in a thread at import; offline
    that call hangs on the network, so make it fail at once (peers.md)."""
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with the project's dependencies
        yield
        return
    original = requests.get

    def refuse(*_a, **_k):
        raise requests.ConnectionError("offline benchmark: no version check")

    requests.get = refuse
    try:
        yield
    finally:
        requests.get = original


# ------------------------------------------------------------------------------------------------
# inputs and timing


def real_rows(processed: Path, fmap, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``rows`` rows of the processed test split (tiled if shorter): ids int64, dense float32."""
    from components.data.loader import BatchLoader

    split = "test" if fmap.splits.get("test", {}).get("rows") else "valid"
    batch = next(iter(BatchLoader(processed / fmap.splits[split]["path"], fmap, rows, shuffle=False)))
    cat, dense = batch.categorical.numpy().astype(np.int64), batch.dense.numpy().astype(np.float32)
    reps = -(-rows // len(cat))
    return np.ascontiguousarray(np.tile(cat, (reps, 1))[:rows]), np.ascontiguousarray(np.tile(dense, (reps, 1))[:rows])


def _median_seconds(fn: Callable[[], object], warmup: int, runs: int) -> float:
    """Median wall time of ``runs`` calls after ``warmup`` ones; Python's cyclic garbage collector
    is off while timing, as in ``timeit`` (a collection over this process's many objects landed
    inside single-row calls)."""
    for _ in range(warmup):
        fn()
    times = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    finally:
        if was_enabled:
            gc.enable()
    return statistics.median(times)


def torch_runner(model, cat: np.ndarray, dense: np.ndarray) -> Callable[[], object]:
    c, d = torch.from_numpy(cat), torch.from_numpy(dense)
    return lambda: model(c, d)


def deepctr_runner(model, cat: np.ndarray, dense: np.ndarray) -> Callable[[], object]:
    x = torch.from_numpy(np.concatenate([cat.astype(np.float32), dense], axis=1))  # its input layout
    return lambda: model(x)


def onnx_runner(session, cat: np.ndarray, dense: np.ndarray, block_rows: int) -> Callable[[], object]:
    """ctrflow's ONNX scoring (what ``ctrflow predict --runtime onnx`` calls): blocks of ``block_rows``."""
    from components.serve.onnx_runtime import onnx_probabilities
    from components.serve.predict import in_row_blocks

    return lambda: in_row_blocks(partial(onnx_probabilities, session), cat, dense, block_rows)


def measure(make_runner, rows: tuple[np.ndarray, np.ndarray], batch_sizes, runs: int, single_runs: int) -> dict:
    """samples/s per batch size and the batch-1 p50 (ms) of one model in one runtime."""
    cat, dense = rows
    out: dict = {"samples_per_s": {}}
    with torch.inference_mode():
        for b in batch_sizes:
            run = make_runner(cat[:b], dense[:b])
            if b == 1:
                out["p50_ms"] = _median_seconds(run, 20, single_runs) * 1e3
            n = max(3, runs if b >= 1024 else runs * 4)
            out["samples_per_s"][str(b)] = b / _median_seconds(run, 2, n)
    return out


def export_graphs(models: dict, fmap, work: Path) -> dict[str, Path]:
    """``ctrflow export``'s ONNX graph of each serving model (not the einsum reference, not the
    compiled variants: the graph is the model's own), written under ``work``."""
    from components.serve.export import export_onnx

    work.mkdir(parents=True, exist_ok=True)
    return {name: export_onnx(model, fmap, work / f"{name}.onnx") for name, model in models.items()
            if name != REFERENCE and not name.endswith(COMPILED)}


def rotated(runners: dict, rows, args) -> dict:
    """``args.repeats`` rounds of :func:`measure` over every runner, the order rotated each round."""
    records: dict = {k: [] for k in runners}
    keys = list(runners)
    for rep in range(args.repeats):
        for key in keys[rep % len(keys):] + keys[: rep % len(keys)]:  # rotate who goes first
            records[key].append(measure(runners[key], rows, args.batch_sizes, args.runs, args.single_runs))
    return records


def onnx_records(graphs: dict[str, Path], rows, settings, threads: int, args, work: Path) -> dict:
    """The ONNX rows, measured in a child process that runs nothing but onnxruntime (as a serving
    process runs one runtime): in this one PyTorch's OpenMP threads, once they have run, slowed the
    onnxruntime sessions measured after them (DAGFM student, 2 threads, 4096 rows: 410k vs 484k
    samples/s, even 3 s after the last PyTorch call). The child opens each graph as ctrflow does
    (:func:`~components.serve.onnx_runtime.open_onnx` with ``settings``, ``threads`` threads)."""
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "categorical.npy", rows[0])
    np.save(work / "dense.npy", rows[1])
    spec = {"graphs": {k: str(v) for k, v in graphs.items()}, "rows": str(work), "threads": threads,
            "settings": settings.model_dump(mode="json"), "score_rows": settings.score_rows,
            "repeats": args.repeats, "batch_sizes": args.batch_sizes, "runs": args.runs,
            "single_runs": args.single_runs}
    (work / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--onnx-worker", str(work / "spec.json")],
                          capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"the ONNX measurement process failed:\n{done.stderr[-3000:]}")
    return json.loads((work / "records.json").read_text())


def onnx_worker(spec_path: str) -> int:
    """The child process of :func:`onnx_records`: measure, write ``records.json`` beside the spec."""
    from components.config import InferenceParams
    from components.serve.onnx_runtime import open_onnx

    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["rows"])
    rows = (np.load(work / "categorical.npy"), np.load(work / "dense.npy"))
    settings = InferenceParams(**spec["settings"]).model_copy(update={"threads": spec["threads"]})
    runners = {}
    for name, path in spec["graphs"].items():
        scorer = open_onnx(path, settings)
        runners[name] = lambda c, d, scorer=scorer: onnx_runner(scorer, c, d, spec["score_rows"])
    args = argparse.Namespace(**{k: spec[k] for k in ("repeats", "batch_sizes", "runs", "single_runs")})
    (work / "records.json").write_text(json.dumps(rotated(runners, rows, args)))
    return 0


# ------------------------------------------------------------------------------------------------
# one dataset


def _median_of(records: list[dict]) -> dict:
    out = {"samples_per_s": {}}
    for b in records[0]["samples_per_s"]:
        out["samples_per_s"][b] = statistics.median(r["samples_per_s"][b] for r in records)
    if "p50_ms" in records[0]:
        out["p50_ms"] = statistics.median(r["p50_ms"] for r in records)
    return out


def bench_dataset(name: str, processed: Path, params, args, work: Path) -> dict:
    from components.data.preprocess import load_feature_map

    fmap = load_feature_map(processed)
    models = build_models(params, fmap, compiled=getattr(args, "compile", False))
    rows = real_rows(processed, fmap, max(args.batch_sizes))
    dct, dct_note = build_deepctr_dcn(params, fmap)
    if dct is None:
        log(f"{name}: {dct_note}")
    result = {"fields": len(fmap.categorical_fields) + len(fmap.dense_fields),
              "ids": int(sum(fmap.vocab_sizes)), "deepctr": dct_note, "threads": {}}
    prev = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            runners: dict[str, Callable] = {m: (lambda c, d, model=model: torch_runner(model, c, d))
                                            for m, model in models.items()}
            if dct is not None:
                runners[DEEPCTR] = lambda c, d: deepctr_runner(dct, c, d)
            records = {("torch", m): recs for m, recs in rotated(runners, rows, args).items()}
            log(f"{name}, {threads} thread(s): PyTorch done")
            graphs = export_graphs(models, fmap, work / name)
            onnx = onnx_records(graphs, rows, onnx_settings(params.inference, args), threads, args,
                                work / name / f"threads-{threads}")
            records |= {("onnx", m): recs for m, recs in onnx.items()}
            log(f"{name}, {threads} thread(s): ONNX Runtime done")
            per = {}
            for (runtime, m), recs in records.items():
                per.setdefault(runtime, {})[m] = _median_of(recs)
            result["threads"][str(threads)] = per
    finally:
        torch.set_num_threads(prev)
    result["ratios"] = ratios(result)
    return result


SPINNING = {"off": False, "on": True, "within_call": "within_call"}  # --onnx-spinning → inference.onnx_spinning


def onnx_settings(settings, args):
    """params.yaml ``inference:`` with ``--onnx-spinning`` / ``--onnx-one-row-threads`` applied."""
    update = {}
    if args.onnx_spinning != "params":
        update["onnx_spinning"] = SPINNING[args.onnx_spinning]
    if args.onnx_one_row_threads is not None:
        update["onnx_one_row_threads"] = args.onnx_one_row_threads
    return settings.model_copy(update=update)


def ratios(result: dict) -> dict:
    """Per thread count and runtime: every model's samples/s and p50 relative to the teacher's."""
    out: dict = {}
    for threads, per in result["threads"].items():
        for runtime, models in per.items():
            teacher = models.get(TEACHER)
            if teacher is None:
                continue
            rt = out.setdefault(threads, {}).setdefault(runtime, {})
            for m, rec in models.items():
                if m == TEACHER:
                    continue
                rt[m] = {"throughput_x": {b: rec["samples_per_s"][b] / teacher["samples_per_s"][b]
                                          for b in rec["samples_per_s"]},
                         "p50_x": (rec["p50_ms"] / teacher["p50_ms"]) if "p50_ms" in rec else None}
    return out


def goal_checks(results: dict) -> list[dict]:
    """The issue's targets, one row per (dataset, threads, runtime, goal): value and met."""
    rows = []
    big = str(GOAL_BATCH)
    for ds, res in results["datasets"].items():
        for threads, per_rt in res.get("ratios", {}).items():
            for runtime, r in per_rt.items():
                if "dagfm" in r:
                    x = r["dagfm"]["throughput_x"].get(big)
                    rows.append({"dataset": ds, "threads": threads, "runtime": runtime,
                                 "goal": f"DAGFM samples/s at batch {GOAL_BATCH} ≥ {THROUGHPUT_GOAL:g}× teacher",
                                 "value": x, "met": x is not None and x >= THROUGHPUT_GOAL})
                    p = r["dagfm"]["p50_x"]
                    rows.append({"dataset": ds, "threads": threads, "runtime": runtime,
                                 "goal": f"DAGFM batch-1 p50 ≤ {LATENCY_GOAL:g}× teacher",
                                 "value": p, "met": p is not None and p <= LATENCY_GOAL})
                if "kd_dagfm_plus" in r:
                    xs = r["kd_dagfm_plus"]["throughput_x"]
                    worst = min(xs.values())
                    rows.append({"dataset": ds, "threads": threads, "runtime": runtime,
                                 "goal": "KD-DAGFM+ faster than the teacher at every batch size (min ×)",
                                 "value": worst, "met": worst > 1.0})
                if runtime == "torch" and r.get(DEEPCTR, {}).get("throughput_x", {}).get(big):
                    x = 1.0 / r[DEEPCTR]["throughput_x"][big]  # teacher / DeepCTR
                    rows.append({"dataset": ds, "threads": threads, "runtime": runtime,
                                 "goal": f"teacher samples/s at batch {GOAL_BATCH} ≥ DeepCTR-Torch DCN's",
                                 "value": x, "met": x >= 1.0})
    return rows


# ------------------------------------------------------------------------------------------------
# optional int8 on the trained checkpoints of `make run`


def bench_quantization(params, args) -> dict | None:
    """fp32 vs dynamic-int8 AUC (test split) and batch-4096 samples/s of the repo's trained models."""
    from components.data.loader import BatchLoader
    from components.data.preprocess import load_feature_map
    from components.evaluate.models import discover_models
    from components.serve.optimize import prepare_for_inference, quantization_auc_cost
    from components.train.checkpoint import load_model

    processed = REPO / params.preprocess.out_dir
    with contextlib.chdir(REPO):
        found = discover_models(params, require=False)
    if not found or not (processed / "feature_map.json").is_file():
        log("quantization: no trained checkpoints of `make run` here; skipped")
        return None
    fmap = load_feature_map(processed)
    rows = real_rows(processed, fmap, GOAL_BATCH)
    out = {}
    torch.set_num_threads(1)
    for rm in found:
        model, meta = load_model(REPO / rm.directory, fmap)
        loader = BatchLoader(processed / fmap.splits["test"]["path"], fmap, 8192, shuffle=False)
        cost = quantization_auc_cost(model, loader)
        fp32 = prepare_for_inference(model, params.inference)
        int8 = prepare_for_inference(model, params.inference.model_copy(update={"quantize": "dynamic_int8"}))
        speed = {}
        for label, m in (("fp32", fp32), ("int8", int8)):
            rec = [measure(lambda c, d, m=m: torch_runner(m, c, d), rows, (GOAL_BATCH,), args.runs, 1)
                   for _ in range(args.repeats)]
            speed[label] = statistics.median(r["samples_per_s"][str(GOAL_BATCH)] for r in rec)
        out[rm.name] = {"model": meta["model"], **cost, "samples_per_s": speed,
                        "int8_speedup": speed["int8"] / speed["fp32"]}
        log(f"quantization {rm.name}: {cost} · {speed['int8'] / speed['fp32']:.2f}× samples/s")
    return out


# ------------------------------------------------------------------------------------------------
# report


def _f(x, digits=2, suffix="") -> str:
    return "–" if x is None else f"{x:,.{digits}f}{suffix}"


def render(results: dict) -> str:
    lines = ["# Inference speed: students vs teacher (benchmarks/inference.py)", "",
             f"Host: {results['host']['processor']} · {results['host']['cpu_count']} CPUs · torch "
             f"{results['host']['torch']} · onnxruntime {results['host']['onnxruntime']} · "
             f"load average {results['load_before']:.2f} → {results['load_after']:.2f}", "",
             f"Command: `{results['command']}`", "",
             "Samples/s = batch / median call time; p50 = median batch-1 latency; medians over "
             f"{results['settings']['repeats']} repeats in rotating order. Models are params.yaml's, "
             "seeded (speed does not depend on trained weight values), in their serving form "
             "(BatchNorm folded). Rows: the dataset's processed test split. onnxruntime's idle "
             f"threads spin: {results['settings'].get('onnx_spinning', 'off')}; one-row calls' threads "
             f"(0: the batch session's): {results['settings'].get('onnx_one_row_threads', 0)}.", "",
             "## Targets", "", "| dataset | threads | runtime | goal | value | met |", "|---|---|---|---|---|---|"]
    for g in results["goals"]:
        lines.append(f"| {g['dataset']} | {g['threads']} | {g['runtime']} | {g['goal']} | "
                     f"{_f(g['value'], 2, '×')} | {'yes' if g['met'] else '**no**'} |")
    for ds, res in results["datasets"].items():
        lines += ["", f"## {ds} ({res['fields']} fields, {res['ids']:,} ids)", ""]
        if res.get("deepctr"):
            lines.append(f"DeepCTR-Torch: {res['deepctr']}.")
            lines.append("")
        for threads, per_rt in res["threads"].items():
            for runtime, models in per_rt.items():
                sizes = list(next(iter(models.values()))["samples_per_s"])
                lines += [f"### {threads} thread(s), {'PyTorch eager' if runtime == 'torch' else 'ONNX Runtime'}", "",
                          "| model | " + " | ".join(f"samples/s @{b}" for b in sizes)
                          + " | p50 ms | × teacher @4096 | p50 × teacher |",
                          "|---|" + "---|" * (len(sizes) + 3)]
                r = res["ratios"].get(threads, {}).get(runtime, {})
                for m, rec in models.items():
                    x = r.get(m, {})
                    lines.append(f"| {m} | " + " | ".join(_f(rec['samples_per_s'][b], 0) for b in sizes)
                                 + f" | {_f(rec.get('p50_ms'), 3)} | {_f(x.get('throughput_x', {}).get(str(GOAL_BATCH)), 2, '×')}"
                                 f" | {_f(x.get('p50_x'), 2, '×')} |")
                lines.append("")
    q = results.get("quantization")
    if q:
        lines += ["## Optional dynamic int8 (trained checkpoints of `make run`, 1 thread)", "",
                  "| model | AUC fp32 | AUC int8 | ΔAUC | samples/s fp32 | samples/s int8 | speed-up |",
                  "|---|---|---|---|---|---|---|"]
        for m, rec in q.items():
            lines.append(f"| {m} | {_f(rec.get('fp32_auc'), 4)} | {_f(rec.get('int8_auc'), 4)} | "
                         f"{_f(-rec['auc_cost'], 4)} | {_f(rec['samples_per_s']['fp32'], 0)} | "
                         f"{_f(rec['samples_per_s']['int8'], 0)} | {_f(rec['int8_speedup'], 2, '×')} |")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                    help="comma-separated: embedded, criteo117k (default: both)")
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}",
                    help="comma-separated thread counts (default: 1 and all cores)")
    ap.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    ap.add_argument("--repeats", type=int, default=5,
                    help="rounds over every model (rotated order); the table holds each figure's median over them")
    ap.add_argument("--runs", type=int, default=7, help="timed calls per batch size ≥ 1024 (4× that below)")
    ap.add_argument("--single-runs", type=int, default=200, help="timed batch-1 calls for the p50")
    ap.add_argument("--compile", action="store_true",
                    help="also measure the teacher and DAGFM under torch.compile (inference.compile)")
    ap.add_argument("--quantize", choices=("auto", "yes", "no"), default="auto",
                    help="measure dynamic int8 on `make run`'s trained checkpoints (auto: when present)")
    ap.add_argument("--onnx-spinning", choices=("params", *SPINNING), default="params",
                    help="onnxruntime's idle intra-op threads: sleep (off), spin (on: onnxruntime's "
                         "default), spin while a call runs (within_call); params: inference.onnx_spinning")
    ap.add_argument("--onnx-one-row-threads", type=int, default=None,
                    help="threads of the one-row session (0: none) [default: inference.onnx_one_row_threads]")
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.threads = sorted({int(t) for t in args.threads.split(",")})
    args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")} | {1, GOAL_BATCH})
    if min(args.repeats, args.runs, args.single_runs, *args.threads) < 1:
        ap.error("--repeats, --runs, --single-runs and --threads must be >= 1")
    unknown = set(args.datasets) - set(DEFAULT_DATASETS)
    if unknown:
        ap.error(f"unknown datasets {sorted(unknown)}; choose from {list(DEFAULT_DATASETS)}")
    return args


def main(argv=None) -> int:
    import onnxruntime

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--onnx-worker"]:
        return onnx_worker(argv[1])

    from benchmarks.quality import prepare
    from components.config import load_params

    args = parse_args(argv)
    params = load_params(REPO / "params.yaml")
    results = {"command": " ".join(["benchmarks/inference.py", *argv]),
               "host": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
               "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "out_dir")},
               "load_before": os.getloadavg()[0], "datasets": {}}
    effective = onnx_settings(params.inference, args)  # what the ONNX rows ran with
    results["settings"].update(onnx_spinning=str(effective.onnx_spinning).lower(),
                               onnx_one_row_threads=effective.onnx_one_row_threads)
    for ds in args.datasets:
        source = "synthetic" if ds == "embedded" else ds
        try:
            prep = prepare(source, args.work_dir, EMBEDDED_ROWS, log)
        except FileNotFoundError as e:
            log(f"{ds}: skipped ({e})")
            continue
        log(f"{ds}: {prep.processed}")
        results["datasets"][ds] = bench_dataset(ds, prep.processed, params, args, args.work_dir / "onnx")
    if args.quantize != "no":
        q = bench_quantization(params, args)
        if q is None and args.quantize == "yes":
            raise SystemExit("--quantize yes: no trained checkpoints of `make run` in this checkout")
        results["quantization"] = q
    results["load_after"] = os.getloadavg()[0]
    results["goals"] = goal_checks(results)
    text = render(results)
    _atomic_write(args.out_dir / "inference.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
    _atomic_write(args.out_dir / "inference.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
