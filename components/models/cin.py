"""CIN: the compressed interaction network alone → linear (the KD-DAGFM CIN teacher).

Paper: Lian et al., "xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender
Systems", KDD 2018, eqs. 6–7, used without DNN and linear parts as the teacher of Tian et al.,
KD-DAGFM, WSDM 2023 (models.md §2.4): z = wᵀ [p^1 ‖ … ‖ p^L] + b, p^k_h = Σ_d X^k_{h,d}.
Default widths [200, 200, 200] match the KD-DAGFM Avazu teacher; they are costly on CPU
(≈ B·200·F·d floats per layer), so pass smaller ``cin_units`` for quick runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.cin import CIN as CINLayer
from .layers.mlp import xavier_linear
from .registry import register


@register(
    "cin",
    family="cin",
    paper="Lian et al., xDeepFM, KDD 2018 (CIN only; KD-DAGFM teacher, WSDM 2023)",
)
class CIN(CTRModel):
    """CIN pooled maps → linear head."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        cin_units: Sequence[int] = (200, 200, 200),
        split_half: bool = False,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
        )
        self.cin = CINLayer(self.num_fields, cin_units, split_half=split_half)
        self.head = xavier_linear(self.cin.output_dim, 1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = head(CIN(E))."""
        return self.head(self.cin(emb.vectors)).squeeze(1)
