"""The design card's layout rules, checked mechanically."""

import ast

from tests.conftest import REPO_ROOT


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_components_never_import_prefect_or_flows():
    offenders = []
    for path in (REPO_ROOT / "components").rglob("*.py"):
        for mod in _imports(path):
            if mod.split(".")[0] in {"prefect", "flows"}:
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {mod}")
    assert offenders == []


def test_top_level_is_the_design_card():
    for name in ["flows", "components", "params.yaml", "dvc.yaml", "data", "tests",
                 "pyproject.toml", "README.md", ".ci/run", "benchmarks"]:
        assert (REPO_ROOT / name).exists(), name


def test_no_pickles_in_the_code():
    bad = []
    for path in list((REPO_ROOT / "components").rglob("*.py")) + list((REPO_ROOT / "flows").rglob("*.py")):
        for mod in _imports(path):
            if mod in {"pickle", "cloudpickle", "dill", "joblib"}:
                bad.append(str(path))
    assert bad == []
