"""The run report: Markdown + self-contained HTML with every table and plot of a run.

- :mod:`.build`: :func:`build_report`, :func:`headline_table`, the section list
- :mod:`.sources`: reading the run's artefacts; :mod:`.tables`: the per-model comparison rows
- :mod:`.timing`: where inference time goes (GFLOP/s, time shares, speed vs teacher, top ops)
- :mod:`.plots`: matplotlib figures as PNG; :mod:`.document`: blocks → Markdown / HTML
- :mod:`.environment`: versions, git commit, DVC hashes
"""

from .build import SECTIONS, build_report, headline_table, report_blocks

__all__ = ["SECTIONS", "build_report", "headline_table", "report_blocks"]
