"""Distillation losses: KD-DAGFM logit matching and FSDNet self-distillation (see losses.py)."""

from .losses import (
    HINT_REDUCTIONS,
    MSE_REDUCTIONS,
    binary_kl,
    equivalent_beta,
    external_teacher_mse,
    fsdnet_loss,
    kd_dagfm_loss,
)

__all__ = [
    "HINT_REDUCTIONS",
    "MSE_REDUCTIONS",
    "binary_kl",
    "equivalent_beta",
    "external_teacher_mse",
    "fsdnet_loss",
    "kd_dagfm_loss",
]
