"""DCN (v1): deep & cross network.

Paper: Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017, eqs. 1–4:
x_{l+1} = x0 (x_lᵀ w_l) + b_l + x_l (cross, x0 = flatten(E)); deep = MLP(x0);
z = w_logitᵀ [x_L ‖ h_deep] + b. An empty ``hidden_units`` leaves the cross network alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.cross import CrossNet
from .layers.mlp import MLP, xavier_linear
from .registry import register


@register(
    "dcn",
    family="cross",
    paper="Wang et al., Deep & Cross Network for Ad Click Predictions, ADKDD 2017",
)
class DCN(CTRModel):
    """Cross stack (v1) ‖ MLP → linear."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        num_cross_layers: int = 3,
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
        dim = self.num_fields * embedding_dim
        self.cross = CrossNet(dim, num_cross_layers, kind="v1")
        self.mlp = (
            MLP(dim, hidden_units, dropout=dropout, batch_norm=batch_norm) if hidden_units else None
        )
        self.head = xavier_linear(dim + (self.mlp.output_dim if self.mlp else 0), 1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = head([cross(x0) ‖ MLP(x0)])."""
        x0 = self.flat_vectors(emb)
        parts = [self.cross(x0)] + ([self.mlp(x0)] if self.mlp is not None else [])
        return self.head(torch.cat(parts, dim=1)).squeeze(1)
