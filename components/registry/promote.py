"""Champion / challenger promotion and rollback (the ``promote`` stage).

**The rule** (:func:`promote`), after evaluation:

1. the run's **gates** must have passed: the validation gate (``validation.json`` ``success``) and
   the teacher's baseline gate (``train.metrics`` ``gate.passed``; with ``train.gate.on_fail: warn``
   a failed gate lets the run go on but never promotes);
2. the **challenger** is chosen by ``promote.candidate``: ``best_student`` (the student of
   ``evaluate.out`` with the best test AUC among those whose FLOPs are at most
   ``promote.max_flops_fraction`` of the teacher's, from ``evaluate.profile_out``; ``null``: any),
   ``teacher``, or a model name of ``evaluate.out`` (e.g. ``dagfm``, ``baseline_dagfm``);
3. a challenger whose weights are already a registry version (promoted or rolled back) is not
   registered again (refused, naming the version — so a rolled-back model is not promoted back by a
   rerun); when that version is production, the earlier decision stands (``promoted``, the same
   version: a rerun after a kill that came after the switch); a version left ``unpublished`` by a
   killed promotion does not count (the rerun retries);
4. both are scored on **the challenger's test rows**: the challenger from the processed test
   split, the champion through its own vocabularies (:mod:`.rows`);
5. the challenger is promoted when ``champion AUC − challenger AUC ≤ promote.max_auc_drop`` (and,
   when ``promote.max_logloss_rise`` is set, its LogLoss rises no more than that); with no champion
   yet, passing the gates is enough. A champion that cannot be scored on those rows
   (:class:`~.rows.Incomparable`) refuses the challenger unless ``promote.on_incomparable: promote``.

A promotion exports the challenger into a new self-contained version (:mod:`.store`), then
switches ``production``. Either way the decision — promoted or refused, the numbers and the
reason — goes to ``promote.out`` (``metrics/promotion.json``) and the registry's history.

:func:`rollback` points ``production`` back at an earlier version (by default the one the current
champion replaced) and records it.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import yaml

from components.faults import pause_point
from components.registry.rows import Incomparable, score_champion, score_processed
from components.registry.store import (
    VERSION_META,
    Registry,
    atomic_write_text,
    entry_from_metrics,
    now_iso,
)

ONNX_TOLERANCE = 1e-5


def _read_json(path: str | Path) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None


def check_gates(params) -> dict:
    """``{"passed", "validation", "baseline_gate", "reasons"}`` of the run's two gates."""
    reasons = []
    val_path = Path(params.validation.out_dir) / "validation.json"
    val = _read_json(val_path)
    validation = bool(val and val.get("success"))
    if not validation:
        reasons.append(f"validation gate not passed ({val_path}: "
                       f"{'missing' if val is None else 'success is false'})")
    teacher = _read_json(params.train.metrics) or {}
    gate = teacher.get("gate")
    baseline = bool(gate and gate.get("passed"))
    if not baseline:
        reasons.append(f"baseline gate not passed ({params.train.metrics}: "
                       + (gate.get("message", "passed is false") if gate else "no gate verdict") + ")")
    return {"passed": validation and baseline, "validation": validation, "baseline_gate": baseline,
            "reasons": reasons}


def _flops(profile: dict | None, name: str) -> tuple[float | None, float | None]:
    rec = ((profile or {}).get("models") or {}).get(name) or {}
    frac = (rec.get("vs_teacher") or {}).get("fraction")
    if name == "teacher" and rec:
        frac = 1.0
    return rec.get("flops_per_sample"), frac


def select_candidate(params, evaluation: dict, profile: dict | None) -> dict:
    """The challenger per ``promote.candidate`` (module docstring) → ``{name, role, model,
    checkpoint, test, flops_per_sample, flops_fraction}``; ValueError naming why none qualifies."""
    rule = params.promote.candidate
    models = evaluation.get("models") or {}
    if rule == "best_student":
        budget = params.promote.max_flops_fraction
        pool, skipped = [], []
        for name, rec in models.items():
            if rec.get("role") != "student":
                continue
            _, frac = _flops(profile, name)
            if budget is not None and (frac is None or frac > budget):
                skipped.append(f"{name} ({'no FLOPs in ' + params.evaluate.profile_out if frac is None else f'{frac:.1%} of the teacher'})")
                continue
            pool.append(name)
        if not pool:
            raise ValueError(f"no student within promote.max_flops_fraction {budget}"
                             + (f": {', '.join(skipped)}" if skipped else " (no students evaluated)"))
        name = max(pool, key=lambda n: models[n]["metrics"]["auc"])
    else:
        name = rule
        if name not in models:
            raise ValueError(f"promote.candidate {name!r} is not a model of {params.evaluate.out} "
                             f"(models: {sorted(models)})")
    rec = models[name]
    flops, frac = _flops(profile, name)
    m = rec["metrics"]
    return {"name": name, "role": rec.get("role"), "model": rec.get("model"),
            "checkpoint": rec["checkpoint"], "evaluation": {"auc": m["auc"], "logloss": m["logloss"]},
            "flops_per_sample": flops, "flops_fraction": frac}


def _metric_pair(scored) -> dict:
    from components.train.metrics import auc, logloss

    return {"auc": auc(scored.labels, scored.logits), "logloss": logloss(scored.labels, scored.logits),
            "rows": int(scored.labels.size), "positives": int(scored.labels.sum())}


def _git_commit() -> dict:
    def git(*args):
        r = subprocess.run(["git", *args], capture_output=True, text=True, timeout=20)
        return r.stdout.strip() if r.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def _sha256_files(path: Path) -> list[dict]:
    import hashlib

    files = sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]
    out = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        out.append({"name": str(f), "bytes": f.stat().st_size, "sha256": h.hexdigest()})
    return out


def _dvc_lock_hashes(path: Path = Path("dvc.lock")) -> dict:
    if not path.is_file():
        return {}
    try:
        lock = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    out = {}
    for stage, rec in (lock.get("stages") or {}).items():
        outs = {o["path"]: o.get("md5") or o.get("hash") for o in rec.get("outs") or [] if "path" in o}
        if outs:
            out[stage] = outs
    return out


def source_record(params, processed: Path) -> dict:
    """Where the version came from: partitions (when preprocessing recorded them) or data.input with
    its content hash, the feature map's source hash, git commit, dvc.lock output hashes."""
    fmap = _read_json(processed / "feature_map.json") or {}
    data: dict[str, Any] = {"format": params.data.format, "input": params.data.input,
                            "source_hash": fmap.get("source_hash")}
    if fmap.get("partitions"):
        data["partitions"] = fmap["partitions"]
    else:
        p = Path(params.data.input)
        data["files"] = _sha256_files(p) if p.exists() else []
    return {"data": data, "processed_dir": str(processed), "git": _git_commit(),
            "dvc_lock": _dvc_lock_hashes()}


def _build_version(params, reg: Registry, version: str, record: dict, processed: Path) -> Path:
    """Export the challenger into a staging dir, add metrics/params/source, publish as ``version``."""
    import shutil

    from components.serve.export import export_model, verify_onnx

    staging = reg.staging_dir(version)
    try:
        export_model(record["checkpoint"], staging, processed_dir=processed, params=params)
        if params.promote.verify_onnx:
            diff = verify_onnx(staging, processed, "test")
            if not diff <= ONNX_TOLERANCE:
                raise RuntimeError(f"{version}: onnxruntime and PyTorch differ by {diff:.3g} on the test split")
            record["onnx_max_abs_diff"] = diff
        pause_point("promote.version_half_written")  # test hook: SIGKILL here leaves a half-written staging dir
        atomic_write_text(staging / VERSION_META, json.dumps(record, indent=2, sort_keys=True) + "\n")
        atomic_write_text(staging / "params.yaml",
                          yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))
        atomic_write_text(staging / "source.json",
                          json.dumps(source_record(params, processed), indent=2, sort_keys=True) + "\n")
        return reg.publish(staging, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_decision(params, decision: dict) -> dict:
    atomic_write_text(Path(params.promote.out), json.dumps(decision, indent=2, sort_keys=True) + "\n")
    return decision


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def promote(params) -> dict:
    """Apply the promotion rule (module docstring) to the run described by ``params``; return the
    decision (also written to ``promote.out`` and the registry history). Call under the run lock."""
    import torch

    from components.train.checkpoint import read_model_metadata
    from components.train.loop import _configure_threads

    # scores depend on the thread count at float32 rounding: the same count whatever ran before in this
    # process (train/distill set all cores, a fresh process starts with torch's default), as in evaluate
    _configure_threads(torch.device("cpu"), 0, 1)
    pp = params.promote
    reg = Registry(pp.registry_dir)
    notes = reg.reconcile()  # always leaves the registry directory in place (a DVC output)
    champion = reg.production()
    decision: dict[str, Any] = {"time": now_iso(), "registry": str(reg.root), "previous_production": champion,
                                "production": champion, "promoted": False, "version": None,
                                "candidate": None, "champion": None, "comparison": None,
                                "rule": pp.model_dump(mode="json"), "notes": notes}
    if not pp.enabled:
        decision.update(decision="disabled", reason="promote.enabled is false")
        return _write_decision(params, decision)

    def refuse(reason: str) -> dict:
        decision.update(decision="refused", reason=reason)
        _record_history(reg, {"action": "refused", "version": None, "from": champion,
                              "candidate": (decision["candidate"] or {}).get("name"), "reason": reason})
        return _write_decision(params, decision)

    gates = check_gates(params)
    decision["gates"] = gates
    evaluation = _read_json(params.evaluate.out)
    if evaluation is None:
        raise FileNotFoundError(f"{params.evaluate.out}: no evaluation; run `ctrflow evaluate` first")
    try:
        cand = select_candidate(params, evaluation, _read_json(params.evaluate.profile_out))
    except ValueError as e:
        return refuse(f"no challenger: {e}")
    decision["candidate"] = cand
    if not gates["passed"]:
        return refuse("the run's gates did not pass: " + "; ".join(gates["reasons"]))
    meta = read_model_metadata(cand["checkpoint"])
    cand["weights_sha256"], cand["feature_map_hash"] = meta["weights_sha256"], meta["feature_map_hash"]
    for entry in reg.index()["versions"]:
        # an `unpublished` version (a promotion killed before the switch) is not a decision: retried
        if entry.get("weights_sha256") == meta["weights_sha256"] and entry.get("status") != "unpublished":
            if entry["version"] == champion and entry.get("status") == "promoted":
                # these very outputs were promoted already (a rerun after a kill between the switch and
                # dvc.lock's record, or a forced rerun): the decision stands, nothing is registered again
                cand["test"] = _metric_pair(score_processed(cand["checkpoint"], Path(params.preprocess.out_dir)))
                reason = (f"the challenger {cand['name']} is already production as {champion} "
                          f"(promoted by an earlier run of these outputs); nothing to do")
                decision.update(decision="promoted", promoted=True, version=champion, production=champion,
                                reason=reason)
                return _write_decision(params, decision)
            where = "production" if entry["version"] == champion else entry.get("status", "registered")
            return refuse(f"the challenger {cand['name']} is already registry version {entry['version']} "
                          f"({where}); not registered again")
    processed = Path(params.preprocess.out_dir)
    chall = _metric_pair(score_processed(cand["checkpoint"], processed))
    cand["test"] = chall
    reason = None
    if champion is None:
        reason = "first promotion: no champion yet and the gates passed"
    else:
        champ_entry = reg.entry(champion) or {}
        try:
            scored = score_champion(reg.path(champion), params, processed)
        except Incomparable as e:
            decision["champion"] = {"version": champion, "name": champ_entry.get("name"), "error": str(e)}
            if pp.on_incomparable == "refuse":
                return refuse(f"the champion {champion} cannot be scored on the challenger's test rows: {e} "
                              "(promote.on_incomparable: refuse)")
            reason = f"the champion {champion} could not be compared ({e}); promote.on_incomparable: promote"
        else:
            champ = _metric_pair(scored)
            decision["champion"] = {"version": champion, "name": champ_entry.get("name"),
                                    "model": champ_entry.get("model"), "method": scored.method, "test": champ}
            drop = champ["auc"] - chall["auc"]
            rise = chall["logloss"] - champ["logloss"]
            decision["comparison"] = {"rows": chall["rows"], "auc_drop": drop, "logloss_rise": rise,
                                      "max_auc_drop": pp.max_auc_drop, "max_logloss_rise": pp.max_logloss_rise}
            numbers = (f"on the challenger's {chall['rows']:,} test rows: challenger {cand['name']} AUC "
                       f"{chall['auc']:.4f} LogLoss {chall['logloss']:.4f} vs champion {champion} "
                       f"({champ_entry.get('name')}) AUC {champ['auc']:.4f} LogLoss {champ['logloss']:.4f}")
            if drop > pp.max_auc_drop:
                return refuse(f"{numbers}: AUC drop {drop:.4f} > promote.max_auc_drop {pp.max_auc_drop}")
            if pp.max_logloss_rise is not None and rise > pp.max_logloss_rise:
                return refuse(f"{numbers}: LogLoss rise {rise:.4f} > promote.max_logloss_rise {pp.max_logloss_rise}")
            reason = f"{numbers}: AUC drop {drop:.4f} ≤ promote.max_auc_drop {pp.max_auc_drop}"
    version = reg.next_version()
    record = {"version": version, "name": cand["name"], "role": cand["role"], "model": cand["model"],
              "created": decision["time"], "challenger": {"test": chall, "evaluation": cand["evaluation"]},
              "champion_before": decision["champion"], "comparison": decision["comparison"],
              "flops_per_sample": cand["flops_per_sample"], "flops_fraction": cand["flops_fraction"],
              "weights_sha256": cand["weights_sha256"], "feature_map_hash": cand["feature_map_hash"],
              "checkpoint": cand["checkpoint"], "reason": reason, "gates": gates}
    _build_version(params, reg, version, record, processed)
    index = reg.index()
    index["versions"].append({**entry_from_metrics(version, record), "status": "promoted"})
    event = {"time": now_iso(), "action": "promoted", "version": version, "from": champion,
             "candidate": cand["name"], "reason": reason, "pending": True}
    index["history"].append(event)
    reg.write_index(index)
    pause_point("promote.before_production_switch")  # test hook: version published, production not switched
    reg.set_production(version)  # the commit point
    index = reg.index()
    index["history"][-1].pop("pending", None)
    reg.write_index(index)
    decision.update(decision="promoted", promoted=True, version=version, production=version, reason=reason)
    return _write_decision(params, decision)


def _record_history(reg: Registry, event: dict) -> None:
    index = reg.index()
    index["history"].append({"time": now_iso(), **event})
    reg.write_index(index)


def previous_version(reg: Registry) -> str:
    """The version the current champion replaced when it was promoted (ValueError when none)."""
    cur = reg.production()
    if cur is None:
        raise ValueError(f"{reg.root}: no production model; nothing to roll back")
    for event in reversed(reg.index()["history"]):
        if (event.get("action") == "promoted" and event.get("version") == cur
                and not event.get("pending") and not event.get("interrupted")):
            if event.get("from"):
                return event["from"]
            break
    raise ValueError(f"{cur} was the first promoted version: there is no earlier one to roll back to "
                     "(name a version: ctrflow promote --rollback vNNNN)")


def rollback(params, version: str | None = None) -> dict:
    """Point ``production`` at ``version`` (default :func:`previous_version`); record it. The
    version rolled away from gets status ``rolled_back`` (so a rerun does not promote it again)."""
    reg = Registry(params.promote.registry_dir)
    notes = reg.reconcile()
    cur = reg.production()
    target = version or previous_version(reg)
    reg.path(target)  # exists and complete
    if target == cur:
        raise ValueError(f"{target} is already production")
    index = reg.index()
    index["history"].append({"time": now_iso(), "action": "rollback", "version": target, "from": cur,
                             "reason": "manual rollback (ctrflow promote --rollback)", "pending": True})
    reg.write_index(index)
    reg.set_production(target)
    index = reg.index()
    index["history"][-1].pop("pending", None)
    for v in index["versions"]:
        if v["version"] == cur:
            v["status"] = "rolled_back"
        if v["version"] == target:
            v["status"] = "promoted"
    reg.write_index(index)
    return {"time": now_iso(), "decision": "rollback", "production": target, "previous_production": cur,
            "notes": notes}


def summary_line(decision: dict) -> str:
    """One line for logs / the flow / the CLI."""
    kind = decision.get("decision")
    if kind == "promoted":
        return f"promoted {decision['candidate']['name']} as {decision['version']} → production: {decision['reason']}"
    if kind == "rollback":
        return f"rolled back production {decision['previous_production']} → {decision['production']}"
    if kind == "disabled":
        return "promotion disabled (promote.enabled: false)"
    prod = decision.get("production")
    return f"kept the champion {prod or '(none)'}: {decision.get('reason')}"
