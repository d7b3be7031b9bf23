"""The two doors into the same stages: the Prefect flow and `dvc repro`, on a small synthetic log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, SMALL_RUN, VENV_BIN, write_params


def test_prefect_flow_runs_generate_validate_preprocess(small_params: Path, prefect_server):
    from components.registry.promote import summary_line
    from flows.pipeline import pipeline

    summaries = pipeline(params_path=str(small_params), dvc_commit=False)
    assert [s.split()[0] for s in summaries[:-2]] == ["generated", "validation", "preprocessed", "trained",
                                                         "distilled", "evaluated", "profiled", "report"]
    promotion = json.loads(Path("metrics/promotion.json").read_text())
    assert summaries[-2] == summary_line(promotion)  # promoted, or kept (none) when the warned gate failed
    assert summaries[-1].startswith("gc: ")  # the retention policy ran after the run
    students = json.loads(Path("metrics/students.json").read_text())
    assert set(students) == {"dagfm", "fsdnet", "baseline_dagfm"}
    html = Path("reports/report.html").read_text()
    assert "data:image/png;base64" in html and "dagfm" in html
    profile = json.loads(Path("metrics/profile.json").read_text())
    assert profile["models"]["teacher"]["flops_per_sample"] > profile["models"]["dagfm"]["flops_per_sample"] > 0
    teacher = json.loads(Path("metrics/teacher.json").read_text())
    assert teacher["model"] == "dcnv2" and teacher["epochs"] == 2 and 0 < teacher["test"]["auc"] < 1
    assert Path("models/teacher/model.safetensors").exists()
    fmap = json.loads(Path("data/processed/feature_map.json").read_text())
    assert sum(s["rows"] for s in fmap["splits"].values()) == 4000
    report = json.loads(Path("data/validation/validation.json").read_text())
    assert report["success"] is True
    # What the Prefect UI shows: summary (headline table), model table, report link, progress bars
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    by_key = {a.key: a for a in artifacts if a.key}
    summary = by_key["ctrflow-summary"]
    assert summary.type == "markdown" and "| teacher | teacher |" in summary.data
    assert f"**Promotion: {promotion['decision']}.** {promotion['reason']}" in summary.data
    evaluated = json.loads(Path("metrics/evaluation.json").read_text())["models"]
    assert all(f"| {m} |" in summary.data and f"{evaluated[m]['metrics']['auc']:.4f}" in summary.data
               for m in evaluated)
    table = by_key["ctrflow-models"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {r["name"] for r in rows} >= {"teacher", "dagfm", "fsdnet", "baseline_dagfm"}
    assert str(Path("reports/report.html").resolve()) in by_key["ctrflow-report"].data
    progress = [a for a in artifacts if a.type == "progress"]
    assert any(a.key == "train-teacher-dcnv2-progress" and a.data == 100.0 for a in progress), [
        (a.key, a.data) for a in progress]
    assert any(a.key and a.key.startswith("distill-dagfm-") for a in progress)  # one task per student


def test_prefect_flow_stops_at_a_failed_gate_and_keeps_earlier_outputs(small_params: Path, prefect_server):
    from flows.pipeline import pipeline

    pipeline(params_path=str(small_params), dvc_commit=False)
    before = {p: p.read_bytes() for p in Path("data").rglob("*") if p.is_file() and "raw" not in p.parts}
    # Point the pipeline at a malformed log: the gate must fail before preprocess writes anything.
    bad = Path("bad.txt")
    bad.write_text("0\t1\t2\n")
    bad_params = write_params(Path.cwd(), data={"input": "bad.txt"}, generate={"rows": 4000})
    with pytest.raises(Exception, match="bad.txt"):
        pipeline(params_path=str(bad_params), dvc_commit=False)
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_prefect_flow_stops_before_distillation_when_the_teacher_fails_the_baseline_gate(
        small_params: Path, prefect_server):
    from flows.pipeline import pipeline

    # a crafted weak teacher (its weights barely move) under on_fail: fail
    weak = write_params(Path.cwd(), **{**SMALL_RUN, "train": {**SMALL_RUN["train"], "lr": 1e-9, "max_epochs": 1,
                                                               "gate": {"on_fail": "fail"}}})
    with pytest.raises(Exception, match=r"baseline gate FAILED .*teacher valid AUC 0\.\d{4} vs LR 0\.\d{4}"):
        pipeline(params_path=str(weak), dvc_commit=False)
    gate = json.loads(Path("metrics/teacher.json").read_text())["gate"]
    assert gate["passed"] is False and gate["beats_lr"] is False
    assert not Path("metrics/students.json").exists()  # distillation never ran


def _copy_project(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = REPO_ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "tests/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


# the DVC outs that two identical runs write byte for byte (components/repro.py)
DATA_AND_MODEL_OUTS = ("data/raw/synthetic.txt", "data/raw/synthetic.txt.proba.parquet",
                       "data/validation/validation.json", "data/processed", "data/teacher_logits",
                       "models/teacher", "models/students")


def _out_hashes(lock_text: str) -> dict[str, str]:
    """path → md5 of every stage out in a dvc.lock."""
    lock = yaml.safe_load(lock_text)
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def test_dvc_repro_runs_the_stages_then_is_a_noop_and_push_pull_roundtrip(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_project(repo)
    write_params(repo, **{**SMALL_RUN, "generate": {"rows": 3000},
                          "distill": {**SMALL_RUN["distill"], "students": ["dagfm"], "baselines": []},
                          "tune": {"n_trials": 1}})
    # PYTHONPATH: the stages' `ctrflow` runs this checkout's code (the venv's editable install may point elsewhere)
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(REPO_ROOT)}

    def sh(*cmd):
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)

    assert sh("git", "init", "-q").returncode == 0
    first = sh("dvc", "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ["generate", "validate", "preprocess", "train_teacher", "distill", "evaluate",
                  "profile", "report", "promote"]:
        assert f"Running stage '{stage}'" in first.stdout
    decision = json.loads((repo / "metrics/promotion.json").read_text())
    assert decision["decision"] in ("promoted", "refused") and decision["reason"]
    assert (repo / "models/registry/registry.json").is_file()
    fmap = json.loads((repo / "data/processed/feature_map.json").read_text())
    assert sum(s["rows"] for s in fmap["splits"].values()) == 3000

    second = sh("dvc", "repro")
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout

    # Identical reruns (docs/reproducibility.md): a forced repro from a clean Optuna storage (so the
    # students are trained again, not resumed) records the same hashes for the data and model outs.
    # Up to distill: evaluate/profile/report write metrics and reports, whose timings may differ.
    lock = (repo / "dvc.lock").read_text()
    shutil.rmtree(repo / "optuna")
    forced = sh("dvc", "repro", "--force", "distill")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "Running stage 'distill'" in forced.stdout
    before, after = _out_hashes(lock), _out_hashes((repo / "dvc.lock").read_text())
    assert set(DATA_AND_MODEL_OUTS) <= set(before)
    assert {k: after[k] for k in DATA_AND_MODEL_OUTS} == {k: before[k] for k in DATA_AND_MODEL_OUTS}

    # The default remote is a local directory: push, drop cache + outputs, pull back.
    assert sh("dvc", "push").returncode == 0
    train = (repo / "data/processed/train.parquet").read_bytes()
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data/processed")
    pulled = sh("dvc", "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (repo / "data/processed/train.parquet").read_bytes() == train


def test_prefect_flow_ends_early_when_no_partition_is_new(tmp_path, monkeypatch, prefect_server):
    """A scheduled run on a partitioned log whose window holds nothing the last successful run did not
    train on ends at once with "nothing new" (run.if_nothing_new: skip), running no stage."""
    from components.config import load_params
    from components.stages import generate_stage, record_success_stage
    from flows.pipeline import pipeline

    monkeypatch.chdir(tmp_path)
    path = write_params(tmp_path, **{**SMALL_RUN, "generate": {"rows": 500, "partitions": 3, "out": "data/parts"},
                                     "data": {"input": "data/parts", "window": {"last": 2}},
                                     "preprocess": {"split": "partition"}})
    params = load_params(path)
    generate_stage(params)
    record_success_stage(params)  # as if last night's run had trained on this window
    summaries = pipeline(params_path=str(path), dvc_commit=False)
    assert len(summaries) == 1 and summaries[0].startswith("nothing new since"), summaries
    assert "day_2" in summaries[0]
    assert not Path("data/validation").exists() and not Path("models").exists()  # no stage ran
