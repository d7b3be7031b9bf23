"""FFM: field-aware factorization machine.

Paper: Juan et al., "Field-aware Factorization Machines for CTR Prediction", RecSys 2016, eq. 3:
z = w0 + Σ_i w_i + Σ_{i<j} ⟨v_{i,f_j}, v_{j,f_i}⟩ — every feature has one vector per other field.
Storage: the shared embedding has width (F−1)·d, viewed as [B, F, F−1, d] (FuxiCTR's layout, no self
slot); a vocabulary of V rows costs V·(F−1)·d floats, so FFM is memory-heavy on wide data.
"""

from __future__ import annotations

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.interaction import FieldAwarePairs
from .registry import register


@register(
    "ffm",
    family="factorization",
    paper="Juan et al., Field-aware Factorization Machines for CTR Prediction, RecSys 2016",
)
class FFM(CTRModel):
    """w0 + first order + Σ_{i<j} ⟨v_{i,f_j}, v_{j,f_i}⟩; ``embedding_dim`` is d of each field vector."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
    ) -> None:
        num_fields = feature_map.num_fields
        super().__init__(
            feature_map,
            embedding_dim=max(num_fields - 1, 0) * embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
            first_order=True,
        )
        self.field_dim = embedding_dim
        self.embedding_dim = embedding_dim
        self.pairs = FieldAwarePairs(num_fields)

    def field_aware_vectors(self, emb: Embedded) -> torch.Tensor:
        """The embedding viewed as v: [B, F, F−1, d]."""
        b, f, _ = emb.vectors.shape
        return emb.vectors.view(b, f, f - 1, self.field_dim)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """Linear term + field-aware pair sum."""
        if self.pairs.num_pairs == 0:
            return self.linear_logit(emb)
        return self.linear_logit(emb) + self.pairs(self.field_aware_vectors(emb)).sum(dim=1)
