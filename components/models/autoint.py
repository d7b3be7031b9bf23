"""AutoInt and AutoInt+: stacked multi-head self-attention over fields (+ a parallel DNN).

Paper: Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural
Networks", CIKM 2019, eqs. 5–9: interacting layers (see layers/attention.py), then
z = wᵀ [ẽ_1 ‖ … ‖ ẽ_F] + b. AutoInt+ adds an MLP on flatten(E) whose logit is summed (FuxiCTR's
combination). Defaults: 3 layers, 2 heads, attention_dim 16 (total over heads, so 8 per head),
residual on, no 1/√a scaling (the paper's form).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.attention import MultiHeadSelfAttention
from .layers.mlp import xavier_linear
from .registry import register


@register("autoint", family="attention", paper="Song et al., AutoInt, CIKM 2019")
class AutoInt(CTRModel):
    """Self-attention stack → flatten → linear."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        attention_layers: int = 3,
        num_heads: int = 2,
        attention_dim: int = 16,
        use_residual: bool = True,
        use_scale: bool = False,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
        )
        if attention_layers < 1:
            raise ValueError(f"attention_layers must be >= 1, got {attention_layers}")
        self.attention = nn.Sequential(
            *(
                MultiHeadSelfAttention(
                    embedding_dim if i == 0 else attention_dim,
                    attention_dim,
                    num_heads,
                    use_residual=use_residual,
                    use_scale=use_scale,
                )
                for i in range(attention_layers)
            )
        )
        self.head = xavier_linear(self.num_fields * attention_dim, 1)

    def attention_logit(self, emb: Embedded) -> torch.Tensor:
        """wᵀ flatten(attention stack(E)) + b: [B]."""
        return self.head(self.attention(emb.vectors).flatten(start_dim=1)).squeeze(1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = attention logit."""
        return self.attention_logit(emb)


@register(
    "autoint_plus",
    family="attention",
    paper="Song et al., AutoInt, CIKM 2019 (AutoInt+: with a parallel DNN)",
)
class AutoIntPlus(AutoInt):
    """AutoInt logit + MLP(flatten(E)) logit."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        attention_layers: int = 3,
        num_heads: int = 2,
        attention_dim: int = 16,
        use_residual: bool = True,
        use_scale: bool = False,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
            attention_layers=attention_layers,
            num_heads=num_heads,
            attention_dim=attention_dim,
            use_residual=use_residual,
            use_scale=use_scale,
        )
        self.mlp = self.flat_mlp(hidden_units, dropout, batch_norm)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = attention logit + DNN logit."""
        return self.attention_logit(emb) + self.mlp(self.flat_vectors(emb)).squeeze(1)
