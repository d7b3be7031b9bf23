"""Cross layers of DCN (v1) and DCNv2 (full-rank, low-rank, mixture of low-rank experts).

All layers take x0 (the flattened input, [B, D]) and x_l ([B, D]) and return x_{l+1} ([B, D]):

- DCN v1 (Wang et al., ADKDD 2017, eq. 1):  x_{l+1} = x0 · (w_lᵀ x_l) + b_l + x_l
- DCNv2 full-rank (Wang et al., WWW 2021, eq. 1):  x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l
- DCNv2 low-rank (eq. 2):  W_l = U_l V_lᵀ, i.e. x_{l+1} = x0 ⊙ (U_l (V_lᵀ x_l) + b_l) + x_l
- DCNv2 mixture of low-rank experts (eq. 3, "CrossNetMix"):
  x_{l+1} = Σ_k g_k(x_l) · x0 ⊙ (U_k tanh(C_k tanh(V_kᵀ x_l)) + b_l) + x_l,
  g = softmax over experts of a linear score of x_l.

Init: Xavier-normal for every weight matrix (as FuxiCTR / the official DAGFM teacher; NOT raw
N(0, 1), models.md §7 pitfall 6), zero biases.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .mlp import xavier_linear

CROSS_KINDS = ("v1", "full", "low_rank", "mixture")


def _xavier_normal(*shape: int, fan_in: int, fan_out: int) -> nn.Parameter:
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return nn.Parameter(torch.randn(*shape) * std)


class CrossLayerV1(nn.Module):
    """DCN v1 cross layer: x0 · (wᵀ x) + b + x, with w, b ∈ R^D (a rank-1 re-weighting of x0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = _xavier_normal(dim, fan_in=dim, fan_out=1)  # as nn.Linear(D, 1)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_{l+1} from x0 and x_l, all [B, D]."""
        return x0 * (x @ self.weight).unsqueeze(1) + self.bias + x


class CrossLayerV2(nn.Module):
    """DCNv2 full-rank cross layer: x0 ⊙ (W x + b) + x with W ∈ R^{D×D}."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = xavier_linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_{l+1} from x0 and x_l, all [B, D]."""
        return x0 * self.linear(x) + x


class LowRankCrossLayer(nn.Module):
    """DCNv2 low-rank cross layer: x0 ⊙ (U (Vᵀ x) + b) + x with U, V ∈ R^{D×r}."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.U = _xavier_normal(dim, rank, fan_in=rank, fan_out=dim)
        self.V = _xavier_normal(dim, rank, fan_in=dim, fan_out=rank)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_{l+1} from x0 and x_l, all [B, D]."""
        return x0 * ((x @ self.V) @ self.U.T + self.bias) + x


class MixtureCrossLayer(nn.Module):
    """DCNv2 mixture of K low-rank experts with tanh and an r×r core C_k per expert, softmax gates.

    Experts are batched in one einsum (U, V: [K, D, r], C: [K, r, r], gate weight: [K, D]).
    """

    def __init__(self, dim: int, rank: int, num_experts: int) -> None:
        super().__init__()
        self.U = _xavier_normal(num_experts, dim, rank, fan_in=rank, fan_out=dim)
        self.V = _xavier_normal(num_experts, dim, rank, fan_in=dim, fan_out=rank)
        self.C = _xavier_normal(num_experts, rank, rank, fan_in=rank, fan_out=rank)
        self.gate = _xavier_normal(num_experts, dim, fan_in=dim, fan_out=1)  # K × Linear(D, 1)
        self.bias = nn.Parameter(torch.zeros(dim))

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Expert weights g(x_l): [B, K], rows sum to 1."""
        return torch.softmax(x @ self.gate.T, dim=1)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_{l+1} from x0 and x_l, all [B, D]."""
        v = torch.tanh(torch.einsum("bd,kdr->bkr", x, self.V))
        c = torch.tanh(torch.einsum("bkr,kqr->bkq", v, self.C))
        u = torch.einsum("bkr,kdr->bkd", c, self.U)
        experts = x0.unsqueeze(1) * (u + self.bias)  # [B, K, D]
        return torch.einsum("bk,bkd->bd", self.gates(x), experts) + x


class CrossNet(nn.Module):
    """A stack of ``num_layers`` cross layers of one ``kind`` (v1 | full | low_rank | mixture).

    ``forward(x0)`` returns x_L ([B, D]); ``rank`` and ``num_experts`` apply to low_rank/mixture.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 3,
        kind: str = "full",
        rank: int = 32,
        num_experts: int = 4,
    ) -> None:
        super().__init__()
        if kind not in CROSS_KINDS:
            raise ValueError(f"cross kind must be one of {list(CROSS_KINDS)}, got {kind!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if kind in ("low_rank", "mixture") and rank < 1:
            raise ValueError(f"low-rank cross layers need rank >= 1, got {rank}")
        if kind == "mixture" and num_experts < 1:
            raise ValueError(f"mixture cross layers need num_experts >= 1, got {num_experts}")

        def make() -> nn.Module:
            if kind == "v1":
                return CrossLayerV1(dim)
            if kind == "full":
                return CrossLayerV2(dim)
            if kind == "low_rank":
                return LowRankCrossLayer(dim, rank)
            return MixtureCrossLayer(dim, rank, num_experts)

        self.layers = nn.ModuleList(make() for _ in range(num_layers))
        self.output_dim = dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """[B, D] → x_L [B, D]."""
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
