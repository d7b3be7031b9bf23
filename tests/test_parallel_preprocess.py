"""Partition-parallel preprocessing (issue 15 §2): per-partition counts merged into one vocabulary, then
per-partition encoding — in one process, on a process pool, and as a Prefect flow on a real Dask
cluster (``DaskTaskRunner`` against a ``distributed.LocalCluster`` of 2 worker processes) — write the
same bytes, file by file, for every split a partitioned input supports."""

from __future__ import annotations

import math
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from components.config import ConfigError, load_params
from components.data.errors import DataFormatError
from components.data.generate import generate_partitions
from components.data.preprocess import preprocess_partitions
from components.data.vocab import dense_partials, fit_dense_stats, merge_dense_partials
from components.stages import input_partitions, preprocess_stage
from components.transient import StageFailed
from tests.conftest import write_params

ROWS = 2500  # rows per partition; 4 partitions
SHARED_VALUE = "0badcafe"   # planted in 40 train rows (day_1) and 40 holdout rows (day_3)
HOLDOUT_ONLY = "0badf00d"   # planted in 40 holdout rows only (day_3)
C1 = 14                     # C1's position in a Criteo line (label, I1..I13, C1..C26)

# name -> (format, preprocess keys): every split a partitioned input supports, both numeric kinds
CONFIGS = {
    "criteo-partition": ("criteo", {"split": "partition", "min_count": 2}),
    "criteo-random-dense": ("criteo", {"split": "random", "numeric": "dense", "min_count": 3, "batch_rows": 700}),
    "avazu-time": ("avazu", {"split": "time", "min_count": 2, "split_ratios": [0.6, 0.2, 0.2]}),
}


def _plant(path: Path, lines: range, value: str) -> None:
    rows = path.read_text().splitlines(keepends=True)
    for i in lines:
        fields = rows[i - 1].split("\t")
        fields[C1] = value
        rows[i - 1] = "\t".join(fields)
    path.write_text("".join(rows))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parallel")
    generate_partitions("criteo", ROWS, 21, root / "criteo", 4)
    generate_partitions("avazu", ROWS, 21, root / "avazu", 4)
    text = "".join(p.read_text() for p in (root / "criteo").iterdir())
    assert SHARED_VALUE not in text and HOLDOUT_ONLY not in text
    _plant(root / "criteo" / "day_1", range(1, 41), SHARED_VALUE)
    _plant(root / "criteo" / "day_3", range(1, 41), SHARED_VALUE)
    _plant(root / "criteo" / "day_3", range(41, 81), HOLDOUT_ONLY)
    return {"criteo": root / "criteo", "avazu": root / "avazu"}


@pytest.fixture(scope="module")
def dask_cluster():
    """A real Dask cluster: a scheduler and 2 single-threaded worker processes on this machine."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(scope="module")
def pool():
    """The process pool of path (b), shared by the tests (each fresh worker imports the project)."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


def _params_file(d: Path, inputs: dict, config: str, **parallel) -> Path:
    fmt, pre = CONFIGS[config]
    d.mkdir(parents=True, exist_ok=True)
    return write_params(d, data={"format": fmt, "input": str(inputs[fmt])}, generate={"format": fmt},
                        preprocess={**pre, "out_dir": str(d / "processed"), "parallel": parallel or {}})


def _bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_one_process_a_process_pool_and_a_dask_flow_write_identical_bytes(
        tmp_path, inputs, pool, dask_cluster, prefect_server, config):
    from flows.preprocess import run_preprocess

    # (a) one process, partition after partition (the default: runner none)
    single = load_params(_params_file(tmp_path / "single", inputs, config))
    res = preprocess_stage(single, require_gate=False)
    out_a = Path(single.preprocess.out_dir)
    # (b) a process pool: partitions counted and encoded in 2 worker processes
    pooled = load_params(_params_file(tmp_path / "pool", inputs, config))
    preprocess_partitions(pooled, input_partitions(pooled), pooled.preprocess.out_dir, executor=pool)
    # (c) the Prefect subflow the pipeline runs, its tasks on a real Dask cluster (DaskTaskRunner)
    flow_file = _params_file(tmp_path / "dask", inputs, config, runner="dask", dask_address=dask_cluster)
    flowed = load_params(flow_file)
    line = run_preprocess(flowed, str(flow_file), {}, require_gate=False)

    a, b, c = _bytes(out_a), _bytes(Path(pooled.preprocess.out_dir)), _bytes(Path(flowed.preprocess.out_dir))
    assert {"train.parquet", "valid.parquet", "test.parquet", "feature_map.json"} <= set(a)
    assert sum(1 for name in a if name.startswith("vocab/")) >= 20
    assert a == b
    assert a == c
    assert line.startswith("preprocessed 4 partition(s) day_0") and res.summary.startswith("preprocessed 4")
    fmap = res.details
    assert sum(s["rows"] for s in fmap["splits"].values()) == 4 * ROWS
    assert [p["name"] for p in fmap["partitions"]][0].startswith("day_0")
    for out in (out_a, Path(pooled.preprocess.out_dir), Path(flowed.preprocess.out_dir)):
        assert _leftovers(out) == []  # the work directory became out_dir


def test_vocabularies_come_from_the_train_partitions_only(tmp_path, inputs):
    params = load_params(_params_file(tmp_path, inputs, "criteo-partition"))
    res = preprocess_stage(params, require_gate=False)
    out = Path(params.preprocess.out_dir)
    assert [p["role"] for p in res.details["partitions"]] == ["train", "train", "train", "valid+test"]
    vocab = pl.read_parquet(out / "vocab" / "C1.parquet")
    kept = dict(zip(vocab["value"].to_list(), vocab["count"].to_list(), strict=True))
    assert kept[SHARED_VALUE] == 40  # its 40 train rows; the 40 in the held-out day_3 are not counted
    assert HOLDOUT_ONLY not in kept  # 40 rows, but none in train
    valid = pl.read_parquet(out / "valid.parquet")  # day_3's first half, in line order
    shared_id = vocab.filter(pl.col("value") == SHARED_VALUE)["id"].item()
    assert valid["C1"][:40].to_list() == [shared_id] * 40
    assert valid["C1"][40:80].to_list() == [0] * 40  # OOV


def test_a_bad_partition_fails_naming_its_file_and_keeps_earlier_outputs(
        tmp_path, inputs, dask_cluster, prefect_server):
    from flows.preprocess import run_preprocess

    parts = tmp_path / "parts"
    parts.mkdir()
    for p in sorted(inputs["criteo"].iterdir()):
        (parts / p.name).write_bytes(p.read_bytes())
    params_file = write_params(tmp_path, data={"input": str(parts)},
                               preprocess={"split": "partition", "min_count": 2, "out_dir": str(tmp_path / "out")})
    out = tmp_path / "out"
    preprocess_stage(load_params(params_file), require_gate=False)  # a good run first
    before = _bytes(out)
    rows = (parts / "day_2").read_text().splitlines(keepends=True)
    fields = rows[6].split("\t")
    fields[C1 + 2] = "zzzzzzzz"  # line 7, column C3: not 8 hex digits (the gate was skipped)
    rows[6] = "\t".join(fields)
    (parts / "day_2").write_text("".join(rows))
    expected = f"{parts / 'day_2'}, line 7, column C3: rule 'hex8' broken: expected 8 hex digits, found 'zzzzzzzz'"

    pooled = load_params(params_file, {"preprocess.parallel.runner": "process", "preprocess.parallel.workers": 2})
    with pytest.raises(DataFormatError) as err:  # raised in a pool worker, re-raised here
        preprocess_stage(pooled, require_gate=False)
    assert str(err.value) == expected
    assert (err.value.file, err.value.line, err.value.column, err.value.rule) == (
        str(parts / "day_2"), 7, "C3", "hex8")
    on_dask = {"preprocess.parallel.runner": "dask", "preprocess.parallel.dask_address": dask_cluster}
    with pytest.raises(StageFailed, match=re.escape(expected)):
        run_preprocess(load_params(params_file, on_dask), str(params_file), on_dask, require_gate=False)
    assert _bytes(out) == before
    assert _leftovers(out) == []


def test_merged_dense_statistics_match_one_pass_over_all_rows():
    rng = np.random.default_rng(3)
    values = rng.normal(2.0, 3.0, 10_000)
    frame = pl.DataFrame({"x": [None if i % 7 == 0 else float(v) for i, v in enumerate(values)]})
    whole = fit_dense_stats(frame.lazy(), ["x"])["x"]
    pieces = [frame.slice(0, 1234), frame.slice(1234, 0), frame.slice(1234, 5000), frame.slice(6234, 3766)]
    merged = merge_dense_partials("x", [dense_partials(p.lazy(), ["x"])["x"] for p in pieces])
    assert merged.train_missing_rows == whole.train_missing_rows == frame["x"].null_count()
    assert math.isclose(merged.mean, whole.mean, rel_tol=1e-13)
    assert math.isclose(merged.std, whole.std, rel_tol=1e-13)
    one = merge_dense_partials("x", [dense_partials(frame.lazy(), ["x"])["x"]])
    assert (one.mean, one.std) == (whole.mean, whole.std)  # one part: exactly one pass's numbers
    empty = merge_dense_partials("x", [dense_partials(frame.filter(pl.col("x").is_null()).lazy(), ["x"])["x"]])
    assert (empty.mean, empty.std) == (0.0, 1.0)


def test_parallel_params_are_checked(tmp_path):
    params = load_params(write_params(tmp_path, preprocess={"parallel": {"runner": "dask",
                                                                         "dask_address": "tcp://10.0.0.5:8786"}}))
    assert params.preprocess.parallel.dask_address == "tcp://10.0.0.5:8786"
    for bad, key in (({"runner": "ray"}, "preprocess.parallel.runner"),
                     ({"dask_address": "10.0.0.5:8786"}, "preprocess.parallel.dask_address"),
                     ({"workers": -1}, "preprocess.parallel.workers")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_params(write_params(tmp_path, preprocess={"parallel": bad}))


def test_the_pipeline_fans_out_only_for_partitions_with_a_runner(tmp_path, inputs, monkeypatch):
    import flows.pipeline as fp
    from flows.preprocess import task_runner

    calls = []
    monkeypatch.setattr(fp, "run_preprocess", lambda params, path, overrides: calls.append(path) or "fanned out")
    parted = load_params(_params_file(tmp_path / "a", inputs, "criteo-partition", runner="process", workers=3))
    assert fp._preprocess(parted, "p.yaml", {}) == "fanned out" and calls == ["p.yaml"]
    assert not fp.stages.preprocess_fans_out(load_params(_params_file(tmp_path / "b", inputs, "criteo-partition")))
    single = load_params(write_params(tmp_path / "b", preprocess={"parallel": {"runner": "dask"}}))
    assert not fp.stages.preprocess_fans_out(single)  # one file: nothing to fan out over
    runner = task_runner(parted.preprocess.parallel)
    assert type(runner).__name__ == "ProcessPoolTaskRunner" and runner._max_workers == 3
    remote = task_runner(single.preprocess.parallel.model_copy(update={"dask_address": "tcp://10.0.0.5:8786"}))
    assert type(remote).__name__ == "DaskTaskRunner" and remote.address == "tcp://10.0.0.5:8786"
    local = task_runner(single.preprocess.parallel.model_copy(update={"workers": 2}))
    assert local.address is None and local.cluster_kwargs["n_workers"] == 2
