"""xDeepFM: linear + CIN + DNN on shared embeddings, logits summed.

Paper: Lian et al., "xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender
Systems", KDD 2018, eq. 8: ŷ = σ(w_linearᵀ a + w_dnnᵀ x_dnn + w_cinᵀ p⁺ + b).
Default CIN widths [200, 200, 200] (the paper's Criteo setting; FuxiCTR defaults to [16, 16, 16],
pass smaller ``cin_units`` for quick CPU runs). An empty ``hidden_units`` drops the DNN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.cin import CIN
from .layers.mlp import MLP, xavier_linear
from .registry import register


@register("xdeepfm", family="cin", paper="Lian et al., xDeepFM, KDD 2018")
class XDeepFM(CTRModel):
    """First-order + CIN head + MLP logit."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        cin_units: Sequence[int] = (200, 200, 200),
        split_half: bool = False,
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
        self.cin = CIN(self.num_fields, cin_units, split_half=split_half)
        self.cin_head = xavier_linear(self.cin.output_dim, 1)
        dim = self.num_fields * embedding_dim
        self.mlp = (
            MLP(dim, hidden_units, output_dim=1, dropout=dropout, batch_norm=batch_norm)
            if hidden_units
            else None
        )

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = linear + CIN logit + DNN logit."""
        z = self.linear_logit(emb) + self.cin_head(self.cin(emb.vectors)).squeeze(1)
        if self.mlp is not None:
            z = z + self.mlp(self.flat_vectors(emb)).squeeze(1)
        return z
