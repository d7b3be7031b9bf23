"""flows/naming.py: flow-run names that say what ran (the deployed run's name is in test_deploy.py)."""

from __future__ import annotations

import re

from flows.naming import run_name
from tests.conftest import write_params


def test_the_name_has_the_teacher_the_data_and_the_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, train={"model": "deepfm"}, data={"format": "avazu", "input": "logs/day1.csv.gz"},
                 generate={"format": "avazu"})
    assert re.fullmatch(r"deepfm on avazu:day1\.csv\.gz \d{4}-\d\d-\d\d \d\d:\d\d UTC", run_name()), run_name()


def test_bad_params_still_get_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train: {max_epochs: -1}\n")
    assert re.fullmatch(r"ctrflow \d{4}-\d\d-\d\d \d\d:\d\d UTC", run_name())


def test_a_partitioned_input_names_its_training_window(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parts = tmp_path / "parts"
    parts.mkdir()
    for day in range(5):
        (parts / f"day_{day}").write_text("0\t1\n")
    write_params(tmp_path, data={"format": "criteo", "input": "parts", "window": {"last": 3}})
    assert re.fullmatch(r"dcnv2 on criteo:parts\[day_2\.\.day_4\] \d{4}-\d\d-\d\d \d\d:\d\d UTC", run_name()), run_name()
