"""The on-disk model registry: versions, the ``production`` pointer, the index and its history.

Layout of ``promote.registry_dir`` (default ``models/registry/``)::

    production          one line: the champion's version name, e.g. ``v0003`` (absent: no champion)
    registry.json       {"format", "versions": [entry, ...], "history": [event, ...]}
    v0001/              a self-contained export (ctrflow export): model.onnx, model.safetensors,
                        model.json, feature_map.json, vocab/, export.json; plus metrics.json (what
                        promoted it), params.yaml (the run's params) and source.json (data input or
                        partitions with hashes, git commit, dvc.lock hashes)
    v0002/ …

Atomicity (no reader ever sees a half-written state):

- a version is built in a hidden staging directory (``.staging-v0004-<pid>``) and renamed to
  ``v0004`` only when complete; every ``v\\d{4}`` directory is therefore complete, and staging
  leftovers of a killed run are swept by the next writer (writers hold the run lock);
- ``production`` and ``registry.json`` are written to a temporary sibling, fsynced, and
  ``os.replace``d; the ``production`` replace is the commit point of a promotion;
- a promotion (or rollback) records its history event with ``pending: true`` before it switches
  ``production`` and clears the flag after; :meth:`Registry.reconcile` (run by every writer first)
  completes a pending event left by a killed run when ``production`` names its version and marks
  it ``interrupted`` otherwise, and indexes version directories the index lacks (a run killed between
  the rename and the index write) with status ``unpublished``.

Version statuses in the index: ``production`` is not stored (the pointer file is the truth);
``promoted`` (was or is the champion), ``rolled_back`` (production was rolled back away from it),
``unpublished`` (complete on disk, never production).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

PRODUCTION = "production"
INDEX = "registry.json"
INDEX_FORMAT = "ctrflow-registry"
INDEX_VERSION = 1
STAGING_PREFIX = ".staging-"
VERSION_RE = re.compile(r"v(\d{4,})")
VERSION_META = "metrics.json"


def now_iso() -> str:
    """UTC timestamp, seconds resolution."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a fsynced temporary sibling and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Registry:
    """A registry directory (module docstring). Reading never needs the run lock; writers
    (promotion, rollback) run under it, so one writer at a time."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ reading

    def version_dirs(self) -> list[str]:
        """Names of the complete version directories, in version order."""
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and VERSION_RE.fullmatch(p.name)]
        return sorted(names, key=lambda n: int(n[1:]))

    def path(self, version: str) -> Path:
        """The directory of ``version`` (FileNotFoundError when absent)."""
        if not VERSION_RE.fullmatch(version):
            raise ValueError(f"{version!r} is not a registry version name (v0001, v0002, …)")
        d = self.root / version
        if not d.is_dir():
            have = ", ".join(self.version_dirs()) or "none"
            raise FileNotFoundError(f"{d}: no such registry version (versions: {have})")
        return d

    def production(self) -> str | None:
        """The champion's version name, or None when nothing was ever promoted."""
        p = self.root / PRODUCTION
        if not p.is_file():
            return None
        name = p.read_text().strip()
        return name or None

    def production_dir(self) -> Path | None:
        name = self.production()
        return self.path(name) if name else None

    def resolve(self, ref: str) -> Path:
        """``production`` or a version name → its directory."""
        if ref == PRODUCTION:
            d = self.production_dir()
            if d is None:
                raise FileNotFoundError(f"{self.root / PRODUCTION}: no production model yet (nothing "
                                        "promoted; run the pipeline or `ctrflow promote`)")
            return d
        return self.path(ref)

    def index(self) -> dict:
        """registry.json (an empty index when absent)."""
        p = self.root / INDEX
        if not p.is_file():
            return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "versions": [], "history": []}
        return json.loads(p.read_text())

    def entry(self, version: str) -> dict | None:
        return next((v for v in self.index()["versions"] if v["version"] == version), None)

    def version_metrics(self, version: str) -> dict:
        p = self.root / version / VERSION_META
        return json.loads(p.read_text()) if p.is_file() else {}

    # ------------------------------------------------------------------ writing

    def write_index(self, index: dict) -> None:
        atomic_write_text(self.root / INDEX, json.dumps(index, indent=2, sort_keys=True) + "\n")

    def set_production(self, version: str) -> None:
        """Point ``production`` at ``version`` (complete directory required); atomic."""
        self.path(version)
        atomic_write_text(self.root / PRODUCTION, version + "\n")

    def next_version(self) -> str:
        numbers = [int(n[1:]) for n in self.version_dirs()]
        numbers += [int(v["version"][1:]) for v in self.index()["versions"]]
        return f"v{max(numbers, default=0) + 1:04d}"

    def staging_dir(self, version: str) -> Path:
        return self.root / f"{STAGING_PREFIX}{version}-{os.getpid()}"

    def publish(self, staging: Path, version: str) -> Path:
        """Rename a complete staging directory to ``version`` (atomic; the name must be free)."""
        final = self.root / version
        if final.exists():
            raise FileExistsError(f"{final}: version already exists")
        os.rename(staging, final)
        _fsync_dir(self.root)
        return final

    def sweep(self) -> list[str]:
        """Remove staging leftovers of killed runs (callers hold the run lock); return their names."""
        if not self.root.is_dir():
            return []
        gone = []
        for p in self.root.iterdir():
            if p.name.startswith((STAGING_PREFIX, "." + STAGING_PREFIX)) or (
                    p.name.startswith(".") and ".tmp-" in p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                gone.append(p.name)
        return gone

    def reconcile(self) -> list[str]:
        """Repair what a killed writer left (module docstring); return notes on what was done."""
        self.root.mkdir(parents=True, exist_ok=True)
        notes = [f"removed the staging leftover {n} of a killed run" for n in self.sweep()]
        index = self.index()
        changed = False
        prod = self.production()
        for event in index["history"]:
            if not event.pop("pending", False):
                continue
            changed = True
            if prod == event["version"]:
                event["note"] = "completed by reconcile: production had been switched when the run died"
                if event.get("action") == "rollback" and event.get("from"):
                    self._set_status(index, event["from"], "rolled_back")
                self._set_status(index, event["version"], "promoted")
                notes.append(f"{event['version']}: the {event.get('action')} had completed (production names it)")
            else:
                event["interrupted"] = True
                event["note"] = f"the run died before production was switched; production stayed {prod}"
                if event.get("action") == "promoted":
                    self._set_status(index, event["version"], "unpublished")
                notes.append(f"{event['version']}: the {event.get('action')} was interrupted; production stays {prod}")
        known = {v["version"] for v in index["versions"]}
        for name in self.version_dirs():
            if name not in known:
                m = self.version_metrics(name)
                index["versions"].append({**_entry_from_metrics(name, m), "status": "unpublished"})
                notes.append(f"{name}: indexed a version directory the index lacked (never production)")
                changed = True
        if changed:
            index["versions"].sort(key=lambda v: int(v["version"][1:]))
            self.write_index(index)
        return notes

    @staticmethod
    def _set_status(index: dict, version: str, status: str) -> None:
        for v in index["versions"]:
            if v["version"] == version:
                v["status"] = status


def _entry_from_metrics(version: str, metrics: dict) -> dict:
    """The index entry of a version from its metrics.json."""
    challenger = metrics.get("challenger") or {}
    return {
        "version": version,
        "name": metrics.get("name"),
        "model": metrics.get("model"),
        "created": metrics.get("created"),
        "test": challenger.get("test") or {},
        "flops_per_sample": metrics.get("flops_per_sample"),
        "flops_fraction": metrics.get("flops_fraction"),
        "weights_sha256": metrics.get("weights_sha256"),
        "feature_map_hash": metrics.get("feature_map_hash"),
    }


entry_from_metrics = _entry_from_metrics
