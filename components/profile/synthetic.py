"""A synthetic input batch built from a FeatureMap, for FLOP counting and latency measurement.

Categorical ids are drawn uniformly from each field's own vocabulary ``[0, vocab_size)`` (so every
id is valid for the model's embedding check); dense fields are standard normal. The values never
matter for FLOPs and barely for CPU latency (a gather costs the same whichever row it reads), but
they are seeded so two calls with the same arguments give the same batch.
"""

from __future__ import annotations

import torch

from components.data.feature_map import FeatureMap


def synthetic_batch(
    feature_map: FeatureMap,
    batch_size: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(categorical [B, F_cat] int64, dense [B, F_dense] float32)`` valid for ``feature_map``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    vocab = torch.tensor(feature_map.vocab_sizes, dtype=torch.float64)
    if (vocab < 1).any():
        raise ValueError("every categorical field needs vocab_size >= 1 to draw synthetic ids")
    uniform = torch.rand(batch_size, len(vocab), generator=gen, dtype=torch.float64)
    categorical = (uniform * vocab).long()
    if len(vocab):
        categorical = categorical.clamp_max_(vocab.long() - 1)  # guard the float edge p·v == v
    dense = torch.randn(batch_size, len(feature_map.dense_fields), generator=gen)
    return categorical.to(device), dense.to(device)
