"""DCNv2: improved deep & cross network (full-rank, low-rank or mixture-of-experts cross layers).

Paper: Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale
Learning to Rank Systems", WWW 2021, eq. 1 (x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l), eq. 2 (low rank
W = U Vᵀ), eq. 3 (mixture of low-rank experts), Fig. 2 structures:
- ``parallel`` (default, as FuxiCTR): z = head([cross(x0) ‖ MLP(x0)]);
- ``stacked``: z = head(MLP(cross(x0))).
``cross_type``: full | low_rank (``low_rank`` = r) | mixture (``num_experts`` experts of rank r).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel, check_choice
from .embedding import Embedded
from .layers.cross import CrossNet
from .layers.mlp import MLP, xavier_linear
from .registry import register

STRUCTURES = ("parallel", "stacked")
CROSS_TYPES = ("full", "low_rank", "mixture")


@register("dcnv2", family="cross", paper="Wang et al., DCN V2, WWW 2021")
class DCNv2(CTRModel):
    """DCNv2 cross network combined with an MLP, stacked or in parallel."""

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
        structure: str = "parallel",
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
        self.structure = check_choice("structure", structure, STRUCTURES)
        check_choice("cross_type", cross_type, CROSS_TYPES)
        dim = self.num_fields * embedding_dim
        self.cross = CrossNet(
            dim, num_cross_layers, kind=cross_type, rank=low_rank, num_experts=num_experts
        )
        self.mlp = MLP(dim, hidden_units, dropout=dropout, batch_norm=batch_norm)
        head_in = dim + self.mlp.output_dim if structure == "parallel" else self.mlp.output_dim
        self.head = xavier_linear(head_in, 1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """parallel: head([cross(x0) ‖ MLP(x0)]); stacked: head(MLP(cross(x0)))."""
        x0 = self.flat_vectors(emb)
        if self.structure == "stacked":
            return self.head(self.mlp(self.cross(x0))).squeeze(1)
        return self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(1)
