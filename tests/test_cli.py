"""`ctrflow` subcommands: help texts, exit codes, errors on stderr."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from click.testing import CliRunner

from cli import main
from tests.conftest import VENV_BIN


def run_cli(*args, cwd=None):
    return subprocess.run([str(VENV_BIN / "ctrflow"), *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_stage_subcommand():
    out = CliRunner().invoke(main, ["--help"]).output
    for cmd in ["generate", "validate", "preprocess", "run"]:
        assert cmd in out
    gen_help = CliRunner().invoke(main, ["generate", "--help"]).output
    assert "--format" in gen_help and "--rows" in gen_help and "OUT" in gen_help


def test_generate_validate_preprocess_on_a_small_log(small_params: Path):
    tmp = small_params.parent
    r = run_cli("generate", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "generated 4,000 criteo rows" in r.stdout
    assert (tmp / "data/raw/synthetic.txt").exists()

    r = run_cli("validate", cwd=tmp)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp / "data/validation/validation.json").read_text())
    assert report["success"] is True and report["rows"] == 4000

    r = run_cli("preprocess", cwd=tmp)
    assert r.returncode == 0, r.stderr
    fmap = json.loads((tmp / "data/processed/feature_map.json").read_text())
    # 13 bucketised integers + 26 categoricals + the 13 integers' dense copies (numeric_also_dense)
    assert fmap["num_fields"] == 52
    assert sum(f["type"] == "dense" and f["stats"]["source"] == f["name"][:-len("_dense")]
               for f in fmap["fields"]) == 13
    assert sum(s["rows"] for s in fmap["splits"].values()) == 4000


def test_validate_bad_file_exits_nonzero_with_location_on_stderr(tmp_path):
    bad = tmp_path / "bad.txt"
    good_line = "\t".join(["0"] + ["1"] * 13 + ["0a1b2c3d"] * 26)
    short_line = "\t".join(["1"] + ["1"] * 13 + ["0a1b2c3d"] * 25)
    bad.write_text("\n".join([good_line] * 5 + [short_line] + [good_line] * 3) + "\n")
    r = run_cli("validate", "--format", "criteo", str(bad), "--out-dir", str(tmp_path / "v"), cwd=tmp_path)
    assert r.returncode == 1
    assert "bad.txt" in r.stderr and "line 6" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_params_exit_2_naming_the_key(tmp_path):
    (tmp_path / "params.yaml").write_text("preprocess:\n  min_count: -1\n")
    r = run_cli("preprocess", cwd=tmp_path)
    assert r.returncode == 2
    assert "preprocess.min_count" in r.stderr


def test_preprocess_refuses_without_a_passed_gate(small_params: Path):
    tmp = small_params.parent
    assert run_cli("generate", cwd=tmp).returncode == 0
    r = run_cli("preprocess", cwd=tmp)
    assert r.returncode == 1
    assert "validation" in r.stderr
    assert not (tmp / "data/processed").exists()


def test_models_lists_every_registered_model_one_a_line():
    from components.models.registry import list_models

    out = CliRunner().invoke(main, ["models"]).output.strip().splitlines()
    names = [line.split()[0] for line in out]
    assert names == [m.name for m in list_models()]
    assert {"lr", "fm", "dcnv2", "xdeepfm", "autoint_plus", "crossnet", "cin", "dlrm"} <= set(names)
    assert any("DCN V2" in line for line in out if line.startswith("dcnv2"))


def test_train_writes_checkpoint_metrics_and_curve(small_params: Path):
    tmp = small_params.parent
    for cmd in (["generate"], ["validate"], ["preprocess"]):
        assert run_cli(*cmd, cwd=tmp).returncode == 0
    r = run_cli("--set", "train.model_params={}", "train", "--model", "fm", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "trained fm: test AUC" in r.stdout
    metrics = json.loads((tmp / "metrics/teacher.json").read_text())
    assert metrics["model"] == "fm" and metrics["epochs"] == 2
    assert 0.5 < metrics["test"]["auc"] <= 1 and metrics["test"]["logloss"] > 0
    curve = (tmp / "metrics/teacher_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,epochs_done,lr,train_loss,valid_auc") and len(curve) == 3
    assert (tmp / "models/teacher/model.safetensors").exists()
    # score the raw log end to end: one probability per input line, in order
    r = run_cli("predict", "--model", "models/teacher", "--out", "preds.txt", "data/raw/synthetic.txt", cwd=tmp)
    assert r.returncode == 0, r.stderr
    probs = [float(x) for x in (tmp / "preds.txt").read_text().split()]
    assert len(probs) == 4000 and all(0 < p < 1 for p in probs)
    r = run_cli("export", "--model", "models/teacher", "exported", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "max |Δ probability|" in r.stdout and (tmp / "exported/model.onnx").exists()
    # unknown model name: clean error listing the known ones
    r = run_cli("--set", "train.model_params={}", "train", "--model", "nope", cwd=tmp)
    assert r.returncode == 1 and "dcnv2" in r.stderr and "Traceback" not in r.stderr


def test_distill_tunes_students_and_writes_their_metrics(small_params: Path):
    tmp = small_params.parent
    for cmd in (["generate"], ["validate"], ["preprocess"], ["train"]):
        assert run_cli(*cmd, cwd=tmp).returncode == 0
    r = run_cli("distill", cwd=tmp)
    assert r.returncode == 0, r.stderr
    students = json.loads((tmp / "metrics/students.json").read_text())
    assert set(students) == {"dagfm", "fsdnet", "baseline_dagfm"}
    dagfm = students["dagfm"]
    assert dagfm["tuned"]["complete"] + dagfm["tuned"]["pruned"] == 2
    assert 0 < dagfm["test"]["auc"] <= 1
    # the best trial's checkpoints and the study table are the student's outputs
    assert (tmp / "models/students/dagfm/distill/model.safetensors").exists()
    assert (tmp / "models/students/dagfm/finetune/model.safetensors").exists()
    trials = (tmp / "models/students/dagfm/study/trials.csv").read_text().splitlines()
    assert len(trials) == 3  # header + 2 trials
    best = json.loads((tmp / "models/students/dagfm/study/best.json").read_text())
    assert best["best_number"] == dagfm["tuned"]["best_trial"]
    assert students["baseline_dagfm"]["tuned"] is None
