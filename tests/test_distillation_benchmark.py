"""benchmarks/distillation.py: goal checks, paired deltas, epoch caps and rendering on hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.distillation import (
    _compact_caps,
    _seedless,
    drop_dataset,
    epoch_cap,
    finetune_keep_counterfactual,
    merge_results,
    parse_args,
    write_outputs,
)

TEACHER_FLOPS = 1_000_000.0
REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _run(model: str, seed: int, auc: float, flops: float, kind: str) -> dict:
    return {
        "dataset": "frappe", "model": model, "seed": seed, "kind": kind,
        "teacher_model": "dcnv2" if kind == "teacher" else None,
        "settings": {"overrides": {"distill.num_threads": 1}, "max_epochs_cap": None},
        "test_auc": auc, "test_logloss": 0.4, "valid_auc": auc,
        "phases": [{"phase": "p", "best_epoch": 1, "epochs": 2, "max_epochs": 6, "samples_per_s": 1000.0}],
        "train_samples_per_s": 1000.0, "epochs_total": 2,
        "flops_per_sample": flops, "flops_excl_gather_per_sample": flops * 0.9,
        "parameters": 100, "dense_parameters": 10,
        "wall_s": 1.0, "load_avg_start": 1.0, "load_avg_end": 1.0,
    }


def _results() -> dict:
    # teacher AUC per seed; each student's Δ per seed is what the goal checks must pair
    teacher = {1: 0.800, 2: 0.810}
    rows = [("teacher", 0.0, 1.0, "teacher"),
            ("dagfm_outer", -0.0005, 0.10, "kd"),        # within 0.001 at 10 % FLOPs: meets goal 1
            ("dagfm_inner", -0.0030, 0.05, "kd"),        # cheap but 0.003 AUC short
            ("dagfm_kernel", +0.0010, 0.70, "kd"),       # accurate but 70 % of the FLOPs
            ("fsdnet", -0.0020, 1.0, "fsdnet"),          # below DCNv2: goal 2 not met
            ("baseline_dagfm_outer", -0.0100, 0.10, "baseline")]
    runs = [_run(m, s, teacher[s] + d, frac * TEACHER_FLOPS, kind)
            for m, d, frac, kind in rows for s in (1, 2)]
    runs[2]["test_auc"] += 0.0002   # dagfm_outer seed 1: Δ -0.0003, seed 2: Δ -0.0005 → a spread
    return {"runs": runs, "datasets": {"frappe": {}}, "invocations": [],
            "context": {"cpu_count": 2, "machine": "x86_64", "torch": "x", "threads": 1}}


def test_goal_checks_pair_by_seed_and_apply_both_thresholds(tmp_path):
    results = _results()
    write_outputs(results, tmp_path)
    g = results["goals"]["frappe"]
    rows = {r["model"]: r for r in g["kd"]["rows"]}
    assert g["kd"]["met_by"] == ["dagfm_outer"] and g["kd"]["met"] is True
    assert rows["dagfm_outer"]["mean_diff"] == pytest.approx(-0.0004)
    assert rows["dagfm_outer"]["flops_fraction"] == pytest.approx(0.10)
    assert (rows["dagfm_inner"]["auc_ok"], rows["dagfm_inner"]["flops_ok"]) == (False, True)
    assert (rows["dagfm_kernel"]["auc_ok"], rows["dagfm_kernel"]["flops_ok"]) == (True, False)
    assert rows["dagfm_kernel"]["seeds_within"] == 2
    assert g["fsdnet"]["applicable"] and g["fsdnet"]["met"] is False

    agg = results["aggregates"]["frappe"]
    assert agg["dagfm_outer"]["vs_twin"]["mean_diff"] == pytest.approx(0.0096)
    assert agg["dagfm_outer"]["vs_twin"]["wins"] == 2
    assert agg["dagfm_inner"]["vs_twin"] is None  # its twin did not run

    md = (tmp_path / "distillation.md").read_text()
    assert "| frappe | **met** | dagfm_outer | **NOT met** | — |" in md
    assert "dagfm_kernel misses goal 1" in md and "FLOPs 70.0 %" in md
    assert json.loads((tmp_path / "distillation.json").read_text())["goals"] == results["goals"]


def test_goal_2_is_not_judged_against_another_teacher(tmp_path):
    results = _results()
    for r in results["runs"]:
        if r["model"] == "teacher":
            r["teacher_model"] = "deepfm"
    write_outputs(results, tmp_path)
    assert results["goals"]["frappe"]["fsdnet"]["met"] is None
    assert "n/a (teacher deepfm)" in (tmp_path / "distillation.md").read_text()


def test_epoch_caps_most_specific_key_wins():
    caps = parse_args(["--max-epochs", "3,frappe=2,baseline_*=4,frappe/dagfm_*=1"]).max_epochs
    assert epoch_cap(caps, "synthetic", "teacher") == 3
    assert epoch_cap(caps, "frappe", "teacher") == 2
    assert epoch_cap(caps, "frappe", "baseline_fsdnet") == 4
    assert epoch_cap(caps, "frappe", "dagfm_outer") == 1
    assert epoch_cap({}, "frappe", "teacher") is None
    with pytest.raises(SystemExit):
        parse_args(["--max-epochs", "nosuchrun=1"])


def test_reproduce_caps_are_compacted():
    assert _compact_caps({("a", "x"): 1, ("a", "y"): 1, ("b", "x"): 1}) == "1"
    assert _compact_caps({("a", "x"): None, ("b", "x"): None}) == ""
    assert _compact_caps({("a", "x"): 2, ("a", "y"): 2, ("b", "x"): None}) == "a=2"
    assert _compact_caps({("a", "x"): 2, ("a", "y"): None}) == "a/x=2"


def test_merge_results_unites_runs_and_teacher_stats_of_parallel_processes():
    a = {"runs": [_run("teacher", 1, 0.80, TEACHER_FLOPS, "teacher")], "invocations": [{"command": "a"}],
         "datasets": {"frappe": {"splits": {"train": 9}, "teacher_logits_test": {"1": {"mean": 0.1}}}}}
    b = {"runs": [_run("teacher", 2, 0.81, TEACHER_FLOPS, "teacher"), _run("teacher", 1, 0.79, TEACHER_FLOPS, "teacher")],
         "invocations": [{"command": "b"}],
         "datasets": {"frappe": {"splits": {"train": 9}, "teacher_logits_test": {"2": {"mean": 0.2}}}}}
    merge_results(a, b)
    by_seed = {r["seed"]: r["test_auc"] for r in a["runs"]}
    assert by_seed == {1: 0.79, 2: 0.81}  # seed 1 taken from the merged set, seed 2 added, no duplicate
    assert len(a["runs"]) == 2
    assert a["datasets"]["frappe"]["teacher_logits_test"] == {"1": {"mean": 0.1}, "2": {"mean": 0.2}}
    assert [i["command"] for i in a["invocations"]] == ["a", "b"]


def test_seedless_settings_ignore_only_the_seed():
    s1 = {"overrides": {"distill.seed": 1, "distill.dagfm.lr": 0.1},
          "teacher": {"overrides": {"train.seed": 1, "train.model": "dcnv2"}}}
    s2 = {"overrides": {"distill.seed": 2, "distill.dagfm.lr": 0.1},
          "teacher": {"overrides": {"train.seed": 2, "train.model": "dcnv2"}}}
    assert _seedless(s1) == _seedless(s2)
    s3 = {**s2, "overrides": {"distill.seed": 2, "distill.dagfm.lr": 0.2}}
    assert _seedless(s1) != _seedless(s3)
    tuned = [{"overrides": {"distill.seed": k, "tune.seed": k, "tune.n_trials": 10}} for k in (1, 2)]
    assert _seedless(tuned[0]) == _seedless(tuned[1])


def test_drop_dataset_removes_its_runs_description_and_own_invocations():
    syn = {**_run("teacher", 1, 0.82, TEACHER_FLOPS, "teacher"), "dataset": "synthetic"}
    results = {
        "runs": [_run("teacher", 1, 0.80, TEACHER_FLOPS, "teacher"), syn],
        "datasets": {"frappe": {"splits": {"train": 9}}, "synthetic": {"splits": {"train": 8}}},
        "invocations": [
            {"command": ".venv/bin/python benchmarks/distillation.py --datasets synthetic --synthetic-rows 1000000"},
            {"command": ".venv/bin/python benchmarks/distillation.py --datasets synthetic,frappe"},
            {"command": ".venv/bin/python benchmarks/distillation.py --datasets frappe --seeds 2024"},
        ],
    }
    assert drop_dataset(results, "synthetic") == 1
    assert [(r["dataset"], r["model"]) for r in results["runs"]] == [("frappe", "teacher")]
    assert list(results["datasets"]) == ["frappe"]
    # the invocation that also ran frappe stays: its frappe runs may still be in the results
    assert [i["command"].split("--datasets ")[1] for i in results["invocations"]] == ["synthetic,frappe", "frappe --seeds 2024"]
    assert drop_dataset(results, "synthetic") == 0


def test_a_row_with_its_own_epoch_budget_is_not_capped():
    from benchmarks.distillation import run_settings
    from components.config import load_params

    base = load_params(REPO_PARAMS, {"distill.dagfm.distill_max_epochs": 2})
    args = parse_args(["--max-epochs", "synthetic=1"])
    capped = run_settings("synthetic", "dagfm_inner", 1, args, base, "sha")["overrides"]
    full = run_settings("synthetic", "dagfm_inner_full", 1, args, base, "sha")["overrides"]
    assert (capped["distill.dagfm.distill_max_epochs"], capped["distill.dagfm.finetune_max_epochs"]) == (1, 1)
    assert (full["distill.dagfm.distill_max_epochs"], full["distill.dagfm.finetune_max_epochs"]) == (6, 3)
    assert full["distill.dagfm.interaction_type"] == "inner"


def test_merge_keeps_one_copy_of_an_invocation_seen_twice_with_its_larger_run_count():
    snapshot = {"command": "x", "started": "t", "runs_done": 2}
    final = {"command": "x", "started": "t", "runs_done": 12}
    a = {"runs": [], "datasets": {}, "invocations": [snapshot]}
    merge_results(a, {"runs": [], "datasets": {}, "invocations": [final, {"command": "y", "started": "t"}]})
    assert a["invocations"] == [final, {"command": "y", "started": "t"}]
    merge_results(a, {"runs": [], "datasets": {}, "invocations": [snapshot]})
    assert a["invocations"][0]["runs_done"] == 12


def test_the_full_budget_twin_gets_the_chains_nine_epochs():
    from benchmarks.distillation import SPECS, run_settings
    from components.config import load_params

    base = load_params(REPO_PARAMS, {"distill.dagfm.distill_max_epochs": 2, "distill.dagfm.finetune_max_epochs": 1})
    ov = run_settings("synthetic", "baseline_dagfm_inner_full", 1, parse_args([]), base, "sha")["overrides"]
    assert (ov["distill.dagfm.distill_max_epochs"], ov["distill.dagfm.finetune_max_epochs"]) == (6, 3)
    assert SPECS["dagfm_inner_full"].twin == "baseline_dagfm_inner_full"


def test_finetune_keep_counterfactual_returns_the_distilled_score_only_where_finetuning_lost_on_valid(tmp_path):
    results = _results()
    phases = {  # seed → (distill valid, distill test, finetune valid); the run's test AUC is finetune's
        1: (0.7990, 0.8020, 0.7980),   # finetuning lowered valid AUC → the option keeps distill (test 0.8020)
        2: (0.8050, 0.8000, 0.8060),   # finetuning won on valid → the option changes nothing
    }
    for r in results["runs"]:
        if r["model"] == "dagfm_outer":
            dv, dt, fv = phases[r["seed"]]
            r["phases"] = [{"phase": "distill", "best_epoch": 2, "epochs": 2, "valid_auc": dv, "test_auc": dt},
                           {"phase": "finetune", "best_epoch": 1, "epochs": 1, "valid_auc": fv,
                            "test_auc": r["test_auc"]}]
    cf = finetune_keep_counterfactual(results, "frappe")
    assert list(cf) == ["dagfm_outer"]   # the other KD rows have no distill/finetune phases recorded
    c = cf["dagfm_outer"]
    assert (c["n"], c["kept"]) == (2, 1)
    # default: seed 1 Δ -0.0003, seed 2 Δ -0.0005; keep: seed 1 0.8020 - 0.800 = +0.0020, seed 2 unchanged
    assert c["default"] == pytest.approx(-0.0004)
    assert c["keep"] == pytest.approx((0.0020 - 0.0005) / 2)
    write_outputs(results, tmp_path)
    md = (tmp_path / "distillation.md").read_text()
    assert "dagfm_outer -0.0004 → +0.0008 (1/2 seeds keep the distilled student)" in md
    # runs made with the option on are not re-judged
    for r in results["runs"]:
        if r["model"] == "dagfm_outer":
            r["block"] = {"finetune_must_improve": True}
    assert finetune_keep_counterfactual(results, "frappe") == {}


def test_merge_keeps_the_later_finished_copy_of_a_run_in_any_order():
    old = {**_run("teacher", 1, 0.79, TEACHER_FLOPS, "teacher"), "finished": "2026-11-23T17:44:35"}
    new = {**_run("teacher", 1, 0.80, TEACHER_FLOPS, "teacher"), "finished": "2026-12-05T19:40:51"}
    for first, second in ((old, new), (new, old)):
        into = {"runs": [], "invocations": [], "datasets": {}}
        merge_results(into, {"runs": [first], "invocations": [], "datasets": {}})
        merge_results(into, {"runs": [second], "invocations": [], "datasets": {}})
        assert [r["test_auc"] for r in into["runs"]] == [0.80]


def test_no_goal_is_judged_against_a_teacher_at_chance_level(tmp_path):
    results = _results()
    for r in results["runs"]:   # every row keeps its Δ; the teacher (and so everyone) drops to ~0.51
        r["test_auc"] -= 0.295
    write_outputs(results, tmp_path)
    g = results["goals"]["frappe"]
    assert g["judged"] is False and g["teacher_auc"] == pytest.approx(0.51)
    assert g["kd"]["met"] is None and g["kd"]["met_by"] == []       # dagfm_outer's Δ would meet goal 1
    assert g["fsdnet"]["met"] is None and not g["fsdnet"]["applicable"]
    md = (tmp_path / "distillation.md").read_text()
    assert "| frappe | not judged (teacher AUC 0.5100 < 0.55) | — | not judged (teacher AUC 0.5100 < 0.55) | — |" in md
    assert "misses goal 1" not in md and "Neither goal is judged here" in md
    # the same results with a teacher above the bar are judged as before
    results = _results()
    write_outputs(results, tmp_path)
    assert results["goals"]["frappe"]["judged"] is True and results["goals"]["frappe"]["kd"]["met"] is True


def test_a_tuned_row_runs_the_study_with_its_seed_and_trial_budget_and_is_the_untuned_rows_twin():
    from benchmarks.distillation import DEFAULT_TUNE_TRIALS, SPECS, run_settings
    from components.config import load_params

    base = load_params(REPO_PARAMS)
    ov = run_settings("criteo117k", "dagfm_inner_tuned", 7, parse_args(["--tune-trials", "4"]), base, "sha")["overrides"]
    assert (ov["tune.n_trials"], ov["tune.seed"], ov["tune.timeout_s"]) == (4, 7, None)
    assert ov["distill.dagfm.interaction_type"] == "inner" and ov["distill.seed"] == 7
    assert parse_args([]).tune_trials == DEFAULT_TUNE_TRIALS
    assert "tune.n_trials" not in run_settings("criteo117k", "dagfm_inner", 7, parse_args([]), base, "sha")["overrides"]
    spec = SPECS["dagfm_inner_tuned"]
    assert spec.checkpoint == "dagfm/finetune" and SPECS["dagfm_inner"].checkpoint == "finetune"
    assert spec.twin == SPECS["dagfm_inner"].twin == "baseline_dagfm_inner"


def test_tuned_rows_report_their_trials_and_reproduce_with_their_trial_budget(tmp_path):
    results = _results()
    for seed, best in ((1, 0), (2, 3)):
        run = _run("dagfm_inner_tuned", seed, 0.80 + 0.01 * (seed - 1), 0.05 * TEACHER_FLOPS, "kd")
        run["settings"]["overrides"].update({"tune.n_trials": 6, "tune.seed": seed})
        run["tuned"] = {"best_trial": best, "best_valid_auc": 0.7512, "complete": 4, "pruned": 2,
                        "params": {"lr": 0.00312, "depth": 2}}
        results["runs"].append(run)
    write_outputs(results, tmp_path)
    md = (tmp_path / "distillation.md").read_text()
    assert ("seed 2: 4 complete + 2 pruned, best trial 3 (valid AUC 0.7512) depth=2, lr=0.00312") in md
    assert "--tune-trials 6" in md
    assert "dagfm_inner_tuned" in {r["model"] for r in results["goals"]["frappe"]["kd"]["rows"]}


def test_tune_trials_below_one_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--tune-trials", "0"])
    assert "--tune-trials must be >= 1" in capsys.readouterr().err


def test_a_dataset_without_teacher_runs_is_not_measured_rather_than_not_judged(tmp_path):
    results = _results()
    results["runs"] = [r for r in results["runs"] if r["model"] != "teacher"]
    write_outputs(results, tmp_path)
    g = results["goals"]["frappe"]
    assert g["judged"] is True and g["kd"]["met"] is None
    assert "| frappe | not measured |" in (tmp_path / "distillation.md").read_text()


def test_no_goal_is_judged_against_a_teacher_that_failed_the_baseline_gate(tmp_path):
    from benchmarks.distillation import teacher_gate_record

    rec = teacher_gate_record({"gate": {"passed": False, "auc_gain_over_lr": -0.01},
                               "baselines": {"lr": {"best_epoch": 57, "epochs": 59, "max_epochs": 100}}})
    assert rec["passed"] is False and rec["valid_auc_gain"] == pytest.approx(-0.01)
    assert (rec["lr_best_epoch"], rec["lr_epochs"], rec["lr_max_epochs"]) == (57, 59, 100)
    assert teacher_gate_record({}) is None
    results = _results()
    teachers = [r for r in results["runs"] if r["model"] == "teacher"]
    teachers[0]["baseline_gate"] = {"passed": True, "valid_auc_gain": 0.004}
    teachers[1]["baseline_gate"] = rec  # seed 2 lost to LR on valid
    write_outputs(results, tmp_path)
    g = results["goals"]["frappe"]
    assert g["judged"] is False and g["gate_failed_seeds"] == [2] and g["gate_passed_seeds"] == [1]
    assert g["kd"]["met"] is None and g["fsdnet"]["met"] is None  # dagfm_outer's Δ alone would meet goal 1
    md = (tmp_path / "distillation.md").read_text()
    assert "| frappe | not judged (teacher failed the baseline gate: seeds 2) |" in md
    assert "seed 1: passed (+0.0040); seed 2: FAILED (-0.0100), LR 59 epochs of 100" in md
    assert "Neither goal is judged here: the teacher failed the baseline gate (seeds 2)" in md
    # both seeds passing: judged as before, the gate line still shown
    teachers[1]["baseline_gate"] = {"passed": True, "valid_auc_gain": 0.002}
    write_outputs(results, tmp_path)
    assert results["goals"]["frappe"]["judged"] is True and results["goals"]["frappe"]["kd"]["met"] is True
    assert "seed 2: passed (+0.0020)" in (tmp_path / "distillation.md").read_text()


def test_a_student_is_compared_only_with_the_teacher_it_was_distilled_from(tmp_path):
    # seed 2's teacher was re-trained (another machine's kernels: other weights) after its students ran
    results = _results()
    for r in results["runs"]:
        r["teacher_sha"] = f"sha-{r['seed']}"
    teacher_2 = next(r for r in results["runs"] if r["model"] == "teacher" and r["seed"] == 2)
    teacher_2["teacher_sha"] = "sha-2-retrained"
    teacher_2["test_auc"] += 0.01  # against it every seed-2 student would look 0.01 worse
    results["runs"][0]["cpu_kernels"] = "AVX2"
    write_outputs(results, tmp_path)
    agg = results["aggregates"]["frappe"]
    assert agg["dagfm_outer"]["vs_teacher"]["seeds"] == [1]
    assert agg["dagfm_outer"]["vs_teacher"]["mean_diff"] == pytest.approx(-0.0003)
    assert agg["dagfm_outer"]["other_teacher_seeds"] == [2] and agg["teacher"]["other_teacher_seeds"] == []
    assert results["goals"]["frappe"]["kd"]["met_by"] == ["dagfm_outer"]
    md = (tmp_path / "distillation.md").read_text()
    assert "Left out of the Δ vs teacher columns and the goals" in md and "dagfm_outer seeds 2" in md
    assert "torch's CPU kernels: AVX2 (1 runs), not recorded (11 runs)." in md
    # the same hash again: both seeds paired
    teacher_2["teacher_sha"] = "sha-2"
    write_outputs(results, tmp_path)
    assert results["aggregates"]["frappe"]["dagfm_outer"]["vs_teacher"]["seeds"] == [1, 2]
    assert "Left out of" not in (tmp_path / "distillation.md").read_text()


def test_a_students_setting_keeps_the_teachers_identity():
    from benchmarks.distillation import base_params_sha, run_settings
    from components.config import load_params

    def settings(run: str, sets: list[str]) -> dict:
        args = parse_args([a for kv in sets for a in ("--set", kv)])
        base = load_params(REPO_PARAMS, dict(args.set))
        return run_settings("criteo117k", run, 2024, args, base, base_params_sha(base, teacher=run == "teacher"))

    plain = settings("teacher", [])
    assert settings("teacher", ["distill.fsdnet.max_epochs=20"]) == plain
    assert settings("teacher", ["train.embedding_l2=0.002"]) != plain
    assert settings("teacher", ["train.embedding_l2=0.002"])["set"] == {"train.embedding_l2": 0.002}
    # the student's own identity still changes with it (and with a train key: its teacher changes)
    fsd = settings("fsdnet", [])
    assert settings("fsdnet", ["distill.fsdnet.max_epochs=20"]) != fsd
    assert settings("fsdnet", ["distill.fsdnet.max_epochs=20"])["overrides"]["distill.fsdnet.max_epochs"] == 20
