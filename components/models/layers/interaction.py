"""Second-order field interactions: FM bi-interaction, pairwise inner/Hadamard products, FFM.

- :func:`bi_interaction` (NFM's Bi-Interaction pooling, He & Chua SIGIR 2017 eq. 4; FM's linear-time
  trick, Rendle ICDM 2010 lemma 3.1): Σ_{i<j} e_i ⊙ e_j = ½[(Σ_i e_i)² − Σ_i e_i²], in O(F·d).
  FM's second-order term is its sum over d.
- :class:`FieldPairs`: all F(F−1)/2 unordered field pairs i < j (row-major), with their inner
  products (IPNN, DLRM) or Hadamard products (AFM).
- :class:`FieldAwarePairs` (FFM, Juan et al. RecSys 2016 eq. 3): each field i carries F−1 vectors
  v_{i,f}, one per *other* field f; pair (i, j) scores ⟨v_{i,f_j}, v_{j,f_i}⟩. Slot of field j in
  field i's list is j if j < i else j−1 (FuxiCTR's layout, no self slot).
"""

from __future__ import annotations

import torch
from torch import nn


def bi_interaction(e: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} e_i ⊙ e_j for e: [B, F, d] → [B, d], computed as ½[(Σe)² − Σe²]."""
    s = e.sum(dim=1)
    return 0.5 * (s * s - (e * e).sum(dim=1))


class FieldPairs(nn.Module):
    """Index of the pairs i < j among ``num_fields`` vectors (buffers ``rows``, ``cols``)."""

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.num_fields = num_fields
        self.num_pairs = num_fields * (num_fields - 1) // 2

    def inner_products(self, e: torch.Tensor) -> torch.Tensor:
        """⟨e_i, e_j⟩ for every pair: [B, F, d] → [B, F(F−1)/2] (one batched matmul, then gather)."""
        gram = torch.bmm(e, e.transpose(1, 2))
        return gram[:, self.rows, self.cols]

    def hadamard_products(self, e: torch.Tensor) -> torch.Tensor:
        """e_i ⊙ e_j for every pair: [B, F, d] → [B, F(F−1)/2, d]."""
        return e[:, self.rows] * e[:, self.cols]


class FieldAwarePairs(FieldPairs):
    """FFM pair scores from field-aware vectors v: [B, F, F−1, d] → [B, F(F−1)/2]."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """⟨v_{i, slot(j)}, v_{j, slot(i)}⟩ for i < j; slot(j) in i's list is j−1, slot(i) in j's is i."""
        left = v[:, self.rows, self.cols - 1]  # field i's vector for field j (j > i)
        right = v[:, self.cols, self.rows]  # field j's vector for field i (i < j)
        return (left * right).sum(dim=-1)
