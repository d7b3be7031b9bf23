"""AFM: attentional factorization machine.

Paper: Xiao et al., "Attentional Factorization Machines", IJCAI 2017, eq. 5:
z = w0 + Σ_i w_i + pᵀ Σ_{i<j} a_ij (v_i ⊙ v_j),  a_ij = softmax_{(i,j)} hᵀ ReLU(W (v_i ⊙ v_j) + b).
"""

from __future__ import annotations

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.attention import PairAttentionPooling
from .layers.interaction import FieldPairs
from .layers.mlp import xavier_linear
from .registry import register


@register(
    "afm",
    family="factorization",
    paper="Xiao et al., Attentional Factorization Machines, IJCAI 2017",
)
class AFM(CTRModel):
    """Linear term + projection of the attention-pooled pairwise Hadamard products."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        attention_dim: int = 16,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
            first_order=True,
        )
        if self.num_fields < 2:
            raise ValueError("AFM needs at least 2 fields to form pairs")
        self.pairs = FieldPairs(self.num_fields)
        self.attention = PairAttentionPooling(embedding_dim, attention_dim, attention_dropout)
        self.projection = xavier_linear(embedding_dim, 1, bias=False)  # p

    def attention_weights(self, emb: Embedded) -> torch.Tensor:
        """a_ij for every pair i<j: [B, F(F−1)/2], rows sum to 1."""
        return self.attention.attention_weights(self.pairs.hadamard_products(emb.vectors))

    def interact(self, emb: Embedded) -> torch.Tensor:
        """w0 + Σ w_i + pᵀ Σ a_ij (v_i ⊙ v_j)."""
        pooled, _ = self.attention(self.pairs.hadamard_products(emb.vectors))
        return self.linear_logit(emb) + self.projection(pooled).squeeze(1)
