"""Distillation losses on raw logits: KD-DAGFM (logit MSE) and FSDNet (self-distillation).

KD-DAGFM (models.md §2.2–2.3)::

    L = α · BCE_mean(σ(z_S), y) + β · MSE(z_T, z_S)        teacher logits detached

β and the MSE reduction belong together. The reference code (both the official repo and RecBole)
computes ``torch.mean((z_T − z_S)²)`` with α = 0.1, β = 921.6 at batch size 1024. Since
921.6 = 0.9 × 1024, the same objective reads 0.1·BCE_mean + 0.9·Σ_batch (z_T − z_S)², i.e. a
0.1 / 0.9 split with a **sum**-reduced MSE. :func:`equivalent_beta` converts β between the two:
β_sum = β_mean / B and β_mean = β_sum · B. When our batch size B differs from 1024:

- to reproduce the reference *code* at any B (a per-row KD weight independent of B): keep
  ``mse_reduction="mean"`` with β = 921.6 (the default reduction here);
- to reproduce the "0.1 / 0.9 with summed MSE" reading: ``mse_reduction="sum"`` with β = 0.9,
  which equals mean with β = 0.9·B (the KD term then weighs B/1024 times more than in the code).
Never combine β = 921.6 with ``"sum"``: that is 1024× the reference KD weight at B = 1024.

FSDNet (models.md §3.2), with head logits z_1..z_L (z_L the teacher) and fused features f_l::

    L = μ · Σ_{l=1..L} BCE(z_l, y) + (1 − μ) · Σ_{l<L} KL_τ(z_L ‖ z_l) + λ · Σ_{l<L} MSE(f_L, f_l)

KL_τ is the paper's binary KL between q_T = σ(z_L/τ) and q_S = σ(z_l/τ), mean over the batch, no τ²
factor (neither the paper figure nor the code has one). The reference code's negative-class term,
KL(σ((1 − z_L)/τ) ‖ σ(1 − z_l/τ)), is NOT a binary KL and is not reproduced. The hint MSE is the
code's element mean (``hint_reduction="mean"``: mean over batch AND the D + h feature coordinates)
by default; ``"per_sample_sum"`` is the figure's (1/N)·Σ_n ‖f_L − f_l‖², which is the element mean
times the feature dimension, so λ = 0.01 means a much stronger hint there. ``detach_teacher=False``
(code parity) lets the KL and hint gradients flow into the deepest head and its features too;
``True`` makes z_L and f_L fixed targets for those terms (they still get their own BCE gradient).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

MSE_REDUCTIONS = ("mean", "sum")
HINT_REDUCTIONS = ("mean", "per_sample_sum")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {list(a.shape)} vs {list(b.shape)}")


def _nonneg(**values: float) -> None:
    for name, v in values.items():
        if not v >= 0:
            raise ValueError(f"{name} must be >= 0, got {v}")


def equivalent_beta(
    beta: float, batch_size: int, *, from_reduction: str, to_reduction: str
) -> float:
    """β giving the same KD term under another MSE reduction at ``batch_size`` (mean→sum: β/B).

    Example: the reference β = 921.6 with "mean" at B = 1024 is β = 0.9 with "sum".
    """
    _choice("from_reduction", from_reduction, MSE_REDUCTIONS)
    _choice("to_reduction", to_reduction, MSE_REDUCTIONS)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if from_reduction == to_reduction:
        return float(beta)
    return float(beta) / batch_size if from_reduction == "mean" else float(beta) * batch_size


def _squared_error(student: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    sq = (target.detach() - student).pow(2)
    return sq.sum() if reduction == "sum" else sq.mean()


def kd_dagfm_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    mse_reduction: str = "mean",
) -> torch.Tensor:
    """α·BCE_mean(σ(z_S), y) + β·MSE(z_T, z_S) on logits [B]; z_T detached; scalar tensor.

    ``mse_reduction``: "mean" (reference code, pair with β = 921.6) or "sum" over the batch (pair
    with β = 0.9); see the module docstring and :func:`equivalent_beta` for other batch sizes.
    """
    _choice("mse_reduction", mse_reduction, MSE_REDUCTIONS)
    _nonneg(alpha=alpha, beta=beta)
    _same_shape(student_logits, teacher_logits, "student vs teacher logits")
    _same_shape(student_logits, labels, "student logits vs labels")
    bce = F.binary_cross_entropy_with_logits(student_logits, labels.to(student_logits.dtype))
    return alpha * bce + beta * _squared_error(student_logits, teacher_logits, mse_reduction)


def _binary_kl_terms(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float
) -> torch.Tensor:
    """Element-wise binary KL(σ(z_T/τ) ‖ σ(z_S/τ)) in log-sigmoid form (broadcasts)."""
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")
    zt, zs = teacher_logits / tau, student_logits / tau
    log_qt, log_qs = F.logsigmoid(zt), F.logsigmoid(zs)
    log_nt, log_ns = F.logsigmoid(-zt), F.logsigmoid(-zs)  # log(1 − q)
    return log_qt.exp() * (log_qt - log_qs) + log_nt.exp() * (log_nt - log_ns)


def binary_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """The paper's binary KL, mean over the batch: q_T·log(q_T/q_S) + (1−q_T)·log((1−q_T)/(1−q_S)).

    q = σ(z/τ). Computed from log σ(±z/τ), so it stays finite for any logits. Gradients flow into
    both arguments (detach the teacher yourself if it is a fixed target).
    """
    _same_shape(teacher_logits, student_logits, "teacher vs student logits")
    return _binary_kl_terms(teacher_logits, student_logits, tau).mean()


def fsdnet_loss(
    head_logits: torch.Tensor,
    fused_features: Sequence[torch.Tensor],
    labels: torch.Tensor,
    mu: float,
    tau: float,
    hint_weight: float,
    detach_teacher: bool = False,
    hint_reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """μ·Σ_l BCE(z_l, y) + (1−μ)·Σ_{l<L} KL_τ(z_L ‖ z_l) + λ·Σ_{l<L} MSE(f_L, f_l).

    head_logits [B, L], fused_features L tensors [B, D_f], labels [B]. Returns (total, parts)
    with parts = {"bce", "kl", "hint"}: the three unweighted sums, detached (for logging).
    """
    _choice("hint_reduction", hint_reduction, HINT_REDUCTIONS)
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu (weight of the BCE terms) must be in [0, 1], got {mu}")
    _nonneg(hint_weight=hint_weight)
    if head_logits.dim() != 2 or head_logits.shape[1] < 1:
        raise ValueError(f"head_logits must be [B, L] with L >= 1, got {list(head_logits.shape)}")
    batch, num_heads = head_logits.shape
    if len(fused_features) != num_heads:
        raise ValueError(f"{len(fused_features)} fused feature tensors for {num_heads} heads")
    if labels.shape != (batch,):
        raise ValueError(f"labels must be [B={batch}], got {list(labels.shape)}")
    for f in fused_features:
        _same_shape(f, fused_features[-1], "fused features of a head vs the deepest head")

    y = labels.to(head_logits.dtype).unsqueeze(1).expand_as(head_logits)
    bce = F.binary_cross_entropy_with_logits(head_logits, y, reduction="none").mean(0).sum()

    teacher = head_logits[:, -1:]
    teacher_feat = fused_features[-1]
    if detach_teacher:
        teacher, teacher_feat = teacher.detach(), teacher_feat.detach()
    zero = head_logits.new_zeros(())
    kl = hint = zero
    if num_heads > 1:
        kl = _binary_kl_terms(teacher, head_logits[:, :-1], tau).mean(0).sum()
        students = torch.stack(list(fused_features[:-1]))  # [L-1, B, D_f]
        sq = (teacher_feat.unsqueeze(0) - students).pow(2)
        hint = sq.mean() * (num_heads - 1) if hint_reduction == "mean" else sq.sum() / batch
    elif not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")
    total = mu * bce + (1.0 - mu) * kl + hint_weight * hint
    return total, {"bce": bce.detach(), "kl": kl.detach(), "hint": hint.detach()}


def external_teacher_mse(
    student_logit: torch.Tensor, teacher_logit: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """(z_T − z_S)² reduced by "mean" or "sum" over the batch, teacher detached.

    The extra term for a student (e.g. FSDNet's inference logit) distilled from an external
    teacher; weight it yourself.
    """
    _choice("reduction", reduction, MSE_REDUCTIONS)
    _same_shape(student_logit, teacher_logit, "student vs teacher logits")
    return _squared_error(student_logit, teacher_logit, reduction)
