"""The teacher-and-students comparison: one row per model, and its text renderings.

:func:`model_rows` merges, per model, the evaluation JSON (test AUC as mean ± sample std over the
aggregated runs with their count n, LogLoss, ECE, gAUC) with the profile JSON (FLOPs per sample,
FLOPs as % of the teacher's, embedding/dense parameters, batch-1 p50/p99 latency, throughput).
Without an evaluation JSON the test AUC / LogLoss come from the training metrics (``train.metrics``,
``distill.metrics``) with n = 1, and ``source`` says so. Missing values are ``None`` and print as
``–``.

Number formats (the same in the report, the HTML and the CLI table): AUC, LogLoss, ECE, gAUC with
4 decimals; FLOPs with thousands separators and no decimals; FLOPs % with 2 decimals; latency in
ms with 3 decimals; throughput in samples/s without decimals.
"""

from __future__ import annotations

from typing import Any

from components.evaluate.models import TEACHER

from .sources import RunArtifacts

MISSING = "–"


def fmt(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals, or ``–`` when None."""
    return MISSING if value is None else f"{value:.{digits}f}"


def fmt_int(value: float | None) -> str:
    """``value`` rounded to an integer with thousands separators, or ``–``."""
    return MISSING if value is None else f"{value:,.0f}"


def fmt_auc(mean: float | None, std: float | None, n: int | None) -> str:
    """``0.7042 ± 0.0012 (n=3)``; without a std (one run) ``0.7042 (n=1)``."""
    if mean is None:
        return MISSING
    spread = f" ± {std:.4f}" if std is not None else ""
    return f"{mean:.4f}{spread} (n={n})"


ROLE_ORDER = ("teacher", "student", "baseline")


def _role(name: str) -> str:
    return "teacher" if name == TEACHER else "baseline" if name.startswith("baseline_") else "student"


def _order(art: RunArtifacts) -> list[str]:
    """Model names of the run: teacher, then students, then baselines (first-seen order within)."""
    names: list[str] = []
    sources = ((art.evaluation or {}).get("models", {}), (art.profile or {}).get("models", {}),
               {TEACHER: None} if art.teacher is not None else {}, art.students or {})
    for source in sources:
        names += [n for n in source if n not in names]
    return sorted(names, key=lambda n: ROLE_ORDER.index(_role(n)))


def _from_evaluation(art: RunArtifacts, name: str) -> dict[str, Any] | None:
    ev = art.evaluation or {}
    if name not in ev.get("models", {}):
        return None
    m = ev["models"][name]["metrics"]
    agg = (ev.get("aggregate") or {}).get("models", {}).get(name, {})
    auc = agg.get("auc") or {"mean": m["auc"], "std": None, "n": 1}

    def mean(key: str):
        return (agg.get(key) or {}).get("mean", m.get(key))

    return {"arch": ev["models"][name].get("model"), "auc": auc["mean"], "auc_std": auc["std"],
            "n": auc["n"], "logloss": mean("logloss"), "ece": mean("ece"), "gauc": mean("gauc"),
            "source": f"evaluation ({ev.get('split', 'test')})"}


def _from_training(art: RunArtifacts, name: str) -> dict[str, Any]:
    summary = art.teacher if name == TEACHER else (art.students or {}).get(name)
    test = (summary or {}).get("test") or {}
    return {"arch": (art.teacher or {}).get("model") if name == TEACHER else None,
            "auc": test.get("auc"), "auc_std": None, "n": 1 if test.get("auc") is not None else None,
            "logloss": test.get("logloss"), "ece": None, "gauc": None,
            "source": "training metrics" if test else None}


def model_rows(art: RunArtifacts) -> list[dict[str, Any]]:
    """One dict per model (module doc for the sources): name, role, arch, auc, auc_std, n, logloss,
    ece, gauc, flops, flops_fraction, emb_params, dense_params, p50_ms, p99_ms, throughput, source."""
    prof = (art.profile or {}).get("models", {})
    rows = []
    for name in _order(art):
        row: dict[str, Any] = {"name": name, "role": _role(name)}
        row.update(_from_evaluation(art, name) or _from_training(art, name))
        p = prof.get(name)
        if p is not None:
            row["arch"] = row["arch"] or p.get("model")
            vs = p.get("vs_teacher") or {}
            row.update(flops=p["flops_per_sample"], flops_fraction=vs.get("fraction"),
                       below_claim=vs.get("below_claim"),
                       emb_params=p["parameters"]["embedding"], dense_params=p["parameters"]["dense"],
                       p50_ms=p["latency"]["p50_ms"], p99_ms=p["latency"]["p99_ms"],
                       throughput=p["latency"]["throughput_samples_per_s"])
        else:
            row.update(flops=None, flops_fraction=None, below_claim=None, emb_params=None,
                       dense_params=None, p50_ms=None, p99_ms=None, throughput=None)
        if name == TEACHER and row["flops"] is not None:
            row["flops_fraction"] = 1.0
        rows.append(row)
    return rows


REFERENCES = {"lr": "LR (gate)", "constant": "constant CTR", "oracle": "oracle"}
"""Reference rows of the headline, in order: what "good" means for this data."""


def reference_rows(art: RunArtifacts) -> list[dict[str, Any]]:
    """The gate's LR, the constant predictor and (synthetic logs) the oracle, as rows of role
    ``reference``: test metrics from the evaluation JSON's ``references`` (the evaluated split), else
    from the teacher's metrics JSON (``baselines``, test split). Only those that exist."""
    refs = (art.evaluation or {}).get("references")
    if refs is None:
        refs = {k: v.get("test") for k, v in ((art.teacher or {}).get("baselines") or {}).items()}
    rows = []
    for key, label in REFERENCES.items():
        r = refs.get(key)
        if not r:
            continue
        row = {k: None for k in ("arch", "auc_std", "ece", "gauc", "flops", "flops_fraction", "below_claim",
                                 "emb_params", "dense_params", "p50_ms", "p99_ms", "throughput")}
        row.update(name=label, role="reference", auc=r.get("auc"), n=1, logloss=r.get("logloss"),
                   source=r.get("source", "training metrics"))
        rows.append(row)
    return rows


def gate_line(art: RunArtifacts) -> str | None:
    """The baseline gate's verdict from the teacher's metrics JSON (None when it has none)."""
    g = (art.teacher or {}).get("gate")
    if not g:
        return None
    tail = "" if g["passed"] else f" (train.gate.on_fail: {g['on_fail']})"
    if ((art.teacher or {}).get("hparams") or {}).get("logistic_base"):
        lr = ((art.teacher or {}).get("baselines") or {}).get("lr") or {}
        base, best = lr.get("base_best_epoch"), lr.get("best_epoch")
        if base and best and base != best:  # the base stopped before the gate's LR converged
            tail += (f"; the teacher holds this LR's fit at epoch {base} (its best of the first "
                     f"{lr.get('base_max_epochs')}; the gate's LR: epoch {best}) as its frozen logistic "
                     f"base (train.logistic_base)")
        else:
            tail += "; the teacher holds this LR as its frozen logistic base (train.logistic_base)"
    return g["message"] + tail


def _pct(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{100 * fraction:.2f} %"


COMPARISON_HEADER = ("model", "role", "architecture", "test AUC ± std (n)", "LogLoss", "ECE",
                     "gAUC", "FLOPs/sample", "FLOPs % of teacher", "params emb / dense",
                     "p50 ms", "p99 ms", "throughput /s")


def comparison_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """The cells of one model in the report's comparison table (:data:`COMPARISON_HEADER`)."""
    params = (MISSING if row["emb_params"] is None
              else f"{row['emb_params']:,} / {row['dense_params']:,}")
    return (row["name"], row["role"], row["arch"] or MISSING,
            fmt_auc(row["auc"], row["auc_std"], row["n"]), fmt(row["logloss"]), fmt(row["ece"]),
            fmt(row["gauc"]), fmt_int(row["flops"]), _pct(row["flops_fraction"]), params,
            fmt(row["p50_ms"], 3), fmt(row["p99_ms"], 3), fmt_int(row["throughput"]))


HEADLINE_HEADER = ("model", "role", "test AUC", "LogLoss", "FLOPs/sample", "% teacher", "p50 ms")


def headline_text(rows: list[dict[str, Any]]) -> str:
    """Fixed-width plain-text table of the headline columns (:data:`HEADLINE_HEADER`)."""
    cells = [HEADLINE_HEADER] + [
        (r["name"], r["role"], fmt_auc(r["auc"], r["auc_std"], r["n"]), fmt(r["logloss"]),
         fmt_int(r["flops"]), _pct(r["flops_fraction"]), fmt(r["p50_ms"], 3))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADLINE_HEADER))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                           strict=True)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
