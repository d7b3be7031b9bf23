"""The distillation procedures end to end on a tiny processed fixture.

A CrossNet teacher is trained in the module fixture; then: the teacher-logit cache (equal to the
teacher recomputed, reused, invalidated), row alignment of cached logits under shuffling / sharding /
streaming, the chained KD-DAGFM phases (frozen then trainable embeddings, one checkpoint per phase,
trial callbacks), FSDNet self-distillation with and without the external-teacher term, the BCE-only
student baseline, and the settings section.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

import components.distill.logit_cache as logit_cache
import components.distill.phase as phase
from components.config import TrainParams
from components.data.feature_map import FeatureMap, FieldInfo
from components.data.loader import BatchLoader
from components.distill.baseline import run_student_baseline
from components.distill.kd_dagfm import copy_teacher_embedding, kd_batch_loss, run_kd_dagfm
from components.distill.logit_cache import (
    DistillBatch,
    TeacherLogitLoader,
    ensure_teacher_logits,
)
from components.distill.self_distill import fsdnet_batch_loss, run_fsdnet
from components.distill.settings import (
    DAGFMSettings,
    DistillParams,
    FSDNetSettings,
    KDDAGFMPlusSettings,
)
from components.models import build_model
from components.repro import without_timings
from components.train.checkpoint import (
    feature_map_hash,
    has_train_state,
    load_model,
    read_model_metadata,
    save_model,
)
from components.train.loop import fit, seed_everything
from components.train.metrics import evaluate_logits

VOCAB = (12, 10, 8, 6)
ROWS = {"train": 2000, "valid": 600, "test": 600}
DIM = 4


def quiet(_msg: str) -> None:
    pass


def _write_processed(directory: Path) -> FeatureMap:
    """Encoded splits with a planted pairwise signal + one dense field, and their feature map."""
    rng = np.random.default_rng(5)
    w = [rng.normal(0, 1.0, v) for v in VOCAB]
    pair = rng.normal(0, 1.0, (VOCAB[0], VOCAB[1]))
    splits = {}
    for name, n in ROWS.items():
        ids = [rng.integers(0, v, n).astype(np.int32) for v in VOCAB]
        dense = rng.normal(0, 1, n).astype(np.float32)
        z = sum(wi[i] for wi, i in zip(w, ids, strict=True)) + pair[ids[0], ids[1]] + 0.5 * dense
        label = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
        table = pa.table({**{f"c{j}": ids[j] for j in range(len(VOCAB))}, "d0": dense, "label": label})
        pq.write_table(table, directory / f"{name}.parquet", row_group_size=256)
        splits[name] = {"path": f"{name}.parquet", "rows": n, "positives": int(label.sum())}
    fields = tuple(
        FieldInfo(name=f"c{j}", type="categorical", source_kind="categorical", vocab_size=v)
        for j, v in enumerate(VOCAB)
    ) + (FieldInfo(name="d0", type="dense", source_kind="numeric", oov_id=None, missing_id=None),)
    fmap = FeatureMap(format="toy", label="label", fields=fields, splits=splits,
                      source_hash="distill-test", params={})  # fmt: skip
    fmap.save(directory / "feature_map.json")
    return fmap


def _split_tensors(directory: Path, fmap: FeatureMap, split: str):
    """The whole split read straight from Parquet: (categorical [N, F], dense [N, 1], label [N])."""
    t = pq.read_table(directory / f"{split}.parquet")
    cat = torch.from_numpy(np.stack([t.column(f"c{j}").to_numpy() for j in range(len(VOCAB))], 1))
    dense = torch.from_numpy(t.column("d0").to_numpy()).unsqueeze(1)
    label = torch.from_numpy(t.column("label").to_numpy().astype(np.float32))
    return cat.int(), dense.float(), label


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(processed dir, feature map, teacher dir): a 2-epoch CrossNet teacher with embedding_dim 4."""
    root = tmp_path_factory.mktemp("distill")
    processed = root / "processed"
    processed.mkdir()
    fmap = _write_processed(processed)
    params = TrainParams(model="crossnet", embedding_dim=DIM, model_params={"num_cross_layers": 2},
                         batch_size=256, lr=0.02, max_epochs=2, patience=2, device="cpu",
                         num_threads=1, seed=1)  # fmt: skip
    seed_everything(1)
    hp = {"embedding_dim": DIM, "num_cross_layers": 2}
    teacher = build_model("crossnet", fmap, **hp)
    train = BatchLoader(processed / "train.parquet", fmap, 256, shuffle=True, seed=1)
    valid = BatchLoader(processed / "valid.parquet", fmap, 1000, shuffle=False)
    fit(teacher, train, valid, params, root / "teacher", log=quiet, hparams=hp)
    return processed, fmap, root / "teacher"


def _settings(tmp_path: Path, **blocks) -> DistillParams:
    fast = {"batch_size": 256, "patience": 2, "embedding_l2": 0.0, "net_l2": 0.0}
    dagfm = {"interaction_type": "outer", "depth": 2, "lr": 0.01, "finetune_lr": 0.01,
             "distill_max_epochs": 2, "finetune_max_epochs": 2, **fast}  # fmt: skip
    fsd = {"num_layers": 2, "hidden_dim": 16, "dropout": 0.0, "embedding_dim": DIM, "lr": 0.01,
           "max_epochs": 2, **fast}  # fmt: skip
    return DistillParams(
        logit_cache_dir=str(tmp_path / "cache"),
        eval_batch_size=512,
        device="cpu",
        num_threads=1,
        seed=3,
        dagfm=DAGFMSettings(**{**dagfm, **blocks.get("dagfm", {})}),
        kd_dagfm_plus=KDDAGFMPlusSettings(**{**dagfm, "hidden_units": [8], **blocks.get("plus", {})}),
        fsdnet=FSDNetSettings(**{**fsd, **blocks.get("fsdnet", {})}),
    )


# ---------------------------------------------------------------- logit cache


def test_cache_equals_teacher_is_reused_and_invalidated(world, tmp_path, monkeypatch):
    processed, fmap, teacher_dir = world
    calls = []
    real = logit_cache.compute_logits
    monkeypatch.setattr(logit_cache, "compute_logits",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # fmt: skip
    cache_dir = tmp_path / "cache"
    first = ensure_teacher_logits(teacher_dir, processed, cache_dir, batch_size=300, log=quiet)
    assert not first.reused and len(calls) == 3 and sorted(first.rows) == ["test", "train", "valid"]
    teacher, _ = load_model(teacher_dir, fmap)
    for split, n in ROWS.items():
        cat, dense, _ = _split_tensors(processed, fmap, split)
        with torch.no_grad():
            expected = teacher(cat, dense)
        got = first.load(split)
        assert got.dtype == torch.float32 and got.shape == (n,)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        assert pq.read_schema(first.path(split)).names == ["logit"]
    meta = json.loads((first.directory / "meta.json").read_text())
    assert meta["teacher_weights_sha256"] == read_model_metadata(teacher_dir)["weights_sha256"]
    assert meta["feature_map_hash"] == feature_map_hash(fmap)

    # second call: nothing recomputed, files untouched
    mtimes = {s: first.path(s).stat().st_mtime_ns for s in ROWS}
    again = ensure_teacher_logits(teacher_dir, processed, cache_dir, log=quiet)
    assert again.reused and again.directory == first.directory and len(calls) == 3
    assert {s: again.path(s).stat().st_mtime_ns for s in ROWS} == mtimes

    # a tampered file fails its hash → that split alone is rebuilt in place
    pq.write_table(pa.table({"logit": np.zeros(ROWS["valid"], np.float32)}), first.path("valid"))
    rebuilt = ensure_teacher_logits(teacher_dir, processed, cache_dir, log=quiet)
    assert not rebuilt.reused and len(calls) == 4
    with torch.no_grad():
        expected = teacher(*_split_tensors(processed, fmap, "valid")[:2])
    torch.testing.assert_close(rebuilt.load("valid"), expected, atol=1e-6, rtol=0)

    # another teacher (different weights) → another key, recomputed, different logits
    with torch.no_grad():
        teacher.embedding.table.weight.add_(0.5)
    other_dir = tmp_path / "teacher2"
    save_model(teacher, other_dir, model_name="crossnet", hparams=read_model_metadata(teacher_dir)["hparams"],
               feature_map_hash=feature_map_hash(fmap), epoch=1, metrics={})  # fmt: skip
    other = ensure_teacher_logits(other_dir, processed, cache_dir, log=quiet)
    assert not other.reused and other.key != first.key and len(calls) == 7
    assert not torch.allclose(other.load("train"), first.load("train"))
    with torch.no_grad():
        expected = teacher(*_split_tensors(processed, fmap, "train")[:2])
    torch.testing.assert_close(other.load("train"), expected, atol=1e-6, rtol=0)


def test_a_capped_cache_scores_only_the_visited_rows_and_grows_when_the_cap_does(world, tmp_path, monkeypatch):
    processed, fmap, teacher_dir = world
    computed = []
    real = logit_cache.compute_logits
    monkeypatch.setattr(logit_cache, "compute_logits",
                        lambda m, loader, d: computed.append(loader.num_rows) or real(m, loader, d))  # fmt: skip
    cache_dir = tmp_path / "cache"
    teacher, _ = load_model(teacher_dir, fmap)
    with torch.no_grad():
        expected = teacher(*_split_tensors(processed, fmap, "train")[:2])

    capped = ensure_teacher_logits(teacher_dir, processed, cache_dir, max_rows={"train": 512}, log=quiet)
    assert computed == [512, ROWS["valid"], ROWS["test"]]
    assert capped.scored == {"train": [[0, 256], [1024, 1280]], "valid": None, "test": None}
    got = capped.load("train")
    assert got.shape == (ROWS["train"],)
    scored = torch.zeros(ROWS["train"], dtype=torch.bool)
    scored[0:256] = scored[1024:1280] = True
    assert torch.isnan(got[~scored]).all()
    torch.testing.assert_close(got[scored], expected[scored], atol=1e-6, rtol=0)

    # a loader under the same cap lines up; one visiting other rows is refused, naming the file
    same = TeacherLogitLoader(BatchLoader(processed / "train.parquet", fmap, 100, seed=3, max_rows=512), got)
    assert sum(len(b.teacher_logit) for b in same) == 512
    whole = TeacherLogitLoader(BatchLoader(processed / "train.parquet", fmap, 100, seed=3), got)
    with pytest.raises(ValueError, match=r"train\.parquet.*do not cover row"):
        list(whole)

    # a smaller cap is covered: reused, nothing computed
    again = ensure_teacher_logits(teacher_dir, processed, cache_dir, max_rows={"train": 256}, log=quiet)
    assert again.reused and len(computed) == 3
    # no cap: train alone is recomputed, valid/test carried over unchanged
    valid_sha = json.loads((capped.directory / "meta.json").read_text())["splits"]["valid"]["sha256"]
    full = ensure_teacher_logits(teacher_dir, processed, cache_dir, log=quiet)
    assert not full.reused and computed == [512, ROWS["valid"], ROWS["test"], ROWS["train"]]
    assert full.scored["train"] is None
    assert json.loads((full.directory / "meta.json").read_text())["splits"]["valid"]["sha256"] == valid_sha
    torch.testing.assert_close(full.load("train"), expected, atol=1e-6, rtol=0)
    # and the whole split covers any cap
    assert ensure_teacher_logits(teacher_dir, processed, cache_dir, max_rows={"train": 512}, log=quiet).reused
    assert len(computed) == 4


def test_cache_refuses_a_teacher_of_other_data(world, tmp_path):
    processed, fmap, teacher_dir = world
    other = tmp_path / "processed2"
    shutil.copytree(processed, other)
    data = json.loads((other / "feature_map.json").read_text())
    data["source_hash"] = "something else"
    (other / "feature_map.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="feature map"):
        ensure_teacher_logits(teacher_dir, other, tmp_path / "cache", log=quiet)


@pytest.mark.parametrize(
    "kwargs",
    [{"in_memory": True}, {"in_memory": True, "shard": (1, 2)}, {"in_memory": False, "shuffle_buffer": 2}],
    ids=["memory", "shard", "stream"],
)
def test_shuffled_batches_receive_their_rows_teacher_logits(world, kwargs):
    processed, fmap, _ = world
    cat, dense, label = _split_tensors(processed, fmap, "train")
    n = ROWS["train"]
    row_logits = torch.arange(n, dtype=torch.float32) * 0.5 - 7.0  # a distinct value per file row
    loader = TeacherLogitLoader(
        BatchLoader(processed / "train.parquet", fmap, 300, shuffle=True, seed=9, **kwargs), row_logits
    )
    seen = []
    for batch in loader:
        assert isinstance(batch, DistillBatch)
        rows = ((batch.teacher_logit + 7.0) / 0.5).round().long()
        assert torch.equal(batch.categorical, cat[rows]) and torch.equal(batch.label, label[rows])
        assert torch.equal(batch.dense, dense[rows])
        seen.append(rows)
    seen = torch.cat(seen).sort().values
    rank, world_size = kwargs.get("shard", (0, 1))
    if kwargs["in_memory"]:
        assert torch.equal(seen, torch.arange(rank, n, world_size))
    else:
        assert torch.equal(seen, torch.arange(n))
    assert not torch.equal(torch.cat([b.teacher_logit for b in loader])[:50], row_logits[:50])  # shuffled
    with pytest.raises(ValueError, match="teacher logits"):
        TeacherLogitLoader(BatchLoader(processed / "valid.parquet", fmap, 10), row_logits)


# ---------------------------------------------------------------- KD-DAGFM chain


def test_kd_batch_loss_by_hand():
    fmap = FeatureMap.toy([5, 5, 5])
    torch.manual_seed(0)
    model = build_model("dagfm", fmap, embedding_dim=2, depth=1)
    cat = torch.randint(0, 5, (6, 3), dtype=torch.int32)
    batch = DistillBatch(cat, torch.zeros(6, 0), torch.tensor([1.0, 0, 0, 1, 1, 0]),
                         torch.linspace(-2, 2, 6))  # fmt: skip
    loss, parts = kd_batch_loss(model, batch, alpha=0.1, beta=921.6, mse_reduction="mean")
    z = model(cat, None).detach().double()
    t, y = batch.teacher_logit.double(), batch.label.double()
    bce = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z))).mean()
    mse = ((t - z) ** 2).mean()
    assert loss.item() == pytest.approx(float(0.1 * bce + 921.6 * mse), rel=1e-5)
    assert parts["bce"].item() == pytest.approx(float(bce), rel=1e-5)
    assert parts["mse"].item() == pytest.approx(float(mse), rel=1e-5)


def test_kd_dagfm_three_phases_chained(world, tmp_path):
    processed, fmap, teacher_dir = world
    settings = _settings(tmp_path)
    calls = []
    out = tmp_path / "kd"
    metrics = run_kd_dagfm(teacher_dir, processed, settings, out, "dagfm",
                           trial_callback=lambda *a: calls.append(a), log=quiet)  # fmt: skip

    # trial_callback: once per epoch per phase, with that epoch's validation AUC
    hist = metrics["phases"]
    assert [(c[0], c[1]) for c in calls] == [("distill", 1), ("distill", 2), ("finetune", 1), ("finetune", 2)]
    assert [c[2] for c in calls] == [h["valid_auc"] for p in ("distill", "finetune") for h in hist[p]["history"]]

    # one checkpoint per phase, in its own directory; metrics.json = the returned dict
    teacher, _ = load_model(teacher_dir, fmap)
    distilled, dmeta = load_model(out / "distill", fmap)
    finetuned, fmeta = load_model(out / "finetune", fmap)
    assert dmeta["model"] == fmeta["model"] == "dagfm" and dmeta["extra"] == {"phase": "distill"}
    assert dmeta["weights_sha256"] != fmeta["weights_sha256"]
    assert not has_train_state(out / "finetune")
    # metrics.json = the returned dict without its timings (components/repro.py: outputs are byte-identical)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(without_timings(metrics)))
    assert "seconds" in json.dumps(metrics) and "seconds" not in (out / "metrics.json").read_text()
    assert not list(tmp_path.glob(".kd.*"))  # staging directory swapped in

    # distillation: the student's embeddings ARE the teacher's, bit for bit, and were not optimised
    t_emb, d_emb, f_emb = (m.embedding.state_dict() for m in (teacher, distilled, finetuned))
    assert set(d_emb) == {"table.weight", "dense_weight"}
    for k in d_emb:
        assert torch.equal(d_emb[k], t_emb[k])
    assert all(p.requires_grad for p in finetuned.parameters())
    # …while the DAG did learn
    seed_everything(settings.seed)
    fresh = build_model("dagfm", fmap, **metrics["hparams"])
    assert not torch.equal(distilled.dag.p, fresh.dag.p)
    # finetuning: embeddings move
    assert (f_emb["table.weight"] - t_emb["table.weight"]).abs().max() > 1e-4

    # scores: the teacher's from its cache, the student's re-derivable from the checkpoint
    cat, dense, label = _split_tensors(processed, fmap, "test")
    with torch.no_grad():
        z_t, z_f = teacher(cat, dense).numpy(), finetuned(cat, dense).numpy()
    assert metrics["teacher"]["test"]["auc"] == pytest.approx(evaluate_logits(label, z_t)["auc"], abs=1e-9)
    assert metrics["final"]["test"]["auc"] == pytest.approx(evaluate_logits(label, z_f)["auc"], abs=1e-9)
    assert metrics["final"]["test"]["teacher_logit_mse"] == pytest.approx(
        float(np.mean((z_f.astype(np.float64) - z_t) ** 2)), rel=1e-4)
    assert metrics["phases"]["distill"]["epochs"] == 2 and metrics["phases"]["finetune"]["epochs"] == 2


def test_distill_optimizer_excludes_the_frozen_embedding(world, tmp_path, monkeypatch):
    processed, fmap, teacher_dir = world
    settings = _settings(tmp_path, dagfm={"distill_max_epochs": 1, "finetune_max_epochs": 1})
    seen = {}
    real_build = phase.build_optimizer

    def spy(model, params):
        opt = real_build(model, params)
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        seen["embedding_in_optimizer"] = any(id(p) in in_opt for p in model.embedding_parameters())
        seen["dag_in_optimizer"] = id(model.dag.connect) in in_opt
        return opt

    monkeypatch.setattr(phase, "build_optimizer", spy)
    run_kd_dagfm(teacher_dir, processed, settings, tmp_path / "kd", "kd_dagfm_plus", log=quiet)
    assert seen == {"embedding_in_optimizer": False, "dag_in_optimizer": True}
    _, meta = load_model(tmp_path / "kd" / "finetune", fmap)
    assert meta["model"] == "kd_dagfm_plus" and meta["hparams"]["hidden_units"] == [8]


def test_embedding_dim_mismatch_is_a_clear_error(world, tmp_path):
    processed, _, teacher_dir = world
    settings = _settings(tmp_path, dagfm={"embedding_dim": 8})
    with pytest.raises(ValueError, match=r"embedding_dim 4 but distill\.dagfm\.embedding_dim is 8"):
        run_kd_dagfm(teacher_dir, processed, settings, tmp_path / "kd", log=quiet)
    assert not (tmp_path / "kd").exists()


def test_teacher_embedding_must_cover_the_students():
    fmap = FeatureMap.toy([5, 7], dense=1)
    student = build_model("dagfm", fmap, embedding_dim=4)
    deepfm = build_model("deepfm", fmap, embedding_dim=4)  # first-order tables: extra, ignored
    copy_teacher_embedding(student, deepfm)
    assert torch.equal(student.embedding.dense_weight, deepfm.embedding.dense_weight)
    assert torch.equal(student.embedding.table.weight, deepfm.embedding.table.weight)
    dlrm = build_model("dlrm", fmap, embedding_dim=4, bottom_units=[4], top_units=[4])
    with pytest.raises(ValueError, match=r"missing \['dense_weight'\]"):
        copy_teacher_embedding(student, dlrm)  # DLRM does not embed dense fields


def test_a_failed_run_keeps_the_previous_outputs(world, tmp_path):
    processed, _, teacher_dir = world
    settings = _settings(tmp_path, dagfm={"distill_max_epochs": 1, "finetune_max_epochs": 1})
    out = tmp_path / "kd"
    run_kd_dagfm(teacher_dir, processed, settings, out, log=quiet)
    before = (out / "metrics.json").read_text()

    def prune(phase_name, epoch, auc):
        raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        run_kd_dagfm(teacher_dir, processed, settings, out, trial_callback=prune, log=quiet)
    assert (out / "metrics.json").read_text() == before
    assert (out / "distill" / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "kd"]


# ---------------------------------------------------------------- FSDNet


def test_fsdnet_external_teacher_term_by_hand():
    fmap = FeatureMap.toy([6, 6, 6])
    torch.manual_seed(0)
    model = build_model("fsdnet", fmap, embedding_dim=3, num_layers=3, hidden_dim=5).eval()
    cat = torch.randint(0, 6, (8, 3), dtype=torch.int32)
    teacher = torch.linspace(-1.5, 2.0, 8)
    batch = DistillBatch(cat, torch.zeros(8, 0), (torch.arange(8) % 2).float(), teacher)
    base = FSDNetSettings(mu=0.4, tau=1.5, hint_weight=0.01)
    pure, parts = fsdnet_batch_loss(model, batch, settings=base)
    assert set(parts) == {"bce", "kl", "hint"}
    with torch.no_grad():
        heads, _ = model.forward_heads(cat, None)
    h = heads.double()
    for target, z in (("deepest", h[:, -1]), ("mean", torch.logit(torch.sigmoid(h).mean(1)))):
        settings = base.model_copy(update={"external_teacher_weight": 0.7, "external_target": target})
        total, parts = fsdnet_batch_loss(model, batch, settings=settings)
        ext = float(((z - teacher.double()) ** 2).mean())
        assert parts["external"].item() == pytest.approx(ext, rel=1e-5)
        assert (total - pure).item() == pytest.approx(0.7 * ext, rel=1e-4)


def test_fsdnet_self_distillation_runs(world, tmp_path):
    processed, fmap, teacher_dir = world
    calls = []
    settings = _settings(tmp_path)
    metrics = run_fsdnet(processed, settings, tmp_path / "fsd", trial_callback=lambda *a: calls.append(a),
                         log=quiet)  # fmt: skip
    assert [c[:2] for c in calls] == [("self_distill", 1), ("self_distill", 2)]
    assert metrics["external_teacher"] is None and not (tmp_path / "cache").exists()
    hist = metrics["phases"]["self_distill"]["history"]
    assert {"train_bce", "train_kl", "train_hint"} <= set(hist[0]) and "train_external" not in hist[0]
    model, meta = load_model(tmp_path / "fsd" / "self_distill", fmap)
    cat, dense, label = _split_tensors(processed, fmap, "valid")
    with torch.no_grad():
        auc = evaluate_logits(label, model(cat, dense).numpy())["auc"]
    assert metrics["final"]["valid"]["auc"] == pytest.approx(auc, abs=1e-9)
    assert max(h["valid_auc"] for h in hist) == pytest.approx(auc, abs=1e-9)  # the default monitor: AUC

    with pytest.raises(ValueError, match="teacher_dir"):
        run_fsdnet(processed, _settings(tmp_path, fsdnet={"external_teacher_weight": 0.5}),
                   tmp_path / "fsd2", log=quiet)  # fmt: skip
    ext = run_fsdnet(processed, _settings(tmp_path, fsdnet={"external_teacher_weight": 0.5}),
                     tmp_path / "fsd2", teacher_dir=teacher_dir, log=quiet)  # fmt: skip
    ext_hist = ext["phases"]["self_distill"]["history"]
    assert ext["external_teacher"]["weight"] == 0.5 and ext_hist[0]["train_external"] > 0
    # the logged loss contains the external term: loss ≥ 0.5·external (the other terms are ≥ 0)
    assert all(h["train_loss"] >= 0.5 * h["train_external"] for h in ext_hist)
    assert "teacher_logit_mse" in ext["final"]["test"]


# ---------------------------------------------------------------- baseline and settings


def test_student_baseline_is_bce_from_scratch(world, tmp_path):
    processed, fmap, teacher_dir = world
    # the chain's budget: distill (1) + finetune (2) epochs, at the distillation lr
    settings = _settings(tmp_path, dagfm={"distill_max_epochs": 1, "finetune_max_epochs": 2, "patience": 5})
    calls = []
    metrics = run_student_baseline("dagfm", processed, settings, tmp_path / "base", embedding_dim=DIM,
                                   trial_callback=lambda *a: calls.append(a), log=quiet)  # fmt: skip
    assert [c[:2] for c in calls] == [("baseline", 1), ("baseline", 2), ("baseline", 3)]
    model, meta = load_model(tmp_path / "base" / "baseline", fmap)
    assert meta["hparams"] == {"embedding_dim": DIM, "interaction_type": "outer", "depth": 2}
    assert not has_train_state(tmp_path / "base" / "baseline")
    teacher, _ = load_model(teacher_dir, fmap)
    assert not torch.equal(model.embedding.table.weight, teacher.embedding.table.weight)
    cat, dense, label = _split_tensors(processed, fmap, "test")
    with torch.no_grad():
        auc = evaluate_logits(label, model(cat, dense).numpy())["auc"]
    assert metrics["final"]["test"]["auc"] == pytest.approx(auc, abs=1e-9)


def test_settings_defaults_and_rules():
    s = DistillParams()
    assert (s.dagfm.alpha, s.dagfm.beta, s.dagfm.mse_reduction, s.dagfm.batch_size) == (0.1, 921.6, "mean", 1024)
    assert (s.dagfm.interaction_type, s.dagfm.depth, s.dagfm.lr, s.dagfm.patience) == ("outer", 3, 1e-4, 10)
    assert (s.fsdnet.mu, s.fsdnet.tau, s.fsdnet.hint_weight, s.fsdnet.batch_size) == (0.5, 1.0, 0.01, "auto")
    assert (s.fsdnet.lr_decay, s.fsdnet.grad_clip, s.fsdnet.external_teacher_weight) == (0.1, 10.0, 0.0)
    assert s.kd_dagfm_plus.model_hparams()["hidden_units"] == [400, 400, 400]
    with pytest.raises(ValidationError, match="extra"):
        DistillParams.model_validate({"dagfm": {"alhpa": 0.2}})
    with pytest.raises(ValidationError, match="more than once"):
        DistillParams(students=["dagfm", "dagfm"])
    with pytest.raises(ValidationError):
        DistillParams(students=["deepfm"])
    p = s.train_params(s.fsdnet, model="fsdnet", embedding_dim=16, lr=0.5, max_epochs=3, out_dir="x")
    assert (p.lr, p.max_epochs, p.batch_size, p.seed, p.lr_decay) == (0.5, 3, "auto", 2022, 0.1)
    assert s.fsdnet.monitor == s.dagfm.monitor == "auc" == p.monitor  # the published trainers'
    aml = s.model_copy(update={"dagfm": DAGFMSettings(monitor="auc_minus_logloss")})
    p = aml.train_params(aml.dagfm, model="dagfm", embedding_dim=16, lr=0.1, max_epochs=1, out_dir="x")
    assert p.monitor == "auc_minus_logloss"
    with pytest.raises(ValidationError):
        FSDNetSettings(monitor="gauc")


def test_rescale_embedding_sets_rms_and_keeps_geometry():
    import torch

    from components.distill.kd_dagfm import rescale_embedding

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.embedding = torch.nn.Module()
    model.embedding.table = torch.nn.Parameter(torch.randn(50, 4) * 1e-3)
    model.embedding.first_order_table = torch.nn.Parameter(torch.randn(50, 1))
    before = model.embedding.table.detach().clone()
    first = model.embedding.first_order_table.detach().clone()
    factor = rescale_embedding(model, 0.5)
    after = model.embedding.table.detach()
    assert abs(after.pow(2).mean().sqrt().item() - 0.5) < 1e-6
    assert torch.allclose(after, before * factor)  # one scalar: angles and distance ratios kept
    cos = torch.nn.functional.cosine_similarity
    assert torch.allclose(cos(after[0:1], after[1:]), cos(before[0:1], before[1:]), atol=1e-6)
    assert torch.equal(model.embedding.first_order_table.detach(), first)  # first-order weights untouched
    with pytest.raises(ValueError):
        rescale_embedding(model, 0.0)


@pytest.mark.parametrize("must_improve", [False, True])
def test_finetune_must_improve_keeps_the_distilled_student(world, tmp_path, must_improve):
    processed, fmap, teacher_dir = world
    # a finetuning lr this large wrecks the distilled student on validation
    settings = _settings(tmp_path, dagfm={"finetune_lr": 5.0, "finetune_must_improve": must_improve})
    out = tmp_path / "kd"
    metrics = run_kd_dagfm(teacher_dir, processed, settings, out, "dagfm", log=quiet)
    dist, ft = metrics["phases"]["distill"], metrics["phases"]["finetune"]
    raw_best = max(h["valid_auc"] for h in ft["history"])
    assert raw_best < dist["best_valid_auc"]
    distilled, _ = load_model(out / "distill", fmap)
    finetuned, fmeta = load_model(out / "finetune", fmap)
    d_state, f_state = distilled.state_dict(), finetuned.state_dict()
    same = all(torch.equal(d_state[k], f_state[k]) for k in d_state)
    assert ft["kept_distilled"] is must_improve
    assert same is must_improve
    if must_improve:
        assert (ft["best_epoch"], ft["best_valid_auc"]) == (0, dist["best_valid_auc"])
        assert fmeta["epoch"] == 0 and fmeta["extra"] == {"phase": "finetune", "kept": "distill"}
        assert metrics["final"]["valid"]["auc"] == pytest.approx(dist["valid"]["auc"], abs=1e-12)
        assert metrics["final"]["test"]["auc"] == pytest.approx(dist["test"]["auc"], abs=1e-12)
    else:
        # finetuning runs the train loop, which keeps the epoch of the block's monitor (AUC here)
        kept = max(ft["history"], key=lambda h: h["valid_auc"])
        assert ft["best_valid_auc"] == kept["valid_auc"] and metrics["final"]["valid"]["auc"] < dist["valid"]["auc"]


def _scripted_validation(monkeypatch, scores):
    """Every per-epoch validation (the distillation phases' and the train loop's) returns the next
    (AUC, LogLoss) of ``scores``; the final scoring of the splits is left real."""
    import components.train.loop as loop

    it = iter(scores)

    def scripted(*_args, **_kwargs):
        auc, logloss = next(it)
        return {"auc": auc, "logloss": logloss}

    monkeypatch.setattr(phase, "evaluate", scripted)
    monkeypatch.setattr(loop, "evaluate", scripted)


@pytest.mark.parametrize(("monitor", "best_epoch"), [("auc", 2), ("auc_minus_logloss", 3)])
def test_a_student_phase_keeps_the_epoch_its_monitor_prefers(world, tmp_path, monkeypatch, monitor, best_epoch):
    processed, _, teacher_dir = world
    # epoch 2 has the highest AUC, epoch 3 the highest AUC - LogLoss (0.20, 0.12, 0.26)
    _scripted_validation(monkeypatch, [(0.70, 0.50), (0.72, 0.60), (0.71, 0.45)])
    settings = _settings(tmp_path, fsdnet={"max_epochs": 3, "patience": 3, "monitor": monitor})
    metrics = run_fsdnet(processed, settings, tmp_path / "fsd", log=quiet)
    run = metrics["phases"]["self_distill"]
    assert run["best_epoch"] == best_epoch
    assert (run["best_valid_auc"], run["best_valid_logloss"]) == ((0.72, 0.60) if monitor == "auc" else (0.71, 0.45))
    assert [h["improved"] for h in run["history"]] == ([True, True, False] if monitor == "auc" else [True, False, True])
    # an epoch without a gain in the monitor decays the next epoch's LR (fsdnet lr_decay 0.1)
    lrs = [h["lr"] for h in run["history"]]
    assert lrs[2] == pytest.approx(lrs[0] * (1.0 if monitor == "auc" else 0.1))
    assert lrs[1] == pytest.approx(lrs[0])
    assert read_model_metadata(tmp_path / "fsd" / "self_distill")["epoch"] == best_epoch


@pytest.mark.parametrize(("monitor", "kept"), [("auc", False), ("auc_minus_logloss", True)])
def test_finetune_must_improve_compares_the_phases_by_the_monitor(world, tmp_path, monkeypatch, monitor, kept):
    processed, _, teacher_dir = world
    # distillation's best: AUC 0.71, LogLoss 0.40 (0.31); finetuning gains AUC (0.72) but its LogLoss
    # costs more (best AUC - LogLoss 0.165): only AUC calls that an improvement
    _scripted_validation(monkeypatch, [(0.70, 0.50), (0.71, 0.40), (0.72, 0.60), (0.715, 0.55)])
    settings = _settings(tmp_path, dagfm={"finetune_must_improve": True, "monitor": monitor})
    metrics = run_kd_dagfm(teacher_dir, processed, settings, tmp_path / "kd", "dagfm", log=quiet)
    dist, ft = metrics["phases"]["distill"], metrics["phases"]["finetune"]
    assert (dist["best_epoch"], dist["best_valid_auc"]) == (2, 0.71)
    assert ft["kept_distilled"] is kept
    assert (ft["best_epoch"], ft["best_valid_auc"]) == ((0, 0.71) if kept else (1 if monitor == "auc" else 2, 0.72))


def test_max_train_rows_caps_every_student_epoch_and_the_teacher_logits(world, tmp_path):
    processed, fmap, teacher_dir = world
    settings = _settings(tmp_path).model_copy(update={"max_train_rows": 512})
    metrics = run_kd_dagfm(teacher_dir, processed, settings, tmp_path / "kd", "dagfm", log=quiet)
    # train.parquet: 2000 rows in row groups of 256 -> groups 0 and 4 (512 rows), every epoch of both phases
    for name in ("distill", "finetune"):
        assert [h["train_samples"] for h in metrics["phases"][name]["history"]] == [512, 512]
    meta_path = next((tmp_path / "cache").glob("*/meta.json"))
    cache = json.loads(meta_path.read_text())
    # the teacher scored only the rows the capped loader visits; valid/test whole
    assert cache["splits"]["train"]["rows"] == ROWS["train"]
    assert cache["splits"]["train"]["scored"] == [[0, 256], [1024, 1280]]
    assert pq.read_metadata(meta_path.parent / "train.parquet").num_rows == 512
    assert "scored" not in cache["splits"]["valid"] and "scored" not in cache["splits"]["test"]
    uncapped = run_kd_dagfm(teacher_dir, processed, _settings(tmp_path), tmp_path / "kd2", "dagfm", log=quiet)
    assert [h["train_samples"] for h in uncapped["phases"]["distill"]["history"]] == [ROWS["train"]] * 2
    fsd = run_fsdnet(processed, settings, tmp_path / "fsd", log=quiet)
    assert {h["train_samples"] for h in fsd["phases"]["self_distill"]["history"]} == {512}


@pytest.mark.parametrize("carry", [True, False])
def test_kd_students_carry_the_teachers_frozen_logistic_base(world, tmp_path, carry):
    processed, fmap, _ = world
    params = TrainParams(model="crossnet", embedding_dim=DIM, model_params={"num_cross_layers": 2},
                         batch_size=256, lr=0.02, max_epochs=1, patience=2, device="cpu",
                         num_threads=1, seed=1)  # fmt: skip
    seed_everything(1)
    hp = {"embedding_dim": DIM, "num_cross_layers": 2, "logistic_base": True}
    teacher = build_model("crossnet", fmap, **hp)
    with torch.no_grad():
        for p in teacher.logistic_base.parameters():
            p.normal_(0.0, 0.3)  # stands for the gate's fitted LR
    train = BatchLoader(processed / "train.parquet", fmap, 256, shuffle=True, seed=1)
    valid = BatchLoader(processed / "valid.parquet", fmap, 1000, shuffle=False)
    fit(teacher, train, valid, params, tmp_path / "teacher", log=quiet, hparams=hp)
    settings = _settings(tmp_path, dagfm={"distill_max_epochs": 1, "finetune_max_epochs": 1})
    settings = settings.model_copy(update={"logistic_base": carry})
    metrics = run_kd_dagfm(tmp_path / "teacher", processed, settings, tmp_path / "kd", "dagfm", log=quiet)
    based_teacher, _ = load_model(tmp_path / "teacher", fmap)
    student, meta = load_model(tmp_path / "kd" / "finetune", fmap)
    assert metrics["hparams"].get("logistic_base", False) is carry and meta["hparams"].get("logistic_base", False) is carry
    if not carry:
        assert student.logistic_base is None
        return
    # the teacher's LR, bit for bit, after distillation and finetuning: copied once, never trained
    for name, tensor in based_teacher.logistic_base.state_dict().items():
        assert torch.equal(student.logistic_base.state_dict()[name], tensor), name
    cat, dense, _ = _split_tensors(processed, fmap, "test")
    with torch.no_grad():
        alone = student.interact(student.embed(cat, dense))
        torch.testing.assert_close(student(cat, dense), alone + based_teacher.logistic_base(cat, dense))


@pytest.mark.parametrize("carry", [True, False])
def test_fsdnet_carries_the_teachers_frozen_logistic_base_under_every_head(world, tmp_path, carry):
    processed, fmap, _ = world
    hp = {"embedding_dim": DIM, "num_cross_layers": 2, "logistic_base": True}
    seed_everything(1)
    teacher = build_model("crossnet", fmap, **hp)
    with torch.no_grad():
        for p in teacher.logistic_base.parameters():
            p.normal_(0.0, 0.3)  # stands for the gate's fitted LR
    save_model(teacher, tmp_path / "teacher", model_name="crossnet", hparams=hp,
               feature_map_hash=feature_map_hash(fmap), epoch=1, metrics={})
    settings = _settings(tmp_path, fsdnet={"max_epochs": 1}).model_copy(update={"logistic_base": carry})
    metrics = run_fsdnet(processed, settings, tmp_path / "fsd", teacher_dir=tmp_path / "teacher", log=quiet)
    student, meta = load_model(tmp_path / "fsd" / "self_distill", fmap)
    assert metrics["hparams"].get("logistic_base", False) is carry and meta["hparams"].get("logistic_base", False) is carry
    if not carry:
        assert student.logistic_base is None
        return
    for name, tensor in teacher.logistic_base.state_dict().items():  # copied once, never trained
        assert torch.equal(student.logistic_base.state_dict()[name], tensor), name
    cat, dense, _ = _split_tensors(processed, fmap, "test")
    with torch.no_grad():
        heads, _ = student.interact_heads(student.embed(cat, dense))
        base = teacher.logistic_base(cat, dense)
        assert float(base.abs().mean()) > 0.1  # the base is not a no-op here
        with_base = heads + base.unsqueeze(1)
        torch.testing.assert_close(student.forward_heads(cat, dense)[0], with_base)  # every head stands on it
        torch.testing.assert_close(student(cat, dense), student.combine_heads(with_base))
