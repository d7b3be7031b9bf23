"""The nightly deployment with real parts (README "Run it every night"): a real Prefect server on a
free loopback port, the project's prefect.yaml deployed with `prefect deploy`, a run triggered through
the REST API and executed by a process worker on a tiny project copy, read back through the API
(flow-run state, task runs, artifacts, the cron schedule), the outputs pushed to the DVC remote and
pulled back; then a headless Chromium opens the flow-run page and finds the summary's headline table.

One server session for the module (~3 min on 2 cores). Screenshots go to test-artifacts/ in the repo
root (git-ignored; CI keeps them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT, SMALL_RUN, VENV_BIN, write_params
from tests.test_pipeline import _copy_project

# the module's server session (set up in the first test) takes 2-4 min on 2 cores, more under load
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

POOL, FLOW, DEPLOYMENT = "ctrflow-local", "ctrflow-pipeline", "nightly"
# task-run names without Prefect's suffix; "distill" is the per-student task (task_run_name distill-<student>)
STAGE_TASKS = ["check-new-data", "validate", "preprocess", "train-teacher", "distill",
               "distill-summary", "evaluate", "profile", "report", "promote", "publish-summary", "gc",
               "dvc-commit", "dvc-push", "record-success"]
SCREENSHOTS = REPO_ROOT / "test-artifacts"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# .ci/run sets this: there a missing browser is a failure, elsewhere the browser test skips
BROWSER_REQUIRED = os.environ.get("CTRFLOW_BROWSER_TEST") == "required"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    # own process group, so stopping it also stops what it started (uvicorn, the flow-run process)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


class _RetryingClient(httpx.Client):
    """An API client that retries a 503, as Prefect's own client does: the server answers 503 while
    its SQLite database is locked (right after `prefect deploy` the scheduler writes the cron's runs;
    one CI run's create_flow_run met it on a loaded 2-core box)."""

    TRIES = 10

    def request(self, method, url, **kwargs):
        for attempt in range(self.TRIES):
            response = super().request(method, url, **kwargs)
            if response.status_code != 503 or attempt == self.TRIES - 1:
                return response
            time.sleep(1.0 + 0.5 * attempt)
        return response


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    """Server + pool + `prefect deploy` + one API-triggered run executed by a worker; yields what the
    tests read back. Server and worker are stopped at the end whatever happened."""
    t0 = time.monotonic()
    tmp = tmp_path_factory.mktemp("deploy")
    repo = tmp / "repo"
    repo.mkdir()
    _copy_project(repo)
    # a tiny partitioned log, as a nightly deployment reads one: 3 days of 1,000 rows arrived in
    # data/incoming; train on day_0 and day_1, validate and test on day_2 (preprocess.split: partition)
    write_params(repo, **{**SMALL_RUN, "generate": {"rows": 1000},
                          "data": {"input": "data/incoming", "window": {"last": 3}},
                          "preprocess": {**SMALL_RUN["preprocess"], "split": "partition"},
                          "distill": {**SMALL_RUN["distill"], "students": ["dagfm"], "baselines": []},
                          "tune": {"n_trials": 1}})
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": api, "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "False", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PYTHONPATH": str(repo),  # the copy's code (a copy of this checkout), not the editable install's
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        "PWD": str(repo),  # prefect.yaml's pull step: the checkout that deploys is the one the worker runs
    })
    prefect = str(VENV_BIN / "prefect")

    def sh(*cmd, cwd=repo, timeout=180):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    sh(str(VENV_BIN / "ctrflow"), "generate", "--partitions", "3", "data/incoming")  # the partitions arrive
    sh("git", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project")
    server = worker = None
    try:
        server = _start([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], tmp, env,
                        tmp / "server.log")
        http = _RetryingClient(base_url=api, timeout=30)
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"server exited:\n{_tail(tmp / 'server.log')}"
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no /api/health in 180 s:\n{_tail(tmp / 'server.log')}"
            time.sleep(1)
        t_server = time.monotonic() - t0

        # what README "Run it every night" says, in the repo root of the copy
        sh(prefect, "work-pool", "create", POOL, "--type", "process")
        sh(prefect, "--no-prompt", "deploy", "--all")
        deployment = http.get(f"/deployments/name/{FLOW}/{DEPLOYMENT}").raise_for_status().json()

        # trigger through the API, then a worker (started elsewhere: the pull step must chdir) runs it
        flow_run = http.post(f"/deployments/{deployment['id']}/create_flow_run", json={}).raise_for_status().json()
        worker = _start([prefect, "worker", "start", "--pool", POOL], tmp, env, tmp / "worker.log")
        deadline = time.monotonic() + 480
        while (run := http.get(f"/flow_runs/{flow_run['id']}").raise_for_status().json())["state_type"] not in FINAL:
            assert worker.poll() is None, f"worker exited:\n{_tail(tmp / 'worker.log')}"
            assert time.monotonic() < deadline, f"run not finished in 480 s:\n{_tail(tmp / 'worker.log')}"
            time.sleep(2)
        t_run = time.monotonic() - t0
        _stop(worker)
        yield SimpleNamespace(repo=repo, tmp=tmp, api=api, ui=f"http://127.0.0.1:{port}", http=http, env=env,
                              deployment=deployment, flow_run=run, worker_log=tmp / "worker.log",
                              timings={"server up": t_server, "run final": t_run})
        print(f"\ndeploy test timings (s since start): server up {t_server:.0f}, run final {t_run:.0f}, "
              f"module done {time.monotonic() - t0:.0f}")
    finally:
        _stop(worker)
        _stop(server)


def test_prefect_yaml_deploys_the_nightly_cron_deployment(nightly):
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"][0]
    d = nightly.deployment
    assert d["name"] == DEPLOYMENT and d["work_pool_name"] == POOL and d["entrypoint"] == "flows/pipeline.py:pipeline"
    [schedule] = d["schedules"]
    assert schedule["schedule"]["cron"] == spec["schedules"][0]["cron"] == "0 3 * * *"
    assert schedule["schedule"]["timezone"] == "UTC" and schedule["active"] is True
    assert d["parameters"] == {"params_path": "params.yaml", "dvc_commit": True, "dvc_push": True}
    assert {"ctrflow", "nightly"} <= set(d["tags"])
    assert d["global_concurrency_limit"]["limit"] == 1
    assert d["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert d["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(nightly.repo)}}]
    # the scheduler turns the cron into runs at 03:00 UTC (a broken scheduler never does: toolchain.md)
    deadline = time.monotonic() + 120
    while True:
        scheduled = nightly.http.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [d["id"]]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        }).raise_for_status().json()
        if scheduled or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert scheduled, "the server's scheduler created no run for the cron schedule"
    assert all(r["expected_start_time"][11:19] == "03:00:00" for r in scheduled), [
        r["expected_start_time"] for r in scheduled]


def _tune_worker_spec() -> dict:
    [spec] = [d for d in yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
              if d["name"] == "tune-worker"]
    return spec


def test_prefect_yaml_tune_worker_deployment_runs_n_at_once_on_the_tune_queue():
    """No server needed: the entry's flow loads from its entrypoint, takes its parameters, and
    nothing limits how many runs of it go at once (docs/scale.md "Distributed tuning workers")."""
    from prefect.flows import load_flow_from_entrypoint

    spec = _tune_worker_spec()
    flow = load_flow_from_entrypoint(str(REPO_ROOT / spec["entrypoint"]))
    assert flow.name == "ctrflow-tune-worker"
    assert set(spec["parameters"]) <= set(flow.parameters.properties) == {"student", "params_path", "overrides"}
    assert spec["parameters"] == {"student": None, "params_path": "params.yaml"}
    assert spec["concurrency_limit"] is None and "schedules" not in spec
    assert spec["work_pool"] == {"name": POOL, "work_queue_name": "tune", "job_variables": {}}


def test_the_tune_worker_deployment_is_deployed_without_a_concurrency_limit(nightly):
    d = nightly.http.get("/deployments/name/ctrflow-tune-worker/tune-worker").raise_for_status().json()
    assert d["entrypoint"] == "flows/tune_worker.py:tune_worker_flow"
    assert d["work_pool_name"] == POOL and d["work_queue_name"] == "tune"
    assert d["global_concurrency_limit"] is None and d["schedules"] == []
    assert d["parameters"] == {"student": None, "params_path": "params.yaml"}
    assert {"ctrflow", "tuning"} <= set(d["tags"])


def test_the_triggered_run_completes_with_every_stage_and_its_artifacts(nightly):
    run = nightly.flow_run
    assert run["state_type"] == "COMPLETED", f"{run['state']}\n{_tail(nightly.worker_log)}"
    assert run["deployment_id"] == nightly.deployment["id"]
    assert {"ctrflow", "nightly", "data:criteo", "teacher:dcnv2"} <= set(run["tags"])  # flows/naming.py
    # flows/naming.py: the name says what ran (teacher, data format and input, start time)
    assert re.fullmatch(r"dcnv2 on criteo:incoming\[day_0\.\.day_2\] \d{4}-\d\d-\d\d \d\d:\d\d UTC",
                        run["name"]), run["name"]
    http = nightly.http
    task_runs = http.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}}).json()
    by_name = {t["name"].rsplit("-", 1)[0]: t for t in task_runs}
    assert set(STAGE_TASKS) <= set(by_name), sorted(by_name)
    assert all(by_name[n]["state_type"] == "COMPLETED" for n in STAGE_TASKS)

    artifacts = http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    by_key = {a["key"]: a for a in artifacts if a["key"]}
    summary = by_key["ctrflow-summary"]
    assert summary["type"] == "markdown" and "| teacher | teacher |" in summary["data"]
    evaluated = json.loads((nightly.repo / "metrics/evaluation.json").read_text())["models"]
    assert f"{evaluated['teacher']['metrics']['auc']:.4f}" in summary["data"]
    assert by_key["ctrflow-models"]["type"] == "table"
    assert str(nightly.repo / "reports/report.html") in by_key["ctrflow-report"]["data"]
    assert any(a["type"] == "progress" and a["key"] == "train-teacher-dcnv2-progress" for a in artifacts)


def test_the_scheduled_run_commits_and_pushes_to_the_dvc_remote_and_pull_restores_it(nightly):
    assert nightly.flow_run["state_type"] == "COMPLETED"
    repo, env = nightly.repo, nightly.env

    def dvc(*args):
        return subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert {"validate", "train_teacher", "report", "promote"} <= set(lock["stages"])
    teacher_md5 = next(o["md5"] for o in lock["stages"]["train_teacher"]["outs"] if o["path"] == "models/teacher")
    remote = repo / ".dvcstore"  # .dvc/config's default remote, relative to .dvc/
    assert (remote / "files" / "md5" / teacher_md5[:2] / teacher_md5[2:]).is_file()
    status = dvc("status", "--cloud")
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
    # restore: a version's dvc.lock from git + `dvc pull` (cache and outputs gone first)
    subprocess.run(["git", "add", "dvc.lock"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "nightly"], cwd=repo,
                   check=True)
    weights = (repo / "models/teacher/model.safetensors").read_bytes()
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "models")
    subprocess.run(["git", "checkout", "HEAD", "--", "dvc.lock"], cwd=repo, check=True)
    pulled = dvc("pull", *lock["stages"])  # the stages the run recorded (README "Run it every night")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert (repo / "models/teacher/model.safetensors").read_bytes() == weights


@pytest.fixture(scope="module")
def browser():
    """(chromium, chromedriver) paths; skips (fails under .ci/run) when they or selenium are missing.
    Module-scoped and requested before ``nightly``, so a missing browser skips before the server starts."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401  (the dev extra)
    except ImportError:
        selenium = None
    missing = [hint for hint, ok in [
        ("chromium + chromedriver (apt-get install -y chromium chromium-driver; .ci/run does it)",
         chromium and chromedriver),
        ("selenium (the [dev] extra: pip install -c constraints.txt -e '.[dev]')", selenium)] if not ok]
    if missing:
        message = f"the browser test needs {' and '.join(missing)}"
        if BROWSER_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return chromium, chromedriver


def test_headless_chromium_finds_the_headline_table_on_the_flow_run_page(browser, nightly, tmp_path):
    chromium, chromedriver = browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1100"]:
        options.add_argument(arg)
    SCREENSHOTS.mkdir(exist_ok=True)
    evaluated = json.loads((nightly.repo / "metrics/evaluation.json").read_text())["models"]
    teacher_auc = f"{evaluated['teacher']['metrics']['auc']:.4f}"
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        wait = WebDriverWait(driver, 90)
        driver.get(f"{nightly.ui}/runs/flow-run/{nightly.flow_run['id']}")
        # the Artifacts tab shows once the UI has loaded the (finished) run from the API
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "li.p-tab#artifacts"))).click()
        card = wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//*[contains(@class,'artifact-card__title') and normalize-space()='ctrflow-summary']")))
        driver.save_screenshot(str(SCREENSHOTS / "prefect-flow-run-artifacts.png"))
        card.click()  # the artifact's page renders its markdown: the headline table
        wait.until(lambda d: any("teacher" in t.text for t in d.find_elements(By.TAG_NAME, "table")))
        table = next(t for t in driver.find_elements(By.TAG_NAME, "table") if "teacher" in t.text)
        rows = [r.text for r in table.find_elements(By.TAG_NAME, "tr")]
        driver.save_screenshot(str(SCREENSHOTS / "prefect-flow-run.png"))
    finally:
        driver.quit()
    assert "test AUC" in rows[0]
    assert any(r.startswith("teacher teacher") and teacher_auc in r for r in rows), rows
    assert (SCREENSHOTS / "prefect-flow-run.png").stat().st_size > 10_000
