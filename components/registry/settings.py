"""params.yaml section ``promote``: champion / challenger promotion into the model registry.

One frozen pydantic model, unknown keys rejected (the ``components/config.py`` rules). The rule it
configures is implemented in :mod:`components.registry.promote`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CANDIDATE_RULES = ("best_student", "teacher")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class PromoteParams(BaseModel):
    """The ``promote`` section (defaults = the repository's params.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # best_student: the student (evaluation.json role "student") with the best test AUC among those
    # within max_flops_fraction of the teacher's FLOPs; teacher; or a model name of evaluation.json
    candidate: str = "best_student"
    max_flops_fraction: float | None = Field(0.215, gt=0)
    max_auc_drop: float = Field(0.002, ge=0)
    max_logloss_rise: float | None = Field(None, ge=0)
    on_incomparable: Literal["refuse", "promote"] = "refuse"
    verify_onnx: bool = True
    registry_dir: str = "models/registry"
    out: str = "metrics/promotion.json"

    @field_validator("candidate")
    @classmethod
    def _candidate_name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(f"must be best_student, teacher or a model name of evaluation.json, got {v!r}")
        return v
