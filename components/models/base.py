"""CTRModel: the base class of every model in the zoo.

A model = the shared :class:`~components.models.embedding.FeatureEmbedding` (``self.embedding``)
plus an interaction part. ``forward(categorical, dense)`` is ``interact(embed(categorical, dense))``
and returns raw **logits** [B] — no sigmoid inside, so losses use ``BCEWithLogits`` and
distillation can read logits. The split lets a caller run the interaction on embeddings it
computed (or detached) itself, e.g. a KD student on the teacher's frozen embeddings.

Parameters are split for regularisation: :meth:`embedding_parameters` are the parameters of the
embedding module (categorical tables, dense-field projections, first-order weights);
:meth:`dense_parameters` are all the others (network weights, biases, BatchNorm affine).

Logistic base (``build_model(..., logistic_base=True)``, the teacher's ``train.logistic_base``):
the model also holds a frozen logistic regression (``self.logistic_base``, the zoo's ``lr``, its
parameters ``requires_grad=False``) whose logit is added to its own, so the network learns the
residual over LR instead of LR's work from scratch. The train_teacher stage fills it with the
baseline gate's fitted LR before training (components/train/teacher.py); the KD students get a copy
of the teacher's (components/distill/kd_dagfm.py, ``distill.logistic_base``). It is part of the
model: its weights are in the checkpoint, the ONNX graph, the FLOP count and the teacher's logits.
Its forward is :meth:`~components.models.lr.LR.base_logit` (the ids were checked by the model).

Inference in row blocks: in eval mode :meth:`CTRModel.forward` splits a batch larger than
``block_rows`` (default :data:`INFERENCE_BLOCK_ROWS` = 1024; params.yaml ``inference.block_rows``
sets it on served models) into consecutive blocks and concatenates their logits. Every zoo model
scores each row on its own in eval mode (BatchNorm uses its running statistics), so the result is
the unsplit one up to float rounding, but a block's activations stay in the CPU cache between
layers: at 1 thread a batch of 4096 measured ≈ 1.2–1.4× faster for the DCNv2 teacher and ≈ 1.5× for
the memory-bound DAGFM-outer student than in one piece. Training never splits a batch (BatchNorm
needs the whole batch's statistics).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from components.data.feature_map import FeatureMap

from .embedding import Embedded, FeatureEmbedding

INFERENCE_BLOCK_ROWS = 1024


class CTRModel(nn.Module):
    """Base of every CTR model: embedding + ``interact`` → logits [B]."""

    #: eval-mode forward runs in blocks of this many rows (0: never split); see the module doc.
    block_rows: int = INFERENCE_BLOCK_ROWS

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        embedding_init: str = "normal",
        embedding_std: float = 1e-4,
        first_order: bool = False,
        embed_dense: bool = True,
    ) -> None:
        super().__init__()
        self.feature_map = feature_map
        self.embedding = FeatureEmbedding(
            feature_map,
            embedding_dim,
            first_order=first_order,
            embed_dense=embed_dense,
            init=embedding_init,
            std=embedding_std,
        )
        self.num_fields = self.embedding.num_fields  # vectors per sample in E
        self.embedding_dim = embedding_dim
        # global bias w0 of the first-order (linear) term, a network parameter
        self.bias = nn.Parameter(torch.zeros(1)) if first_order else None
        self.logistic_base: CTRModel | None = None  # a frozen LR added to the logit (module doc)

    def attach_logistic_base(self) -> None:
        """Give the model a frozen logistic regression whose logit is added to its own (module doc);
        its weights start at the LR's init: load the fitted LR's state into ``self.logistic_base``."""
        from .lr import LR

        base = LR(self.feature_map, embedding_dim=self.embedding_dim)
        base.requires_grad_(False)
        self.logistic_base = base

    def load_logistic_base(self, lr: nn.Module) -> None:
        """Copy a fitted LR's weights (the gate's, or a teacher's base) into the frozen logistic base."""
        self.logistic_base.load_state_dict(lr.state_dict())

    def _logits(self, categorical: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        logits = self.interact(self.embed(categorical, dense))
        if self.logistic_base is not None:
            logits = logits + self.logistic_base.base_logit(categorical, dense)
        return logits

    def embed(self, categorical: torch.Tensor, dense: torch.Tensor | None = None) -> Embedded:
        """Look up E (and first-order terms) for a batch; see FeatureEmbedding.forward."""
        return self.embedding(categorical, dense)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """The model proper: embeddings → logits [B]. Implemented by every subclass."""
        raise NotImplementedError

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """categorical [B, F_cat] ids, dense [B, F_dense] floats (or None) → logits [B].

        In eval mode a batch larger than :attr:`block_rows` runs in consecutive blocks of that many
        rows (module doc); in training the batch is never split.
        """
        rows = self.block_rows
        if self.training or rows <= 0 or len(categorical) <= rows:
            return self._logits(categorical, dense)
        blocks = categorical.split(rows)
        dense_blocks = dense.split(rows) if dense is not None else (None,) * len(blocks)
        return torch.cat([self._logits(c, d) for c, d in zip(blocks, dense_blocks, strict=True)])

    def linear_logit(self, emb: Embedded) -> torch.Tensor:
        """First-order term w0 + Σ_i w_i(x_i): [B] (models built with first_order=True)."""
        return emb.linear.sum(dim=1) + self.bias

    def flat_mlp(self, hidden_units, dropout: float, batch_norm: bool) -> nn.Module:
        """The deep part shared by DNN-style models: MLP over flatten(E) (F·d inputs) → one logit."""
        from .layers.mlp import MLP

        return MLP(self.num_fields * self.embedding_dim, hidden_units, output_dim=1,
                   dropout=dropout, batch_norm=batch_norm)

    def flat_vectors(self, emb: Embedded) -> torch.Tensor:
        """E flattened to [B, F·d] (the input of MLPs and cross networks)."""
        return emb.vectors.flatten(start_dim=1)

    def embedding_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the shared embedding module (tables, dense projections, first order)."""
        return self.embedding.parameters()

    def dense_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside the embedding module."""
        emb_ids = {id(p) for p in self.embedding.parameters()}
        return (p for p in self.parameters() if id(p) not in emb_ids)

    def l2_penalty(self, emb_l2: float = 0.0, net_l2: float = 0.0, skip=()) -> torch.Tensor:
        """FuxiCTR-style explicit L2: emb_l2/2 · Σ‖θ_emb‖² + net_l2/2 · Σ‖θ_net‖² over whole tensors.

        θ_emb: ``FeatureEmbedding.penalised_parameters`` — the embedding vectors, and the
        first-order weights only with ``embedding.first_order_l2`` (``train.first_order_l2``): with
        them always in, the recipe's 1e-3 cost LR itself 0.03 AUC on Frappe and FM 0.015 on
        MovieLens (benchmarks/results/quality.md). Only trainable parameters count (a frozen
        embedding adds nothing), and none in ``skip`` (sparse tables whose L2 the optimiser applies
        per batch). A scalar tensor; 0 when both coefficients are 0.
        """
        skipped = {id(p) for p in skip}
        if emb_l2 < 0 or net_l2 < 0:
            raise ValueError(f"L2 coefficients must be >= 0, got emb_l2={emb_l2}, net_l2={net_l2}")
        ref = next(self.parameters())
        total = torch.zeros((), dtype=ref.dtype, device=ref.device)
        for coef, params in (
            (emb_l2, self.embedding.penalised_parameters()),
            (net_l2, self.dense_parameters()),
        ):
            if coef:
                for p in params:
                    if p.requires_grad and id(p) not in skipped:
                        total = total + (coef / 2.0) * p.pow(2).sum()
        return total


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError naming the hyperparameter."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
