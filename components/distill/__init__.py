"""Distillation losses: KD-DAGFM logit matching and FSDNet self-distillation (see losses.py).

The names below load :mod:`.losses` (and torch) on first use, not on import of the package: the
settings module (:mod:`.settings`, read by ``components.config``) must not pull torch into
every CLI command (a stage such as ``preprocess`` started ≈ 1.5 s slower for it)."""

from __future__ import annotations

__all__ = [
    "HINT_REDUCTIONS",
    "MSE_REDUCTIONS",
    "binary_kl",
    "equivalent_beta",
    "external_teacher_mse",
    "fsdnet_loss",
    "kd_dagfm_loss",
]


def __getattr__(name: str):
    if name in __all__:
        from . import losses

        return getattr(losses, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
