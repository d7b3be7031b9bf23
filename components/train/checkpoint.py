"""Checkpoints without pickles: safetensors for tensors, JSON for everything else.

Two kinds of files live in a training ``out_dir``:

- **The model checkpoint** (the best epoch so far): ``model.safetensors`` (the ``state_dict``) and
  ``model.json`` (format tag, model name, hyperparameters, feature-map hash, epoch, metrics,
  parameter counts, and the SHA-256 of the weights file, checked on load so a weights file that does
  not belong to its metadata is refused). :func:`load_model` rebuilds the model from the registry.
  Reading and checking ``model.json`` alone needs no torch: :mod:`.model_meta` (re-exported here).
- **The resume state** (end of the last finished epoch): ``resume-<epoch>.safetensors`` holds the
  model weights, the optimizer's per-parameter tensors (``optim.<index>.<name>``, e.g. Adam's
  ``exp_avg``) and the torch (and CUDA) RNG states; ``resume.json`` holds the scalars given by
  the loop (epoch, LR, best metric, patience counter, history, ...), the optimizer's
  ``param_groups`` and non-tensor state, the Python and NumPy RNG states, and the name and SHA-256
  of its tensor file.

Every file is written to a temporary name and renamed into place (atomic on POSIX); a write that
fails (disk full, file size limit) deletes its temporary before the error propagates. For the resume
state the JSON is the commit point: it is renamed last, and tensor files of older epochs are deleted
only after it, so a crash at any moment leaves a complete earlier state. Loading reads safetensors and
JSON only; ``torch.load`` is never called.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from components.data.feature_map import FeatureMap
from components.train.model_meta import (  # noqa: F401  (re-exported: the checkpoint's metadata API)
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    MODEL_META,
    MODEL_WEIGHTS,
    check_feature_map,
    feature_map_hash,
    read_model_metadata,
)
from components.train.model_meta import read_json as _read_json

STATE_META = "resume.json"
STATE_WEIGHTS_PATTERN = "resume-{epoch}.safetensors"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (set back at once)


# ---------------------------------------------------------------- helpers


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(model, "module", model)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (disk full, ...) leaves no half-written temp
        raise


def _atomic_save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> str:
    """Write ``tensors`` as safetensors via a temp file + rename; return the file's SHA-256."""
    tmp = _tmp_path(path)
    try:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:
            raise _os_error(e, path) from e
        _sort_metadata(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # safetensors creates 0600 files; use the usual permissions
        digest = file_sha256(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (disk full, ...) leaves no half-written temp
        raise
    return digest


def _os_error(e: Exception, path: Path) -> Exception:
    """safetensors reports an I/O error only as text (``IoError(Os { code: 28, ... })``): the OSError
    it stands for (``... (os error 28)``), naming ``path`` (so a disk-full message can say where); ``e`` itself otherwise."""
    m = re.search(r"\bos error (\d+)|\bcode: (\d+)", str(e))
    if m is None:
        return e
    code = int(m.group(1) or m.group(2))
    return OSError(code, os.strerror(code), str(path))


def _sort_metadata(path: Path) -> None:
    """Rewrite the safetensors header with its ``__metadata__`` keys sorted, in place.

    safetensors serialises the metadata from a hash map, so the same checkpoint gets a differently
    ordered header (and another SHA-256) from run to run; sorted, equal tensors give equal bytes.
    The header keeps its length (same keys, same compact separators), so no offset moves.
    """
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        raw = f.read(size)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not meta:
            return
        header["__metadata__"] = dict(sorted(meta.items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # cannot happen for safetensors' own compact header; keep the file
            return
        f.seek(8)
        f.write(text + b" " * (size - len(text)))


def _load_tensors(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint tensor file is missing")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ValueError(
            f"{path}: SHA-256 does not match its metadata (file replaced or half-written)"
        )
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file: {e}") from e


def _tensors_of(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous() for k, v in state_dict.items()}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: total, trainable, embedding and dense (network) when the model splits them."""
    m = _unwrap(model)
    counts = {
        "total": sum(p.numel() for p in m.parameters()),
        "trainable": sum(p.numel() for p in m.parameters() if p.requires_grad),
    }
    if hasattr(m, "embedding_parameters") and hasattr(m, "dense_parameters"):
        counts["embedding"] = sum(p.numel() for p in m.embedding_parameters())
        counts["dense"] = sum(p.numel() for p in m.dense_parameters())
    return counts


# ---------------------------------------------------------------- model checkpoint


def save_model(
    model: nn.Module,
    directory: str | Path,
    *,
    model_name: str,
    hparams: Mapping[str, Any],
    feature_map_hash: str,  # noqa: F811  (the hash itself; the module function is re-exported above)
    epoch: int,
    metrics: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``directory``; return the weights path.

    ``hparams`` are the keyword arguments of ``build_model`` (JSON-serialisable); ``extra`` is merged
    into the metadata under ``"extra"``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / MODEL_WEIGHTS
    digest = _atomic_save_tensors(
        weights,
        _tensors_of(_unwrap(model).state_dict()),
        metadata={"format": CHECKPOINT_FORMAT, "model": model_name},
    )
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "hparams": dict(hparams),
        "feature_map_hash": feature_map_hash,
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "parameters": count_parameters(model),
        "weights_file": MODEL_WEIGHTS,
        "weights_sha256": digest,
        "torch_version": torch.__version__,
        "extra": dict(extra or {}),
    }
    _atomic_write_text(directory / MODEL_META, json.dumps(meta, indent=2, sort_keys=True))
    return weights


def load_model_weights(model: nn.Module, directory: str | Path, *, strict: bool = True) -> dict:
    """Load ``model.safetensors`` into ``model`` (in place, any device); return the metadata."""
    directory = Path(directory)
    meta = read_model_metadata(directory)
    tensors = _load_tensors(directory / meta["weights_file"], meta["weights_sha256"])
    try:
        _unwrap(model).load_state_dict(tensors, strict=strict)
    except RuntimeError as e:
        raise ValueError(
            f"{directory / meta['weights_file']}: weights do not fit the model: {e}"
        ) from e
    return meta


def load_model(
    directory: str | Path, feature_map: FeatureMap, *, device: str | torch.device = "cpu"
):
    """Rebuild the checkpointed model from the registry and load its weights → ``(model, metadata)``.

    Raises ValueError if ``feature_map`` is not the one the model was trained on (hash mismatch).
    The model is returned in eval mode.
    """
    from components.models import build_model

    meta = check_feature_map(directory, feature_map)
    model = build_model(meta["model"], feature_map, **meta["hparams"])
    load_model_weights(model, directory)
    return model.to(device).eval(), meta


# ---------------------------------------------------------------- resume state


def _rng_state_json() -> dict:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def _restore_rng(rng_json: dict, tensors: dict[str, torch.Tensor]) -> None:
    py = rng_json["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npj = rng_json["numpy"]
    np.random.set_state(
        {
            "bit_generator": npj["bit_generator"],
            "state": {"key": np.asarray(npj["key"], dtype=np.uint32), "pos": npj["pos"]},
            "has_gauss": npj["has_gauss"],
            "gauss": npj["gauss"],
        }
    )
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(
        (k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
    )
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def _split_optimizer_state(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state_dict → (tensors keyed ``optim.<index>.<name>``, JSON-able remainder)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in sd["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalar_state": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], js: dict, current: list[dict]) -> dict:
    """Inverse of :func:`_split_optimizer_state`; JSON lists become tuples where ``current`` has tuples."""
    groups = [
        {
            k: tuple(v) if isinstance(v, list) and isinstance(cur.get(k), tuple) else v
            for k, v in g.items()
        }
        for g, cur in zip(
            js["param_groups"], [*current, *[{}] * len(js["param_groups"])], strict=False
        )
    ]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, per_param in js["scalar_state"].items():
        state.setdefault(int(idx), {}).update(per_param)
    return {"state": state, "param_groups": groups}


def save_train_state(
    directory: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scalars: Mapping[str, Any],
) -> Path:
    """Write the resume state after an epoch: weights, optimizer, RNG states and the loop's scalars.

    ``scalars`` must be JSON-serialisable and contain an integer ``"epoch"`` (epochs finished).
    Returns the path of ``resume.json``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    epoch = int(scalars["epoch"])
    opt_tensors, opt_json = _split_optimizer_state(optimizer)
    tensors = {
        **_tensors_of(_unwrap(model).state_dict(), "model."),
        **opt_tensors,
        **_rng_tensors(),
    }
    tensor_file = STATE_WEIGHTS_PATTERN.format(epoch=epoch)
    digest = _atomic_save_tensors(
        directory / tensor_file, tensors, metadata={"format": CHECKPOINT_FORMAT}
    )
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": "resume-state",
        "tensor_file": tensor_file,
        "tensor_sha256": digest,
        "scalars": dict(scalars),
        "optimizer": opt_json,
        "rng": _rng_state_json(),
    }
    meta_path = directory / STATE_META
    _atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
    for old in directory.glob(STATE_WEIGHTS_PATTERN.format(epoch="*")):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)
    return meta_path


def has_train_state(directory: str | Path) -> bool:
    """True when ``directory`` holds a resume state."""
    return (Path(directory) / STATE_META).exists()


def load_train_state(
    directory: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    restore_rng: bool = True,
) -> dict | None:
    """Restore model, optimizer (and RNG states) from ``directory``; return the saved scalars.

    Returns None when there is no state. Raises ValueError naming the file when it is corrupt or
    does not fit the model.
    """
    directory = Path(directory)
    meta_path = directory / STATE_META
    if not meta_path.exists():
        return None
    meta = _read_json(meta_path)
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("kind") != "resume-state":
        raise ValueError(f"{meta_path}: not a {CHECKPOINT_FORMAT} resume state")
    tensors = _load_tensors(directory / meta["tensor_file"], meta["tensor_sha256"])
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        _unwrap(model).load_state_dict(weights, strict=True)
        optimizer.load_state_dict(
            _join_optimizer_state(tensors, meta["optimizer"], optimizer.param_groups)
        )
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(
            f"{directory / meta['tensor_file']}: state does not fit the model/optimizer: {e}"
        ) from e
    if restore_rng:
        _restore_rng(meta["rng"], tensors)
    return meta["scalars"]


def clear_train_state(directory: str | Path) -> None:
    """Delete the resume state (JSON first, so a crash midway leaves no dangling pointer)."""
    directory = Path(directory)
    (directory / STATE_META).unlink(missing_ok=True)
    for f in directory.glob(STATE_WEIGHTS_PATTERN.format(epoch="*")):
        f.unlink(missing_ok=True)
