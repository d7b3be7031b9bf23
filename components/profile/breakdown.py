"""Where a forward pass spends its CPU time: embedding vs interaction vs MLP, and the top aten ops.

:func:`time_breakdown` runs ``runs`` forward calls of a model on one synthetic batch under
``torch.profiler.profile`` (CPU activity, ``record_shapes`` off, ``torch.inference_mode``, the given
torch thread count), after ``warmup`` unprofiled calls. Each call is wrapped in a
``record_function`` scope ``ctrflow::forward``; forward pre/post hooks open and close the scopes

- ``ctrflow::embedding`` around ``model.embedding`` (the shared embedding lookup: categorical
  gathers, dense-field projections, first-order weights), when the model has one;
- ``ctrflow::mlp`` around every outermost instance of
  :class:`components.models.layers.mlp.MLP` (an MLP nested in another MLP or in the embedding is
  timed by its parent's scope, so no time is counted twice).

Nothing is special-cased per model: every zoo model is a ``CTRModel`` with ``model.embedding``,
and its deep parts are ``MLP`` instances. Shares (fractions of the summed ``ctrflow::forward``
time): ``embedding`` and ``mlp`` are their scopes' summed CPU time over it; ``interaction`` is the
rest of the forward (interaction layers, output heads and the glue between the parts: reshapes,
Python dispatch), ``1 − embedding − mlp``, so the three sum to 1 by construction (the two scopes
lie inside the forward scope and never overlap, so neither sum can exceed it; rounding of the
profiler's µs stamps is clamped).

``outside_ops_share``: the summed self CPU time of the ``ctrflow::`` scopes over the forward time,
i.e. the part of the forward spent outside any aten op (Python, module calls and hooks, dispatch);
large when a model runs many tiny ops, which no FLOP count sees.

Top ops: ``prof.key_averages()`` rows other than the ``ctrflow::`` scopes, sorted by self CPU time
(largest first), the first ``top_ops`` of them; per op its self CPU time per forward call (ms), its
share of the forward time in % (the rows do not sum to 100: the scopes' own self time, i.e. Python
outside any aten op, and the ops below the cut are the rest) and its calls per forward call.

The profiler adds overhead of its own (a few µs per op), so ``forward_ms`` is slower than the
latency measurement's time per batch; the shares are what a reader should compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from components.data.feature_map import FeatureMap
from components.models.layers.mlp import MLP

from .synthetic import synthetic_batch

FORWARD_SCOPE = "ctrflow::forward"
EMBEDDING_SCOPE = "ctrflow::embedding"
MLP_SCOPE = "ctrflow::mlp"
PARTS = ("embedding", "interaction", "mlp")


@dataclass(frozen=True)
class TimeBreakdown:
    """Shares of the forward's CPU time by part (:data:`PARTS`, summing to 1) and the top ops.

    ``part_ms``: mean CPU ms per forward call of each part; ``forward_ms``: mean CPU ms of one
    profiled forward call; ``outside_ops_share``: fraction of it outside any aten op; ``top_ops``: ``{"op", "self_cpu_ms", "percent", "calls"}`` per row,
    largest ``self_cpu_ms`` first (per forward call; module doc).
    """

    batch_size: int
    threads: int
    runs: int
    forward_ms: float
    shares: dict[str, float]
    part_ms: dict[str, float]
    outside_ops_share: float
    top_ops: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def scoped_modules(model: nn.Module) -> dict[nn.Module, str]:
    """The submodules that get a scope: ``model.embedding`` and every outermost MLP (module doc)."""
    scoped: dict[nn.Module, str] = {}
    embedding = getattr(model, "embedding", None)
    if isinstance(embedding, nn.Module):
        scoped[embedding] = EMBEDDING_SCOPE
    inside = {id(m) for e in scoped for m in e.modules()}
    for module in model.modules():
        if id(module) in inside or not isinstance(module, MLP):
            continue
        scoped[module] = MLP_SCOPE
        inside |= {id(m) for m in module.modules()}
    return scoped


def _add_scope_hooks(scoped: dict[nn.Module, str]) -> list:
    """Forward pre/post hooks opening and closing a ``record_function`` scope; the handles."""
    handles = []
    for module, name in scoped.items():
        open_scopes: list[record_function] = []

        def enter(_module, _args, name=name, open_scopes=open_scopes):
            scope = record_function(name)
            scope.__enter__()
            open_scopes.append(scope)

        def leave(_module, _args, _out, open_scopes=open_scopes):
            open_scopes.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _scope_us(events, name: str) -> float:
    return sum(e.cpu_time_total for e in events if e.name == name)


def time_breakdown(
    model: nn.Module,
    feature_map: FeatureMap,
    *,
    batch_size: int = 4096,
    threads: int = 1,
    runs: int = 5,
    warmup: int = 1,
    top_ops: int = 10,
    seed: int = 1,
) -> TimeBreakdown:
    """Profile ``runs`` forward calls at ``batch_size`` with ``threads`` torch threads (module doc).

    The model must live on the CPU (ValueError otherwise); its training flag, the torch thread count
    and its hooks are restored on return.
    """
    if min(batch_size, threads, runs) < 1 or warmup < 0 or top_ops < 0:
        raise ValueError(
            "batch_size, threads and runs must be >= 1, warmup and top_ops >= 0, got "
            f"batch_size={batch_size}, threads={threads}, runs={runs}, warmup={warmup}, "
            f"top_ops={top_ops}"
        )
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("time_breakdown profiles CPU inference; move the model to the CPU first")
    inputs = synthetic_batch(feature_map, batch_size, seed=seed)
    prev_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    handles = []
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for _ in range(warmup):
                model(*inputs)
            handles = _add_scope_hooks(scoped_modules(model))
            with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
                for _ in range(runs):
                    with record_function(FORWARD_SCOPE):
                        model(*inputs)
    finally:
        for h in handles:
            h.remove()
        torch.set_num_threads(prev_threads)
        model.train(was_training)
    events = prof.events()
    total = _scope_us(events, FORWARD_SCOPE)
    if total <= 0:
        raise RuntimeError("the profiler recorded no forward time")
    embedding = min(_scope_us(events, EMBEDDING_SCOPE) / total, 1.0)
    mlp = min(_scope_us(events, MLP_SCOPE) / total, 1.0 - embedding)
    shares = {"embedding": embedding, "interaction": 1.0 - embedding - mlp, "mlp": mlp}
    averages = prof.key_averages()
    outside = sum(e.self_cpu_time_total for e in averages if e.key.startswith("ctrflow::"))
    rows = sorted(
        (e for e in averages if not e.key.startswith("ctrflow::")),
        key=lambda e: (-e.self_cpu_time_total, e.key),
    )[:top_ops]
    return TimeBreakdown(
        batch_size=batch_size,
        threads=threads,
        runs=runs,
        forward_ms=total / runs / 1e3,
        shares=shares,
        part_ms={k: v * total / runs / 1e3 for k, v in shares.items()},
        outside_ops_share=min(max(outside / total, 0.0), 1.0),
        top_ops=[
            {
                "op": e.key,
                "self_cpu_ms": e.self_cpu_time_total / runs / 1e3,
                "percent": 100.0 * e.self_cpu_time_total / total,
                "calls": e.count / runs,
            }
            for e in rows
        ],
    )
