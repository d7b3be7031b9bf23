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
Implementation: :class:`DAGPropagation` runs the layers as batched matmuls over batch-last states
(its docstring has the layouts); the einsum
formulas above stay as ``reference_forward`` / ``reference_interact``, the specification the fast
path is tested against (tests/test_dagfm_fast.py).

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
FIELDS_PER_GROUP = 10  # outer layers: target fields per group (DAGPropagation doc)
GROUP_MIN_ROWS = 64  # ... from this many rows on; smaller batches pay less per op ungrouped
EXPORT_FIELD_GROUPS = 2  # outer layers in the exported batch graph: field groups (DAGPropagation.split_readout)


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
    from F, never learned).

    Two implementations of the same arithmetic (they agree to float rounding; the tests hold them
    to 1e-12 in float64 and 1e-5 in float32, values and gradients):

    - :meth:`reference_forward`: the formulas as written, one einsum per layer over [B, F, d]
      states. Kept as the specification that the fast path is tested against.
    - :meth:`propagate` (what the models train and serve with): every layer is one or two batched
      matmuls over states kept **batch-last**, so the batch is the long, contiguous GEMM dimension
      and no layer permutes or copies its operands (an einsum over [B, F, d] states copies them on
      every call and runs F·d-sized GEMMs at a few GFLOP/s):

      ======  ===========  ===============================================================
      type    states       one layer t
      ======  ===========  ===============================================================
      inner   [d, F, B]    A = bmm(P_t [d, F_j, F_i], H [d, F_i, B])
      outer   [F, d, B]    S = bmm(p_t [F_i, F_j, d], H [F_i, d, B]) → [F_i, F_j, B];
                           A = bmm(q_t [F_j, d, F_i], Sᵀ [F_j, F_i, B]) (a strided view);
                           when serving (:meth:`propagate_stacked`) from ``group_min_rows``
                           rows on, per group of ~``fields_per_group`` target fields
                           [lo, hi) (only sources i < hi reach them, i ≤ j):
                           S_g [hi, hi−lo, B], A_g [hi−lo, d, B]; this skips most of the masked
                           half of the edges (F=39 in 4 groups: 37 % fewer multiply-adds) and
                           keeps S_g in cache (≈ 1.3–2× faster at 1024 rows, 1 thread). The
                           ONNX export keeps the states of each field group as tensors of
                           their own instead (:meth:`split_readout`: no slice/concat nodes)
      kernel  [F, d, B]    A = K_t [F·d, F·d] @ H [F·d, B] (the masked d×d blocks)
      ======  ===========  ===============================================================

      then H_t = H_0 ⊙ A. The masked, permuted weights are built on every forward, except under
      ``torch.inference_mode`` (how ctrflow scores, profiles and serves) where they are cached and
      rebuilt only when a parameter changes (its version counter, storage, dtype or device), so
      serving pays for them once. :meth:`forward` returns the states as [B, F, d] views (no
      copy); :meth:`node_sums` and :meth:`summed_flat` give the readout inputs straight from the
      batch-last states.

    Serving (``torch.inference_mode``, how ctrflow scores, profiles and serves) uses
    :meth:`propagate_stacked` instead: the same layers written in place into one [L+1, *state]
    buffer (grouped outer layers, no intermediate allocations) and the readout as one GEMV over it
    (:meth:`stacked_readout`; the readout weight spread over d is cached like the edge weights).
    A single row (online scoring) has its own kernels there: with one column a batched matmul takes
    BLAS's slow GEMV-per-matrix path, so inner layers run as one elementwise product and sum, and
    outer layers as row-vector GEMMs (:meth:`_one_row_outer`): the DAGFM student's batch-1 latency
    0.18 → 0.08 ms (F = 39, d = 16, 1 thread). The ONNX export traces a one-row form of outer
    layers too (``trace_one_row``, valid for one row only) and joins it to the batched graph under
    an ``If`` on the row count (:mod:`components.serve.export`): there each half-layer is one grouped
    1×1 ``Conv`` over the row's [1, F·d, 1] state (one group a field; onnxruntime ran a layer in
    ≈ 7 µs, 9 µs as batched row-vector ``MatMul``; eager PyTorch's grouped convolution takes
    ≈ 180 µs, hence the separate forms) and the readout, with the logistic base folded in, one
    ``Concat`` + ``Gemm`` (:meth:`one_row_readout`). The FLOP counter runs under ``no_grad``, i.e. :meth:`propagate`: it
    counts the algorithm's FLOPs as models.md states them, including the multiply-adds with the
    mask's structural zeros that serving skips.
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
        self._cache: tuple[tuple, tuple] | None = None
        self._spread: tuple[tuple, torch.Tensor] | None = None  # stacked_readout's weight, cached
        self.fields_per_group = FIELDS_PER_GROUP  # outer: target fields per group (class doc)
        self.group_min_rows = GROUP_MIN_ROWS  # outer: batches smaller than this run ungrouped
        self.trace_one_row = False  # outer: trace the one-row layers (the ONNX export's If branch)

    # ------------------------------------------------------------------ reference (the formulas)
    def _aggregate(self, t: int, h: torch.Tensor) -> torch.Tensor:
        """A[b, j] = Σ_{i ≤ j} φ_t(i, j, h[b, i]) for all j at once: [B, F, d]."""
        m = self.mask
        if self.interaction_type == "inner":
            return torch.einsum("bid,ijd->bjd", h, self.p[t] * m.unsqueeze(2))
        if self.interaction_type == "outer":
            scores = torch.einsum("bid,ijd->bij", h, self.p[t] * m.unsqueeze(2))
            return torch.einsum("bij,ijd->bjd", scores, self.q[t])
        return torch.einsum("bie,ijde->bjd", h, self.W[t] * m[:, :, None, None])

    def reference_forward(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        """E [B, F, d] → [H_0, …, H_L] by the einsum formulas (the specification of :meth:`forward`)."""
        self._check_input(vectors)
        h0 = torch.einsum("jk,bkd->bjd", self.connect, vectors)
        states = [h0]
        for t in range(self.depth):
            states.append(h0 * self._aggregate(t, states[-1]))
        return states

    # ------------------------------------------------------------------ fast path
    def _check_input(self, vectors: torch.Tensor) -> None:
        if vectors.dim() != 3 or vectors.shape[1:] != (self.num_fields, self.embedding_dim):
            raise ValueError(
                f"DAGFM input must be [B, {self.num_fields}, {self.embedding_dim}], got {list(vectors.shape)}"
            )

    def _build_weights(self) -> tuple:
        """The masked edge weights, laid out for the fast path's batched matmuls (see class doc)."""
        m, f, d, depth = self.mask, self.num_fields, self.embedding_dim, self.depth
        if self.interaction_type == "inner":
            # [L, d, F_j, F_i]: per coordinate k the matrix A_k = P_kᵀ h_k
            return ((self.p * m.unsqueeze(2)).permute(0, 3, 2, 1).contiguous(),)
        if self.interaction_type == "outer":
            p = (self.p * m.unsqueeze(2)).contiguous()  # [L, F_i, F_j, d]: per i, scores = p_i h_i
            q = self.q.permute(0, 2, 3, 1).contiguous()  # [L, F_j, d, F_i]: per j, A_j = q_jᵀ s_j
            # per target-field group [lo, hi): only sources i < hi can reach it (i ≤ j)
            groups = self.field_groups()
            p_groups = [[p[t, :hi, lo:hi].contiguous() for lo, hi in groups] for t in range(depth)]
            q_groups = [[q[t, lo:hi, :, :hi].contiguous() for lo, hi in groups] for t in range(depth)]
            # one row: scores[i] = h[i] p[i]ᵀ ([1, d] @ [d, F_j]), then A[j] = scoresᵀ[j] q[j] ([1, F_i] @ [F_i, d])
            one_row = (p.transpose(2, 3).contiguous().unbind(0), self.q.transpose(1, 2).contiguous().unbind(0))
            return p, q, p_groups, q_groups, one_row
        # kernel: K[t, (j, k), (i, e)] = W[t, i, j, k, e] · m[i, j]
        w = self.W * m[:, :, None, None]
        return (w.permute(0, 2, 3, 1, 4).reshape(depth, f * d, f * d),)

    def _weights(self) -> tuple:
        """:meth:`_build_weights`, cached under ``torch.inference_mode`` (class doc)."""
        if not torch.is_inference_mode_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
            self._cache = None
            return self._build_weights()
        params = [t for t in (self.p, self.q, self.W) if t is not None]
        key = (self.fields_per_group, *((t.data_ptr(), t._version, t.dtype, t.device) for t in params))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build_weights())
        return self._cache[1]

    def propagate(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        """E [B, F, d] → [H_0, …, H_L] in the internal batch-last layout (:attr:`layout`)."""
        self._check_input(vectors)
        f, d = self.num_fields, self.embedding_dim  # Python ints: static shapes in an exported graph
        weights = self._weights()
        if self.interaction_type == "inner":  # [d, F, B]
            (p,) = weights
            h0 = torch.matmul(self.connect, vectors.permute(2, 1, 0))
            states = [h0]
            for t in range(self.depth):
                states.append(h0 * torch.bmm(p[t], states[-1]))
            return states
        if self.traces_one_row():  # the export's one-row branch (class doc): grouped 1×1 convolutions
            p, q = weights[:2]
            rows = [torch.mm(self.connect, vectors.reshape(f, d)).view(1, f * d, 1)]
            for t in range(self.depth):
                scores = torch.conv1d(rows[-1], p[t].view(f * f, d, 1), groups=f)  # [1, (F_i, F_j), 1]
                scores = scores.view(f, f).t().reshape(1, f * f, 1)  # [1, (F_j, F_i), 1]
                rows.append(rows[0] * torch.conv1d(scores, q[t].view(f * d, f, 1), groups=f))  # [1, (F_j, d), 1]
            return rows  # [1, F·d, 1]: the memory of [F, d, 1] (chained_readout concatenates them as they are)
        # outer and kernel: [F, d, B]
        # flatten/unflatten with static sizes: an exported graph gets no Shape→Gather→Concat chains
        h0 = torch.mm(self.connect, vectors.permute(1, 2, 0).flatten(1)).view(f, d, -1)
        states = [h0]
        if self.interaction_type == "outer":
            p, q = weights[:2]
            for t in range(self.depth):
                scores = torch.bmm(p[t], states[-1])  # [F_i, F_j, B]
                states.append(h0 * torch.bmm(q[t], scores.transpose(0, 1)))  # [F_j, d, B]
            return states
        (w,) = weights
        for t in range(self.depth):
            states.append(h0 * torch.mm(w[t], states[-1].flatten(0, 1)).view(f, d, -1))
        return states

    @staticmethod
    def serves(vectors: torch.Tensor) -> bool:
        """Whether the models take the serving path (:meth:`propagate_stacked`): under
        ``torch.inference_mode`` without autocast (its in-place ``out=`` writes need one dtype;
        bf16 scoring on CUDA takes :meth:`propagate`)."""
        return torch.is_inference_mode_enabled() and not torch.is_autocast_enabled(vectors.device.type)

    def propagate_stacked(self, vectors: torch.Tensor) -> torch.Tensor:
        """Serving form of :meth:`propagate` (``torch.inference_mode`` only): every state written in
        place into one [L+1, *state] buffer, no intermediate allocations, so that the readout is one
        GEMV over it (:meth:`stacked_readout`) instead of L+1 reductions, a concat and a Linear."""
        if not torch.is_inference_mode_enabled():
            raise RuntimeError("propagate_stacked writes in place: call it under torch.inference_mode")
        self._check_input(vectors)
        b, f, d = vectors.shape
        weights = self._weights()
        if self.interaction_type == "inner":  # [d, F, B]
            (p,) = weights
            buf = vectors.new_empty((self.depth + 1, d, f, b))
            torch.matmul(self.connect, vectors.permute(2, 1, 0), out=buf[0])
            for t in range(self.depth):
                if b == 1:  # one row: A[k, j] = Σ_i P[k, j, i] h[k, i] elementwise (class doc)
                    torch.sum(torch.mul(p[t], buf[t].view(d, 1, f)), -1, out=buf[t + 1].view(d, f))
                else:
                    torch.bmm(p[t], buf[t], out=buf[t + 1])
                buf[t + 1].mul_(buf[0])
            return buf
        if self.interaction_type == "outer" and b == 1:
            return self._one_row_outer(vectors, *weights[4])
        buf = vectors.new_empty((self.depth + 1, f, d, b))
        torch.mm(self.connect, vectors.permute(1, 2, 0).reshape(f, d * b), out=buf[0].view(f, d * b))
        if self.interaction_type == "outer":
            p, q, p_groups, q_groups, _ = weights
            grouped = b >= self.group_min_rows and len(p_groups[0]) > 1
            for t in range(self.depth):
                if not grouped:  # a small batch: a contiguous copy of the few scores keeps bmm
                    scores = torch.bmm(p[t], buf[t])  # [F_i, F_j, B]   on its batched BLAS path
                    torch.bmm(q[t], scores.transpose(0, 1).contiguous(), out=buf[t + 1])
                else:
                    for (lo, hi), pg, qg in zip(self.field_groups(), p_groups[t], q_groups[t], strict=True):
                        scores = torch.bmm(pg, buf[t, :hi])  # [hi, hi - lo, B]: sources i < hi only
                        torch.bmm(qg, scores.transpose(0, 1), out=buf[t + 1, lo:hi])
                buf[t + 1].mul_(buf[0])
            return buf
        (w,) = weights
        for t in range(self.depth):
            torch.mm(w[t], buf[t].view(f * d, b), out=buf[t + 1].view(f * d, b)).mul_(buf[0].view(f * d, b))
        return buf

    def _one_row_outer(self, vectors: torch.Tensor, p_one: tuple, q_one: tuple) -> torch.Tensor:
        """:meth:`propagate_stacked` of outer layers for a single row (online scoring): per layer
        scores[i] = h[i] p[i]ᵀ as F_i GEMMs of [1, d] @ [d, F_j], then A[j] = scores[:, j]ᵀ q[j] as
        F_j GEMMs of [1, F_i] @ [F_i, d] (``p_one``, ``q_one``: per-layer weights in those layouts).
        With one column, the batched [F_i, F_j, d] @ [F_i, d, 1] form takes BLAS's slow GEMV path:
        measured 35 vs 9 µs per layer (F = 39, d = 16, 1 thread)."""
        f, d = self.num_fields, self.embedding_dim
        buf = vectors.new_empty((self.depth + 1, f, 1, d))  # = [L+1, F, d, 1]: one row is batch-last too
        rows = buf.unbind(0)
        torch.mm(self.connect, vectors.reshape(f, d), out=rows[0].view(f, d))
        for t in range(self.depth):
            scores = torch.bmm(rows[t], p_one[t]).view(f, f)  # [F_i, F_j]
            torch.bmm(scores.t().contiguous().view(f, 1, f), q_one[t], out=rows[t + 1]).mul_(rows[0])
        return buf.view(self.depth + 1, f, d, 1)

    def stacked_readout(self, buf: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """w · concat(s_0, …, s_L) + b ([B]) from :meth:`propagate_stacked`'s buffer: the readout
        weight [1, (L+1)·F] spread over the d coordinates, one GEMV."""
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._spread is None or self._spread[0] != key:  # built once per readout weight: as _weights
            self._spread = (key, self._spread_readout(weight.detach()).reshape(-1))
        return torch.addmv(bias, buf.view(-1, buf.shape[-1]).t(), self._spread[1])

    def _spread_readout(self, weight: torch.Tensor) -> torch.Tensor:
        """The readout weight [1, (L+1)·F] spread over the d coordinates of each state in
        :attr:`layout` order: [L+1, F·d] (state t's readout = row t · its flattened state)."""
        f, d, layers = self.num_fields, self.embedding_dim, self.depth + 1
        w = weight.view(layers, f)
        spread = w[:, :, None].expand(layers, f, d) if self.layout == "fdb" else w[:, None, :].expand(layers, d, f)
        return spread.reshape(layers, f * d)

    def chained_readout(self, states: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """w · concat(s_0, …, s_L) + b ([B]) from :meth:`propagate`'s states as a chain of L+1
        ``addmm`` (ONNX ``Gemm`` nodes, each adding its state's share to the previous one), the
        readout weight spread over the d coordinates: what the ONNX export traces. onnxruntime ran
        it faster than L+1 ``ReduceSum`` + ``Concat`` + ``Gemm`` (the DAGFM student, 1 thread:
        batch 1 61.8 → 55.8 µs, 1,024 rows 3.91 → 3.78 ms). The one-row trace takes
        :meth:`one_row_readout`."""
        if self.traces_one_row():
            return self.one_row_readout(states, weight, bias)
        spread = self._spread_readout(weight)
        z = bias.view(1, 1)
        for t, h in enumerate(states):
            z = torch.addmm(z, spread[t:t + 1], h.reshape(spread.shape[1], -1))
        return z.squeeze(0)

    def split_readout(self, vectors: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """:meth:`propagate` + :meth:`chained_readout` of outer layers with the fields in
        ``EXPORT_FIELD_GROUPS`` consecutive groups whose states are separate tensors throughout
        ([n_g, d, B] each; what the ONNX export traces for a batch). Sources i reach targets j ≥ i
        only, so target group b takes scores from source groups a ≤ b alone: with two halves
        S_aa, S_ab, S_bb instead of the full S (25 % fewer multiply-adds in both matmuls of a
        layer) and, unlike the grouped serving form, no Slice or Concat copies (the DAGFM student
        in onnxruntime, 1,024 rows, 1 thread: 4.45 → 3.84 ms; 3 groups 3.82 ms but slower on 2
        threads)."""
        f, d = self.num_fields, self.embedding_dim
        bounds = [round(f * k / EXPORT_FIELD_GROUPS) for k in range(EXPORT_FIELD_GROUPS + 1)]
        groups = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
        p = self.p * self.mask.unsqueeze(2)  # [L, F_i, F_j, d]
        spread = self._spread_readout(weight)  # [L+1, F·d]
        flat = vectors.permute(1, 2, 0).flatten(1)  # [F, d·B]
        h0 = [torch.mm(self.connect[lo:hi], flat).view(hi - lo, d, -1) for lo, hi in groups]

        def read(z: torch.Tensor, t: int, states: list[torch.Tensor]) -> torch.Tensor:
            for (lo, hi), h in zip(groups, states, strict=True):
                z = torch.addmm(z, spread[t:t + 1, lo * d:hi * d], h.reshape((hi - lo) * d, -1))
            return z

        z, states = read(bias.view(1, 1), 0, h0), h0
        for t in range(self.depth):
            new = []
            for b, (lo_b, hi_b) in enumerate(groups):
                a_sum = None
                for a, (lo_a, hi_a) in enumerate(groups[:b + 1]):
                    scores = torch.bmm(p[t, lo_a:hi_a, lo_b:hi_b], states[a])  # [n_a, n_b, B]
                    q = self.q[t, lo_a:hi_a, lo_b:hi_b].permute(1, 2, 0)  # [n_b, d, n_a]
                    part = torch.bmm(q, scores.transpose(0, 1))  # [n_b, d, B]
                    a_sum = part if a_sum is None else a_sum + part
                new.append(h0[b] * a_sum)
            z, states = read(z, t + 1, new), new
        return z.squeeze(0)

    def one_row_readout(
        self, states: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
        linear: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """:meth:`chained_readout` of the one-row trace's states ([1, F·d, 1] each): one ``Concat``
        and one ``Gemm`` (a single row has no batch to stream). ``linear`` = (x [1, n], w [n], b):
        a linear term x · w + b folded into the same Gemm (the DAGFM student's logistic base,
        :meth:`DAGFM._logits`)."""
        flat = torch.cat(states, 1).view(1, -1)
        spread, bias = self._spread_readout(weight).reshape(-1), bias.view(1, 1)
        if linear is not None:
            x, w, b = linear
            flat, spread, bias = torch.cat([flat, x], 1), torch.cat([spread, w]), bias + b
        return torch.addmm(bias, flat, spread.view(-1, 1)).view(1)

    def traces_split(self) -> bool:
        """Whether this call is the ONNX export's batch trace of outer layers (:meth:`split_readout`)."""
        return self.interaction_type == "outer" and not self.trace_one_row and torch.jit.is_tracing()

    def traces_one_row(self) -> bool:
        """Whether this call is the ONNX export's one-row trace (``trace_one_row``, outer layers)."""
        return self.interaction_type == "outer" and self.trace_one_row and torch.jit.is_tracing()

    def field_groups(self) -> list[tuple[int, int]]:
        """Consecutive target-field ranges [lo, hi) of about :attr:`fields_per_group` fields each."""
        f = self.num_fields
        n = max(1, -(-f // max(1, self.fields_per_group)))
        bounds = [round(f * k / n) for k in range(n + 1)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    @property
    def layout(self) -> str:
        """Axis order of :meth:`propagate`'s states: ``"dfb"`` (inner) or ``"fdb"`` (outer, kernel)."""
        return "dfb" if self.interaction_type == "inner" else "fdb"

    def as_bfd(self, state: torch.Tensor) -> torch.Tensor:
        """A :meth:`propagate` state as a [B, F, d] view (no copy)."""
        return state.permute(2, 1, 0) if self.layout == "dfb" else state.permute(2, 0, 1)

    def node_sums(self, states: list[torch.Tensor]) -> torch.Tensor:
        """s_t[j] = Σ_k H_t[j, k] of :meth:`propagate`'s states, layer-major: [B, (L+1)·F]."""
        dim = 0 if self.layout == "dfb" else 1
        return torch.cat([h.sum(dim=dim) for h in states]).t()

    def summed_flat(self, states: list[torch.Tensor]) -> torch.Tensor:
        """flatten(H_0 + … + H_L) in [B, F·d] (field-major) order, from :meth:`propagate`'s states."""
        total = states[0]
        for h in states[1:]:
            total = total + h
        return self.as_bfd(total).flatten(1)

    def forward(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        """E [B, F, d] → [H_0, …, H_L] as [B, F, d] views, H_0 = C·E and H_t = H_0 ⊙ A_t(H_{t-1})."""
        return [self.as_bfd(h) for h in self.propagate(vectors)]


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

    def _logits(self, categorical: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        """The one-row ONNX trace folds the logistic base into the readout's Gemm
        (:meth:`DAGPropagation.one_row_readout`): its Gather, ReduceSum, MatMul and Adds were a
        tenth of the branch's nodes. Every other call: :meth:`CTRModel._logits`."""
        base = self.logistic_base
        if not (self.dag.traces_one_row() and base is not None and type(self.readout) is nn.Linear):
            return super()._logits(categorical, dense)
        states = self.dag.propagate(self.embed(categorical, dense).vectors)
        linear = base.logit_terms(categorical, dense)
        return self.dag.one_row_readout(states, self.readout.weight, self.readout.bias, linear)

    def layer_readouts(self, emb: Embedded) -> torch.Tensor:
        """s_t[j] = Σ_k H_t[j, k] for t = 0..L: [B, L+1, F]."""
        states = self.dag.propagate(emb.vectors)
        return self.dag.node_sums(states).view(len(emb.vectors), len(states), -1)

    def interact(self, emb: Embedded) -> torch.Tensor:
        """z = w · concat(s_0, …, s_L) + b (layer-major order, as the reference code)."""
        if self.dag.serves(emb.vectors) and type(self.readout) is nn.Linear:  # serving: one buffer, one GEMV
            buf = self.dag.propagate_stacked(emb.vectors)
            return self.dag.stacked_readout(buf, self.readout.weight, self.readout.bias)
        if self.dag.traces_split() and type(self.readout) is nn.Linear:  # the ONNX export's batch graph
            return self.dag.split_readout(emb.vectors, self.readout.weight, self.readout.bias)
        states = self.dag.propagate(emb.vectors)
        if torch.jit.is_tracing() and type(self.readout) is nn.Linear:  # the ONNX export
            return self.dag.chained_readout(states, self.readout.weight, self.readout.bias)
        return self.readout(self.dag.node_sums(states)).squeeze(1)

    def reference_interact(self, emb: Embedded) -> torch.Tensor:
        """:meth:`interact` by the einsum formulas (:meth:`DAGPropagation.reference_forward`)."""
        states = self.dag.reference_forward(emb.vectors)
        sums = torch.stack([h.sum(dim=2) for h in states], dim=1)
        return self.readout(sums.flatten(start_dim=1)).squeeze(1)


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
        if self.dag.serves(emb.vectors):  # serving: one buffer (DAGFM.interact)
            buf = self.dag.propagate_stacked(emb.vectors)
            if self.structure == "stacked":
                total = self.dag.as_bfd(buf.sum(dim=0)).reshape(len(emb.vectors), -1)
                return self.mlp(total).squeeze(1)
            if type(self.readout) is nn.Linear:  # (an int8-quantised readout takes the Linear itself)
                dag_logit = self.dag.stacked_readout(buf, self.readout.weight, self.readout.bias)
            else:
                dag_logit = self.readout(self.dag.node_sums(list(buf.unbind(0)))).squeeze(1)
            return dag_logit + self.mlp(self.flat_vectors(emb)).squeeze(1)
        if self.structure == "parallel" and self.dag.traces_split() and type(self.readout) is nn.Linear:
            dag_logit = self.dag.split_readout(emb.vectors, self.readout.weight, self.readout.bias)
            return dag_logit + self.mlp(self.flat_vectors(emb)).squeeze(1)  # the ONNX export (DAGFM.interact)
        states = self.dag.propagate(emb.vectors)
        if self.structure == "stacked":
            return self.mlp(self.dag.summed_flat(states)).squeeze(1)
        mlp_logit = self.mlp(self.flat_vectors(emb)).squeeze(1)
        if torch.jit.is_tracing() and type(self.readout) is nn.Linear:  # the ONNX export (DAGFM.interact)
            return self.dag.chained_readout(states, self.readout.weight, self.readout.bias) + mlp_logit
        return self.readout(self.dag.node_sums(states)).squeeze(1) + mlp_logit

    def reference_interact(self, emb: Embedded) -> torch.Tensor:
        """:meth:`interact` by the einsum formulas (:meth:`DAGPropagation.reference_forward`)."""
        states = self.dag.reference_forward(emb.vectors)
        if self.structure == "stacked":
            return self.mlp(torch.stack(states).sum(dim=0).flatten(start_dim=1)).squeeze(1)
        readouts = torch.cat([h.sum(dim=2) for h in states], dim=1)
        return (self.readout(readouts) + self.mlp(self.flat_vectors(emb))).squeeze(1)
