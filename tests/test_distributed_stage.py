"""The train_teacher stage with ``train.distributed.nproc: 2``: torchrun launched from the stage (two gloo
ranks on the CPU), the one-process stage's outputs, a failing rank, kill + resume, the Prefect task.

Equality with the one-process stage. ``train.batch_size`` is the global batch (each of the 2 ranks takes
half of it a step), so both runs take the same number of steps of the same size with the same lr. They
do not see the same rows in the same batches: each rank shuffles its own shard (rows i % 2 == rank), so
the two runs differ like two shuffles of one run, and the tolerance is that spread on this tiny data
(4,000 train / 1,500 valid rows; the standard error of a 1,500-row AUC alone is ~0.01): valid AUC within
AUC_TOL = 0.01 and valid LogLoss within LOGLOSS_TOL = 0.02. Measured over 4 data seeds (FM, 3 epochs):
|dAUC| 0.0001 / 0.0002 / 0.0034 / 0.0065, |dLogLoss| 0.0029 / 0.0020 / 0.0027 / 0.0133. With identical
batches (no shuffle) tests/test_distributed.py shows DDP equal to one process within 1e-5 on the
weights. A DDP run killed mid-epoch and resumed reaches exactly (bit for bit on CPU gloo, the same
threads per rank) the metrics and curve of an uninterrupted DDP run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.config import load_params
from components.repro import without_timings
from components.stages import train_stage
from components.train.launch import DistributedTrainingFailed
from tests.conftest import write_params
from tests.test_train_loop import write_split_data

REPO_ROOT = Path(__file__).resolve().parents[1]
AUC_TOL = 0.01
LOGLOSS_TOL = 0.02
N_TRAIN = 4000  # 2,000 rows a rank: 16 steps of 2 x 128 rows an epoch


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ddp") / "processed"
    write_split_data(d, n_train=N_TRAIN, n_valid=1500)
    return d


def _train(root: Path, name: str, nproc: int, **kw) -> dict:
    return {"model": "fm", "embedding_dim": 4, "batch_size": 256, "lr": 0.02, "max_epochs": 3,
            "patience": 2, "device": "cpu", "num_threads": 1, "seed": 11,
            "out_dir": str(root / "models" / name), "metrics": str(root / "metrics" / f"{name}.json"),
            "curve": str(root / "metrics" / f"{name}.csv"), "distributed": {"nproc": nproc},
            "gate": {"on_fail": "warn", "baseline_max_epochs": 2}, **kw}


def _params_file(root: Path, processed: Path, train: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return write_params(root, preprocess={"out_dir": str(processed)}, train=train)


def _stage(root: Path, processed: Path, train: dict):
    return train_stage(load_params(_params_file(root, processed, train)))


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _snapshot(*paths: Path) -> dict[str, bytes]:
    out = {}
    for p in paths:
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            out[str(f)] = f.read_bytes()
    return out


@pytest.fixture(scope="module")
def ddp_run(processed, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted 2-rank stage run (root, its metrics); num_threads 0: each rank gets
    max(1, cores // nproc) threads."""
    root = tmp_path_factory.mktemp("ddp-ref")
    return root, _stage(root, processed, _train(root, "two", 2, num_threads=0)).details


def test_two_ranks_write_the_one_process_outputs_within_tolerance(processed, ddp_run, tmp_path):
    one = _stage(tmp_path, processed, _train(tmp_path, "one", 1))
    ref, m2 = ddp_run
    m1 = one.details
    assert abs(m2["valid"]["auc"] - m1["valid"]["auc"]) <= AUC_TOL
    assert abs(m2["valid"]["logloss"] - m1["valid"]["logloss"]) <= LOGLOSS_TOL
    assert m2["valid"]["auc"] > 0.8  # both learned the planted signal
    assert m2["distributed"] == {"world_size": 2, "nproc": 2, "nnodes": 1, "backend": "gloo",
                                 "threads_per_rank": max(1, (os.cpu_count() or 1) // 2),
                                 "rank_batch_size": 128}
    assert m2["batch_size"] == m1["batch_size"] == 256  # the global batch
    assert m2["epochs"] == m1["epochs"] == 3

    # the same files: checkpoint dir (gate's LR included), metrics keys, curve rows; nothing else written
    assert _tree(ref / "models" / "two") == _tree(tmp_path / "models" / "one")
    assert "baseline_lr/model.safetensors" in _tree(ref / "models" / "two")
    assert [p.name for p in (ref / "models").iterdir()] == ["two"]  # no .partial, no temporaries
    assert sorted(p.name for p in (ref / "metrics").iterdir()) == ["two.csv", "two.json"]
    j1 = json.loads((tmp_path / "metrics" / "one.json").read_text())
    j2 = json.loads((ref / "metrics" / "two.json").read_text())
    assert set(j2) - set(j1) == {"distributed"} and set(j1) <= set(j2)
    c1 = (tmp_path / "metrics" / "one.csv").read_text().splitlines()
    c2 = (ref / "metrics" / "two.csv").read_text().splitlines()
    assert c1[0] == c2[0] and len(c1) == len(c2) == 4
    state = json.loads((ref / "models" / "two" / "resume.json").read_text())["scalars"]
    assert state["fingerprint"]["world_size"] == 2 and state["epoch"] == 3


def test_global_batch_must_split_evenly_over_the_ranks(processed, tmp_path):
    with pytest.raises(ValueError, match=r"train.batch_size \(global batch 255\) must be a multiple of the 2"):
        _stage(tmp_path, processed, _train(tmp_path, "odd", 2, batch_size=255))
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_failing_rank_is_named_and_earlier_outputs_stay(processed, tmp_path):
    data = tmp_path / "processed"
    data.mkdir()
    for f in processed.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    # no logistic base: its LR, fitted in this process before the ranks start, would meet the bad id first
    train = {**_train(tmp_path, "teacher", 2), "logistic_base": False}
    _stage(tmp_path, data, {**train, "distributed": {"nproc": 1}})  # an earlier good teacher
    outputs = [Path(train["out_dir"]), Path(train["metrics"]), Path(train["curve"])]
    before = _snapshot(*outputs)

    # row 1 belongs to rank 1's shard (rows i % 2 == 1): an id far outside every vocabulary fails the model's
    # id check in the first epoch, on rank 1 only
    table = pq.read_table(data / "train.parquet")
    c0 = table.column("c0").to_pylist()
    c0[1] = 10**6
    table = table.set_column(table.schema.get_field_index("c0"), "c0", pa.array(c0, pa.int32()))
    pq.write_table(table, data / "train.parquet", row_group_size=1024)

    with pytest.raises(DistributedTrainingFailed) as err:
        _stage(tmp_path, data, train)
    msg = str(err.value)
    assert "distributed training failed (torchrun, 2 ranks" in msg
    assert "rank 1: ValueError: field 'c0' (column 0): id 1000000" in msg  # the model's own check
    assert _snapshot(*outputs) == before  # the earlier teacher, byte for byte
    # nothing left behind: no staged dir without a resume state, no rank's file
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["teacher"]
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["teacher.csv", "teacher.json"]


def _is_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_ddp_killed_mid_epoch_resumes_to_the_uninterrupted_metrics(processed, ddp_run, tmp_path):
    ref, want = ddp_run  # the uninterrupted DDP run, same settings
    root = tmp_path / "run"
    params_file = _params_file(root, processed, _train(root, "two", 2, num_threads=0))
    cmd = [sys.executable, "-m", "cli", "--params", str(params_file), "train"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    marker = root / "paused"
    # each rank counts its own batches: the 20th is the 4th of epoch 2 (16 an epoch)
    pause = {"CTRFLOW_TEST_PAUSE_AT": "train_teacher.batch@20", "CTRFLOW_TEST_PAUSE_MARKER": str(marker)}
    log = root / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env={**env, **pause}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while not marker.exists():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "never reached the pause point"
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the stage and torchrun; the ranks die with torchrun
            proc.wait()
    rank_pid = int(marker.read_text().split("pid")[1])
    deadline = time.monotonic() + 20
    while _is_running(rank_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _is_running(rank_pid), "a rank outlived the killed stage"

    staged = root / "models" / ".two.partial"
    state = json.loads((staged / "resume.json").read_text())["scalars"]
    assert state["epoch"] == 1 and state["fingerprint"]["world_size"] == 2
    assert not (root / "models" / "two").exists() and not (root / "metrics").exists()

    rerun = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "after epoch 1" in rerun.stdout + rerun.stderr  # resumed, not restarted
    got = json.loads((root / "metrics" / "two.json").read_text())
    for key in ("valid", "test", "best_epoch", "epochs", "baselines", "gate"):
        assert got[key] == want[key], key  # exact: the resumed epochs replay bit for bit on CPU gloo
    resumed = json.loads((root / "models" / "two" / "resume.json").read_text())["scalars"]
    reference = json.loads((ref / "models" / "two" / "resume.json").read_text())["scalars"]
    assert without_timings(resumed["history"]) == without_timings(reference["history"])
    assert not staged.exists()


def test_prefect_flow_trains_through_the_task_with_two_ranks(processed, tmp_path, prefect_server):
    from prefect import flow

    from flows.pipeline import train_task

    params_file = _params_file(tmp_path, processed, _train(tmp_path, "teacher", 2))

    @flow(name="ddp-train-test")
    def train_flow(path: str) -> str:
        return train_task(path, {"train.max_epochs": 2})  # an override travels to the ranks

    summary = train_flow(str(params_file))
    assert summary.startswith("trained fm: test AUC")
    metrics = json.loads((tmp_path / "metrics" / "teacher.json").read_text())
    assert metrics["distributed"]["world_size"] == 2
    assert metrics["epochs"] == 2 and metrics["valid"]["auc"] > 0.8
    state = json.loads((tmp_path / "models" / "teacher" / "resume.json").read_text())["scalars"]
    assert state["fingerprint"]["world_size"] == 2 and state["epoch"] == 2


def test_torchrun_command_for_one_and_several_machines():
    from components.config import DistributedParams
    from components.train.launch import torchrun_args

    one = torchrun_args(DistributedParams(nproc=4), ["--params", "p.yaml"])
    assert one == ["--standalone", "--nproc-per-node", "4", "--max-restarts", "0",
                   "-m", "components.train.distributed", "--params", "p.yaml"]
    many = torchrun_args(DistributedParams(nproc=8, nnodes=2, node_rank=1, rdzv_endpoint="node0:29400"), [])
    assert "--standalone" not in many
    assert many[many.index("--nnodes") + 1] == "2" and many[many.index("--node-rank") + 1] == "1"
    assert many[many.index("--rdzv-backend") + 1] == "c10d"
    assert many[many.index("--rdzv-endpoint") + 1] == "node0:29400"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.distributed": {"nnodes": 2}}, "train.distributed: .*needs rdzv_endpoint"),
    ({"train.distributed": {"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}},
     "train.distributed: .*node_rank 2 must be below nnodes 2"),
    ({"train.distributed": {"nproc": 2}, "train.tune.n_trials": 3},
     "train.tune.n_trials 3 > 0 cannot run with train.distributed"),
    ({"train.distributed": {"nproc": 0}}, "train.distributed.nproc"),
])
def test_bad_distributed_settings_name_the_key(overrides, message):
    from components.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_params(REPO_ROOT / "params.yaml", overrides)


def test_the_ranks_get_the_effective_params(tmp_path):
    from components.train.teacher_ddp import write_params_yaml

    params = load_params(REPO_ROOT / "params.yaml", {"train.lr": 0.5, "data.window": {"from": "2024-01-01"},
                                                     "train.distributed": {"nproc": 2}})
    write_params_yaml(params, tmp_path / "p.yaml")
    assert load_params(tmp_path / "p.yaml") == params
