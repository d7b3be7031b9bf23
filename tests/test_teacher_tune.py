"""The teacher's Optuna study (``train.tune``): off by default, best trial kept as the teacher,
resume after a kill with the finished trials reused, search-space errors naming the key, the
storage password never written, pruning at every evaluation, and the report's section."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from optuna.trial import TrialState

import components.train.teacher as teacher_module
from components.config import ConfigError, Params, load_params
from components.data.feature_map import FeatureMap, FieldInfo
from components.stages import train_stage
from components.train.checkpoint import read_model_metadata
from components.train.tuning import decode_layers, encode_layers
from components.tune import SearchSpaceError, fit_pruning_callback, make_storage
from tests.conftest import write_params

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB = (10, 8, 6)
ROWS = {"train": 1500, "valid": 500, "test": 500}
SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 5e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [256, 512]},
    "model_params": {"hidden_units": {"type": "categorical", "choices": ["8", "16-16"]},
                     "num_cross_layers": {"type": "int", "low": 1, "high": 2}},
}
TRIAL_ZERO = {"lr": 0.01, "batch_size": 256, "model_params.hidden_units": "8",
              "model_params.num_cross_layers": 1}
MARKER_ENV = "CTRFLOW_TEACHER_TUNE_MARKER"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def quiet(*_a, **_k) -> None:
    pass


def _write_processed(directory: Path) -> None:
    """Encoded splits with a planted pairwise signal and their feature map."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(11)
    w = [rng.normal(0, 1.0, v) for v in VOCAB]
    pair = rng.normal(0, 1.5, (VOCAB[0], VOCAB[1]))
    splits = {}
    for name, n in ROWS.items():
        ids = [rng.integers(0, v, n).astype(np.int32) for v in VOCAB]
        z = sum(wi[i] for wi, i in zip(w, ids, strict=True)) + pair[ids[0], ids[1]]
        label = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
        pq.write_table(pa.table({**{f"c{j}": ids[j] for j in range(len(VOCAB))}, "label": label}),
                       directory / f"{name}.parquet", row_group_size=256)
        splits[name] = {"path": f"{name}.parquet", "rows": n, "positives": int(label.sum())}
    fields = tuple(FieldInfo(name=f"c{j}", type="categorical", source_kind="categorical",
                             vocab_size=v) for j, v in enumerate(VOCAB))
    FeatureMap(format="toy", label="label", fields=fields, splits=splits, source_hash="teacher-tune",
               params={}).save(directory / "feature_map.json")


def make_params(root: Path, storage: str | None = None, train: dict | None = None, **tune) -> Params:
    """A tiny DCNv2 teacher run under ``root``; ``train`` updates its train section, ``tune``
    its ``train.tune``."""
    base = {"model": "dcnv2", "embedding_dim": 4, "batch_size": 256, "lr": 0.01, "max_epochs": 2,
             "patience": 2, "device": "cpu", "precision": "fp32", "num_threads": 1, "seed": 3,
             "model_params": {"hidden_units": [8], "num_cross_layers": 1},
             "gate": {"on_fail": "warn", "baseline_max_epochs": 2},
             "out_dir": str(root / "models" / "teacher"),
             "metrics": str(root / "metrics" / "teacher.json"),
             "curve": str(root / "metrics" / "teacher_curve.csv"),
             "tune": {"n_trials": 0, "search_space": SPACE, "pruner": {"type": "none"}, **tune},
             **(train or {})}
    return Params.model_validate({
        "preprocess": {"out_dir": str(root / "processed")},
        "train": base,
        "tune": {"storage": storage or f"sqlite:///{root / 'optuna' / 'ctrflow.db'}",
                 "trials_dir": str(root / "optuna" / "trials"), "heartbeat_interval": 1,
                 "grace_period": 2, "seed": 5},
    })


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher_tune") / "processed"
    _write_processed(path)
    return path


@pytest.fixture
def root(tmp_path, processed) -> Path:
    (tmp_path / "processed").symlink_to(processed)
    return tmp_path


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """Every train_teacher run (its out_dir), counted while still running the real thing."""
    seen: list[str] = []
    real = teacher_module.train_teacher

    def counted(params, *args, **kwargs):
        seen.append(params.out_dir)
        kwargs["log"] = quiet
        return real(params, *args, **kwargs)

    monkeypatch.setattr(teacher_module, "train_teacher", counted)
    return seen


def _study(params: Params) -> optuna.Study:
    name = json.loads(Path(params.train.metrics).read_text())["tuning"]["study"]
    return optuna.load_study(study_name=name, storage=params.tune.storage)


def _metrics(params: Params) -> dict:
    return json.loads(Path(params.train.metrics).read_text())


# ---- n_trials 0: unchanged --------------------------------------------------------------------

def test_n_trials_zero_trains_one_teacher_as_before(root, monkeypatch):
    params = make_params(root)
    assert Params().train.tune.n_trials == 0
    assert load_params(REPO_ROOT / "params.yaml").train.tune.n_trials == 0

    def no_study(*_a, **_k):
        raise AssertionError("tune_teacher must not run with n_trials 0")

    monkeypatch.setattr("components.train.tuning.tune_teacher", no_study)
    result = train_stage(params)
    metrics = _metrics(params)
    assert "tuning" not in metrics and "tuned" not in result.summary
    assert not (root / "optuna").exists()
    # the same training called directly (the pre-tuning path) gives the same numbers
    direct = params.train.model_copy(update={"out_dir": str(root / "direct"),
                                             "metrics": str(root / "direct.json"),
                                             "curve": str(root / "direct.csv")})
    again = teacher_module.train_teacher(direct, root / "processed", log=quiet).metrics
    assert metrics["valid"] == again["valid"] and metrics["test"] == again["test"]
    assert metrics["epochs"] == again["epochs"] == 2
    assert read_model_metadata(params.train.out_dir)["hparams"] == {
        "embedding_dim": 4, "hidden_units": [8], "num_cross_layers": 1}


# ---- the study: best trial kept, resume adds only the missing trials ---------------------------

def test_study_keeps_the_best_trial_and_a_rerun_adds_only_missing_trials(root, calls):
    params = make_params(root, n_trials=3, train={"eval_every": 0.5})
    result = train_stage(params)
    assert len(calls) == 3
    metrics = _metrics(params)
    tuning = metrics["tuning"]
    assert tuning["study"].startswith("ctrflow-teacher-dcnv2-")
    assert tuning["storage"] == params.tune.storage and tuning["n_trials"] == 3
    rows = tuning["trials"]
    assert [(r["number"], r["state"], r["epochs"]) for r in rows] == [
        (0, "COMPLETE", 2), (1, "COMPLETE", 2), (2, "COMPLETE", 2)]
    assert rows[0]["params"] == TRIAL_ZERO and rows[0]["note"] == "reference defaults"
    best = max(rows, key=lambda r: r["valid_auc"])
    assert tuning["best_trial"] == best["number"] and tuning["best_params"] == best["params"]
    assert tuning["best_value"] == best["valid_auc"]
    assert f"best of 3 trial(s) is {best['number']}" in result.summary

    # the teacher is the best trial's checkpoint, re-scored: same valid AUC
    trial_dir = Path(tuning["trials_dir"]) / str(best["number"])
    teacher_dir = Path(params.train.out_dir)
    assert sorted(p.name for p in teacher_dir.iterdir()) == [
        "baseline_lr", "model.json", "model.safetensors"]
    assert (teacher_dir / "model.safetensors").read_bytes() == \
        (trial_dir / "model.safetensors").read_bytes()
    assert abs(metrics["valid"]["auc"] - best["valid_auc"]) < 1e-6
    trial_metrics = json.loads((trial_dir / "metrics.json").read_text())
    assert abs(metrics["test"]["auc"] - trial_metrics["test"]["auc"]) < 1e-6
    # trials skip the baseline gate; the kept teacher is gated on its own valid scores
    assert "gate" not in trial_metrics and "baselines" not in trial_metrics
    assert metrics["gate"]["auc_gain_over_lr"] == pytest.approx(
        metrics["valid"]["auc"] - metrics["baselines"]["lr"]["valid"]["auc"])
    assert metrics["best_eval"] == trial_metrics["best_eval"] and metrics["eval_every"] == 0.5
    bp = best["params"]
    assert read_model_metadata(teacher_dir)["hparams"] == {
        "embedding_dim": 4, "hidden_units": decode_layers(bp["model_params.hidden_units"]),
        "num_cross_layers": bp["model_params.num_cross_layers"]}
    assert metrics["hparams"] == read_model_metadata(teacher_dir)["hparams"]
    assert Path(params.train.curve).read_text() == (trial_dir / "curve.csv").read_text()

    # pruning saw every evaluation (two per epoch): steps = evaluation numbers 1..4
    trials = sorted(_study(params).get_trials(), key=lambda t: t.number)
    assert [sorted(t.intermediate_values) for t in trials] == [[1, 2, 3, 4]] * 3

    # killed and started again with the same budget: nothing trains; a bigger one adds the difference
    train_stage(params)
    assert len(calls) == 3
    before = [(t.params, t.value) for t in trials]
    train_stage(make_params(root, n_trials=4, train={"eval_every": 0.5}))
    assert len(calls) == 4 and calls[-1].endswith("/3")
    after = sorted(_study(params).get_trials(), key=lambda t: t.number)
    assert [t.state for t in after] == [TrialState.COMPLETE] * 4
    assert [(t.params, t.value) for t in after[:3]] == before
    assert len(_metrics(params)["tuning"]["trials"]) == 4


# ---- kill -9 during a trial: the stale trial is retried with its params -------------------------

def run_stage_hanging_on_trial_one(root: str) -> None:
    """Subprocess body: the study of :func:`make_params` (3 trials) whose trial 1 hangs."""
    real = teacher_module.train_teacher

    def hang(params, *args, **kwargs):
        if Path(params.out_dir).name == "1":
            Path(os.environ[MARKER_ENV]).write_text("running")
            time.sleep(120)
        return real(params, *args, **kwargs)

    teacher_module.train_teacher = hang
    train_stage(make_params(Path(root), n_trials=3))


def test_killed_study_resumes_reusing_finished_trials_and_retrying_the_killed_one(root, calls):
    marker = root / "trial1.running"
    env = dict(os.environ, **{MARKER_ENV: str(marker)},
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    script = ("import sys; from tests.test_teacher_tune import run_stage_hanging_on_trial_one; "
              "run_stage_hanging_on_trial_one(sys.argv[1])")
    proc = subprocess.Popen([sys.executable, "-c", script, str(root)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the worker never reached trial 1"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    params = make_params(root, n_trials=3)
    assert not Path(params.train.metrics).exists()  # killed before the teacher was kept
    storage = params.tune.storage
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    before = sorted(optuna.load_study(study_name=name, storage=storage).get_trials(),
                    key=lambda t: t.number)
    assert [(t.number, t.state) for t in before] == [(0, TrialState.COMPLETE),
                                                     (1, TrialState.RUNNING)]

    time.sleep(3.5)  # > grace_period (2 s) since its last heartbeat (SQLite time: 1 s resolution)
    train_stage(params)
    after = sorted(optuna.load_study(study_name=name, storage=storage).get_trials(),
                   key=lambda t: t.number)
    assert [(t.number, t.state) for t in after] == [
        (0, TrialState.COMPLETE), (1, TrialState.FAIL), (2, TrialState.COMPLETE),
        (3, TrialState.COMPLETE)]
    assert after[0].params == before[0].params == TRIAL_ZERO
    assert after[0].value == before[0].value                  # trial 0 was not trained again
    assert after[2].params == before[1].params and after[2].system_attrs["failed_trial"] == 1
    assert [Path(c).name for c in calls] == ["2", "3"]
    rows = _metrics(params)["tuning"]["trials"]
    assert [(r["number"], r["state"], r["note"]) for r in rows] == [
        (0, "COMPLETE", "reference defaults"), (1, "FAIL", ""), (2, "COMPLETE", "retry of trial 1"),
        (3, "COMPLETE", "")]
    assert _metrics(params)["tuning"]["best_trial"] in (0, 2, 3)


# ---- errors and secrets -------------------------------------------------------------------------

def test_space_key_the_model_does_not_take_is_a_clear_error(root, calls):
    space = {**SPACE, "model_params": {"num_cross_layers": {"type": "int", "low": 1, "high": 4}}}
    params = make_params(root, n_trials=2, search_space=space)
    params = params.model_copy(update={"train": params.train.model_copy(
        update={"model": "dnn", "model_params": {"hidden_units": [8]}})})
    with pytest.raises(SearchSpaceError) as e:
        train_stage(params)
    assert str(e.value).startswith(
        "train.tune.search_space.model_params.num_cross_layers: model 'dnn' takes no "
        "hyperparameter 'num_cross_layers'")
    assert calls == [] and not (root / "optuna").exists()

    # a list-valued argument must be categorical over "w1-w2" strings
    bad = {"model_params": {"hidden_units": {"type": "int", "low": 8, "high": 16}}}
    with pytest.raises(SearchSpaceError, match=r"search_space\.model_params\.hidden_units: .*'-'"):
        train_stage(make_params(root, n_trials=2, search_space=bad))
    # a choice TrainParams rejects, before any trial
    with pytest.raises(SearchSpaceError, match=r"search_space\.batch_size: 0 is not a valid"):
        train_stage(make_params(root, n_trials=2, search_space={
            "batch_size": {"type": "categorical", "choices": [256, 0]}}))
    # trial 0 is the current params: a categorical current value must be a choice
    with pytest.raises(SearchSpaceError, match=r"search_space\.model_params\.hidden_units: trial 0 "
                                               r"takes the current train value '32'"):
        p = make_params(root, n_trials=2)
        train_stage(p.model_copy(update={"train": p.train.model_copy(
            update={"model_params": {"hidden_units": [32], "num_cross_layers": 1}})}))
    assert calls == []


def test_config_errors_name_the_key(tmp_path):
    cases = [
        ({"search_space": {"lrr": {"type": "float", "low": 0.1, "high": 1.0}}},
         "train.tune.search_space.lrr: not a tunable train key"),
        ({"search_space": {"model_params": {"dropout": {"type": "float", "low": 0.5, "high": 0.1}}}},
         "train.tune.search_space.model_params.dropout: Value error, needs finite low <= high"),
        ({"search_space": SPACE, "defaults": {"lr": 1.0}},
         "train.tune.defaults.lr: 1.0 is outside train.tune.search_space.lr"),
        ({"n_trials": -1}, "train.tune.n_trials"),
    ]
    for tune, needle in cases:
        path = write_params(tmp_path, train={"tune": tune})
        with pytest.raises(ConfigError) as e:
            load_params(path)
        assert needle in str(e.value), str(e.value)


def test_storage_password_never_lands_in_metrics_or_logs(root, calls, monkeypatch, capsys):
    """A PostgreSQL-style URL with a password; the study itself runs in SQLite underneath."""
    url = "postgresql+psycopg://ctrflow:s3cret-pw@127.0.0.1:5432/optuna"
    sqlite_url = f"sqlite:///{root / 'optuna.db'}"
    opened = []

    def fake_storage(given, **kw):
        opened.append(given)
        return make_storage(sqlite_url, **kw)

    monkeypatch.setattr("components.tune.study.make_storage", fake_storage)
    monkeypatch.setattr("components.train.tuning.make_storage", fake_storage)
    params = make_params(root, storage=url, n_trials=1)
    result = train_stage(params)
    assert set(opened) == {url}
    text = Path(params.train.metrics).read_text()
    assert json.loads(text)["tuning"]["storage"] == \
        "postgresql+psycopg://ctrflow:***@127.0.0.1:5432/optuna"
    out = capsys.readouterr()
    for where in (text, result.summary, out.out, out.err):
        assert "s3cret-pw" not in where
    assert "ctrflow:***@127.0.0.1" in out.out


# ---- pieces -------------------------------------------------------------------------------------

def test_fit_pruning_callback_reports_each_evaluation_and_prunes():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    cb = fit_pruning_callback(first)
    cb({"epoch": 1, "valid_auc": 0.70})
    cb({"epoch": 2, "valid_auc": 0.75})
    study.tell(first, 0.75)
    assert study.trials[0].intermediate_values == {1: 0.70, 2: 0.75}

    second = study.ask()
    cb = fit_pruning_callback(second)
    cb({"epoch": 1, "eval": 1, "valid_auc": 0.71})   # above the median at step 1: goes on
    with pytest.raises(optuna.TrialPruned, match="pruned at step 2 \\(epoch 1\\)"):
        cb({"epoch": 1, "eval": 2, "valid_auc": 0.60})  # several evaluations per epoch: step = eval
    assert second.user_attrs["last_report"] == {"epoch": 1, "step": 2}


def test_layer_lists_round_trip():
    assert encode_layers((400, 400, 400)) == "400-400-400" and encode_layers([]) == ""
    assert decode_layers("400-400-400") == [400, 400, 400] and decode_layers("") == []


def test_report_has_a_teacher_tuning_section(tmp_path, monkeypatch):
    from components.report import build_report
    from tests.run_fixture import run_params

    monkeypatch.chdir(tmp_path)
    params = run_params(tmp_path)
    tuning = {"study": "ctrflow-teacher-dcnv2-abc", "storage": "postgresql+psycopg://u:***@h/db",
              "n_trials": 3, "n_complete": 2, "n_pruned": 1, "n_failed": 0, "best_trial": 1,
              "best_value": 0.7605, "best_params": {"lr": 0.0123456789, "batch_size": 512},
              "trials": [
                  {"number": 0, "state": "COMPLETE", "params": {"lr": 0.01, "batch_size": 256},
                   "valid_auc": 0.7585, "epochs": 2, "note": "reference defaults"},
                  {"number": 1, "state": "COMPLETE", "params": {"lr": 0.0123456789, "batch_size": 512},
                   "valid_auc": 0.7605, "epochs": 2, "note": ""},
                  {"number": 2, "state": "PRUNED", "params": {"lr": 0.008, "batch_size": 256},
                   "valid_auc": 0.6577, "epochs": 1, "note": ""}]}
    metrics = Path(params.train.metrics)
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"model": "dcnv2", "valid": {"auc": 0.7605, "logloss": 0.66},
                                   "test": {"auc": 0.7589, "logloss": 0.67}, "tuning": tuning}))
    md = build_report(params)[0].read_text()
    section = md.split("\n## Tuned hyperparameters\n", 1)[1]
    assert section.startswith("\n### Teacher tuning\n")
    assert ("Study ctrflow-teacher-dcnv2-abc (postgresql+psycopg://u:***@h/db): 2 complete, "
            "1 pruned, 0 failed trials (budget 3). Best trial 1 (validation AUC 0.7605), kept as "
            "the teacher: batch_size = 512, lr = 0.0123457.") in section
    assert "| number | state | batch_size | lr | valid AUC | epochs | note |" in section
    assert "| 0 | COMPLETE | 256 | 0.01 | 0.7585 | 2 | reference defaults |" in section
    assert "| 2 | PRUNED | 256 | 0.008 | 0.6577 | 1 |  |" in section

    metrics.write_text(json.dumps({"model": "dcnv2"}))  # not tuned: no such section
    assert "Teacher tuning" not in build_report(params)[0].read_text()
