"""benchmarks/scale.py: its params changes are valid settings, the measuring child reports a process's
peak memory and bytes written, the target verdicts, the stage commands and the report."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from benchmarks.scale import (
    KAGGLE_ROWS,
    PREDICT_BATCH_ROWS,
    _set,
    judge,
    measure,
    render,
    scale_overrides,
    stage_command,
)
from components.config import load_params
from tests.conftest import REPO_ROOT


def test_overrides_are_valid_settings_of_the_repository_params(tmp_path):
    overrides = scale_overrides(KAGGLE_ROWS, 7, 2_000_000)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        _set(raw, key, value)  # raises KeyError for a key params.yaml does not have
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    p = load_params(path)
    assert p.generate.partitions * p.generate.rows >= KAGGLE_ROWS
    assert (p.generate.partitions - 1) * p.generate.rows < KAGGLE_ROWS
    assert p.generate.cardinality == "kaggle" and p.data.input == p.generate.out
    assert not p.train.in_memory and not p.distill.in_memory and p.train.max_epochs == 1


def test_measure_reports_peak_rss_and_bytes_written(tmp_path):
    out = tmp_path / "blob"
    code = ("import os, time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            f"f = open({str(out)!r}, 'wb'); f.write(os.urandom(64 * 2**20)); f.flush(); os.fsync(f.fileno()); "
            "time.sleep(1.5)")
    m = measure([sys.executable, "-c", code], tmp_path, {})
    assert m["rc"] == 0
    assert m["peak_rss_mb"] >= 300                      # the 300 MB buffer, touched page by page
    assert m["written_mb"] <= 200
    if _fs_type(tmp_path) not in ("tmpfs", "ramfs"):    # memory file systems account no write_bytes
        assert m["written_mb"] >= 60                    # the 64 MB file (a sampled lower bound)
    assert m["wall_s"] >= 1.5


def _fs_type(path: Path) -> str:
    """The type of the file system holding ``path`` (the longest mount point above it)."""
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount, fstype = fields[4], fields[fields.index("-") + 1]
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def test_judge_targets_on_hand_made_numbers():
    stages = {"validate": {"wall_s": 100.0, "peak_rss_mb": 1200}, "preprocess": {"wall_s": 90.0, "peak_rss_mb": 3900}}
    verdicts = {t["target"]: t["met"] for t in judge({"stages": stages, "slice": {"ratio": 0.85}})}
    assert verdicts == {"validate + preprocess ≤ 180 s": False, "validate / preprocess peak RSS ≤ 4,096 MB": True,
                        "streaming training ≥ 0.8× in-memory samples/s": True}
    stages["validate"]["wall_s"] = 80.0
    assert judge({"stages": stages})[0]["met"] is True


def test_stage_commands_and_report(tmp_path):
    assert stage_command(tmp_path, "preprocess", 7) == ["dvc", "repro", "--single-item", "preprocess"]
    predict = stage_command(tmp_path, "predict", 7)
    assert predict[:4] == ["ctrflow", "predict", "--model", "models/teacher"]  # nothing promoted
    (tmp_path / "models" / "registry" / "production").mkdir(parents=True)
    assert stage_command(tmp_path, "predict", 7)[3] == "production"
    assert predict[-1] == str(Path(tmp_path) / "data" / "raw" / "kaggle" / "day_6")
    assert str(PREDICT_BATCH_ROWS) in predict
    result = {"rows": 1000, "partitions": 2, "overrides": {"train.max_epochs": 1}, "when": "now",
              "machine": "2 cores", "raw_gb": 0.1,
              "stages": {"preprocess": {"wall_s": 2.0, "rows": 1000, "peak_rss_mb": 500, "written_mb": 3,
                                        "outputs_mb": 1}},
              "slice": {"slice_rows": 100, "repeats": 1, "best": {"streaming": 900.0, "in_memory": 1000.0},
                        "ratio": 0.9}}
    result["targets"] = judge(result)
    md = render(result)
    assert "| preprocess | 2.0 | 1,000 | 500 | 500 | 3 | 1 |" in md
    assert "900 vs 1,000 samples/s = 0.90×" in md
