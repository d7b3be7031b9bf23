"""NFM: neural factorization machine.

Paper: He & Chua, "Neural Factorization Machines for Sparse Predictive Analytics", SIGIR 2017,
eqs. 3–4: z = w0 + Σ_i w_i + MLP(f_BI), f_BI = Σ_{i<j} v_i ⊙ v_j = ½[(Σv)² − Σv²]
(BatchNorm on f_BI when ``batch_norm``, as in the paper and FuxiCTR).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .layers.interaction import bi_interaction
from .layers.mlp import MLP
from .registry import register


@register(
    "nfm",
    family="factorization",
    paper="He & Chua, Neural Factorization Machines for Sparse Predictive Analytics, SIGIR 2017",
)
class NFM(CTRModel):
    """Linear term + MLP over the bi-interaction vector."""

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
        self.bi_norm = nn.BatchNorm1d(embedding_dim) if batch_norm else nn.Identity()
        self.mlp = MLP(
            embedding_dim, hidden_units, output_dim=1, dropout=dropout, batch_norm=batch_norm
        )

    def interact(self, emb: Embedded) -> torch.Tensor:
        """w0 + Σ w_i + MLP(BN(f_BI))."""
        f_bi = self.bi_norm(bi_interaction(emb.vectors))
        return self.linear_logit(emb) + self.mlp(f_bi).squeeze(1)
