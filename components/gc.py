"""Retention: what a run leaves on disk that the next runs do not need, and its removal (``ctrflow gc``).

What grows with every run whose teacher changes (new data, a new seed, new settings), measured on the
small test pipeline (README "Disk use and retention"):

- **Optuna trial checkpoints**: ``<tune.trials_dir>/<study>/<trial>/`` — a study name carries a hash
  of the teacher, so every new teacher starts new studies (one per tuned student, plus the teacher's
  own with ``train.tune.n_trials`` > 0), each with ``tune.n_trials`` trial directories.
- **Teacher-logit caches**: ``<distill.logit_cache_dir>/<key>/`` — one per (teacher weights, data).
- **DVC cache entries**: ``.dvc/cache/files/md5/…`` — every ``dvc commit`` of changed outputs adds
  their new files, and a run-cache entry per stage in ``.dvc/cache/runs/``; nothing ever removes the
  old ones.
- **Prefect result files** in ``$PREFECT_HOME/storage`` (only when PREFECT_HOME is this repo's own).
- **Validation-cache entries** (partitioned input): ``<validate.cache_dir>/<sha256>.<key>/`` — one per
  partition that passed the gate, so one more every night.
- **Leftovers of killed runs**: hidden temporaries ``.<name>.tmp[-pid]``, ``.<name>.old[-pid]``,
  ``.<name>.partial-<pid>`` beside the outputs (and ``<name>.json.tmp`` / ``.csv.tmp``).

The policy (params.yaml ``retention:``): the trial directories, logit caches and Prefect results of
the last ``keep_runs`` runs are kept. A run's references are recorded in a small ledger
(``retention.ledger``, one JSON line per run; a line equal to the previous one is not repeated), read
from what the run wrote: each tuned student's ``study/best.json`` (study name), the teacher's
``train.metrics`` ``tuning.trials_dir`` and the logit-cache key of the current teacher and feature
map. A study whose trial directories are removed is also deleted from the Optuna storage, so a
later run with the same study name starts afresh instead of resuming trials without checkpoints.
A validation-cache entry is kept while it can still be used: its sha256 is the content of a partition
of the current window (``data.window`` over ``data.input``), or the file it validated (named in its
``validation.json``) is still a partition of ``data.input`` outside the window (it may come back into
the window when ``data.window`` changes). An entry of a partition that left ``data.input`` or was
rewritten inside the window goes. Nothing is pruned there when ``data.input`` is one file or lists no
partitions (an unmounted input directory must not empty the cache). The window's partitions are
hashed for this, as the "nothing new" check hashes them every run; the others are not read.
The readers' store of passed byte passes and structure scans (``<validate.cache_dir>/structure/``,
components/data/rawfile.py) loses the entries whose file is gone or has changed since.
The DVC cache is pruned by DVC itself (``dvc gc``: keep the workspace, i.e. the current dvc.lock,
the last ``dvc_keep_commits`` commits of HEAD and, with ``dvc_keep_tags``, every tag); no cache file
is deleted by this module's own reckoning. Only the DVC run cache (``.dvc/cache/runs/``, a small
entry per recorded stage run, which `dvc gc` leaves) is pruned here: an entry whose outputs `dvc gc`
removed from the cache can restore nothing and goes.

Never removed, whatever the policy says:

- anything under ``models/registry/`` (the model registry: ``models/registry/production`` names the
  champion; registered versions live there), nor anything a symlink in it points to;
- any file the current ``dvc.lock`` references (a candidate inside a DVC-tracked output directory is
  kept when the directory's manifest in the DVC cache lists a file in it; when the manifest cannot be
  read the whole output counts as referenced);
- the references of the current state of the workspace (the newest ledger line);
- a temporary whose owner (the pid in its name) is still alive.

Run it under the run lock (``ctrflow gc`` and the flow do), so no stage is writing meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from components.atomic_dir import is_resumable
from components.config import Params
from components.data.rawfile import STRUCTURE_DIR, stale_store_entries

_TEMP_RE = re.compile(r"^\..+\.(tmp|old|partial)(-(?P<pid>\d+))?$")
_PLAIN_TMP_RE = re.compile(r"^[^.].*\.(json|csv|md|html)\.tmp$")
_SKIP_DIRS = {".git", ".dvc", ".venv", "__pycache__"}
REGISTRY_DIR = Path("models/registry")


@dataclass(frozen=True)
class Removal:
    """One path gc removes (or, dry, would remove): its size and why."""

    path: str
    bytes: int
    reason: str


@dataclass
class GcReport:
    """What a gc pass removed (or would remove), what it kept on purpose, and DVC's part."""

    removed: list[Removal] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)       # protected candidates, with why
    studies_deleted: list[str] = field(default_factory=list)
    dvc: dict = field(default_factory=dict)              # files, bytes, args, or a note
    dry_run: bool = False

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removed) + int(self.dvc.get("bytes", 0))


def tree_bytes(path: Path) -> int:
    """Apparent size of a file or a directory tree (symlinks not followed)."""
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own temporaries are gone by the time gc runs (the stages clean up)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- what the current workspace references -----------------------------------------------------

def current_refs(params: Params, root: Path) -> dict:
    """The trial directories and logit cache the current outputs come from (relative paths)."""
    trials: set[str] = set()
    tune = params.tune
    out = root / params.distill.out_dir
    for best in sorted(out.glob("*/study/best.json")):
        with contextlib.suppress(OSError, ValueError):
            name = json.loads(best.read_text()).get("study_name")
            if name:
                trials.add(str(Path(tune.trials_dir) / name))
    with contextlib.suppress(OSError, ValueError, AttributeError):
        tuning = json.loads((root / params.train.metrics).read_text()).get("tuning") or {}
        if tuning.get("trials_dir"):
            trials.add(str(Path(tuning["trials_dir"])))
    caches: set[str] = set()
    with contextlib.suppress(Exception):  # no teacher / no processed data yet: nothing current
        from components.data.feature_map import FeatureMap
        from components.distill.logit_cache import teacher_cache_key

        fmap = FeatureMap.load(root / params.preprocess.out_dir / "feature_map.json")
        key = teacher_cache_key(root / params.train.out_dir, fmap)
        caches.add(str(Path(params.distill.logit_cache_dir) / key[:32]))
    return {"trials": sorted(trials), "logit_caches": sorted(caches)}


def _read_ledger(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def record_run(params: Params, root: Path, refs: dict) -> list[dict]:
    """Append ``refs`` to the ledger unless equal to its last line; keep its last 100 lines; return it."""
    path = root / params.retention.ledger
    entries = _read_ledger(path)
    same = entries and {k: entries[-1].get(k) for k in refs} == refs
    if not same:
        entries.append({"time": time.time(), **refs})
        entries = entries[-100:]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
        tmp.replace(path)
    return entries


# --- what must never go -------------------------------------------------------------------------

def _yaml_load(text: str):
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~10x faster


def _dvc_lock_outs(root: Path) -> list[tuple[Path, str | None]]:
    """(output path, md5) of every output in dvc.lock."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.exists():
        return []
    try:
        data = _yaml_load(lock.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return [(root, None)]  # unreadable lock: protect everything
    outs = []
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            outs.append((root / out["path"], out.get("md5")))
    return outs


def _cache_file(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _manifest(root: Path, md5: str) -> dict[str, str] | None:
    """relpath -> md5 of a directory output's manifest in the DVC cache (None when unreadable)."""
    try:
        return {e["relpath"]: e["md5"] for e in json.loads(_cache_file(root, md5).read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Protection:
    """Answers "may this path go?": registry, current dvc.lock references."""

    def __init__(self, root: Path, before_dvc_commit: bool = False):
        self.root = root.resolve()
        self.before_dvc_commit = before_dvc_commit
        registry = self.root / REGISTRY_DIR
        self.registry = [registry]
        if registry.is_dir():
            for dirpath, dirs, files in os.walk(registry):
                for name in dirs + files:
                    p = Path(dirpath) / name
                    if p.is_symlink():
                        self.registry.append(p.resolve())
        self.outs = _dvc_lock_outs(self.root)

    @staticmethod
    def _overlaps(a: Path, b: Path) -> bool:
        return a == b or a.is_relative_to(b) or b.is_relative_to(a)

    def why(self, path: Path) -> str | None:
        p = path.resolve() if not path.is_symlink() else path.parent.resolve() / path.name
        for r in self.registry:
            if self._overlaps(p, r):
                return f"model registry ({r.relative_to(self.root) if r.is_relative_to(self.root) else r})"
        for out, md5 in self.outs:
            out = out.resolve()
            if p == out or out.is_relative_to(p):
                return f"dvc.lock output {out.relative_to(self.root)}"
            if p.is_relative_to(out):
                if not (md5 or "").endswith(".dir"):
                    return f"dvc.lock output {out.relative_to(self.root)}"
                listed = _manifest(self.root, md5)
                rel = p.relative_to(out).as_posix()
                if listed is None:
                    return f"dvc.lock output {out.relative_to(self.root)} (manifest not in the DVC cache)"
                mine = {f: h for f, h in listed.items() if f == rel or f.startswith(rel + "/")}
                # Just before `dvc commit` re-records this output, a file whose content is in the DVC
                # cache may leave the workspace: the committed version stays restorable (dvc checkout).
                if mine and not (self.before_dvc_commit
                                 and all(_cache_file(self.root, h).exists() for h in mine.values())):
                    return f"referenced by dvc.lock ({out.relative_to(self.root)})"
        return None


# --- candidates -----------------------------------------------------------------------------------

def _kept_refs(entries: list[dict], keep_runs: int, kind: str) -> set[str]:
    kept: set[str] = set()
    for e in entries[-keep_runs:]:
        kept.update(e.get(kind) or [])
    return kept


def _children(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def _stale_temps(roots: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    seen: set[Path] = set()
    for top in roots:
        if not top.is_dir() or top.resolve() in seen:
            continue
        seen.add(top.resolve())
        for dirpath, dirs, files in os.walk(top):
            for name in list(dirs) + files:
                m = _TEMP_RE.match(name)
                if m and is_resumable(Path(dirpath) / name):
                    continue  # a staged training a killed run continues from (atomic_dir.is_resumable)
                if m or (name in files and _PLAIN_TMP_RE.match(name)):
                    pid = m.group("pid") if m else None
                    if pid is None or not _pid_alive(int(pid)):
                        found.append(Path(dirpath) / name)
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not _TEMP_RE.match(d)]
    return sorted(set(found))


def _output_roots(params: Params, root: Path) -> list[Path]:
    paths = [params.preprocess.out_dir, params.validation.out_dir, params.train.out_dir,
             params.train.metrics, params.distill.out_dir, params.distill.metrics,
             params.distill.logit_cache_dir, params.tune.trials_dir, params.evaluate.out,
             params.evaluate.profile_out, params.evaluate.report_dir, params.evaluate.plots_dir,
             params.generate.out]
    roots = []
    for p in paths:
        parent = (root / p).parent
        # never walk the repo root or something outside it as a whole: only the outputs' own folders
        if parent.resolve() != root.resolve() and parent.resolve().is_relative_to(root.resolve()):
            roots.append(parent)
        elif (root / p).is_dir():
            roots.append(root / p)
    return roots


def _prefect_storage(root: Path) -> Path | None:
    home = os.environ.get("PREFECT_HOME")
    if not home:
        return None
    home_path = Path(home).expanduser().resolve()
    if not home_path.is_relative_to(root.resolve()):
        return None  # a shared PREFECT_HOME is not this repository's to prune
    return home_path / "storage"


def _delete_studies(params: Params, names: Iterable[str], log) -> list[str]:
    names = list(names)
    if not names:
        return []
    import optuna

    from components.tune.storage import make_storage, masked_url

    storage = make_storage(params.tune.storage, heartbeat_interval=params.tune.heartbeat_interval,
                           grace_period=params.tune.grace_period)
    existing = {s.study_name for s in optuna.study.get_all_study_summaries(storage)}
    deleted = []
    for name in names:
        if name in existing:
            optuna.delete_study(study_name=name, storage=storage)
            deleted.append(name)
    if deleted:
        log(f"deleted {len(deleted)} Optuna stud{'y' if len(deleted) == 1 else 'ies'} from "
            f"{masked_url(params.tune.storage)}: {', '.join(deleted)}")
    return deleted


# --- DVC cache --------------------------------------------------------------------------------------

def _git_has_head(root: Path) -> bool:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root,
                              capture_output=True).returncode == 0
    except OSError:
        return False


def dvc_cache_gc(params: Params, root: Path, dry_run: bool) -> dict:
    """``dvc gc`` through DVC's API: keep the workspace (dvc.lock), the last ``dvc_keep_commits``
    commits of HEAD and (``dvc_keep_tags``) every tag. Returns files, bytes, the equivalent command."""
    r = params.retention
    if not (root / ".dvc").is_dir():
        return {"note": "not a DVC repository", "files": 0, "bytes": 0}
    kwargs: dict = {"workspace": True, "force": True, "all_tags": r.dvc_keep_tags,
                    "all_branches": r.dvc_keep_branches}
    args = ["dvc", "gc", "--workspace", "--force"]
    if r.dvc_keep_commits > 0 and _git_has_head(root):
        kwargs.update(rev="HEAD", num=r.dvc_keep_commits)
        args += ["--rev", "HEAD", "--num", str(r.dvc_keep_commits)]
    if r.dvc_keep_tags:
        args.append("--all-tags")
    if r.dvc_keep_branches:
        args.append("--all-branches")

    from dvc.repo import Repo

    class _Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.paths: list[str] = []

        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("Removing "):
                self.paths.append(msg[len("Removing "):])

    handler = _Collect()
    dvc_log = logging.getLogger("dvc_data.hashfile.gc")
    old_level, old_prop = dvc_log.level, dvc_log.propagate
    quiet = logging.getLogger("dvc.repo.gc")  # its "Removed N objects" would also show for the dry pass
    quiet_level = quiet.level
    quiet.setLevel(logging.WARNING)
    dvc_log.addHandler(handler)
    dvc_log.setLevel(logging.INFO)
    dvc_log.propagate = False
    try:
        with Repo(str(root)) as repo:
            if dry_run:  # DVC logs each path it would remove
                repo.gc(**kwargs, dry=True)
                paths = [Path(p) for p in handler.paths]
                size = sum(tree_bytes(p) for p in paths)
            else:
                before = tree_bytes(root / ".dvc" / "cache")
                files_before = sum(len(f) for _d, _s, f in os.walk(root / ".dvc" / "cache"))
                repo.gc(**kwargs)
                size = before - tree_bytes(root / ".dvc" / "cache")
                paths = [None] * (files_before - sum(len(f) for _d, _s, f in os.walk(root / ".dvc" / "cache")))
    finally:
        dvc_log.removeHandler(handler)
        dvc_log.setLevel(old_level)
        dvc_log.propagate = old_prop
        quiet.setLevel(quiet_level)
    gone = {Path(p).resolve() for p in paths if p is not None} if dry_run else set()
    runs = _dangling_run_cache(root, gone, dry_run)
    return {"files": len(paths) + len(runs), "bytes": size + sum(b for _p, b in runs),
            "command": " ".join(args), "run_cache": len(runs),
            "paths": [str(p) for p in paths if p is not None] + [str(p) for p, _b in runs]}


def _dangling_run_cache(root: Path, gone: set[Path], dry_run: bool) -> list[tuple[Path, int]]:
    """Remove (dry: list) DVC run-cache entries (``.dvc/cache/runs/``, one per stage run that `dvc
    commit` / `dvc repro` recorded) whose outputs are no longer in the DVC cache: `dvc gc` leaves them,
    and they can restore nothing. ``gone``: cache files a dry pass would remove."""
    import yaml

    runs = root / ".dvc" / "cache" / "runs"
    found: list[tuple[Path, int]] = []
    if not runs.is_dir():
        return found
    for entry in sorted(p for p in runs.glob("*/*/*") if p.is_file()):
        try:
            outs = (_yaml_load(entry.read_text()) or {}).get("outs") or []
        except (OSError, yaml.YAMLError):
            continue
        hashes = [o.get("md5") for o in outs if isinstance(o, dict)]
        if not hashes or None in hashes:
            continue
        objects = [_cache_file(root, h) for h in hashes]
        if any(not f.exists() or f.resolve() in gone for f in objects):
            found.append((entry, entry.stat().st_size))
    if not dry_run:
        for entry, _size in found:
            entry.unlink(missing_ok=True)
            for d in (entry.parent, entry.parent.parent):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty
    return found


# --- the pass -------------------------------------------------------------------------------------

def stale_validation_entries(params: Params, root: Path) -> list[Path]:
    """The validation-cache entries no kept window can use (module docstring); [] when ``data.input``
    is one file, lists no partitions or cannot be read."""
    from components.data.partitions import discover_partitions, is_partitioned, select_window

    cache = root / params.validation.cache_dir
    source = Path(params.data.input)
    source = source if source.is_absolute() else root / source  # a glob stays a glob
    if not cache.is_dir() or not is_partitioned(source, params.data.format):
        return []
    try:
        parts = discover_partitions(source)
        window = select_window(parts, params.data.window)
        in_window = {p.sha256 for p in window}
    except (OSError, ValueError):
        return []
    window_names = {p.name for p in window}
    outside = {p.name for p in parts} - window_names
    stale = []
    for entry in _children(cache):
        if not entry.is_dir() or entry.name == STRUCTURE_DIR:  # the scans' store: stale_store_entries
            continue
        if entry.name.split(".", 1)[0] in in_window:
            continue
        try:
            files = json.loads((entry / "validation.json").read_text()).get("files") or []
        except (OSError, ValueError):
            files = []
        if files and Path(files[0]).name in outside:
            continue
        stale.append(entry)
    return stale


def collect_garbage(params: Params, root: str | Path = ".", *, dry_run: bool = False,
                    before_dvc_commit: bool = False,
                    log: Callable[[str], object] = print) -> GcReport:
    """Apply params.yaml ``retention`` to the repository at ``root`` (see the module doc).

    ``before_dvc_commit``: the caller runs ``dvc commit`` of the outputs right after (the end of a
    flow run). Then a file inside a DVC-tracked output that the current dvc.lock lists may go when
    its content is in the DVC cache (e.g. an old teacher-logit cache: the distill stage's output
    directory). Otherwise every file dvc.lock lists stays, so `dvc status` stays clean."""
    root = Path(root)
    r = params.retention
    report = GcReport(dry_run=dry_run)
    protect = _Protection(root, before_dvc_commit)
    refs = current_refs(params, root)
    entries = _read_ledger(root / r.ledger) if dry_run else record_run(params, root, refs)
    if dry_run and (not entries or {k: entries[-1].get(k) for k in refs} != refs):
        entries = [*entries, {"time": time.time(), **refs}]

    candidates: list[tuple[Path, str]] = []
    kept_trials = _kept_refs(entries, r.keep_runs, "trials")
    for study in _children(root / params.tune.trials_dir):
        if str(study.relative_to(root)) not in kept_trials:
            candidates.append((study, f"trial checkpoints of a study older than the last {r.keep_runs} run(s)"))
    kept_caches = _kept_refs(entries, r.keep_runs, "logit_caches")
    for cache in _children(root / params.distill.logit_cache_dir):
        if str(cache.relative_to(root)) not in kept_caches:
            candidates.append((cache, f"teacher-logit cache older than the last {r.keep_runs} run(s)"))
    for entry in stale_validation_entries(params, root):
        candidates.append((entry, "validation-cache entry of a partition no longer in data.input's window "
                                  "nor elsewhere in data.input"))
    for entry in stale_store_entries(root / params.validation.cache_dir):
        candidates.append((entry, "stored byte pass / structure scan of a file that is gone or has changed"))
    if r.stale_temp:
        for tmp in _stale_temps(_output_roots(params, root)):
            candidates.append((tmp, "left behind by an interrupted run"))
    storage = _prefect_storage(root) if r.prefect_results else None
    if storage is not None and storage.is_dir():
        kept_entries = entries[-r.keep_runs:]
        cutoff = min((e.get("time", 0) for e in kept_entries), default=0) - 24 * 3600
        for f in _children(storage):
            with contextlib.suppress(OSError):
                if f.stat().st_mtime < cutoff:
                    candidates.append((f, "Prefect result file older than the kept runs (minus a day)"))

    seen: set[Path] = set()
    studies = []
    for path, reason in candidates:
        if path in seen or any(path.is_relative_to(s) for s in seen):
            continue
        why = protect.why(path)
        if why:
            report.kept.append(f"{path.relative_to(root)}: {why}")
            continue
        seen.add(path)
        report.removed.append(Removal(str(path.relative_to(root)), tree_bytes(path), reason))
        if path.parent.resolve() == (root / params.tune.trials_dir).resolve():
            studies.append(path.name)
    if not dry_run:
        for item in report.removed:
            p = root / item.path
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        if studies:
            report.studies_deleted = _delete_studies(params, studies, log)
    else:
        report.studies_deleted = studies
    if r.dvc_cache:
        report.dvc = dvc_cache_gc(params, root, dry_run)
    return report


def format_report(report: GcReport) -> str:
    """Human summary: one line per removed path (bytes, why), DVC's part, the total."""
    verb = "would remove" if report.dry_run else "removed"
    lines = [f"{verb} {r.path} ({_human(r.bytes)}): {r.reason}" for r in report.removed]
    if report.studies_deleted:
        lines.append(f"{'would delete' if report.dry_run else 'deleted'} Optuna stud"
                     f"{'y' if len(report.studies_deleted) == 1 else 'ies'}: {', '.join(report.studies_deleted)}")
    lines += [f"kept {k}" for k in report.kept]
    d = report.dvc
    if d.get("command"):
        runs = f", {d['run_cache']} of them run-cache entries" if d.get("run_cache") else ""
        lines.append(f"DVC cache: {verb} {d['files']} unreferenced file(s){runs}, {_human(d['bytes'])} "
                     f"({d['command']})")
    elif d.get("note"):
        lines.append(f"DVC cache: skipped ({d['note']})")
    lines.append(f"gc: {'would free' if report.dry_run else 'freed'} {_human(report.bytes)} "
                 f"({report.bytes:,} bytes)")
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
