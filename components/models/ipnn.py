"""IPNN: product-based neural network with inner products.

Paper: Qu et al., "Product-based Neural Networks for User Response Prediction", ICDM 2016
(eqs. 3–6, inner-product variant as in FuxiCTR's PNN): z = MLP([e_1 ‖ … ‖ e_F ‖ (⟨e_i, e_j⟩)_{i<j}]).
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
    "ipnn",
    family="product",
    paper="Qu et al., Product-based Neural Networks for User Response Prediction, ICDM 2016",
)
class IPNN(CTRModel):
    """MLP over the embeddings concatenated with all F(F−1)/2 pairwise inner products."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
        )
        self.pairs = FieldPairs(self.num_fields)
        in_dim = self.num_fields * embedding_dim + self.pairs.num_pairs
        self.mlp = MLP(in_dim, hidden_units, output_dim=1, dropout=dropout, batch_norm=batch_norm)

    def product_layer(self, emb: Embedded) -> torch.Tensor:
        """[flatten(E) ‖ inner products]: [B, F·d + F(F−1)/2]."""
        return torch.cat([self.flat_vectors(emb), self.pairs.inner_products(emb.vectors)], dim=1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = MLP(product layer)."""
        return self.mlp(self.product_layer(emb)).squeeze(1)
