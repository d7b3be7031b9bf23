"""DNN: a plain MLP over the concatenated field embeddings (FuxiCTR's "DNN", YouTube-style).

Paper: Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016 (the form
BARS lists as DNN). Equation: z = MLP([e_1 ‖ … ‖ e_F]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .registry import register


@register(
    "dnn",
    family="deep",
    paper="Covington et al., Deep Neural Networks for YouTube Recommendations, RecSys 2016",
)
class DNN(CTRModel):
    """MLP(flatten(E)) → logit."""

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
        self.mlp = self.flat_mlp(hidden_units, dropout, batch_norm)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = MLP(flatten(E))."""
        return self.mlp(self.flat_vectors(emb)).squeeze(1)
