"""Whether FLOPs turn into speed: achieved GFLOP/s, and a student's speed relative to the teacher's.

Both are computed from numbers the profile already stores, so they agree with them by construction:

- :func:`achieved_gflops`: ``flops_per_sample × throughput_samples_per_s / 1e9``, the FLOP rate the
  model reaches at the throughput batch (FLOPs of :func:`~.flops.count_flops`, throughput of
  :func:`~.latency.measure_latency`). A model far below the others' rate spends its time on
  something the FLOP count does not see (memory traffic, many tiny ops, Python overhead).
- :func:`speed_vs_teacher`: ``throughput_ratio`` = student samples/s ÷ teacher samples/s (> 1:
  faster), ``p50_latency_ratio`` = student batch-1 p50 ÷ teacher p50 (< 1: faster), and
  ``speedup_per_flop`` = ``throughput_ratio × flops_fraction``. With a fraction f of the teacher's
  FLOPs a perfect student would run 1/f times as fast, so 1.0 means the FLOP saving became speed
  in full, 0.2 that only a fifth of it did; it equals the ratio of the two achieved GFLOP/s
  (up to float rounding).
"""

from __future__ import annotations

from typing import Any

from .latency import LatencyReport


def achieved_gflops(flops_per_sample: float, throughput_samples_per_s: float) -> float:
    """GFLOP/s reached at the throughput batch: ``flops_per_sample * throughput / 1e9``."""
    return flops_per_sample * throughput_samples_per_s / 1e9


def speed_vs_teacher(
    student: LatencyReport, teacher: LatencyReport, flops_fraction: float
) -> dict[str, Any]:
    """``{"throughput_ratio", "p50_latency_ratio", "speedup_per_flop"}`` of a student (module doc)."""
    if teacher.throughput_samples_per_s <= 0 or teacher.p50_ms <= 0:
        raise ValueError("the teacher's throughput and p50 latency must be > 0 to compare with")
    throughput_ratio = student.throughput_samples_per_s / teacher.throughput_samples_per_s
    return {
        "throughput_ratio": throughput_ratio,
        "p50_latency_ratio": student.p50_ms / teacher.p50_ms,
        "speedup_per_flop": throughput_ratio * flops_fraction,
    }
