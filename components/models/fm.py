"""FM: factorization machine in its linear-time form.

Paper: Rendle, "Factorization Machines", ICDM 2010, eq. 1 with lemma 3.1:
z = w0 + Σ_i w_i + Σ_{i<j} ⟨v_i, v_j⟩ = w0 + Σ_i w_i + ½ Σ_k [(Σ_i v_ik)² − Σ_i v_ik²].
"""

from __future__ import annotations

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.interaction import bi_interaction
from .registry import register


@register("fm", family="factorization", paper="Rendle, Factorization Machines, ICDM 2010")
class FM(CTRModel):
    """w0 + first order + Σ_d bi_interaction(E)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
            first_order=True,
        )

    def interact(self, emb: Embedded) -> torch.Tensor:
        """Linear term + second-order term in O(F·d)."""
        return self.linear_logit(emb) + bi_interaction(emb.vectors).sum(dim=1)
