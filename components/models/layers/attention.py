"""Attention blocks: AutoInt's multi-head self-attention over fields, AFM's attention over pairs.

AutoInt (Song et al., CIKM 2019, eqs. 5–8), per head h with per-head width a = attention_dim / heads:
    α^h(m,k) = softmax_k ⟨W_Q^h e_m, W_K^h e_k⟩   (optionally divided by √a; the paper does not scale)
    ẽ_m^h = Σ_k α^h(m,k) W_V^h e_k;   ẽ_m = concat_h ẽ_m^h;   e_m ← ReLU(ẽ_m + W_res e_m)
``attention_dim`` is the total output width (all heads), as in FuxiCTR. W_res is always a learned
projection (the paper's form), and no bias is used in Q/K/V/res.

AFM (Xiao et al., IJCAI 2017, eqs. 4–5): for pair products p_ij = e_i ⊙ e_j,
    a'_ij = hᵀ ReLU(W p_ij + b),  a_ij = softmax over pairs,  output Σ a_ij p_ij ∈ R^d.
"""

from __future__ import annotations

import torch
from torch import nn

from .mlp import xavier_linear


class MultiHeadSelfAttention(nn.Module):
    """One AutoInt interacting layer: [B, F, input_dim] → [B, F, attention_dim]."""

    def __init__(
        self,
        input_dim: int,
        attention_dim: int = 16,
        num_heads: int = 2,
        *,
        use_residual: bool = True,
        use_scale: bool = False,
    ) -> None:
        super().__init__()
        if num_heads < 1 or attention_dim % num_heads:
            raise ValueError(
                f"attention_dim ({attention_dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.use_scale = use_scale
        self.W_q = xavier_linear(input_dim, attention_dim, bias=False)
        self.W_k = xavier_linear(input_dim, attention_dim, bias=False)
        self.W_v = xavier_linear(input_dim, attention_dim, bias=False)
        self.W_res = xavier_linear(input_dim, attention_dim, bias=False) if use_residual else None
        self.output_dim = attention_dim

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        return x.view(b, f, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, F, a]

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """α: [B, heads, F, F]; row m is the distribution of field m's attention over fields k."""
        q, k = self._heads(self.W_q(x)), self._heads(self.W_k(x))
        scores = q @ k.transpose(-1, -2)
        if self.use_scale:
            scores = scores / self.head_dim**0.5
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(concat_h(α^h V^h) + W_res x)."""
        b, f, _ = x.shape
        out = self.attention_weights(x) @ self._heads(self.W_v(x))  # [B, H, F, a]
        out = out.transpose(1, 2).reshape(b, f, self.output_dim)
        if self.W_res is not None:
            out = out + self.W_res(x)
        return torch.relu(out)


class PairAttentionPooling(nn.Module):
    """AFM attention-based pooling of pair vectors: [B, P, d] → ([B, d], weights [B, P])."""

    def __init__(self, dim: int, attention_dim: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.W = xavier_linear(dim, attention_dim)
        self.h = xavier_linear(attention_dim, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def attention_weights(self, pairs: torch.Tensor) -> torch.Tensor:
        """a_ij: [B, P], softmax over the P pairs (each row sums to 1)."""
        return torch.softmax(self.h(torch.relu(self.W(pairs))).squeeze(-1), dim=1)

    def forward(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ_p a_p · pairs_p, a); dropout (if any) acts on the weights in training."""
        weights = self.attention_weights(pairs)
        pooled = torch.einsum("bp,bpd->bd", self.dropout(weights), pairs)
        return pooled, weights
