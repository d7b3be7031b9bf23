"""Partitioned raw logs (issue 13 §1): discovery and order, the window, the per-partition gate and its
content-hash cache, ``split: partition``, the drifting partitioned generator and "nothing new"."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from components.config import ConfigError, Params, load_params
from components.data.errors import ValidationFailed
from components.data.generate import generate_partitions, partition_name
from components.data.partitions import (
    check_new_data,
    discover_partitions,
    is_partitioned,
    natural_key,
    partition_date,
    record_successful_run,
    select_window,
)
from components.stages import new_data_stage, preprocess_stage, validate_stage
from tests.conftest import REPO_ROOT, VENV_BIN, write_params

ROWS = 1000  # rows per partition: enough for the gate (min_rows 100) and both classes


def _touch(d: Path, *names: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_text(f"{n}\n")


def _params(tmp: Path, **sections) -> Params:
    raw = {
        "data": {"input": str(tmp / "parts")},
        "validate": {"out_dir": str(tmp / "validation"), "cache_dir": str(tmp / "vcache")},
        "preprocess": {"out_dir": str(tmp / "processed"), "split": "partition", "min_count": 2},
        "run": {"state_file": str(tmp / "state.json")},
        "generate": {"out": str(tmp / "gen"), "rows": ROWS},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return Params.model_validate(raw)


# ---------------------------------------------------------------------------------------------
# discovery, order, window


def test_natural_order_of_day_n_and_companions_excluded(tmp_path):
    d = tmp_path / "parts"
    _touch(d, "day_10", "day_2", "day_0.gz", "day_1", ".hidden", "_SUCCESS", "day_3.proba.parquet",
           "x.oracle.json", "day_4.dvc")
    (d / "sub").mkdir()
    assert [p.name for p in discover_partitions(d)] == ["day_0.gz", "day_1", "day_2", "day_10"]
    assert natural_key("day_2") < natural_key("day_10")
    assert is_partitioned(d, "criteo") and not is_partitioned(d, "movielens")
    assert not is_partitioned(d / "day_1", "criteo")


def test_dated_names_order_by_date_and_glob(tmp_path):
    d = tmp_path / "parts"
    _touch(d, "2026-12-05.txt.gz", "2026-11-30.txt", "2026120601.csv", "2026120523.csv", "notes.md")
    assert partition_date("2026120601.csv") == dt.datetime(2026, 12, 6, 1)
    assert partition_date("2026-12-05.txt.gz") == dt.datetime(2026, 12, 5)
    assert partition_date("14102100.csv") is None  # Avazu's YYMMDDHH is no calendar date here
    got = [p.name for p in discover_partitions(str(d / "2026*"))]
    assert got == ["2026-11-30.txt", "2026-12-05.txt.gz", "2026120523.csv", "2026120601.csv"]
    # one undated name: natural order of the names (lexicographic here)
    assert [p.name for p in discover_partitions(d)][-1] == "notes.md"


def test_window_last_and_date_range(tmp_path):
    d = tmp_path / "parts"
    _touch(d, *(f"2026-12-0{i}.txt" for i in range(1, 8)))
    parts = discover_partitions(d)
    assert [p.name for p in select_window(parts, {"last": 2})] == ["2026-12-06.txt", "2026-12-07.txt"]
    got = select_window(parts, {"from": dt.date(2026, 12, 3), "to": "2026-12-04"})
    assert [p.name for p in got] == ["2026-12-03.txt", "2026-12-04.txt"]
    assert len(select_window(parts, {"from": "2026-12-06"})) == 2
    assert len(select_window(parts, None)) == 7
    with pytest.raises(ValueError, match="selects none"):
        select_window(parts, {"from": "2027-01-01"})
    days = tmp_path / "days"
    _touch(days, "day_0", "day_1")
    with pytest.raises(ValueError, match="day_0 has no date"):
        select_window(discover_partitions(days), {"to": "2026-12-01"})


def test_window_params_are_checked(tmp_path):
    p = write_params(tmp_path, data={"window": {"last": 3}})
    assert load_params(p).data.window.last == 3
    p = write_params(tmp_path, data={"window": {"from": "2026-12-01", "to": "2026-12-07"}})
    assert load_params(p).data.window.from_ == dt.date(2026, 12, 1)
    for bad, msg in (({"last": 2, "to": "2026-12-01"}, "either last or from/to"), ({"lats": 2}, "lats"),
                     ({"from": "2026-12-02", "to": "2026-12-01"}, "after")):
        with pytest.raises(ConfigError, match=msg):
            load_params(write_params(tmp_path, data={"window": bad}))


def test_default_params_keep_single_file_behaviour(tmp_path):
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.window is None and params.generate.partitions == 0
    assert not is_partitioned(params.data.input, params.data.format)
    assert check_new_data(params).new  # single file: always new, the check does not apply
    synthetic = Params.model_validate({"generate": {"partitions": 3, "out": str(tmp_path / "gen")},
                                       "data": {"input": str(tmp_path / "gen")}})
    assert "not generated yet" in check_new_data(synthetic).reason  # the flow's first night


# ---------------------------------------------------------------------------------------------
# the generator


def test_partitioned_generator_drifts_and_appends_byte_identically(tmp_path):
    three = generate_partitions("criteo", ROWS, 7, tmp_path / "a", 3)
    generate_partitions("criteo", ROWS, 7, tmp_path / "b", 2)
    assert three.rows == 3 * ROWS and three.partitions == 3
    names = [partition_name("criteo", k) for k in range(3)]
    assert sorted(os.listdir(tmp_path / "a")) == names
    for n in names[:2]:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    proba = pl.read_parquet(f"{tmp_path / 'a'}.proba.parquet")
    assert proba.height == 3 * ROWS and proba["partition"].unique(maintain_order=True).to_list() == names
    oracle = json.loads(Path(f"{tmp_path / 'a'}.oracle.json").read_text())
    biases = [p["bias"] for p in oracle["per_partition"]]
    assert biases[0] < biases[1] < biases[2]  # the CTR drifts up, partition by partition
    mean_p = proba.group_by("partition", maintain_order=True).agg(pl.col("p").mean())["p"].to_list()
    assert mean_p[0] < mean_p[2]
    with pytest.raises(ValueError, match="movielens"):
        generate_partitions("movielens", ROWS, 7, tmp_path / "m", 2)


# ---------------------------------------------------------------------------------------------
# "nothing new"


def test_nothing_new_compares_partitions_and_params_with_the_last_success(tmp_path):
    parts = tmp_path / "parts"
    _touch(parts, "day_0", "day_1", "day_2")
    params = _params(tmp_path, data={"window": {"last": 2}})
    first = check_new_data(params)
    assert first.new and "no successful run" in first.reason and first.added == ("day_1", "day_2")
    record_successful_run(params, finished_at=dt.datetime(2026, 12, 5, 3, 0, tzinfo=dt.UTC))
    again = check_new_data(params)
    assert not again.new and "nothing new" in again.reason and "2026-12-05T03:00:00" in again.reason
    assert "day_2" in again.reason
    assert new_data_stage(params).details["skip"]
    run_anyway = params.model_copy(update={"run": params.run.model_copy(update={"if_nothing_new": "run"})})
    assert not new_data_stage(run_anyway).details["skip"]
    _touch(parts, "day_3")  # a new night
    new = check_new_data(params)
    assert new.new and new.added == ("day_3",) and "day_1" in new.reason  # day_1 left the window
    (parts / "day_3").unlink()
    (parts / "day_2").write_text("rewritten\n")
    changed = check_new_data(params)
    assert changed.new and changed.changed == ("day_2",)
    (parts / "day_2").write_text("day_2\n")
    other = params.model_copy(update={"train": params.train.model_copy(update={"lr": 0.01})})
    assert check_new_data(other).new and "parameters changed" in check_new_data(other).reason
    assert not check_new_data(params).new


def test_check_new_cli_exit_status(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli import main

    parts = tmp_path / "parts"
    _touch(parts, "day_0", "day_1")
    params_file = write_params(tmp_path, data={"input": str(parts)},
                               run={"state_file": str(tmp_path / "state.json"),
                                    "lock_file": str(tmp_path / "run.lock")})
    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(main, ["--params", str(params_file), "check-new"])
    assert first.exit_code == 0, first.output
    assert "new data: no successful run" in first.output
    record_successful_run(load_params(params_file))
    # the installed entry point, on this checkout's code
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    second = subprocess.run([str(VENV_BIN / "ctrflow"), "--params", str(params_file), "check-new"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert second.returncode == 4, second.stderr
    assert "nothing new since the last successful run" in second.stdout


# ---------------------------------------------------------------------------------------------
# the gate per partition, split: partition, two consecutive nights


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> Path:
    """Four drifting Criteo partitions (night 1 sees day_0..day_2, night 2 also day_3)."""
    root = tmp_path_factory.mktemp("nights")
    generate_partitions("criteo", ROWS, 11, root / "four", 4)
    return root / "four"


def test_second_of_two_nights_trains_on_the_new_window(tmp_path, nights, monkeypatch):
    import components.data.validate as gate

    calls: list[str] = []
    real = gate.validate_source
    monkeypatch.setattr(gate, "validate_source",
                        lambda table, *a, **k: calls.append(Path(table.main_file).name) or real(table, *a, **k))
    parts = tmp_path / "parts"
    parts.mkdir()
    for k in range(3):
        shutil.copy(nights / f"day_{k}", parts)
    params = _params(tmp_path, data={"window": {"last": 3}})

    validate_stage(params)
    first = preprocess_stage(params)
    assert calls == ["day_0", "day_1", "day_2"]
    roles = {p["name"]: p["role"] for p in first.details["partitions"]}
    assert roles == {"day_0": "train", "day_1": "train", "day_2": "valid+test"}
    assert first.details["splits"]["train"]["rows"] == 2 * ROWS
    assert first.details["splits"]["valid"]["rows"] == first.details["splits"]["test"]["rows"] == ROWS // 2
    record_successful_run(params)
    assert not check_new_data(params).new

    shutil.copy(nights / "day_3", parts)  # the next night's partition arrives
    assert check_new_data(params).added == ("day_3",)
    calls.clear()
    report = validate_stage(params).details
    assert calls == ["day_3"]  # day_1 and day_2 passed before with the same bytes: not re-validated
    assert [e["cached"] for e in report["partitions"]] == [True, True, False]
    second = preprocess_stage(params)
    fmap = json.loads((tmp_path / "processed" / "feature_map.json").read_text())
    assert [(p["name"], p["role"]) for p in fmap["partitions"]] == [
        ("day_1", "train"), ("day_2", "train"), ("day_3", "valid+test")]
    assert fmap["window"] == {"last": 3}
    assert all(len(p["sha256"]) == 64 and p["rows"] == ROWS for p in fmap["partitions"])
    assert second.details["splits"]["train"]["rows"] == 2 * ROWS
    # valid = the first half of day_3 by line, test = the second half
    valid = pl.read_parquet(tmp_path / "processed" / "valid.parquet")
    assert valid.height == ROWS // 2
    labels = pl.read_csv(nights / "day_3", separator="\t", has_header=False, columns=[0])[:, 0]
    assert valid["label"].cast(pl.Int64).to_list() == labels[: ROWS // 2].to_list()
    # the oracle (true probabilities of the partitioned synthetic log) is scored on the same rows
    from components.evaluate.oracle import oracle_on_split

    oracle = oracle_on_split(nights, tmp_path / "processed", "test")
    assert oracle["rows"] == ROWS // 2 and 0.5 < oracle["auc"] < 1.0


def test_bad_new_partition_fails_naming_it_and_keeps_earlier_outputs(tmp_path, nights):
    parts = tmp_path / "parts"
    parts.mkdir()
    for k in range(2):
        shutil.copy(nights / f"day_{k}", parts)
    params = _params(tmp_path)
    validate_stage(params)
    preprocess_stage(params)
    before = {p: p.read_bytes() for d in ("validation", "processed") for p in (tmp_path / d).rglob("*")
              if p.is_file()}
    lines = (nights / "day_2").read_text().splitlines(keepends=True)
    lines[4] = "2" + lines[4][1:]  # line 5: label 2
    (parts / "day_2").write_text("".join(lines))

    with pytest.raises(ValidationFailed) as err:
        validate_stage(params)
    msg = str(err.value)
    assert f"{parts / 'day_2'}, line 5, column label: rule 'label_in_set'" in msg
    assert "day_0" not in msg and "day_1" not in msg
    failed = json.loads((tmp_path / "validation.failed.json").read_text())
    assert failed["failed_partitions"] == ["day_2"]
    assert failed["failures"][0]["file"] == str(parts / "day_2") and failed["failures"][0]["line"] == 5
    with pytest.raises(RuntimeError, match="day_2"):  # the gate did not pass for the new window
        preprocess_stage(params)
    after = {p: p.read_bytes() for d in ("validation", "processed") for p in (tmp_path / d).rglob("*")
             if p.is_file()}
    assert after == before
    assert not list((tmp_path / "vcache").glob("*failed*"))


def test_random_split_over_partitions_and_bad_split_settings(tmp_path, nights):
    parts = tmp_path / "parts"
    parts.mkdir()
    for k in range(2):
        shutil.copy(nights / f"day_{k}", parts)
    params = _params(tmp_path, preprocess={"split": "random"})
    validate_stage(params)
    res = preprocess_stage(params)
    assert sum(s["rows"] for s in res.details["splits"].values()) == 2 * ROWS
    assert all(p["role"] == "train+valid+test" for p in res.details["partitions"])
    too_few = _params(tmp_path, preprocess={"holdout_partitions": 2})
    with pytest.raises(ValueError, match="holdout_partitions"):
        preprocess_stage(too_few)
    single = _params(tmp_path, data={"input": str(parts / "day_0")})
    with pytest.raises(ValueError, match="one file"):
        preprocess_stage(single, require_gate=False)


def test_partitions_validated_in_parallel_workers_give_the_same_verdicts(tmp_path, nights):
    """validate.workers: 2 judges the partitions in two processes: the same checks and summary as one
    process, and a bad partition is still named with its file, line, column and rule."""
    parts = tmp_path / "parts"
    parts.mkdir()
    for k in range(2):
        shutil.copy(nights / f"day_{k}", parts)
    data = {"input": str(parts)}
    serial = validate_stage(_params(tmp_path / "one", data=data)).details
    parallel = validate_stage(_params(tmp_path / "two", data=data, validate={"workers": 2})).details
    assert {k: v for k, v in parallel.items() if k != "params"} == {
        k: v for k, v in serial.items() if k != "params"}
    assert [p["cached"] for p in parallel["partitions"]] == [False, False]
    assert parallel["rows"] == 2 * ROWS and parallel["success"]

    lines = (parts / "day_1").read_text().splitlines(keepends=True)
    lines[6] = "2" + lines[6][1:]  # line 7: label 2
    (parts / "day_1").write_text("".join(lines))
    with pytest.raises(ValidationFailed) as err:
        validate_stage(_params(tmp_path / "three", data=data, validate={"workers": 2}))
    assert f"{parts / 'day_1'}, line 7, column label: rule 'label_in_set'" in str(err.value)


def test_the_parent_of_parallel_workers_never_imports_great_expectations(tmp_path, nights):
    """With validate.workers > 1 the workers judge; the parent only hashes, merges and publishes, so
    it does not pay GX's import (≈ 4 s of CPU before the workers even start)."""
    import subprocess
    import sys

    parts = tmp_path / "parts"
    parts.mkdir()
    for k in range(2):
        shutil.copy(nights / f"day_{k}", parts)
    params = _params(tmp_path, validate={"workers": 2})
    (tmp_path / "params.json").write_text(params.model_dump_json(by_alias=True))
    script = (
        "import json, sys\n"
        "from components.config import Params\n"
        "from components.stages import validate_stage\n"
        f"p = Params.model_validate(json.loads(open({str(tmp_path / 'params.json')!r}).read()))\n"
        "report = validate_stage(p).details\n"
        "print(json.dumps([report['rows'], report['success'], 'great_expectations' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [2 * ROWS, True, False]
    assert (tmp_path / "validation" / "validation.json").is_file()


def test_partition_hashes_stored_by_stat_and_recomputed_when_bytes_change(tmp_path, monkeypatch):
    """hash_partitions: the sha256s are computed once and stored by path/size/mtime/inode; a later
    process (a cleared memo) takes them from the store without reading the files, and a rewritten
    file is hashed again."""
    import hashlib

    from components.data import partitions

    files = [tmp_path / "day_0", tmp_path / "day_1"]
    for i, f in enumerate(files):
        f.write_bytes(f"rows of day {i}\n".encode() * 1000)
    store = tmp_path / "cache"
    monkeypatch.setattr(partitions, "_SHA_MEMO", {})
    partitions.hash_partitions(files, store)
    expected = {str(f.resolve()): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert {k[0]: v for k, v in partitions._SHA_MEMO.items()} == expected
    assert json.loads((store / partitions.HASH_STORE_FILE).read_text()).keys() == expected.keys()

    hashed: list[str] = []
    real = partitions.file_sha256

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(partitions, "file_sha256", counting)
    monkeypatch.setattr(partitions, "_SHA_MEMO", {})  # a new process
    partitions.hash_partitions(files, store)
    assert hashed == [] and {k[0]: v for k, v in partitions._SHA_MEMO.items()} == expected

    files[1].write_bytes(b"other bytes\n" * 999)
    os.utime(files[1], ns=(1, 1))  # a new mtime, whatever the clock's resolution
    monkeypatch.setattr(partitions, "_SHA_MEMO", {})
    partitions.hash_partitions(files, store)
    assert hashed == ["day_1"]
    assert partitions._SHA_MEMO[partitions._stat_key(files[1])] == hashlib.sha256(files[1].read_bytes()).hexdigest()
