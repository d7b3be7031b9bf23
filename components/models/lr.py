"""LR: logistic regression on one-hot fields (the linear baseline of every CTR benchmark).

Paper: McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013 (the model form
used as "LR" in BARS). Equation: z = w0 + Σ_i w_{x_i} (+ Σ_j w_j·x_j for dense fields).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.data.feature_map import FeatureMap

from .base import CTRModel
from .embedding import Embedded
from .registry import register


@register(
    "lr",
    family="linear",
    paper="McMahan et al., Ad Click Prediction: a View from the Trenches, KDD 2013",
)
class LR(CTRModel):
    """First-order weights only. ``embedding_dim`` is accepted for a uniform config but unused."""

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
            embedding_dim=0,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
            first_order=True,
        )

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = w0 + Σ_i w_i."""
        return self.linear_logit(emb)

    def base_logit(self, categorical: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        """z of :meth:`forward` for ids and dense values already checked by the model this LR is the
        logistic base of (components/models/base.py): the fields' weights gathered and summed, one
        ``addmv`` for the dense ones, no checks, squeeze or concat (a batch-1 call took 0.07 ms through
        the generic path, a third of a DAGFM student's latency; ≈ 0.012 ms this way). Traced (the
        ONNX export) the dense term is a 2-D [B, F_dense] @ [F_dense, 1] ``MatMul``: onnxruntime
        took 99 µs for 1,024 rows with a 1-D [F_dense] weight, 6 µs with the 2-D one."""
        emb = self.embedding
        if emb.first_order_table is None:
            return self.interact(self.embed(categorical, dense))
        if torch.jit.is_tracing():
            z = _traced_first_order(emb, categorical).sum(1)
        else:
            z = F.embedding(categorical.long() + emb.offsets, emb.first_order_table.weight).sum((1, 2))
        if emb.first_order_dense is not None and dense is not None:
            if torch.jit.is_tracing():
                z = z + F.linear(dense, emb.first_order_dense.unsqueeze(0)).squeeze(1)
            else:
                z = torch.addmv(z, dense, emb.first_order_dense)
        return z + self.bias

    def logit_terms(
        self, categorical: torch.Tensor, dense: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`base_logit` as a linear map (x [B, n], w [n], b): z = x · w + b, x the fields'
        gathered weights and the dense values, w ones and the dense weights. For a caller that folds
        z into a matmul of its own (the DAGFM student's one-row ONNX readout)."""
        emb, x, w = self.embedding, [], []
        if emb.first_order_table is not None:
            x.append(_traced_first_order(emb, categorical))
            w.append(emb.first_order_table.weight.new_ones(len(emb.offsets)))
        if emb.first_order_dense is not None and dense is not None:
            x.append(dense)
            w.append(emb.first_order_dense)
        if not x:
            return self.bias.new_zeros((len(categorical), 0)), self.bias.new_zeros(0), self.bias
        return torch.cat(x, 1), torch.cat(w), self.bias


def _traced_first_order(emb, categorical: torch.Tensor) -> torch.Tensor:
    """The fields' first-order weights [B, F_cat] as the ONNX export traces them: one
    ``GatherElements`` from the flattened table (onnxruntime: 57 vs 135 µs per 512 Kaggle-size
    rows for ``Gather`` from the [N, 1] table, which copies one float per call; 2 threads). The
    flattened table is a constant the exporter folds; the one-row trace folds the same bytes, which
    the export stores once."""
    ids = (categorical.long() + emb.offsets).reshape(-1)
    return torch.gather(emb.first_order_table.weight.view(-1), 0, ids).view(-1, len(emb.offsets))
