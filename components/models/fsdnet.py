"""FSDNet: feature-interaction fusion self-distillation network (parallel DCNv2 + MLP, a head per depth).

Paper: "Feature Interaction Fusion Self-Distillation Network For CTR Prediction", arXiv 2411.07508
(models.md §3; the authors' code ``coder-qiu/FSDNet``). With x0 = flatten(E) ∈ R^D, D = F·d:

    cross stream:  c_0 = x0;  c_l = c_{l-1} + x0 ⊙ (W_l c_{l-1} + b_l)      (DCNv2 cross layer)
    deep stream:   d_0 = x0;  d_l = Dropout(ReLU(BN(V_l d_{l-1} + a_l)))      (one MLP layer each)
    for l = 1..L:  f_l = concat(c_l, d_l) ∈ R^{D+h};  z_l = u_l · f_l + β_l     (own head per depth)

The streams stay parallel (c_l never sees d_l). The deepest head (l = L) is the self-distillation
teacher, heads 1..L-1 the students; every MLP layer has the same width h (``hidden_dim``) so all
fused features f_l share one dimension (the hint loss compares f_L with f_l).

:meth:`FSDNet.forward_heads` returns every head's logit [B, L] and the fused features (training,
with :func:`components.distill.losses.fsdnet_loss`). ``forward`` returns one inference logit:
``inference="mean"`` (default, the code's evaluation) = logit of the mean of the heads'
probabilities, logit((1/L)·Σ_l σ(z_l)), computed stably as logsumexp_l log σ(z_l) −
logsumexp_l log σ(−z_l); ``"deepest"`` = z_L (the teacher head alone). With a logistic base
(``build_model(..., logistic_base=True)``: the pipeline's teacher's frozen LR, ``distill.logistic_base``)
each z_l is the head's output plus the LR logit, in training and at inference.

Init: Xavier-normal Linear weights, zero biases (FuxiCTR ``reset_parameters``); the cross layers
are the zoo's (``cross_type`` full by default as in the code; low_rank / mixture also accepted).
"""

from __future__ import annotations

import torch
from torch import nn

from components.data.feature_map import FeatureMap

from .base import CTRModel, check_choice
from .embedding import Embedded
from .layers.cross import CrossNet
from .layers.mlp import MLP, xavier_linear
from .registry import register

INFERENCE_MODES = ("mean", "deepest")
CROSS_TYPES = ("full", "low_rank", "mixture")


def mean_probability_logit(head_logits: torch.Tensor) -> torch.Tensor:
    """logit(mean_l σ(z_l)) for logits [B, L] → [B], without leaving log space (finite for any z).

    log mean σ(z) = logsumexp(log σ(z)) − log L and log(1 − mean σ(z)) = logsumexp(log σ(−z)) −
    log L; the log L terms cancel in the difference.
    """
    if head_logits.dim() != 2 or head_logits.shape[1] < 1:
        raise ValueError(f"head logits must be [B, L] with L >= 1, got {list(head_logits.shape)}")
    logsig = nn.functional.logsigmoid
    return torch.logsumexp(logsig(head_logits), dim=1) - torch.logsumexp(
        logsig(-head_logits), dim=1
    )


@register(
    "fsdnet",
    family="cross",
    paper="FSDNet: Feature Interaction Fusion Self-Distillation Network for CTR Prediction, arXiv 2411.07508",
)
class FSDNet(CTRModel):
    """Parallel cross and MLP streams fused at every depth, one logit head per depth."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        num_layers: int = 3,
        hidden_dim: int = 400,
        cross_type: str = "full",
        low_rank: int = 32,
        num_experts: int = 4,
        dropout: float = 0.0,
        batch_norm: bool = True,
        inference: str = "mean",
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
        )
        check_choice("cross_type", cross_type, CROSS_TYPES)
        self.inference = check_choice("inference", inference, INFERENCE_MODES)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        dim = self.num_fields * embedding_dim
        self.num_layers = num_layers
        self.fused_dim = dim + hidden_dim
        self.cross = CrossNet(
            dim, num_layers, kind=cross_type, rank=low_rank, num_experts=num_experts
        )
        self.deep = nn.ModuleList(
            MLP(dim if i == 0 else hidden_dim, [hidden_dim], dropout=dropout, batch_norm=batch_norm)
            for i in range(num_layers)
        )
        self.heads = nn.ModuleList(xavier_linear(self.fused_dim, 1) for _ in range(num_layers))

    def interact_heads(self, emb: Embedded) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Embeddings → (head logits [B, L], fused features [f_1, …, f_L], each [B, D + h])."""
        x0 = self.flat_vectors(emb)
        c = d = x0
        fused = []
        for cross_layer, deep_layer in zip(self.cross.layers, self.deep, strict=True):
            c = cross_layer(x0, c)
            d = deep_layer(d)
            fused.append(torch.cat([c, d], dim=1))
        logits = torch.cat([head(f) for head, f in zip(self.heads, fused, strict=True)], dim=1)
        return logits, fused

    def forward_heads(
        self, categorical: torch.Tensor, dense: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """categorical [B, F_cat], dense [B, F_dense] → (head logits [B, L], fused features list).

        With a logistic base (``build_model(..., logistic_base=True)``) its logit is added to every
        head's, so the heads, their self-distillation and the inference combination all see it."""
        logits, fused = self.interact_heads(self.embed(categorical, dense))
        if self.logistic_base is not None:
            logits = logits + self.logistic_base.base_logit(categorical, dense).unsqueeze(1)
        return logits, fused

    def _logits(self, categorical: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        """The inference logit of :meth:`forward_heads`' heads (the base inside each head's logit)."""
        if self.logistic_base is None:
            return super()._logits(categorical, dense)
        return self.combine_heads(self.forward_heads(categorical, dense)[0])

    def combine_heads(self, head_logits: torch.Tensor) -> torch.Tensor:
        """The inference logit [B] from head logits [B, L] under ``self.inference``."""
        if self.inference == "deepest":
            return head_logits[:, -1]
        return mean_probability_logit(head_logits)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """Inference logit [B]: ``mean`` → logit(mean_l σ(z_l)); ``deepest`` → z_L."""
        return self.combine_heads(self.interact_heads(emb)[0])
