"""Where inference time goes: the report's speed tables, read from the profile JSON.

- :data:`SPEED_HEADER` / :func:`speed_cells`: per model, the achieved GFLOP/s at the throughput
  batch, the shares of the profiled forward's CPU time in the embedding lookup, the interaction and
  the MLPs (``time_breakdown.shares``), the share spent outside any aten op
  (``time_breakdown.outside_ops_share``: Python and dispatch), and for students and baselines the FLOPs % of the teacher
  beside the throughput and batch-1 p50 latency as multiples of the teacher's and
  ``speedup_per_flop`` (throughput ratio × FLOPs fraction; 1.0 = the FLOP saving became speed in
  full). The teacher's ratio cells are ``–``.
- :data:`TOP_OPS_HEADER` / :func:`top_ops_cells`: per model, its top aten ops by self CPU time
  (``time_breakdown.top_ops``, largest first) with ms and calls per forward call and % of the
  forward.

Number formats: GFLOP/s with 3 decimals; shares and op % with 1 decimal and `` %``; ratios and
speedup per FLOP with 3 decimals; self CPU ms with 3 decimals; calls per forward as ``g``.
A profile written before these fields existed gives ``–`` cells and no op rows.
"""

from __future__ import annotations

from typing import Any

from .tables import MISSING, fmt

SPEED_HEADER = ("model", "GFLOP/s", "embedding %", "interaction %", "MLP %", "outside aten ops %",
                "FLOPs % of teacher", "throughput × teacher", "p50 latency × teacher",
                "speedup per FLOP")
TOP_OPS_HEADER = ("model", "op", "self CPU ms / forward", "% of forward", "calls / forward")
PARTS = ("embedding", "interaction", "mlp")


def _share(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f} %"


def speed_cells(name: str, profile: dict[str, Any]) -> tuple[str, ...]:
    """The cells of one model's row in the speed table (:data:`SPEED_HEADER`)."""
    breakdown = profile.get("time_breakdown") or {}
    shares = breakdown.get("shares") or {}
    vs = profile.get("vs_teacher") or {}
    frac = vs.get("fraction")
    return (name, fmt(profile.get("achieved_gflops_per_s"), 3),
            *(_share(shares.get(p)) for p in PARTS), _share(breakdown.get("outside_ops_share")),
            MISSING if frac is None else f"{100 * frac:.2f} %",
            fmt(vs.get("throughput_ratio"), 3), fmt(vs.get("p50_latency_ratio"), 3),
            fmt(vs.get("speedup_per_flop"), 3))


def top_ops_cells(name: str, profile: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per op of the model's top-ops table (:data:`TOP_OPS_HEADER`), largest first."""
    ops = (profile.get("time_breakdown") or {}).get("top_ops") or []
    return [(name, o["op"], fmt(o["self_cpu_ms"], 3), f"{o['percent']:.1f} %", f"{o['calls']:g}")
            for o in ops]
