"""A checkpoint's ``model.json`` without torch: read it, and check it against a feature map.

What ONNX scoring needs from a checkpoint (``ctrflow predict`` on an export or a registry
version): the format check and the hash of the feature map the weights were trained on. Kept apart
from :mod:`.checkpoint` (which writes and loads the weights with torch) so that scoring with
onnxruntime never imports torch: a serving process saves torch's import time and memory
(benchmarks/results/predict_throughput.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from components.data.feature_map import FeatureMap

CHECKPOINT_FORMAT = "ctrflow-checkpoint"
CHECKPOINT_VERSION = 1
MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"


def read_json(path: Path) -> dict:
    """``path`` parsed as JSON (ValueError naming the file when it is not)."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


def feature_map_hash(feature_map: FeatureMap) -> str:
    """Hex SHA-256 of the feature map's canonical JSON (sorted keys): ties weights to their ids."""
    return hashlib.sha256(feature_map.to_json().encode()).hexdigest()


def read_model_metadata(directory: str | Path) -> dict:
    """The ``model.json`` of a checkpoint directory (FileNotFoundError / ValueError naming the file)."""
    path = Path(directory) / MODEL_META
    if not path.exists():
        raise FileNotFoundError(f"{path}: no model checkpoint here")
    meta = read_json(path)
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: not a {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION} checkpoint "
            f"(format={meta.get('format')!r}, version={meta.get('version')!r})"
        )
    return meta


def check_feature_map(directory: str | Path, feature_map: FeatureMap) -> dict:
    """The checkpoint's metadata; ValueError when ``feature_map`` is not the one it was trained on."""
    meta = read_model_metadata(directory)
    fm_hash = feature_map_hash(feature_map)
    if meta["feature_map_hash"] != fm_hash:
        raise ValueError(
            f"{Path(directory) / MODEL_META}: trained on feature map {meta['feature_map_hash'][:12]}…, "
            f"but the given one hashes to {fm_hash[:12]}… (re-train after preprocessing changes)"
        )
    return meta
