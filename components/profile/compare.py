"""Student FLOPs as a fraction of the teacher's (the "less than 21.5 % FLOPs" figure of KD-DAGFM).

Three fractions, because the shared embedding gather dominates small students and the papers do not
say what they count (models.md §1.6, claim [UNVERIFIED]):

- ``fraction``: total FLOPs per sample (gathers included), what really runs;
- ``fraction_excluding_gather``: arithmetic only (embedding/index reads dropped);
- ``matmul_fraction``: matmul FLOPs only (what torch's FlopCounterMode alone would give; None when
  the teacher has no matmul).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from components.data.feature_map import FeatureMap

from .flops import FlopReport, count_flops


@dataclass(frozen=True)
class FlopComparison:
    """Student vs teacher FLOPs per sample and their ratios (student / teacher)."""

    student_flops_per_sample: float
    teacher_flops_per_sample: float
    fraction: float
    fraction_excluding_gather: float
    matmul_fraction: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def flops_fraction(student: FlopReport, teacher: FlopReport) -> FlopComparison:
    """Ratios of two FlopReports (student / teacher); ValueError when the teacher counts 0 FLOPs."""
    if teacher.flops_per_sample <= 0 or teacher.flops_excluding_gather_per_sample <= 0:
        raise ValueError("the teacher's FLOP count is 0; a fraction of it is undefined")
    return FlopComparison(
        student_flops_per_sample=student.flops_per_sample,
        teacher_flops_per_sample=teacher.flops_per_sample,
        fraction=student.flops_per_sample / teacher.flops_per_sample,
        fraction_excluding_gather=(
            student.flops_excluding_gather_per_sample / teacher.flops_excluding_gather_per_sample
        ),
        matmul_fraction=(
            student.matmul_flops_per_sample / teacher.matmul_flops_per_sample
            if teacher.matmul_flops_per_sample > 0
            else None
        ),
    )


def compare_flops(
    student: nn.Module, teacher: nn.Module, feature_map: FeatureMap, batch_size: int = 1024
) -> FlopComparison:
    """Count both models with :func:`count_flops` on the same synthetic batch and compare them."""
    return flops_fraction(
        count_flops(student, feature_map, batch_size), count_flops(teacher, feature_map, batch_size)
    )
