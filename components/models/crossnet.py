"""CrossNet: the DCNv2 cross network alone → linear (the KD-DAGFM CrossNet teacher).

Paper: Wang et al., DCN V2, WWW 2021, eq. 1, used without its DNN as the teacher of Tian et al.,
"Directed Acyclic Graph Factorization Machines for CTR Prediction via Knowledge Distillation",
WSDM 2023 (models.md §2.4): x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l, z = wᵀ x_L + b.
Init: Xavier-normal everywhere (not the RecBole port's raw N(0, 1) matrices, models.md §7.6).
"""

from __future__ import annotations

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel, check_choice
from .embedding import Embedded
from .layers.cross import CrossNet as CrossStack
from .layers.mlp import xavier_linear
from .registry import register

CROSS_TYPES = ("full", "low_rank", "mixture")


@register(
    "crossnet",
    family="cross",
    paper="Wang et al., DCN V2, WWW 2021 (cross network only; KD-DAGFM teacher, WSDM 2023)",
)
class CrossNet(CTRModel):
    """Cross stack → linear head; no DNN, no first-order term."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        num_cross_layers: int = 3,
        cross_type: str = "full",
        low_rank: int = 32,
        num_experts: int = 4,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
        )
        check_choice("cross_type", cross_type, CROSS_TYPES)
        dim = self.num_fields * embedding_dim
        self.cross = CrossStack(
            dim, num_cross_layers, kind=cross_type, rank=low_rank, num_experts=num_experts
        )
        self.head = xavier_linear(dim, 1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = wᵀ x_L + b."""
        return self.head(self.cross(self.flat_vectors(emb))).squeeze(1)
