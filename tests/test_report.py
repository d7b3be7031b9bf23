"""The run report on a tiny finished run (tests/run_fixture.py), evaluated and profiled first.

Checked: every section heading in report.md and report.html; the numbers of the evaluation,
profile (comparison, speed and top-ops tables), training, validation, oracle, study and dvc.lock
files appear as formatted; the HTML is self-contained (base64 PNG figures, no http(s) URL in any
src/href); the Markdown's figure files are PNGs; the CLI headline table; a report of a run with
nothing but a feature map still has every section and says what is missing; and the Markdown/HTML
renderers escape their text.
"""

from __future__ import annotations

import base64
import re

import pytest

from components.evaluate.models import evaluate_run
from components.evaluate.settings import evaluate_settings
from components.profile.run import profile_run
from components.report import SECTIONS, build_report, headline_table
from components.report.document import (
    Figure,
    Heading,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from components.report.environment import dvc_output_hashes, package_versions
from tests.run_fixture import DVC_HASH, MODELS, ROWS, TUNED, make_run, run_params

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(params, root, evaluation, profile, markdown, html, md path) of one tiny run's report."""
    root = tmp_path_factory.mktemp("reportrun")
    params = make_run(root)
    evaluation = evaluate_run(params)
    profile = profile_run(params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # dvc.lock is read from the working directory
        md_path, html_path = build_report(params)
    return params, root, evaluation, profile, md_path.read_text(), html_path.read_text(), md_path


def test_report_files_are_where_the_params_say(built):
    params, root, *_, md_path = built
    assert md_path == root / "reports" / "report.md"
    assert (root / "reports" / "report.html").is_file()
    assert evaluate_settings(params).report_dir == str(root / "reports")


def test_every_section_heading_is_in_both_files(built):
    *_, md, html, _ = built
    assert md.startswith("# ctrflow run report\n")
    for title in SECTIONS:
        assert f"\n## {title}\n" in md, title
        assert f"<h2>{title}</h2>".replace("&", "&amp;") in html, title
    positions = [md.index(f"\n## {t}\n") for t in SECTIONS]
    assert positions == sorted(positions)


def test_model_table_holds_the_numbers_of_the_json_files(built):
    _, _, evaluation, profile, md, html, _ = built
    for name in MODELS:
        m = evaluation["models"][name]["metrics"]
        p = profile["models"][name]
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} | "))
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[3] == f"{m['auc']:.4f} (n=1)"
        assert cells[4] == f"{m['logloss']:.4f}"
        assert cells[5] == f"{m['ece']:.4f}"
        assert cells[6] == f"{m['gauc']:.4f}"
        assert cells[7] == f"{p['flops_per_sample']:,.0f}"
        frac = 1.0 if name == "teacher" else p["vs_teacher"]["fraction"]
        assert cells[8] == f"{100 * frac:.2f} %"
        assert cells[9] == f"{p['parameters']['embedding']:,} / {p['parameters']['dense']:,}"
        assert cells[10] == f"{p['latency']['p50_ms']:.3f}"
        assert cells[11] == f"{p['latency']['p99_ms']:.3f}"
        assert cells[12] == f"{p['latency']['throughput_samples_per_s']:,.0f}"
        assert f"{m['auc']:.4f} (n=1)" in html
        if name != "teacher":
            a = evaluation["models"][name]["agreement_with_teacher"]
            assert f"| {name} | {a['mean_abs_logit_diff']:.4f} | {a['rms_logit_diff']:.4f} |" in md
    # rows in role order: teacher, students, baselines
    table = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines()
             if line.startswith("| ") and line.count(" | ") == 12]
    assert [c[0] for c in table] == ["model", "teacher", "dagfm", "fsdnet", "baseline_dagfm"]


def test_speed_tables_hold_the_numbers_of_profile_json(built):
    *_, profile, md, html, _ = built
    assert "\n### Where inference time goes\n" in md and "<h3>Where inference time goes</h3>" in html
    assert "\n### Top ops by self CPU time\n" in md
    for name in MODELS:
        p = profile["models"][name]
        b = p["time_breakdown"]
        row = next(line for line in md.splitlines()
                   if line.startswith(f"| {name} | ") and line.count(" | ") == 9)
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[1] == f"{p['achieved_gflops_per_s']:.3f}"
        assert cells[2:5] == [f"{100 * b['shares'][k]:.1f} %" for k in ("embedding", "interaction", "mlp")]
        assert cells[5] == f"{100 * b['outside_ops_share']:.1f} %"
        vs = p["vs_teacher"]
        if name == "teacher":
            assert cells[6:] == ["–"] * 4
        else:
            assert cells[6:] == [f"{100 * vs['fraction']:.2f} %", f"{vs['throughput_ratio']:.3f}",
                                 f"{vs['p50_latency_ratio']:.3f}", f"{vs['speedup_per_flop']:.3f}"]
        ops_table = md.split("\n### Top ops by self CPU time\n", 1)[1].split("\n#", 1)[0]
        ops = [[c.strip() for c in line.strip("|").split(" | ")] for line in ops_table.splitlines()
               if line.startswith(f"| {name} | ")]
        assert ops == [[name, o["op"], f"{o['self_cpu_ms']:.3f}", f"{o['percent']:.1f} %",
                        f"{o['calls']:g}"] for o in b["top_ops"]]
        assert len(ops) == len(b["top_ops"]) > 0


def test_data_tuning_and_environment_numbers(built):
    *_, md, html, _ = built
    assert f"| train | {ROWS['train']:,} |" in md and f"| test | {ROWS['test']:,} |" in md
    assert "| user_id | categorical | categorical | 9 |" in md
    assert "Validation gate: passed on 1,234 rows" in md and "2 checks, 0 failed" in md
    assert "oracle (true click probabilities) AUC 0.8287, LogLoss 0.4211" in md
    assert "Best trial 1 (validation AUC 0.7123; 2 complete, 1 pruned trials)" in md
    assert "alpha = 0.25, beta = 512.5, depth = 2" in md
    assert TUNED["params"]["beta"] == 512.5
    assert "| 2 | PRUNED | 0.6002 | 1 | 0.3 |  | 0.9 | 11.0 | 4 |" in md
    assert f"| preprocess | data/processed | {DVC_HASH} |" in md
    versions = package_versions()
    assert f"| torch | {versions['torch']} |" in md and f"| optuna | {versions['optuna']} |" in md
    assert "seeds: generate 7, preprocess 8, train 9, distill 10, tune 12" in md
    assert "Teacher crossnet: best epoch 2 of 3 on cpu." in md
    assert "oracle (true click probabilities) AUC 0.8287" in html


def test_html_is_self_contained_with_embedded_png_figures(built):
    *_, html, _ = built
    sources = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', html)
    assert len(sources) == 4  # pareto, ROC, reliability, teacher curve
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(?:src|href)\s*=\s*["\']?\s*(?:https?:)?//', html)
    for s in sources:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "<link" not in html and "<script" not in html


def test_markdown_links_figure_files_that_are_pngs(built):
    *_, md, _, md_path = built
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == ["figures/pareto.png", "figures/reliability.png", "figures/roc.png",
                             "figures/teacher_curve.png"]
    for link in links:
        assert (md_path.parent / link).read_bytes().startswith(PNG_MAGIC)


def test_headline_table_for_the_cli(built):
    params, _, evaluation, profile, md, _, _ = built
    text = headline_table(params)
    lines = text.splitlines()
    assert lines[0].split() == ["model", "role", "test", "AUC", "LogLoss", "FLOPs/sample", "%",
                                "teacher", "p50", "ms"]
    assert set(lines[1]) <= {"-", " "}
    assert [line.split()[0] for line in lines[2:]] == ["teacher", "dagfm", "fsdnet", "baseline_dagfm",
                                                         "LR", "constant", "baseline"]
    # what "good" means on this data: the gate's LR and the constant predictor on the test split
    assert "0.6432 (n=1)" in lines[6] and "0.5567" in lines[6] and "reference" in lines[6]
    assert "0.5000 (n=1)" in lines[7] and "0.5623" in lines[7]
    assert lines[8] == "baseline gate passed: teacher valid AUC 0.6600 vs LR 0.6500"
    dagfm = lines[3]
    assert f"{evaluation['models']['dagfm']['metrics']['auc']:.4f} (n=1)" in dagfm
    assert f"{profile['models']['dagfm']['flops_per_sample']:,.0f}" in dagfm
    assert f"{100 * profile['models']['dagfm']['vs_teacher']['fraction']:.2f} %" in dagfm
    table, gate = text.rsplit("\n", 1)
    assert table in md and gate in md  # the report opens with the same table and the gate verdict


def test_report_of_a_run_without_later_stages_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = run_params(tmp_path)
    md_path, html_path = build_report(params)
    md = md_path.read_text()
    for title in SECTIONS:
        assert f"\n## {title}\n" in md
    assert f"Not available: the feature map ({tmp_path}/data/processed/feature_map.json) not found; " \
           "run `ctrflow preprocess`." in md
    assert "run `ctrflow evaluate`" in md and "run `ctrflow train`" in md
    assert "No dvc.lock here" in md
    assert "data:image/png" not in html_path.read_text()


def test_report_falls_back_to_training_metrics_without_evaluation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = make_run(tmp_path)  # no evaluate / profile run
    text = headline_table(params)
    assert "0.6543 (n=1)" in text and "0.6100 (n=1)" in text  # teacher.json / students.json
    md = build_report(params)[0].read_text()
    assert "Metrics from: training metrics." in md


def test_renderers_escape_text():
    blocks = [Heading("T <1>", 1), Paragraph("a <script>alert(1)</script> & b"),
              Table(("x|y", "z"), (("1|2", "<b>"),)), Figure("f", 'cap "q"', PNG_MAGIC)]
    html = render_html(blocks, "t&t")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; b" in html
    assert "<title>t&amp;t</title>" in html and 'alt="cap &quot;q&quot;"' in html
    md = render_markdown(blocks)
    assert "| x\\|y | z |" in md and "| 1\\|2 | <b> |" in md
    assert "![cap \"q\"](figures/f.png)" in md


def test_dvc_lock_hashes(tmp_path):
    assert dvc_output_hashes(tmp_path / "dvc.lock") == []
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: x\n    outs:\n    - path: models/t\n"
        "      md5: abc.dir\n    - path: m.json\n      md5: def\n")
    assert dvc_output_hashes(tmp_path / "dvc.lock") == [
        {"stage": "train", "path": "models/t", "hash": "abc.dir"},
        {"stage": "train", "path": "m.json", "hash": "def"}]
    (tmp_path / "dvc.lock").write_text("stages: [unclosed")
    with pytest.raises(ValueError, match="dvc.lock: not valid YAML"):
        dvc_output_hashes(tmp_path / "dvc.lock")
