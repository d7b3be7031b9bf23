"""Measured CPU inference latency: batch-1 p50/p99 and batch-4096 throughput.

Protocol (:func:`measure_latency`): the model runs in eval mode under ``torch.inference_mode`` with
``torch.set_num_threads(threads)`` (restored afterwards) on a synthetic batch from the feature map
(:func:`components.profile.synthetic.synthetic_batch`; the timed inputs are built once, outside the
timed region). Each measurement first does untimed warm-up calls (``warmup`` for batch 1,
``batch_warmup`` for the large batch), then:

- latency: ``single_runs`` calls on one sample, each timed with ``time.perf_counter_ns``;
  p50/p99 are ``numpy.percentile`` (linear interpolation) of those times in milliseconds;
- throughput: ``batch_runs`` calls on a batch of ``throughput_batch_size``; samples/s =
  batch size / median time per call (the median resists a stray slow run on a shared box).

Timings depend on the host and its load; compare models only within one run on one machine.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from components.data.feature_map import FeatureMap

from .synthetic import synthetic_batch


@dataclass(frozen=True)
class LatencyReport:
    """Batch-1 latency percentiles (ms) and large-batch throughput (samples/s) on CPU."""

    p50_ms: float
    p99_ms: float
    mean_ms: float
    throughput_samples_per_s: float
    throughput_batch_size: int
    batch_median_ms: float
    threads: int
    single_runs: int
    batch_runs: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _timed_calls(model: nn.Module, inputs: tuple, warmup: int, runs: int) -> np.ndarray:
    """Seconds per call of ``model(*inputs)`` over ``runs`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        model(*inputs)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        model(*inputs)
        times[i] = (time.perf_counter_ns() - start) * 1e-9
    return times


def measure_latency(
    model: nn.Module,
    feature_map: FeatureMap,
    *,
    threads: int = 1,
    warmup: int = 10,
    batch_warmup: int = 2,
    single_runs: int = 200,
    throughput_batch_size: int = 4096,
    batch_runs: int = 10,
    seed: int = 0,
) -> LatencyReport:
    """CPU inference latency (batch 1, p50/p99) and throughput (``throughput_batch_size``).

    The model must live on the CPU (ValueError otherwise); its training flag and the torch thread
    count are restored on return.
    """
    if (
        min(threads, single_runs, batch_runs, throughput_batch_size) < 1
        or min(warmup, batch_warmup) < 0
    ):
        raise ValueError(
            "threads, single_runs, batch_runs and throughput_batch_size must be >= 1 and the "
            f"warm-up counts >= 0, got threads={threads}, single_runs={single_runs}, "
            f"batch_runs={batch_runs}, throughput_batch_size={throughput_batch_size}, "
            f"warmup={warmup}, batch_warmup={batch_warmup}"
        )
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("measure_latency measures CPU inference; move the model to the CPU first")
    single = synthetic_batch(feature_map, 1, seed=seed)
    batch = synthetic_batch(feature_map, throughput_batch_size, seed=seed + 1)
    prev_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            t1 = _timed_calls(model, single, warmup, single_runs)
            tb = _timed_calls(model, batch, batch_warmup, batch_runs)
    finally:
        torch.set_num_threads(prev_threads)
        model.train(was_training)
    ms = t1 * 1e3
    batch_median = float(np.median(tb))
    return LatencyReport(
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        throughput_samples_per_s=throughput_batch_size / batch_median,
        throughput_batch_size=throughput_batch_size,
        batch_median_ms=batch_median * 1e3,
        threads=threads,
        single_runs=single_runs,
        batch_runs=batch_runs,
    )
