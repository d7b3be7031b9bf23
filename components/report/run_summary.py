"""What a finished run says to a person watching the orchestrator: pure data, no Prefect here.

:func:`run_summary` reads the same artefacts as the report (:mod:`.sources`) and returns

- ``markdown``: the headline table (teacher, students, baselines, then the reference rows LR,
  constant predictor and oracle), the baseline gate's verdict, the promotion decision when the run
  made one (``promotion.json`` beside ``evaluate.out``), and where the full report is;
- ``table``: one flat dict per model (numbers, not strings), for a sortable table;
- ``report_html``: the absolute path of the HTML report.

flows/artifacts.py publishes these as Prefect markdown, table and link artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.evaluate.settings import evaluate_settings

from .sources import load_artifacts
from .tables import MISSING, fmt, fmt_auc, fmt_int, gate_line, model_rows, reference_rows

TABLE_KEYS = ("name", "role", "arch", "auc", "auc_std", "n", "logloss", "ece", "gauc", "flops",
              "flops_fraction", "p50_ms", "throughput")
MARKDOWN_HEADER = ("model", "role", "test AUC", "LogLoss", "FLOPs/sample", "FLOPs % of teacher",
                   "p50 ms")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{100 * fraction:.2f} %"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The headline columns as a GitHub-flavoured markdown table (same formats as the report)."""
    lines = ["| " + " | ".join(MARKDOWN_HEADER) + " |", "|" + "---|" * len(MARKDOWN_HEADER)]
    for r in rows:
        cells = (r["name"], r["role"], fmt_auc(r["auc"], r["auc_std"], r["n"]), fmt(r["logloss"]),
                 fmt_int(r["flops"]), _pct(r["flops_fraction"]), fmt(r["p50_ms"], 3))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def promotion_path(params) -> Path:
    """Where the promotion stage leaves its decision: ``promotion.json`` beside ``evaluate.out``."""
    return Path(evaluate_settings(params).out).with_name("promotion.json")


def _promotion_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        decision = json.loads(path.read_text())
    except (OSError, ValueError):
        return [f"**Promotion:** {path} is unreadable"]
    text = decision.get("message") or decision.get("reason") or json.dumps(decision, sort_keys=True)
    verdict = decision.get("decision") or ("promoted" if decision.get("promoted") else "kept the champion")
    return [f"**Promotion: {verdict}.** {text}"]


def run_summary(params, title: str = "ctrflow run") -> dict[str, Any]:
    """``{"markdown", "table", "report_html"}`` of the finished run described by ``params``."""
    ev = evaluate_settings(params)
    art = load_artifacts(params, ev)
    rows = model_rows(art)
    refs = reference_rows(art)
    parts = [f"# {title}", "", markdown_table(rows + refs), ""]
    gate = gate_line(art)
    if gate is not None:
        parts += [("**Baseline gate:** " if gate.startswith("baseline gate passed") else "**WARNING:** ")
                  + gate, ""]
    parts += _promotion_lines(promotion_path(params))
    report_html = (Path(ev.report_dir) / "report.html").resolve()
    parts += ["", f"Full report: `{report_html}`" if report_html.is_file()
              else "No HTML report was written (the report stage did not run)."]
    table = [{k: r.get(k) for k in TABLE_KEYS} for r in rows + refs]
    return {"markdown": "\n".join(parts).strip() + "\n", "table": table, "report_html": str(report_html)}
