"""benchmarks/quality.py: the results file when two invocations run at once (neither loses the other's runs),
and the epoch caps that define a run."""

from __future__ import annotations

import json

import benchmarks.quality as quality


def _run(dataset: str, model: str, finished: str, auc: float) -> dict:
    return {"dataset": dataset, "model": model, "seed": 2024, "settings": {}, "finished": finished, "test_auc": auc}


def test_merge_from_disk_keeps_the_other_invocations_runs_and_the_newer_version(tmp_path):
    path = tmp_path / "quality.json"
    # process B loaded the file empty, then A wrote its run and invocation before B writes
    disk = {"runs": [_run("synthetic", "dcnv2", "2026-12-07T12:24:25", 0.8752),
                     _run("frappe", "dcnv2", "2026-12-07T12:10:00", 0.9285)],
            "invocations": [{"command": "A", "started": "2026-12-07T12:10:00", "runs_done": 2}]}
    path.write_text(json.dumps(disk))
    mine = {"runs": [_run("frappe", "dcnv2", "2026-12-07T12:25:00", 0.9401),   # newer than A's copy
                     _run("frappe", "lr", "2026-12-07T12:25:30", 0.9244)],
            "invocations": [{"command": "B", "started": "2026-12-07T12:22:00", "runs_done": 2,
                             "load_avg_end": 1.0}]}
    quality.merge_from_disk(mine, path)
    got = {(r["dataset"], r["model"]): r["test_auc"] for r in mine["runs"]}
    assert got == {("synthetic", "dcnv2"): 0.8752, ("frappe", "dcnv2"): 0.9401, ("frappe", "lr"): 0.9244}
    assert [i["command"] for i in mine["invocations"]] == ["A", "B"]
    # merging again (the next write) adds nothing twice; B's own invocation is not duplicated
    quality.merge_from_disk(mine, path)
    assert len(mine["runs"]) == 3 and [i["command"] for i in mine["invocations"]] == ["A", "B"]
    # an older on-disk copy of a run never replaces this process's newer one
    assert next(r for r in mine["runs"] if r["model"] == "dcnv2" and r["dataset"] == "frappe")["test_auc"] == 0.9401


def test_merge_from_disk_without_a_file_changes_nothing(tmp_path):
    mine = {"runs": [_run("frappe", "lr", "t", 0.9)], "invocations": []}
    quality.merge_from_disk(mine, tmp_path / "absent.json")
    assert mine == {"runs": [_run("frappe", "lr", "t", 0.9)], "invocations": []}


def test_the_lr_row_is_capped_like_the_gates_lr_and_max_epochs_still_overrides(monkeypatch):
    from components.config import load_params

    train = load_params(quality.REPO / "params.yaml").train
    assert quality._yaml_caps() == (train.max_epochs, train.gate.baseline_max_epochs)
    monkeypatch.setattr(quality, "_yaml_caps", lambda: (20, 77))  # tell the two caps apart
    args = quality.parse_args(["--datasets", "avazu10k@split3"])
    assert quality.run_settings("avazu10k@split3", "lr", args)["train.max_epochs"] == 77
    assert quality.run_settings("avazu10k@split3", "dcnv2", args)["train.max_epochs"] == 20
    args = quality.parse_args(["--max-epochs", "avazu10k=5,avazu10k/lr=4"])
    assert quality.run_settings("avazu10k@split3", "lr", args)["train.max_epochs"] == 4  # a variant has its dataset's caps
    assert quality.run_settings("avazu10k", "dcnv2", args)["train.max_epochs"] == 5
    assert quality.run_settings("criteo117k", "lr", quality.parse_args(["--max-epochs", "3"]))["train.max_epochs"] == 3
