"""The model registry and champion / challenger promotion (components/registry/).

Two worlds: the tiny finished run of tests/run_fixture.py (extended with vocabularies and dense
statistics so that its checkpoints export), whose labels come from known per-id weights, so an LR
holding exactly those weights is a crafted *better* challenger and its negation a crafted *worse*
one; and a small real synthetic Criteo log preprocessed twice with different vocabularies, for the
champion scored on the challenger's raw test rows and `ctrflow predict --model production`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from components.data.feature_map import FeatureMap
from components.models import build_model
from components.registry.settings import PromoteParams
from components.registry.store import Registry
from components.train.checkpoint import feature_map_hash, load_model, save_model
from tests import run_fixture
from tests.conftest import REPO_ROOT, VENV_BIN

# ----------------------------------------------------------------------------- world F: the run fixture


def _exportable(root: Path) -> None:
    """Give the fixture's processed dir vocabularies and dense stats; re-save checkpoints on the new map."""
    processed = root / "data/processed"
    old = FeatureMap.load(processed / "feature_map.json")
    fields = tuple(f if f.type == "categorical" else
                   type(f)(**{**f.__dict__, "stats": {"mean": 0.0, "std": 1.0, "train_missing_rows": 0}})
                   for f in old.fields)
    new = FeatureMap(format=old.format, label=old.label, fields=fields, splits=old.splits,
                     source_hash=old.source_hash, params=old.params)
    (processed / "vocab").mkdir()
    for f in new.categorical_fields:
        n = f.vocab_size - 2
        pl.DataFrame({"value": [f"{i:08x}" for i in range(n)], "id": pl.Series(range(2, 2 + n), dtype=pl.Int32),
                      "count": pl.Series([10] * n, dtype=pl.Int64)}).write_parquet(processed / "vocab" / f"{f.name}.parquet")
    new.save(processed / "feature_map.json")
    for rel, name, hparams in run_fixture.MODELS.values():
        model, _ = load_model(root / rel, old)
        save_model(model, root / rel, model_name=name, hparams=hparams, feature_map_hash=feature_map_hash(new),
                   epoch=1, metrics={"valid_auc": 0.5})


def _lr(root: Path, rel: str, sign: float) -> None:
    """Overwrite the checkpoint at ``rel`` with an LR holding the fixture's true weights × ``sign``."""
    fmap = FeatureMap.load(root / "data/processed/feature_map.json")
    rng = np.random.default_rng(11)  # the fixture's label-generating weights (run_fixture._write_processed)
    weights = np.concatenate([rng.normal(0, 1.0, v) for v in run_fixture.VOCAB.values()])
    model = build_model("lr", fmap)
    with torch.no_grad():
        model.embedding.first_order_table.weight.copy_(torch.tensor(sign * weights).reshape(-1, 1))
        model.embedding.first_order_dense.fill_(sign * 0.5)
        model.bias.zero_()
    shutil.rmtree(root / rel)
    save_model(model.eval(), root / rel, model_name="lr", hparams={}, feature_map_hash=feature_map_hash(fmap),
               epoch=1, metrics={"valid_auc": 0.5})


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    from components.evaluate.models import evaluate_run

    root = tmp_path_factory.mktemp("template")
    run_fixture.make_run(root)
    _exportable(root)
    _lr(root, run_fixture.MODELS["dagfm"][0], +1.0)  # crafted better challenger
    _lr(root, run_fixture.MODELS["fsdnet"][0], -1.0)  # crafted worse challenger
    evaluate_run(run_fixture.run_params(root))
    return root


def _params(root: Path, **promote):
    p = run_fixture.run_params(root)
    settings = {"registry_dir": str(root / "models/registry"), "out": str(root / "metrics/promotion.json"),
                "max_flops_fraction": None, **promote}
    return p.model_copy(update={"promote": PromoteParams(**settings)})


@pytest.fixture
def world(template, tmp_path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(template, root)
    return root


def _decision(root: Path) -> dict:
    return json.loads((root / "metrics/promotion.json").read_text())


def test_first_run_promotes_a_better_challenger_promotes_a_worse_one_is_refused(world):
    from components.stages import promote_stage

    reg = Registry(world / "models/registry")
    first = promote_stage(_params(world, candidate="teacher"))
    assert first.details["decision"] == "promoted" and "first promotion" in first.summary
    assert reg.production() == "v0001"
    v1 = world / "models/registry/v0001"
    assert {"model.onnx", "model.safetensors", "model.json", "feature_map.json", "vocab", "export.json",
            "metrics.json", "params.yaml", "source.json"} <= {p.name for p in v1.iterdir()}
    source = json.loads((v1 / "source.json").read_text())
    assert source["data"]["input"].endswith("synthetic.txt") and "git" in source and "dvc_lock" in source
    assert yaml.safe_load((v1 / "params.yaml").read_text())["promote"]["candidate"] == "teacher"

    better = promote_stage(_params(world))  # best_student: the crafted true-weights LR in dagfm's place
    d = better.details
    assert d["decision"] == "promoted" and d["candidate"]["name"] == "dagfm" and reg.production() == "v0002"
    assert d["champion"]["method"] == "same_feature_map" and d["comparison"]["rows"] == run_fixture.ROWS["test"]
    assert d["candidate"]["test"]["auc"] > d["champion"]["test"]["auc"]
    assert _decision(world)["version"] == "v0002"

    v2_bytes = {p: p.read_bytes() for p in (world / "models/registry/v0002").rglob("*") if p.is_file()}
    worse = promote_stage(_params(world, candidate="fsdnet"))
    d = worse.details
    assert d["decision"] == "refused" and reg.production() == "v0002"
    assert d["comparison"]["auc_drop"] > 0.002 and "max_auc_drop" in d["reason"]
    assert f"{d['champion']['test']['auc']:.4f}" in d["reason"] and "kept the champion v0002" in worse.summary
    assert reg.version_dirs() == ["v0001", "v0002"]
    assert {p: p.read_bytes() for p in v2_bytes} == v2_bytes  # the champion is untouched
    assert _decision(world)["decision"] == "refused"
    history = reg.index()["history"]
    assert [e["action"] for e in history] == ["promoted", "promoted", "refused"]


def test_a_champion_this_version_cannot_load_is_incomparable_not_a_crash(world):
    """A registry version written by an older ctrflow whose weights no longer fit the model this code
    builds (e.g. a layer's shape changed): promote.on_incomparable decides, the stage does not fail."""
    from components.stages import promote_stage

    promote_stage(_params(world, candidate="teacher"))
    meta_path = world / "models/registry/v0001/model.json"
    meta = json.loads(meta_path.read_text())
    meta["hparams"]["num_cross_layers"] = 3  # the stored weights have 2 cross layers
    meta_path.write_text(json.dumps(meta))
    refused = promote_stage(_params(world))
    d = refused.details
    assert d["decision"] == "refused" and "cannot load the champion" in d["reason"]
    assert "on_incomparable: refuse" in d["reason"] and Registry(world / "models/registry").production() == "v0001"
    promoted = promote_stage(_params(world, on_incomparable="promote"))
    assert promoted.details["decision"] == "promoted" and "could not be compared" in promoted.details["reason"]
    assert Registry(world / "models/registry").production() == "v0002"


def test_a_failed_gate_keeps_the_champion_serving(world):
    from components.registry.rows import score_processed
    from components.stages import promote_stage

    promote_stage(_params(world, candidate="teacher"))
    teacher = json.loads((world / "metrics/teacher.json").read_text())
    teacher["gate"].update(passed=False, message="baseline gate FAILED: teacher valid AUC 0.6000 vs LR 0.6500")
    (world / "metrics/teacher.json").write_text(json.dumps(teacher))
    res = promote_stage(_params(world))
    assert res.details["decision"] == "refused" and "baseline gate FAILED" in res.details["reason"]
    reg = Registry(world / "models/registry")
    assert reg.production() == "v0001" and reg.version_dirs() == ["v0001"]
    scored = score_processed(reg.resolve("production"), world / "data/processed")  # still serves
    assert scored.logits.shape == (run_fixture.ROWS["test"],)


def test_rollback_and_no_re_promotion_of_a_registered_model(world):
    from components.stages import promote_stage

    promote_stage(_params(world, candidate="teacher"))
    promote_stage(_params(world, candidate="dagfm"))
    reg = Registry(world / "models/registry")
    back = promote_stage(_params(world), rollback=True)
    assert reg.production() == "v0001" and "v0002 → v0001" in back.summary
    assert reg.entry("v0002")["status"] == "rolled_back"
    again = promote_stage(_params(world, candidate="dagfm"))  # a rerun does not promote it back
    assert again.details["decision"] == "refused" and "already registry version v0002" in again.details["reason"]
    assert reg.production() == "v0001"
    with pytest.raises(ValueError, match="first promoted version"):
        promote_stage(_params(world), rollback=True)
    promote_stage(_params(world), rollback=True, version="v0002")
    assert reg.production() == "v0002"
    assert [e["action"] for e in reg.index()["history"]] == ["promoted", "promoted", "rollback", "refused", "rollback"]


def _kill_during_promotion(world: Path, point: str) -> None:
    params_file = world / "params.yaml"
    params_file.write_text(yaml.safe_dump(_params(world, candidate="dagfm").model_dump(mode="json", by_alias=True)))
    marker = world / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CTRFLOW_TEST_PAUSE_AT": point,
           "CTRFLOW_TEST_PAUSE_MARKER": str(marker)}
    proc = subprocess.Popen([str(VENV_BIN / "ctrflow"), "--params", str(params_file), "promote"], cwd=world,
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the promotion never reached the pause point"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_kill_9_while_the_version_is_half_written_leaves_production_on_the_old_version(world):
    from components.stages import promote_stage

    promote_stage(_params(world, candidate="teacher"))
    _kill_during_promotion(world, "promote.version_half_written")
    reg = Registry(world / "models/registry")
    assert reg.production() == "v0001" and reg.version_dirs() == ["v0001"]
    staging = [p for p in reg.root.iterdir() if p.name.startswith(".staging-")]
    assert len(staging) == 1 and (staging[0] / "model.onnx").is_file() and not (staging[0] / "metrics.json").exists()
    assert (reg.resolve("production") / "metrics.json").is_file()  # the old version is complete
    rerun = promote_stage(_params(world, candidate="dagfm"))
    assert rerun.details["decision"] == "promoted" and reg.production() == "v0002"
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".")]
    assert any("staging leftover" in n for n in rerun.details["notes"])


def test_kill_9_before_the_production_switch_is_reconciled(world):
    from components.stages import promote_stage

    promote_stage(_params(world, candidate="teacher"))
    _kill_during_promotion(world, "promote.before_production_switch")
    reg = Registry(world / "models/registry")
    assert reg.production() == "v0001" and reg.version_dirs() == ["v0001", "v0002"]
    rerun = promote_stage(_params(world, candidate="dagfm"))
    assert rerun.details["decision"] == "promoted" and reg.production() == "v0003"
    index = reg.index()
    assert index["history"][1]["interrupted"] is True and reg.entry("v0002")["status"] == "unpublished"


# ----------------------------------------------------------------------------- world R: a real synthetic log


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    """3,000 generated Criteo rows preprocessed twice (min_count 2 and 5: different vocabularies),
    a random-weight DCNv2 on each feature map, each exported self-contained."""
    from components.config import Params
    from components.serve.export import export_model
    from components.stages import generate_stage, preprocess_stage

    root = tmp_path_factory.mktemp("real")
    raw = root / "raw.txt"
    base = {"data": {"format": "criteo", "input": str(raw)}, "generate": {"format": "criteo", "out": str(raw)}}
    generate_stage(Params.model_validate(base), rows=3000, seed=5)
    out = {"root": root, "raw": raw}
    for tag, min_count in (("a", 2), ("b", 5)):
        params = Params.model_validate({**base, "preprocess": {"out_dir": str(root / f"proc_{tag}"),
                                                               "min_count": min_count}})
        preprocess_stage(params, require_gate=False)
        fmap = FeatureMap.load(root / f"proc_{tag}/feature_map.json")
        torch.manual_seed(3)
        hp = {"embedding_dim": 4, "hidden_units": [8]}
        model = build_model("dcnv2", fmap, **hp)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        save_model(model.eval(), root / f"model_{tag}", model_name="dcnv2", hparams=hp,
                   feature_map_hash=feature_map_hash(fmap), epoch=1, metrics={})
        export_model(root / f"model_{tag}", root / f"export_{tag}", processed_dir=root / f"proc_{tag}")
        out[tag] = params
    return out


def test_raw_test_rows_rebuilt_through_the_same_vocabularies_equal_the_processed_split(real):
    from components.registry.rows import score_processed, score_raw_rows

    fmap = FeatureMap.load(real["root"] / "proc_b/feature_map.json")
    rebuilt = score_raw_rows(real["root"] / "export_b", real["b"], fmap)
    direct = score_processed(real["root"] / "model_b", real["root"] / "proc_b")
    assert rebuilt.labels.size == fmap.splits["test"]["rows"] > 200
    np.testing.assert_array_equal(rebuilt.labels, direct.labels)
    np.testing.assert_allclose(rebuilt.logits, direct.logits, atol=1e-5)


def test_the_champion_is_scored_on_the_challengers_rows_through_its_own_vocabularies(real, tmp_path):
    from components.registry.rows import Incomparable, score_champion

    a = FeatureMap.load(real["root"] / "proc_a/feature_map.json")
    b = FeatureMap.load(real["root"] / "proc_b/feature_map.json")
    assert a.vocab_sizes != b.vocab_sizes
    scored = score_champion(real["root"] / "export_a", real["b"], real["root"] / "proc_b")
    assert scored.method == "raw_rows" and scored.labels.size == b.splits["test"]["rows"]
    assert np.isfinite(scored.logits).all() and scored.logits.std() > 0
    changed = tmp_path / "changed.txt"
    changed.write_bytes(real["raw"].read_bytes() + real["raw"].read_bytes().splitlines(keepends=True)[0])
    moved = real["b"].model_copy(update={"data": real["b"].data.model_copy(update={"input": str(changed)})})
    with pytest.raises(Incomparable, match="source hash"):
        score_champion(real["root"] / "export_a", moved, real["root"] / "proc_b")


def test_predict_and_registry_commands_resolve_production(real, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli import main

    monkeypatch.chdir(tmp_path)
    reg = Registry(tmp_path / "models/registry")
    reg.root.mkdir(parents=True)
    shutil.copytree(real["root"] / "export_a", reg.root / "v0001")
    reg.set_production("v0001")
    params = real["a"].model_dump(mode="json", by_alias=True)
    params["promote"] = {"registry_dir": str(reg.root)}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    runner = CliRunner()
    by_dir = runner.invoke(main, ["predict", "--model", str(real["root"] / "export_a"), str(real["raw"])])
    by_name = runner.invoke(main, ["predict", "--model", "production", str(real["raw"])])
    by_version = runner.invoke(main, ["predict", "--model", "v0001", str(real["raw"])])
    assert by_dir.exit_code == by_name.exit_code == by_version.exit_code == 0, by_name.output
    assert by_name.stdout == by_dir.stdout == by_version.stdout and len(by_name.stdout.splitlines()) == 3000
    listing = runner.invoke(main, ["registry"])
    assert listing.exit_code == 0 and "v0001" in listing.output and "production" in listing.output
    missing = runner.invoke(main, ["predict", "--model", "v0009", str(real["raw"])])
    assert missing.exit_code == 1 and "no such registry version" in missing.output


def test_a_rerun_of_promoted_outputs_keeps_the_decision_and_registers_nothing(world):
    """A kill after the production switch but before dvc.lock recorded the stage makes the rerun
    promote the same outputs again: the earlier decision stands, no second version."""
    from components.stages import promote_stage

    first = promote_stage(_params(world, candidate="teacher"))
    again = promote_stage(_params(world, candidate="teacher"))
    reg = Registry(world / "models/registry")
    assert first.details["decision"] == again.details["decision"] == "promoted"
    assert again.details["version"] == again.details["production"] == "v0001" == reg.production()
    assert "already production as v0001" in again.details["reason"]
    assert again.details["candidate"] == first.details["candidate"]  # the same challenger, the same numbers
    assert reg.version_dirs() == ["v0001"] and [e["action"] for e in reg.index()["history"]] == ["promoted"]
