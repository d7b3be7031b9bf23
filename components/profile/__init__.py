"""Model profiling: FLOPs per sample of what really runs, parameter/file size, CPU latency.

- :mod:`.flops`: :func:`count_flops` (a TorchDispatchMode cost table over every aten op) → FlopReport
- :mod:`.compare`: student FLOPs as a fraction of the teacher's
- :mod:`.size`: embedding vs dense parameters, safetensors file size
- :mod:`.latency`: batch-1 p50/p99 and batch-4096 throughput on CPU
- :mod:`.breakdown`: torch.profiler time shares (embedding / interaction / MLP) and top ops
- :mod:`.speed`: achieved GFLOP/s and a student's throughput / latency relative to the teacher's
- :mod:`.synthetic`: the synthetic input batch all of them run on
"""

from .breakdown import TimeBreakdown, time_breakdown
from .compare import FlopComparison, compare_flops, flops_fraction
from .flops import FlopReport, OpCostMode, count_callable_flops, count_flops, count_module_flops
from .latency import LatencyReport, measure_latency
from .size import SizeReport, model_file_bytes, model_size, parameter_split
from .speed import achieved_gflops, speed_vs_teacher
from .synthetic import synthetic_batch

__all__ = [
    "FlopComparison",
    "FlopReport",
    "LatencyReport",
    "OpCostMode",
    "SizeReport",
    "TimeBreakdown",
    "achieved_gflops",
    "compare_flops",
    "count_callable_flops",
    "count_flops",
    "count_module_flops",
    "flops_fraction",
    "measure_latency",
    "model_file_bytes",
    "model_size",
    "parameter_split",
    "speed_vs_teacher",
    "synthetic_batch",
    "time_breakdown",
]
