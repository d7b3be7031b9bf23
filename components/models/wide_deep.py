"""Wide&Deep: a linear ("wide") part plus an MLP ("deep") part on shared embeddings, logits summed.

Paper: Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016, eq. 3:
z = w_wideᵀ [x, φ(x)] + w_deepᵀ a^(L) + b. The hand-made cross-product transforms φ(x) are not
engineered here (as in FuxiCTR/BARS): the wide part is LR over the raw fields.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .registry import register


@register(
    "wide_deep",
    family="deep",
    paper="Cheng et al., Wide & Deep Learning for Recommender Systems, DLRS 2016",
)
class WideDeep(CTRModel):
    """LR(x) + MLP(flatten(E))."""

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
            first_order=True,
        )
        self.mlp = self.flat_mlp(hidden_units, dropout, batch_norm)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = wide + deep."""
        return self.linear_logit(emb) + self.mlp(self.flat_vectors(emb)).squeeze(1)
