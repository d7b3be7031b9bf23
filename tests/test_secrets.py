"""Secrets and exposure (issue 14 §6): a password-bearing study URL comes from the environment and
is written nowhere by a run; the servers the project starts listen on 127.0.0.1 only."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import prefect.settings
import yaml

from tests.conftest import PG_PASSWORD, REPO_ROOT, SMALL_RUN, write_params

RUN = {
    "generate": {"rows": 2000},
    "preprocess": {"min_count": 2},
    # the teacher is tuned too (one trial), so its study also lives in the PostgreSQL storage
    "train": {"max_epochs": 1, "batch_size": 512, "model_params": {"hidden_units": [16]},
              "gate": {"on_fail": "warn", "baseline_max_epochs": 1},
              "tune": {"n_trials": 1, "search_space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2,
                                                              "log": True}}}},
    "distill": {"students": ["dagfm"], "baselines": [],
                "dagfm": {"distill_max_epochs": 1, "finetune_max_epochs": 1, "batch_size": 512}},
    "tune": {"n_trials": 1},
    "evaluate": SMALL_RUN["evaluate"],
}


def _files(root: Path, since: float = 0.0):
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_mtime >= since:
            yield p


def test_storage_password_is_written_nowhere(postgres_url, tmp_path, monkeypatch, capfd):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline

    assert PG_PASSWORD in postgres_url
    secrets = {PG_PASSWORD.encode(), quote(PG_PASSWORD, safe="").encode()}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    monkeypatch.setenv("CTRFLOW_OPTUNA_STORAGE", postgres_url)  # tune.storage_env
    params = write_params(run_dir, **RUN)
    started = time.time() - 1
    with prefect_test_harness(server_startup_timeout=120):
        db_url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        summaries = pipeline(params_path=str(params), dvc_commit=False)
        db_dir = Path(db_url.split(":///", 1)[1]).parent
        scanned = [*_files(db_dir)]  # the flow's run records and logs (log_prints=True)
    assert any(line.startswith("report") for line in summaries), summaries
    out = capfd.readouterr()

    # the run really used the PostgreSQL study storage (shown masked)
    port = re.search(r"@127\.0\.0\.1:(\d+)/", postgres_url).group(1)
    masked = f"postgresql+psycopg://ctrflow:***@127.0.0.1:{port}/optuna_test"
    assert json.loads((run_dir / "metrics/teacher.json").read_text())["tuning"]["storage"] == masked
    assert masked in out.out + out.err
    assert not (run_dir / "optuna" / "ctrflow.db").exists()

    scanned += [*_files(run_dir)]  # params.yaml, data/, models/, metrics/, reports/, optuna/trials/
    scanned += [*_files(Path(prefect.settings.PREFECT_HOME.value()), since=started)]
    assert any(p.name == "report.html" for p in scanned) and any(p.suffix == ".db" for p in scanned)
    leaks = [str(p) for p in scanned if any(s in p.read_bytes() for s in secrets)]
    leaks += [name for name, text in (("stdout", out.out), ("stderr", out.err))
              if any(s.decode() in text for s in secrets)]
    assert leaks == []
    # params.yaml holds the default SQLite URL; the password-bearing one came from the environment
    assert yaml.safe_load((run_dir / "params.yaml").read_text())["tune"]["storage"] == "sqlite:///optuna/ctrflow.db"


def test_servers_the_project_starts_listen_on_localhost_only():
    # `make server`: the Prefect server + UI
    make = (REPO_ROOT / "Makefile").read_text()
    starts = [line for line in make.splitlines() if "server start" in line]
    assert starts and all("--host 127.0.0.1" in line for line in starts)
    # the PostgreSQL server the tests start (tests/conftest.py `postgres_url`)
    conftest = (REPO_ROOT / "tests/conftest.py").read_text()
    assert "listen_addresses=127.0.0.1" in conftest and "--auth-host=scram-sha-256" in conftest
    # nothing else in the project starts a server on another address
    sources = [*REPO_ROOT.glob("*.py"), *(REPO_ROOT / "components").rglob("*.py"),
               *(REPO_ROOT / "flows").rglob("*.py"), *(REPO_ROOT / "benchmarks").glob("*.py"),
               REPO_ROOT / "Makefile", *(REPO_ROOT / ".ci").glob("*")]
    for path in sources:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "0.0.0.0" not in text and "listen_addresses='*'" not in text, path
            assert not re.search(r"--host\s+(?!127\.0\.0\.1)\S+", text), path
