"""params.yaml section ``evaluate``: the evaluate, profile and report stages' knobs.

One frozen pydantic model, unknown keys rejected (the ``components/config.py`` rules). Until the
section is declared on :class:`components.config.Params`, a raw ``evaluate:`` mapping arrives as an
extra attribute; :func:`evaluate_settings` accepts both forms (and the defaults when it is absent).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Field names taken as "the user" for gAUC when ``group_field`` is ``auto`` (first present wins).
AUTO_GROUP_FIELDS = ("user_id", "userid", "UserID", "user")


class EvaluateParams(BaseModel):
    """The ``evaluate`` section (defaults = the repository's params.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: str = "metrics/evaluation.json"
    plots_dir: str = "metrics/plots"
    split: Literal["test", "valid"] = "test"
    n_bins: int = Field(15, ge=1)
    group_field: str | None = "auto"
    roc_points: int = Field(500, ge=2)
    batch_size: int = Field(8192, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed_runs: tuple[str, ...] = ()
    profile_out: str = "metrics/profile.json"
    flops_batch_size: int = Field(1024, gt=0)
    latency_threads: int = Field(1, ge=1)
    latency_warmup: int = Field(10, ge=0)
    latency_runs: int = Field(200, ge=1)
    throughput_batch_size: int = Field(4096, ge=1)
    throughput_runs: int = Field(10, ge=1)
    profile_runs: int = Field(5, ge=1)
    profile_top_ops: int = Field(10, ge=0)
    flops_claim: float = Field(0.215, gt=0)
    report_dir: str = "reports"


def evaluate_settings(params: Any) -> EvaluateParams:
    """The :class:`EvaluateParams` of a :class:`~components.config.Params` (typed, raw or absent).

    ValueError naming ``evaluate.<key>`` when a raw mapping breaks a rule.
    """
    section = getattr(params, "evaluate", None)
    if section is None:
        extra = getattr(params, "model_extra", None) or {}
        section = extra.get("evaluate")
    if section is None:
        return EvaluateParams()
    if isinstance(section, EvaluateParams):
        return section
    if isinstance(section, BaseModel):
        section = section.model_dump()
    try:
        return EvaluateParams.model_validate(section)
    except ValueError as e:
        errors = getattr(e, "errors", lambda: [])()
        if errors:
            msgs = [f"evaluate.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors]
            raise ValueError("\n".join(msgs)) from e
        raise
