"""Compressed Interaction Network (CIN) of xDeepFM (Lian et al., KDD 2018, eq. 6).

X^0 = E ∈ R^{B×F×d}. Layer k with H_k feature maps:
    X^k_{h,:} = Σ_{i<H_{k-1}} Σ_{j<F} W^k_{h,i,j} · (X^{k-1}_{i,:} ⊙ X^0_{j,:}) + b^k_h
(a 1×1 convolution over the H_{k-1}·F Hadamard products, applied per embedding coordinate; no
activation, as FuxiCTR and the DAGFM teacher). Each layer's output maps are sum-pooled over d and
the pooled vectors of all layers are concatenated.

``split_half=False`` (FuxiCTR / DAGFM): every map is both output and fed forward.
``split_half=True`` (the xDeepFM paper's option): in every layer but the last, the first half of
the maps is fed forward and the second half goes to the output; those layers need an even width.

Init: W as Xavier-normal of a Conv1d(H_{k-1}·F → H_k, kernel 1), zero bias (FuxiCTR).
Cost: the Hadamard tensor of layer k is B·H_{k-1}·F·d floats (the same as FuxiCTR's Conv1d input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class CIN(nn.Module):
    """CIN over ``num_fields`` input vectors; ``forward(E)`` returns pooled maps [B, output_dim]."""

    def __init__(
        self,
        num_fields: int,
        layer_units: Sequence[int] = (200, 200, 200),
        split_half: bool = False,
    ) -> None:
        super().__init__()
        units = [int(h) for h in layer_units]
        if not units or any(h <= 0 for h in units):
            raise ValueError(
                f"CIN layer_units must be a non-empty list of positive widths, got {list(layer_units)}"
            )
        if split_half and any(h % 2 for h in units[:-1]):
            raise ValueError(
                f"CIN split_half needs even widths in every layer but the last, got {units}"
            )
        self.num_fields = num_fields
        self.split_half = split_half
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.fed_forward: list[int] = []  # maps passed to the next layer, per layer
        self.emitted: list[int] = []  # maps pooled into the output, per layer
        prev = num_fields
        for k, h in enumerate(units):
            std = math.sqrt(2.0 / (prev * num_fields + h))
            self.weights.append(nn.Parameter(torch.randn(h, prev, num_fields) * std))
            self.biases.append(nn.Parameter(torch.zeros(h)))
            last = k == len(units) - 1
            nxt = h // 2 if split_half and not last else h
            self.fed_forward.append(nxt)
            self.emitted.append(h - nxt if split_half and not last else h)
            prev = nxt
        self.output_dim = sum(self.emitted)

    def _layer_t(self, k: int, xt: torch.Tensor, x0t: torch.Tensor) -> torch.Tensor:
        """Layer k in coordinate-major layout: [B, d, H_{k-1}] × [B, d, F] → [B, d, H_k].

        One GEMM of the [B·d, H_{k-1}·F] Hadamard matrix with Wᵀ (no per-sample weight copies).
        """
        w = self.weights[k]
        b, d, h_prev = xt.shape
        z = (xt.unsqueeze(3) * x0t.unsqueeze(2)).reshape(b * d, h_prev * self.num_fields)
        out = torch.addmm(self.biases[k], z, w.reshape(w.shape[0], -1).T)
        return out.view(b, d, w.shape[0])

    def layer(self, k: int, x_prev: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Layer k's maps before any split: [B, H_{k-1}, d] × [B, F, d] → [B, H_k, d]."""
        return self._layer_t(k, x_prev.transpose(1, 2), x0.transpose(1, 2)).transpose(1, 2)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """[B, F, d] → concat over layers of Σ_d of the emitted maps, [B, output_dim]."""
        pooled = []
        x0t = x0.transpose(1, 2)
        xt = x0t
        last = len(self.weights) - 1
        for k in range(len(self.weights)):
            out = self._layer_t(k, xt, x0t)  # [B, d, H_k]
            if self.split_half and k < last:
                xt, emit = out[:, :, : self.fed_forward[k]], out[:, :, self.fed_forward[k] :]
            else:
                xt, emit = out, out
            pooled.append(emit.sum(dim=1))
        return torch.cat(pooled, dim=1)
