"""Shared fixtures: repo paths, the real-data folder (skipped when absent), small params files."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from flows import _env  # noqa: F401  (offline-safe env defaults for Prefect/GX/DVC)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
VENV_BIN = Path(os.sys.executable).parent


@pytest.fixture
def shared_data() -> Path:
    """The real public samples beside the checkout; tests using them skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (they are never copied into the repo)")
    return SHARED_DATA


def write_params(dir_: Path, **sections) -> Path:
    """Write a params.yaml into dir_ from the repo's own, with sections updated key by key."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    path = dir_ / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# A pipeline small enough for tests: 4,000 rows, tiny nets, 1-2 epochs, 2 Optuna trials.
SMALL_RUN = {
    "generate": {"rows": 4000},
    "preprocess": {"min_count": 2},
    # 3,200 training rows cannot show a teacher beating LR: the gate only warns here (tests/test_gate.py
    # and test_pipeline.py's gate test hold it to `fail`)
    "train": {"max_epochs": 2, "batch_size": 1024, "model_params": {"hidden_units": [32, 32]},
              "gate": {"on_fail": "warn"}},
    "distill": {
        "students": ["dagfm", "fsdnet"],
        "dagfm": {"distill_max_epochs": 2, "finetune_max_epochs": 1, "batch_size": 1024},
        "fsdnet": {"max_epochs": 1, "hidden_dim": 32, "batch_size": 1024},
    },
    "tune": {"n_trials": 2},
    "evaluate": {"latency_runs": 20, "latency_warmup": 2, "throughput_runs": 2, "throughput_batch_size": 512},
}


@pytest.fixture
def small_params(tmp_path, monkeypatch) -> Path:
    """A params.yaml in a temp working dir for a 4,000-row synthetic Criteo run."""
    monkeypatch.chdir(tmp_path)
    return write_params(tmp_path, **SMALL_RUN)


# ---- a throwaway PostgreSQL server (Optuna storage tests) ----------------------------------------

def _pg_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda d: d.parent.name)
    return dirs[-1] if dirs and (dirs[-1] / "pg_ctl").exists() else None


def _as_server_user(root: Path) -> list[str]:
    """Command prefix running PostgreSQL as an unprivileged user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        os.chown(root, user.pw_uid, user.pw_gid)
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                    "--clear-groups", "--"]
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"]
    pytest.fail("running as root, but found no postgres/nobody user or no setpriv/runuser "
                "to start PostgreSQL unprivileged")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The password of the test server's `ctrflow` role: TCP logins need it (scram-sha-256), so every
# test using `postgres_url` really carries a password through SQLAlchemy/psycopg; the secrets test
# (tests/test_secrets.py) greps a run's outputs for it.
PG_PASSWORD = "pg-Secr3t-7f3a9c"


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server listening on 127.0.0.1 only (data and socket in a temp dir), one
    database, password authentication over TCP; yields its SQLAlchemy URL (with the password) and
    always stops the server."""
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (pg_ctl, initdb) not found on PATH or under "
                    "/usr/lib/postgresql/*/bin")
    try:
        import psycopg
    except ImportError:
        pytest.fail("psycopg is not installed: pip install 'psycopg[binary]' (a ctrflow dependency)")
    root = Path(tempfile.mkdtemp(prefix="ctrflow-pg-"))  # /tmp, reachable by the server user
    prefix: list[str] = []
    data, logfile, port = root / "data", root / "server.log", _free_port()

    def run(*args: str) -> None:
        out = subprocess.run([*prefix, *args], cwd=root, capture_output=True, text=True, timeout=60)
        if out.returncode:
            log = logfile.read_text() if logfile.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{out.stdout}{out.stderr}{log}")

    try:
        prefix = _as_server_user(root)
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "ctrflow", "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E", "UTF8", "--no-locale", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "30",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        # the Unix socket (trust) sets the password; TCP then requires it
        with psycopg.connect(f"host={root} port={port} user=ctrflow dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"ALTER ROLE ctrflow PASSWORD '{PG_PASSWORD}'")
            conn.execute("CREATE DATABASE optuna_test")
        yield f"postgresql+psycopg://ctrflow:{PG_PASSWORD}@127.0.0.1:{port}/optuna_test"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], cwd=root, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def prefect_server():
    """A temporary Prefect server (and database) for the flows run by one test module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
