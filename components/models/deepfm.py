"""DeepFM: FM and an MLP sharing one embedding, logits summed.

Paper: Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction",
IJCAI 2017, eq. 1: ŷ = sigmoid(y_FM + y_DNN), y_FM = w0 + Σ w_i + Σ_{i<j} ⟨v_i, v_j⟩ (eq. 2),
y_DNN = MLP([v_1 ‖ … ‖ v_F]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.interaction import bi_interaction
from .registry import register


@register("deepfm", family="deep", paper="Guo et al., DeepFM, IJCAI 2017")
class DeepFM(CTRModel):
    """FM logit + MLP logit."""

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
        """y_FM + y_DNN."""
        fm = self.linear_logit(emb) + bi_interaction(emb.vectors).sum(dim=1)
        return fm + self.mlp(self.flat_vectors(emb)).squeeze(1)
