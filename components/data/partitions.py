"""Partitioned raw logs: discovery, natural order, the training window, content hashes, "nothing new".

``data.input`` may name one file (exactly the behaviour of a single log: nothing here applies), a
**directory** of partitions or a **glob** (``*``, ``?`` or ``[`` in the path). A partition is one
file in any raw format the readers accept (plain or gzip/bz2/xz compressed), e.g. Criteo
Terabyte-style ``day_0 … day_23``, hourly Avazu files ``2014102100.csv.gz`` or dated files
``2026-12-05.txt``. A MovieLens input is always a directory *of one dataset*, never partitions.

Discovery (:func:`discover_partitions`): the regular files of the directory (not recursive) or the
glob's matches, without hidden files (``.x``), markers (``_SUCCESS``), DVC pointer files
(``*.dvc``) and the generator's companions (``*.proba.parquet``, ``*.oracle.json``).

Order: when every name carries a date — ``YYYY-MM-DD`` (optionally followed by ``[T_ -]HH``) or
``YYYYMMDD[HH]`` (a valid calendar date, not part of a longer number) — by that date and hour;
else in natural order (digit runs compared as numbers: ``day_2 < day_10``), which is the
lexicographic order for names without digits.

Window (``data.window``, :func:`select_window`): ``null`` = every partition; ``{last: N}`` = the
newest N; ``{from: DATE, to: DATE}`` = the dated partitions whose date lies in ``[from, to]``
(either end may be omitted; needs dated names).

Content hash (:func:`file_sha256`): sha256 of the file's bytes as stored (compressed files are
hashed compressed), memoised per process by (path, size, mtime). :func:`hash_partitions` (every
stage that reads partitions, through ``components.stages.input_partitions``) fills that memo for a
window at once: from a store of earlier hashes keyed by path, size, mtime and inode
(``<validate.cache_dir>/sha256-by-stat.json``, DVC's own rule for its state database), the rest
computed two files at a time (hashlib and file reads release the GIL). At Kaggle size (7 × 1.6 GB)
each stage hashed the window serially (≈ 10 s, and validate and preprocess each did); now the
files are read once per change of their bytes.

"Nothing new" (:func:`check_new_data`): compares the window's partitions (names + hashes) and a
fingerprint of the parameters with the state that the last *successful* run recorded
(:func:`record_successful_run`, called by the flow after its last stage, writes
``run.state_file``). Only a complete run writes the state, so a run that failed half-way (say in
training, after preprocessing had already written ``feature_map.json``) is retried the next night
instead of being mistaken for done; that is why the state file, not ``feature_map.json``, decides.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

_HASH_CHUNK = 1 << 20
_GLOB_CHARS = re.compile(r"[*?\[]")
_COMPANIONS = (".proba.parquet", ".oracle.json", ".dvc")
_ISO = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?:[T_ -](\d{2})(?!\d))?")
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(\d{2})?(?!\d)")
_DIGITS = re.compile(r"(\d+)")
STATE_VERSION = 1


@dataclass(frozen=True)
class Partition:
    """One partition file: its name (file name), path, date (if its name has one) and position."""

    name: str
    path: Path
    date: dt.datetime | None = None

    @property
    def sha256(self) -> str:
        return file_sha256(self.path)

    def record(self, **extra) -> dict:
        """JSON-ready ``{"name", "path", "sha256", "date", **extra}``."""
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256,
                "date": self.date.isoformat() if self.date else None, **extra}


# ---------------------------------------------------------------------------------------------
# discovery and order


def is_partitioned(input_path: str | Path, fmt: str) -> bool:
    """True when ``data.input`` names partitions: a glob, or a directory (except for MovieLens,
    whose input directory is one dataset)."""
    s = str(input_path)
    if _GLOB_CHARS.search(s):
        return True
    return fmt != "movielens" and Path(s).is_dir()


def partition_date(name: str) -> dt.datetime | None:
    """The date (and hour) a partition's file name carries, or None (module docstring)."""
    for pattern in (_ISO, _COMPACT):
        for m in pattern.finditer(name):
            y, mo, d, h = m.groups()
            try:
                return dt.datetime(int(y), int(mo), int(d), int(h) if h else 0)
            except ValueError:
                continue
    return None


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers (``day_2`` before ``day_10``)."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part) for part in _DIGITS.split(name) if part)


def _is_log_file(p: Path) -> bool:
    name = p.name
    return (p.is_file() and not name.startswith((".", "_"))
            and not any(name.endswith(s) for s in _COMPANIONS))


def order_partitions(paths: list[Path]) -> list[Partition]:
    """Partitions of ``paths`` in order: by date when every name has one, else natural order."""
    parts = [Partition(p.name, p, partition_date(p.name)) for p in paths]
    names = [p.name for p in parts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"data.input: partitions must have distinct file names; repeated: {dup}")
    if parts and all(p.date is not None for p in parts):
        return sorted(parts, key=lambda p: (p.date, natural_key(p.name)))
    return sorted(parts, key=lambda p: natural_key(p.name))


def discover_partitions(input_path: str | Path) -> list[Partition]:
    """Every partition of a directory or glob, in order; ValueError when there is none."""
    s = str(input_path)
    if _GLOB_CHARS.search(s):
        paths = [Path(p) for p in glob.glob(s)]
    elif Path(s).is_dir():
        paths = list(Path(s).iterdir())
    else:
        raise ValueError(f"data.input: {s} is neither a directory nor a glob of partitions")
    found = order_partitions([p for p in paths if _is_log_file(p)])
    if not found:
        raise ValueError(f"data.input: no partition files in {s}")
    return found


# ---------------------------------------------------------------------------------------------
# window


def _as_datetime(value, end: bool) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        d = value
    else:
        text = str(value)
        found = partition_date(text)
        if found is None:
            raise ValueError(f"data.window: {text!r} is not a date (YYYY-MM-DD or YYYYMMDD[HH])")
        if len(re.sub(r"\D", "", text)) > 8:  # an hour was given: exact
            return found
        d = found.date()
    return dt.datetime.combine(d, dt.time(23, 59, 59) if end else dt.time(0))


def select_window(parts: list[Partition], window) -> list[Partition]:
    """The partitions a run uses: ``window`` is None (all), or a WindowParams-like object / dict with
    ``last`` or ``from``/``to`` (inclusive; a bare date covers the whole day)."""
    if window is None:
        return list(parts)
    w = window if isinstance(window, dict) else window.model_dump(by_alias=True)
    if w.get("last") is not None:
        return list(parts[-int(w["last"]):])
    start, stop = w.get("from"), w.get("to")
    undated = [p.name for p in parts if p.date is None]
    if undated:
        raise ValueError(f"data.window from/to needs dated partition names; {undated[0]} has no date "
                         f"(use data.window: {{last: N}})")
    lo = _as_datetime(start, end=False) if start is not None else None
    hi = _as_datetime(stop, end=True) if stop is not None else None
    chosen = [p for p in parts if (lo is None or p.date >= lo) and (hi is None or p.date <= hi)]
    if not chosen:
        raise ValueError(f"data.window {{from: {start}, to: {stop}}} selects none of the partitions "
                         f"{parts[0].name} … {parts[-1].name}")
    return chosen


def window_record(window) -> dict | None:
    """JSON-ready form of ``data.window`` (None = all partitions)."""
    if window is None:
        return None
    w = window if isinstance(window, dict) else window.model_dump(by_alias=True, mode="json")
    return {k: (str(v) if isinstance(v, dt.date) else v) for k, v in w.items() if v is not None}


def window_partitions(params) -> list[Partition] | None:
    """The partitions of ``params.data.input`` inside ``params.data.window``; None for one file."""
    if not is_partitioned(params.data.input, params.data.format):
        return None
    return select_window(discover_partitions(params.data.input), params.data.window)


# ---------------------------------------------------------------------------------------------
# hashes


_SHA_MEMO: dict[tuple[str, int, int], str] = {}
HASH_STORE_FILE = "sha256-by-stat.json"


def _stat_key(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


def _unchanged(path: Path, entry: list) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return [st.st_size, st.st_mtime_ns, st.st_ino] == entry[:3]


def hash_partitions(paths: list[str | Path], store_dir: str | Path | None = None, threads: int = 2) -> None:
    """Fill :func:`file_sha256`'s memo for ``paths``: from ``store_dir``'s store when a file's path,
    size, mtime and inode match an entry, else hashed (``threads`` files at a time); new hashes are
    added to the store (written atomically; an unreadable store is ignored and rewritten) and the
    entries of files that are gone or were rewritten are dropped."""
    from concurrent.futures import ThreadPoolExecutor

    store_path = Path(store_dir) / HASH_STORE_FILE if store_dir is not None else None
    stored: dict = {}
    if store_path is not None and store_path.is_file():
        try:
            stored = json.loads(store_path.read_text())
        except (OSError, ValueError):
            stored = {}
    todo: list[Path] = []
    for path in paths:
        p = Path(path)
        key = _stat_key(p)
        if key in _SHA_MEMO:
            continue
        entry = stored.get(key[0])
        if entry and _unchanged(p, entry):
            _SHA_MEMO[key] = entry[3]
        else:
            todo.append(p)
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(file_sha256, todo))
    if store_path is None:
        return
    for p in todo:
        key = _stat_key(p)
        stored[key[0]] = [key[1], key[2], p.stat().st_ino, _SHA_MEMO[key]]
    from components.atomic_dir import write_json_atomic

    write_json_atomic(store_path, {path: e for path, e in stored.items() if _unchanged(Path(path), e)})


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes (streamed), memoised per process by (path, size, mtime)."""
    p = Path(path)
    key = _stat_key(p)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


# ---------------------------------------------------------------------------------------------
# "nothing new"


def params_fingerprint(params) -> str:
    """sha256 of every parameter except the ``run`` section and ``preprocess.parallel`` (how to run,
    not what): a run with other settings on the same partitions is "something new"."""
    d = params.model_dump(mode="json", by_alias=True, exclude={"run": True, "preprocess": {"parallel"}})
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class NewDataCheck:
    """Whether a run has something new to do, and why (one line for the flow's log)."""

    new: bool
    reason: str
    partitions: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    last_success: str | None = None  # when the last successful run finished (ISO), if known

    def as_dict(self) -> dict:
        return asdict(self)


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None


def check_new_data(params) -> NewDataCheck:
    """Is there something new since the last successful run (``run.state_file``)?

    New: a single-file input (the check applies to partitioned inputs only, so the default
    pipeline behaves as before), no state of a successful run, other parameters, or a window whose
    partitions (names and sha256) differ from the recorded ones (added, dropped or rewritten).
    Not new: the same partitions with the same bytes and parameters. Raises ValueError when the
    input has no partitions or the window selects none.
    """
    if params.uses_synthetic and params.generate.partitions > 0 and not Path(params.data.input).exists():
        return NewDataCheck(True, f"the synthetic partitions {params.data.input} are not generated yet")
    parts = window_partitions(params)
    if parts is None:
        return NewDataCheck(True, "single-file input: the new-data check applies to partitioned inputs")
    names = tuple(p.name for p in parts)
    state = _read_state(Path(params.run.state_file))
    if state is None:
        return NewDataCheck(True, f"no successful run recorded in {params.run.state_file}", names, added=names)
    when = state.get("finished_at")
    if state.get("params_fingerprint") != params_fingerprint(params):
        return NewDataCheck(True, f"parameters changed since the last successful run ({when})", names,
                            last_success=when)
    before = {p["name"]: p["sha256"] for p in state.get("partitions", [])}
    added = tuple(p.name for p in parts if p.name not in before)
    changed = tuple(p.name for p in parts if p.name in before and before[p.name] != p.sha256)
    dropped = tuple(n for n in before if n not in names)
    if not (added or changed or dropped):
        newest = names[-1] if names else "?"
        return NewDataCheck(False, f"nothing new since the last successful run ({when}, newest partition "
                                   f"{newest})", names, last_success=when)
    what = "; ".join(s for s in (
        f"new partition(s) {', '.join(added)}" if added else "",
        f"rewritten {', '.join(changed)}" if changed else "",
        f"left the window {', '.join(dropped)}" if dropped else "") if s)
    return NewDataCheck(True, what, names, added, changed, last_success=when)


def record_successful_run(params, finished_at: dt.datetime | None = None) -> Path | None:
    """Write ``run.state_file`` after a run's last stage succeeded: the window's partitions (name,
    sha256), the window and the parameter fingerprint. Atomic (temp file + rename). Returns the
    path, or None for a single-file input (nothing to record)."""
    parts = window_partitions(params)
    if parts is None:
        return None
    finished = (finished_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    state = {
        "version": STATE_VERSION,
        "finished_at": finished,
        "input": str(params.data.input),
        "window": window_record(params.data.window),
        "partitions": [{"name": p.name, "sha256": p.sha256} for p in parts],
        "params_fingerprint": params_fingerprint(params),
    }
    path = Path(params.run.state_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)
    return path
