"""What the orchestrator shows: the run summary (components/report/run_summary.py) of a tiny finished
run, and the progress reports of training and tuning (components/progress.py) an observer receives."""

from __future__ import annotations

import json

import optuna
import pytest

from components.evaluate.models import evaluate_run
from components.profile.run import profile_run
from components.progress import Progress, observed, report
from components.report import build_report
from components.report.run_summary import promotion_path, run_summary
from components.tune.settings import TuneParams
from components.tune.study import run_study
from tests.run_fixture import MODELS, make_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("summaryrun")
    params = make_run(root)
    evaluation = evaluate_run(params)
    profile_run(params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        build_report(params)
    return params, root, evaluation


def test_summary_table_holds_every_model_with_the_evaluated_numbers(finished):
    params, root, evaluation = finished
    summary = run_summary(params, title="nightly 2026-12-06")
    by_name = {r["name"]: r for r in summary["table"]}
    assert set(MODELS) <= set(by_name)
    for name in MODELS:
        m = evaluation["models"][name]["metrics"]
        assert by_name[name]["auc"] == pytest.approx(m["auc"]) and by_name[name]["logloss"] == pytest.approx(
            m["logloss"])
        assert f"| {name} |" in summary["markdown"]
        assert f"{m['auc']:.4f}" in summary["markdown"]
    assert by_name["teacher"]["role"] == "teacher" and by_name["baseline_dagfm"]["role"] == "baseline"
    assert summary["markdown"].startswith("# nightly 2026-12-06\n")
    assert summary["report_html"] == str((root / "reports" / "report.html").resolve())
    assert f"`{summary['report_html']}`" in summary["markdown"]
    json.dumps(summary["table"])  # plain numbers and strings: a Prefect table artifact takes it as is


def test_summary_shows_the_promotion_decision_when_there_is_one(finished, tmp_path):
    params, root, _ = finished
    assert "Promotion" not in run_summary(params)["markdown"]
    path = promotion_path(params)
    assert path == root / "metrics" / "promotion.json"
    path.write_text(json.dumps({"decision": "refused", "message": "challenger AUC 0.70 < champion 0.72 - 0.002"}))
    try:
        md = run_summary(params)["markdown"]
        assert "**Promotion: refused.** challenger AUC 0.70 < champion 0.72 - 0.002" in md
    finally:
        path.unlink()


def test_summary_of_a_run_without_a_report_says_so(tmp_path):
    params = make_run(tmp_path)  # no evaluate / report stage ran
    md = run_summary(params)["markdown"]
    assert "No HTML report was written" in md


def test_progress_reaches_the_observer_only_inside_the_block():
    seen: list[Progress] = []
    report("x", "epochs", 1, 2)  # nobody listens: a no-op
    with observed(seen.append):
        report("teacher", "epochs", 0.5, 2, "valid AUC 0.7")
        with observed(lambda p: (_ for _ in ()).throw(RuntimeError("broken observer"))):
            report("teacher", "epochs", 1, 2)  # a failing observer is dropped, not raised
        report("teacher", "epochs", 2, 2)
    report("teacher", "epochs", 3, 2)
    assert [(p.task, p.done, p.percent) for p in seen] == [("teacher", 0.5, 25.0), ("teacher", 2.0, 100.0)]
    assert seen[0].message == "valid AUC 0.7"


def test_a_study_reports_each_finished_trial(tmp_path):
    seen: list[Progress] = []
    params = TuneParams(n_trials=3, storage=f"sqlite:///{tmp_path / 'o.db'}", seed=1)
    with observed(seen.append):
        run_study("progress", lambda t: t.suggest_float("x", 0, 1), params)
    assert [p.done for p in seen] == [1, 2, 3] and all(p.total == 3 and p.kind == "trials" for p in seen)
    study = optuna.load_study(study_name=seen[0].task, storage=params.storage)
    assert f"best value {study.best_value:.4f}" in seen[-1].message
