"""Everything a run report reads, gathered from the paths params.yaml names.

:func:`load_artifacts` reads each artefact that exists and leaves the others ``None`` (a report can
be built after any stage; the missing parts say which stage writes them):

==================  ======================================================================
feature_map         ``<preprocess.out_dir>/feature_map.json`` (:class:`FeatureMap`)
validation          ``<validate.out_dir>/validation.json``
oracle              ``<generate.out>.oracle.json``, only when the run reads the synthetic log
teacher             ``train.metrics``; ``curve``: ``train.curve`` rows (CSV → dicts of floats)
students            ``distill.metrics`` (student → summary, with ``tuned`` for tuned students)
studies             ``<distill.out_dir>/<student>/study/best.json`` and ``trials.csv``
evaluation          ``evaluate.out``; ``roc``: ``<evaluate.plots_dir>/roc_<model>.csv`` (fpr, tpr)
profile             ``evaluate.profile_out``
==================  ======================================================================

A file that exists but cannot be parsed raises ValueError naming it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.data.feature_map import FeatureMap
from components.evaluate.settings import EvaluateParams, evaluate_settings


@dataclass
class RunArtifacts:
    """The run's artefacts (``None`` / empty where absent) and the paths they were read from."""

    paths: dict[str, str]
    feature_map: FeatureMap | None = None
    validation: dict | None = None
    oracle: dict | None = None
    teacher: dict | None = None
    curve: list[dict[str, float]] | None = None
    students: dict | None = None
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: dict | None = None
    roc: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    profile: dict | None = None


def read_json(path: str | Path) -> dict | None:
    """Parsed JSON of ``path``, None when the file does not exist (ValueError when unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


def read_csv_rows(path: str | Path) -> list[dict[str, str]] | None:
    """Rows of a CSV file with a header as dicts of strings, None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _floats(rows: list[dict[str, str]], path: Path) -> list[dict[str, float]]:
    try:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()}
                for r in rows]
    except ValueError as e:
        raise ValueError(f"{path}: non-numeric value: {e}") from e


def _roc(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = _floats(read_csv_rows(path) or [], path)
    if not rows or not {"fpr", "tpr"} <= set(rows[0]):
        raise ValueError(f"{path}: expected columns fpr,tpr")
    return np.array([r["fpr"] for r in rows]), np.array([r["tpr"] for r in rows])


def load_artifacts(params, ev: EvaluateParams | None = None) -> RunArtifacts:
    """Read every artefact of the run that exists (module doc)."""
    ev = ev or evaluate_settings(params)
    processed = Path(params.preprocess.out_dir)
    paths = {
        "feature_map": str(processed / "feature_map.json"),
        "validation": str(Path(params.validation.out_dir) / "validation.json"),
        "oracle": f"{params.generate.out}.oracle.json",
        "teacher": params.train.metrics,
        "curve": params.train.curve,
        "students": params.distill.metrics,
        "evaluation": ev.out,
        "profile": ev.profile_out,
        "plots_dir": ev.plots_dir,
    }
    art = RunArtifacts(paths=paths)
    if Path(paths["feature_map"]).is_file():
        art.feature_map = FeatureMap.load(paths["feature_map"])
    art.validation = read_json(paths["validation"])
    if params.uses_synthetic:
        art.oracle = read_json(paths["oracle"])
    art.teacher = read_json(paths["teacher"])
    curve = read_csv_rows(paths["curve"])
    art.curve = _floats(curve, Path(paths["curve"])) if curve else None
    art.students = read_json(paths["students"])
    for student in params.distill.students:
        study = Path(params.distill.out_dir) / student / "study"
        best = read_json(study / "best.json")
        trials = read_csv_rows(study / "trials.csv")
        if best is not None or trials is not None:
            art.studies[student] = {"best": best, "trials": trials or [], "dir": str(study)}
    art.evaluation = read_json(paths["evaluation"])
    for name in (art.evaluation or {}).get("models", {}):
        roc_path = Path(ev.plots_dir) / f"roc_{name}.csv"
        if roc_path.is_file():
            art.roc[name] = _roc(roc_path)
    art.profile = read_json(paths["profile"])
    return art
