"""MLP stack (Linear → BatchNorm → ReLU → Dropout per hidden layer) with FuxiCTR's init.

Every ``nn.Linear`` built here gets Xavier-normal weights and zero biases, the initialisation FuxiCTR
applies to all dense layers (anchors.md §1.2, models.md §3.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def xavier_linear(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` with Xavier-normal weight (gain 1) and zero bias."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_normal_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """Feed-forward stack: for each width h in ``hidden_units`` Linear(h) → [BN] → ReLU → [Dropout].

    With ``output_dim`` set, a last plain Linear(output_dim) follows (no BN, activation or dropout),
    e.g. ``output_dim=1`` for a logit head. ``output_dim`` (the attribute) is the width of what
    :meth:`forward` returns; an MLP with no hidden units and no output layer is the identity.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int] = (400, 400, 400),
        *,
        output_dim: int | None = None,
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if any(int(h) <= 0 for h in hidden_units):
            raise ValueError(f"hidden_units must be positive widths, got {list(hidden_units)}")
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden_units:
            layers.append(xavier_linear(width, int(h)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        if output_dim is not None:
            layers.append(xavier_linear(width, output_dim))
            width = output_dim
        self.net = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, input_dim] → [B, output_dim]."""
        return self.net(x)
