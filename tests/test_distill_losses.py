"""Distillation losses on hand-computed numbers (math.log/exp), plus their gradient contracts."""

from __future__ import annotations

import math

import pytest
import torch

from components.distill import (
    binary_kl,
    equivalent_beta,
    external_teacher_mse,
    fsdnet_loss,
    kd_dagfm_loss,
)

DT = torch.float64


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=DT)


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _kl_by_hand(zt: float, zs: float, tau: float) -> float:
    qt, qs = _sig(zt / tau), _sig(zs / tau)
    return qt * math.log(qt / qs) + (1 - qt) * math.log((1 - qt) / (1 - qs))


# ---------------------------------------------------------------- KD-DAGFM
def test_kd_dagfm_loss_on_hand_computed_values_both_reductions():
    zs, zt, y = _t(0.0, 1.0), _t(1.0, 3.0), _t(0.0, 1.0)
    bce = (math.log(2.0) + math.log(1.0 + math.exp(-1.0))) / 2  # −log(1−σ(0)), −log σ(1)
    mse_sum = (1 - 0) ** 2 + (3 - 1) ** 2  # 5
    got_sum = kd_dagfm_loss(zs, zt, y, alpha=0.1, beta=2.0, mse_reduction="sum")
    got_mean = kd_dagfm_loss(zs, zt, y, alpha=0.1, beta=2.0, mse_reduction="mean")
    assert got_sum.item() == pytest.approx(0.1 * bce + 2.0 * mse_sum, rel=1e-12)
    assert got_mean.item() == pytest.approx(0.1 * bce + 2.0 * mse_sum / 2, rel=1e-12)
    assert kd_dagfm_loss(zs, zt, y, 0.1, 2.0).item() == pytest.approx(got_mean.item())  # default


def test_kd_mse_reductions_differ_by_the_batch_size_and_equivalent_beta_converts():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(8, generator=g, dtype=DT), torch.randn(8, generator=g, dtype=DT)
    y = (torch.rand(8, generator=g) < 0.5).to(DT)
    s = kd_dagfm_loss(zs, zt, y, alpha=0.0, beta=1.0, mse_reduction="sum")
    m = kd_dagfm_loss(zs, zt, y, alpha=0.0, beta=1.0, mse_reduction="mean")
    assert (s / m).item() == pytest.approx(8.0, rel=1e-12)
    # the reference β = 921.6 with a mean at B = 1024 is β = 0.9 with a sum
    assert equivalent_beta(921.6, 1024, from_reduction="mean", to_reduction="sum") == pytest.approx(
        0.9
    )
    assert equivalent_beta(0.9, 1024, from_reduction="sum", to_reduction="mean") == pytest.approx(
        921.6
    )
    assert equivalent_beta(3.0, 7, from_reduction="sum", to_reduction="sum") == 3.0
    beta_sum = equivalent_beta(921.6, 8, from_reduction="mean", to_reduction="sum")
    assert beta_sum == pytest.approx(115.2)
    ref = kd_dagfm_loss(zs, zt, y, 0.1, 921.6, mse_reduction="mean")
    torch.testing.assert_close(kd_dagfm_loss(zs, zt, y, 0.1, beta_sum, mse_reduction="sum"), ref)


def test_kd_dagfm_loss_detaches_the_teacher_and_has_the_textbook_student_gradient():
    zs = _t(0.0, 1.0).requires_grad_()
    zt = _t(1.0, 3.0).requires_grad_()
    kd_dagfm_loss(zs, zt, _t(0.0, 1.0), alpha=0.1, beta=2.0, mse_reduction="sum").backward()
    assert zt.grad is None
    # ∂/∂z_S: α·(σ(z_S) − y)/B − 2β·(z_T − z_S)
    want = [0.1 * (0.5 - 0) / 2 - 4.0 * 1.0, 0.1 * (_sig(1.0) - 1) / 2 - 4.0 * 2.0]
    torch.testing.assert_close(zs.grad, _t(*want))


def test_kd_dagfm_loss_rejects_bad_arguments():
    z = _t(0.0, 1.0)
    with pytest.raises(ValueError, match="mse_reduction must be one of"):
        kd_dagfm_loss(z, z, z, 0.1, 1.0, mse_reduction="batchmean")
    with pytest.raises(ValueError, match="shapes differ"):
        kd_dagfm_loss(z, _t(0.0), z, 0.1, 1.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        kd_dagfm_loss(z, z, z, 0.1, -1.0)


# ---------------------------------------------------------------- binary KL
def test_binary_kl_with_temperature_on_hand_computed_values():
    zt, zs = _t(2.0, -4.0), _t(0.0, 1.0)
    want = (_kl_by_hand(2.0, 0.0, 2.0) + _kl_by_hand(-4.0, 1.0, 2.0)) / 2
    # spelled out for the first pair: q_T = σ(1), q_S = σ(0) = 1/2
    q = _sig(1.0)
    assert _kl_by_hand(2.0, 0.0, 2.0) == pytest.approx(
        q * math.log(2 * q) + (1 - q) * math.log(2 * (1 - q))
    )
    assert binary_kl(zt, zs, tau=2.0).item() == pytest.approx(want, rel=1e-12)
    assert binary_kl(zt, zs, tau=1.0).item() != pytest.approx(want, rel=1e-3)  # τ is used


def test_binary_kl_is_zero_on_itself_and_non_negative():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, generator=g, dtype=DT) * 3
    assert binary_kl(z, z, tau=1.7).item() == 0.0
    other = torch.randn(64, generator=g, dtype=DT) * 3
    for tau in (0.5, 1.0, 3.0):
        each = [binary_kl(z[i : i + 1], other[i : i + 1], tau).item() for i in range(64)]
        assert min(each) >= -1e-15 and binary_kl(z, other, tau).item() > 0


def test_binary_kl_differs_from_the_reference_codes_negative_class_term():
    """FSDNet's code uses KL(σ((1 − z_T)/τ) ‖ σ(1 − z_S/τ)) as the second term; we do not."""
    zt, zs, tau = 2.0, 0.0, 2.0
    qt, qs = _sig(zt / tau), _sig(zs / tau)
    a, b = _sig((1 - zt) / tau), _sig(1 - zs / tau)
    code = qt * math.log(qt / qs) + a * math.log(a / b)
    ours = binary_kl(_t(zt), _t(zs), tau).item()
    assert ours == pytest.approx(_kl_by_hand(zt, zs, tau), rel=1e-12)
    assert abs(ours - code) > 1e-2
    # and the code's "KL" is not even zero when student == teacher
    a, b = _sig((1 - zs) / tau), _sig(1 - zs / tau)
    assert abs(a * math.log(a / b)) > 1e-3 and binary_kl(_t(zs), _t(zs), tau).item() == 0.0


def test_binary_kl_is_finite_and_right_for_extreme_logits_in_float32():
    zt, zs = torch.tensor([50.0]), torch.tensor([-50.0])
    # q_T ≈ 1, so KL ≈ log q_T − log q_S = 0 − log σ(−50) ≈ 50
    assert binary_kl(zt, zs, 1.0).item() == pytest.approx(50.0, rel=1e-6)
    # the probability form breaks in float32: q_T rounds to 1, and 0 · log(0 / …) is nan
    qt, qs = torch.sigmoid(zt), torch.sigmoid(zs)
    naive = qt * torch.log(qt / qs) + (1 - qt) * torch.log((1 - qt) / (1 - qs))
    assert torch.isnan(naive).item()


def test_binary_kl_gradient_is_q_s_minus_q_t_over_tau():
    zt, zs = _t(2.0, -4.0), _t(0.0, 1.0).requires_grad_()
    binary_kl(zt, zs, tau=2.0).backward()
    want = [(_sig(0.0) - _sig(1.0)) / 2 / 2, (_sig(0.5) - _sig(-2.0)) / 2 / 2]  # /τ, /B
    torch.testing.assert_close(zs.grad, _t(*want))
    with pytest.raises(ValueError, match="tau must be > 0"):
        binary_kl(zt, zt, tau=0.0)


# ---------------------------------------------------------------- FSDNet
def _two_heads():
    logits = _t(0.0, 1.0, 2.0, -1.0).reshape(2, 2)  # rows = samples, columns = heads 1, 2
    f1 = _t(1.0, 0.0, 0.0, 0.0).reshape(2, 2)
    f2 = _t(0.0, 2.0, 1.0, 1.0).reshape(2, 2)
    return logits, [f1, f2], _t(1.0, 0.0)


def test_fsdnet_loss_on_hand_computed_values():
    logits, fused, y = _two_heads()
    bce1 = (math.log(1 + math.exp(-0.0)) + math.log(1 + math.exp(2.0))) / 2  # z = 0 (y=1), 2 (y=0)
    bce2 = (
        math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-1.0))
    ) / 2  # z = 1 (y=1), −1 (y=0)
    kl = (_kl_by_hand(1.0, 0.0, 1.5) + _kl_by_hand(-1.0, 2.0, 1.5)) / 2  # teacher = head 2
    hint_mean = (1 + 4 + 1 + 1) / 4  # f2 − f1 = [[−1, 2], [1, 1]]
    total, parts = fsdnet_loss(logits, fused, y, mu=0.4, tau=1.5, hint_weight=0.5)
    assert parts["bce"].item() == pytest.approx(bce1 + bce2, rel=1e-12)
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-12)
    assert parts["hint"].item() == pytest.approx(hint_mean, rel=1e-12)
    assert total.item() == pytest.approx(
        0.4 * (bce1 + bce2) + 0.6 * kl + 0.5 * hint_mean, rel=1e-12
    )
    # figure's per-sample sum: (1/N)·Σ_n ‖f_2 − f_1‖² = 7/2 = element mean × feature dim
    _, per_sample = fsdnet_loss(logits, fused, y, 0.4, 1.5, 0.5, hint_reduction="per_sample_sum")
    assert per_sample["hint"].item() == pytest.approx(3.5, rel=1e-12)


def test_fsdnet_loss_sums_every_shallow_head_against_the_deepest():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 3, generator=g, dtype=DT)
    fused = [torch.randn(5, 4, generator=g, dtype=DT) for _ in range(3)]
    y = (torch.rand(5, generator=g) < 0.5).to(DT)
    _, parts = fsdnet_loss(logits, fused, y, mu=0.5, tau=1.3, hint_weight=0.01)
    kl = (
        sum(
            _kl_by_hand(float(logits[b, 2]), float(logits[b, h]), 1.3)
            for h in (0, 1)
            for b in range(5)
        )
        / 5
    )
    hint = sum(float(((fused[2] - fused[h]) ** 2).mean()) for h in (0, 1))
    bce = -sum(
        math.log(_sig(float(logits[b, h]))) if y[b] else math.log(1 - _sig(float(logits[b, h])))
        for h in range(3) for b in range(5)
    ) / 5  # fmt: skip
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-10)
    assert parts["hint"].item() == pytest.approx(hint, rel=1e-10)
    assert parts["bce"].item() == pytest.approx(bce, rel=1e-10)
    # one head: no students, only the BCE remains
    total, one = fsdnet_loss(logits[:, :1], fused[:1], y, mu=0.5, tau=1.0, hint_weight=1.0)
    assert one["kl"].item() == 0.0 and one["hint"].item() == 0.0
    assert total.item() == pytest.approx(0.5 * one["bce"].item())


@pytest.mark.parametrize("detach", [True, False])
def test_detach_teacher_stops_kl_and_hint_gradients_into_the_deepest_head(detach):
    logits, fused, y = _two_heads()
    logits.requires_grad_()
    fused = [f.clone().requires_grad_() for f in fused]
    total, _ = fsdnet_loss(
        logits, fused, y, mu=0.0, tau=1.5, hint_weight=0.5, detach_teacher=detach
    )
    total.backward()
    feat_grad = 0.0 if fused[1].grad is None else fused[1].grad.abs().sum().item()
    assert (feat_grad == 0.0) is detach
    assert (logits.grad[:, 1].abs().sum().item() == 0.0) is detach
    assert logits.grad[:, 0].abs().sum() > 0 and fused[0].grad.abs().sum() > 0  # students learn
    # with μ > 0 and detach, the deepest head gets exactly its BCE gradient μ·(σ(z_L) − y)/B
    logits.grad = None
    total, _ = fsdnet_loss(logits, fused, y, mu=0.4, tau=1.5, hint_weight=0.5, detach_teacher=True)
    total.backward()
    want = [0.4 * (_sig(1.0) - 1) / 2, 0.4 * (_sig(-1.0) - 0) / 2]
    torch.testing.assert_close(logits.grad[:, 1], _t(*want))


def test_fsdnet_loss_rejects_bad_arguments():
    logits, fused, y = _two_heads()
    with pytest.raises(ValueError, match="mu .* must be in"):
        fsdnet_loss(logits, fused, y, mu=1.5, tau=1.0, hint_weight=0.01)
    with pytest.raises(ValueError, match="tau must be > 0"):
        fsdnet_loss(logits, fused, y, mu=0.5, tau=0.0, hint_weight=0.01)
    with pytest.raises(ValueError, match="1 fused feature tensors for 2 heads"):
        fsdnet_loss(logits, fused[:1], y, mu=0.5, tau=1.0, hint_weight=0.01)
    with pytest.raises(ValueError, match="hint_reduction must be one of"):
        fsdnet_loss(logits, fused, y, 0.5, 1.0, 0.01, hint_reduction="sum")
    with pytest.raises(ValueError, match=r"labels must be \[B=2\]"):
        fsdnet_loss(logits, fused, y[:1], 0.5, 1.0, 0.01)


def test_external_teacher_mse_values_and_detached_teacher():
    zs = _t(0.0, 1.0).requires_grad_()
    zt = _t(1.0, 3.0).requires_grad_()
    assert external_teacher_mse(zs, zt).item() == pytest.approx(2.5)
    loss = external_teacher_mse(zs, zt, reduction="sum")
    assert loss.item() == pytest.approx(5.0)
    loss.backward()
    assert zt.grad is None
    torch.testing.assert_close(zs.grad, _t(-2.0, -4.0))
