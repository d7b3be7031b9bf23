"""DLRM: deep learning recommendation model.

Paper: Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation
Systems", arXiv 1906.00091, 2019 (§2–3, "dot" interaction):
  x = MLP_bottom(dense) ∈ R^d (ReLU after every bottom layer, the reference code's default);
  T = [x, e_1, …, e_Fcat] (F' = F_cat + 1 vectors);  z = MLP_top([x ‖ (⟨t_i, t_j⟩)_{i<j}]).
So the top MLP sees F'(F'−1)/2 dot products plus the d-dim dense vector. Without dense fields
(all numerics bucketised) there is no bottom MLP: T = E and the top input is the products only.
Defaults follow the reference Criteo-Kaggle config (bottom 512-256-64-d, top 512-256-1) and,
like the original and FuxiCTR's DLRM, no BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.interaction import FieldPairs
from .layers.mlp import MLP
from .registry import register


@register(
    "dlrm",
    family="product",
    paper="Naumov et al., Deep Learning Recommendation Model (DLRM), arXiv 1906.00091, 2019",
)
class DLRM(CTRModel):
    """Bottom MLP on dense values, pairwise dot interactions, top MLP."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        bottom_units: Sequence[int] = (512, 256, 64),
        top_units: Sequence[int] = (512, 256),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
            embed_dense=False,
        )
        num_dense = self.embedding.num_dense
        self.bottom = (
            MLP(num_dense, [*bottom_units, embedding_dim], dropout=dropout, batch_norm=batch_norm)
            if num_dense
            else None
        )
        num_vectors = self.embedding.num_categorical + (1 if num_dense else 0)
        if num_vectors < 2:
            raise ValueError(f"DLRM needs at least 2 interacting vectors, got {num_vectors}")
        self.pairs = FieldPairs(num_vectors)
        self.interaction_dim = self.pairs.num_pairs + (embedding_dim if num_dense else 0)
        self.top = MLP(
            self.interaction_dim, top_units, output_dim=1, dropout=dropout, batch_norm=batch_norm
        )

    def interaction(self, emb: Embedded) -> torch.Tensor:
        """Top-MLP input [x ‖ dot products]: [B, F'(F'−1)/2 (+ d)]."""
        if self.bottom is None:
            return self.pairs.inner_products(emb.vectors)
        x = self.bottom(emb.dense)
        t = torch.cat([x.unsqueeze(1), emb.vectors], dim=1)
        return torch.cat([x, self.pairs.inner_products(t)], dim=1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = MLP_top(interaction)."""
        return self.top(self.interaction(emb)).squeeze(1)
