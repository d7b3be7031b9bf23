"""DAGFM and KD-DAGFM+: directed-acyclic-graph factorization machines (the KD-DAGFM students).

Paper: Tian et al., "Directed Acyclic Graph Factorization Machines for CTR Prediction via Knowledge
Distillation", WSDM 2023 (models.md §1). One node per field, ordered 1..F; an edge i → j for every
i ≤ j (self-loops included), stored as the 0/1 mask M[i, j] = 1 iff i ≤ j in a registered buffer
(it moves with ``.to()``; models.md §7 pitfall 4). With E ∈ R^{B×F×d}:

    H_0 = C · E                       C ∈ R^{F×F}, the learnable "connect layer", initialised to I
    H_t[j] = H_0[j] ⊙ Σ_{i ≤ j} φ_t(i, j, H_{t-1}[i])          t = 1..L (own weights per layer)
    s_t[j] = Σ_k H_t[j, k]                                     per-node scalar readout
    z = w · concat(s_0, …, s_L) + b                            (DAGFM)

Interaction types φ_t (``interaction_type``):
- ``inner``:  φ = p_t[i,j] ⊙ h,            p_t ∈ R^{F×F×d}
- ``outer``:  φ = (p_t[i,j] · h) q_t[i,j],  p_t, q_t ∈ R^{F×F×d} (rank-1 kernel q pᵀ; the mask is
  applied to p only, as in the reference code — q only multiplies already-masked terms)
- ``kernel``: φ = W_t[i,j] h,              W_t ∈ R^{F×F×d×d} (a full d×d matrix per edge; paper
  only, absent from both released implementations). W = diag(p) reproduces ``inner`` exactly.
Unrolled, H_t[j] sums over every non-decreasing index path i_0 ≤ … ≤ i_{t-1} ≤ j, so layer t
carries all (t+1)-order interactions (models.md §1.4) at O(L·F²·cost(φ)).

Init: C = I; p, q, W Xavier-normal with gain 1.414 per layer tensor (torch fans of an (F, F, d)
tensor are F·d, so std = 1.414/√(F·d); for (F, F, d, d) they are F·d², std = 1.414/(√F·d), which
gives the aggregated kernel message the same variance as the inner one). Not the official inner
variant's raw N(0, 1) (models.md §7 pitfall 7). Readout: Xavier-normal Linear, zero bias.
Embeddings: Xavier-normal per field table by default (``embedding_init="xavier"``; the official code
uses Xavier-uniform, RecBole Xavier-normal), not the zoo's FuxiCTR N(0, 1e-4²): a DAG layer-t state
is a product of t+1 embeddings, so with 1e-4-scale rows the interaction terms start ~1e-8 and a
DAGFM trained from scratch stays at logistic-regression level (synthetic 1M rows: 0.683 AUC). In the
KD-DAGFM chain the embeddings come from the teacher instead (see ``teacher_embedding_rms``).
Parameter count outside the embedding: inner L·F²·d + F² + F(L+1) + 1; outer 2·L·F²·d + F² +
F(L+1) + 1; kernel L·F²·d² + F² + F(L+1) + 1.

KD-DAGFM+ (``kd_dagfm_plus``, models.md §1.7) adds an MLP for the implicit interactions of teachers
with DNN branches. ``structure``:
- ``stacked`` (default; the released code's ``DeepDAGFM``): S = H_0 + H_1 + … + H_L → flatten
  (F·d) → MLP → logit. No per-layer readout.
- ``parallel``: z = DAGFM readout logit + MLP(flatten(E)) logit (the DCNv2/xDeepFM-style sum).
Whether the paper's KD-DAGFM+ is stacked or parallel is unverified, hence the hyperparameter. The
MLP is the zoo's (Xavier-normal Linear → [BN] → ReLU → [Dropout], then Linear → 1), not the
reference's N(0, 0.01)-init DNN with dropout on the logit.

The forward returns raw logits [B]; distillation (α·BCE + β·logit-MSE) lives in
:mod:`components.distill.losses`, and a student can run on frozen embeddings via
``model.interact(teacher.embed(...).detach())``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from components.data.feature_map import FeatureMap

from .base import CTRModel, check_choice
from .embedding import Embedded
from .layers.mlp import MLP, xavier_linear
from .registry import register

INTERACTION_TYPES = ("inner", "outer", "kernel")
PLUS_STRUCTURES = ("stacked", "parallel")
XAVIER_GAIN = 1.414


def _xavier_layers(*shape: int) -> nn.Parameter:
    """A [L, *shape] parameter, each layer slice Xavier-normal (gain 1.414) on its own fans."""
    weight = torch.empty(*shape)
    for t in range(shape[0]):
        nn.init.xavier_normal_(weight[t], gain=XAVIER_GAIN)
    return nn.Parameter(weight)


class DAGPropagation(nn.Module):
    """The DAG part of DAGFM: E [B, F, d] → node states [H_0, H_1, …, H_L], each [B, F, d].

    Parameters: ``connect`` C [F, F] (init I); ``p`` [L, F, F, d] (inner, outer), ``q``
    [L, F, F, d] (outer), ``W`` [L, F, F, d, d] (kernel, W[t, i, j] maps d_in → d_out as
    ``W[t, i, j, d_out, d_in]``). Buffer ``mask`` [F, F] = 1 iff i ≤ j (non-persistent: it is rebuilt
    from F, never learned). Every layer is one einsum over all fields; the only Python loop is
    over the L layers.
    """

    def __init__(
        self, num_fields: int, embedding_dim: int, depth: int = 3, interaction_type: str = "inner"
    ) -> None:
        super().__init__()
        self.interaction_type = check_choice(
            "interaction_type", interaction_type, INTERACTION_TYPES
        )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if num_fields < 1 or embedding_dim < 1:
            raise ValueError(
                f"DAGFM needs num_fields >= 1 and embedding_dim >= 1, got {num_fields}, {embedding_dim}"
            )
        f, d = num_fields, embedding_dim
        self.num_fields, self.embedding_dim, self.depth = f, d, depth
        self.connect = nn.Parameter(torch.eye(f))
        self.register_buffer("mask", torch.ones(f, f).triu(), persistent=False)
        self.p = self.q = self.W = None
        if interaction_type in ("inner", "outer"):
            self.p = _xavier_layers(depth, f, f, d)
        if interaction_type == "outer":
            self.q = _xavier_layers(depth, f, f, d)
        if interaction_type == "kernel":
            self.W = _xavier_layers(depth, f, f, d, d)

    def _aggregate(self, t: int, h: torch.Tensor) -> torch.Tensor:
        """A[b, j] = Σ_{i ≤ j} φ_t(i, j, h[b, i]) for all j at once: [B, F, d]."""
        m = self.mask
        if self.interaction_type == "inner":
            return torch.einsum("bid,ijd->bjd", h, self.p[t] * m.unsqueeze(2))
        if self.interaction_type == "outer":
            scores = torch.einsum("bid,ijd->bij", h, self.p[t] * m.unsqueeze(2))
            return torch.einsum("bij,ijd->bjd", scores, self.q[t])
        return torch.einsum("bie,ijde->bjd", h, self.W[t] * m[:, :, None, None])

    def forward(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        """E [B, F, d] → [H_0, …, H_L], H_0 = C·E and H_t = H_0 ⊙ A_t(H_{t-1})."""
        if vectors.dim() != 3 or vectors.shape[1:] != (self.num_fields, self.embedding_dim):
            raise ValueError(
                f"DAGFM input must be [B, {self.num_fields}, {self.embedding_dim}], got {list(vectors.shape)}"
            )
        h0 = torch.einsum("jk,bkd->bjd", self.connect, vectors)
        states = [h0]
        for t in range(self.depth):
            states.append(h0 * self._aggregate(t, states[-1]))
        return states


@register(
    "dagfm",
    family="graph",
    paper="Tian et al., Directed Acyclic Graph Factorization Machines (KD-DAGFM student), WSDM 2023",
)
class DAGFM(CTRModel):
    """DAGFM: DAG propagation over fields, per-layer per-node sums → one linear readout."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "xavier",
        embedding_std: float = 1e-4,
        interaction_type: str = "inner",
        depth: int = 3,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
        )
        self.dag = DAGPropagation(self.num_fields, embedding_dim, depth, interaction_type)
        self.readout = xavier_linear(self.num_fields * (depth + 1), 1)

    def layer_readouts(self, emb: Embedded) -> torch.Tensor:
        """s_t[j] = Σ_k H_t[j, k] for t = 0..L: [B, L+1, F]."""
        return torch.stack([h.sum(dim=2) for h in self.dag(emb.vectors)], dim=1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = w · concat(s_0, …, s_L) + b (layer-major order, as the reference code)."""
        return self.readout(self.layer_readouts(emb).flatten(start_dim=1)).squeeze(1)


@register(
    "kd_dagfm_plus",
    family="graph",
    paper="Tian et al., KD-DAGFM+ (DAGFM + MLP student), WSDM 2023",
)
class KDDAGFMPlus(CTRModel):
    """DAGFM + MLP: ``stacked`` MLP(flatten(Σ_t H_t)) or ``parallel`` DAGFM logit + MLP(E) logit."""

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "xavier",
        embedding_std: float = 1e-4,
        interaction_type: str = "inner",
        depth: int = 3,
        structure: str = "stacked",
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(
            feature_map,
            embedding_dim=embedding_dim,
            embedding_init=embedding_init,
            embedding_std=embedding_std,
        )
        self.structure = check_choice("structure", structure, PLUS_STRUCTURES)
        self.dag = DAGPropagation(self.num_fields, embedding_dim, depth, interaction_type)
        flat = self.num_fields * embedding_dim
        self.mlp = MLP(flat, hidden_units, output_dim=1, dropout=dropout, batch_norm=batch_norm)
        self.readout = (
            xavier_linear(self.num_fields * (depth + 1), 1) if structure == "parallel" else None
        )

    def interact(self, emb: Embedded) -> torch.Tensor:
        """stacked: MLP(flatten(H_0 + … + H_L)); parallel: w·concat(s_0..s_L) + b + MLP(flatten(E))."""
        states = self.dag(emb.vectors)
        if self.structure == "stacked":
            return self.mlp(torch.stack(states).sum(dim=0).flatten(start_dim=1)).squeeze(1)
        readouts = torch.cat([h.sum(dim=2) for h in states], dim=1)
        return (self.readout(readouts) + self.mlp(self.flat_vectors(emb))).squeeze(1)
