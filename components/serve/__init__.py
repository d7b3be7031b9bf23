"""Serving: score raw log lines with a trained checkpoint, and export checkpoints to ONNX.

- :mod:`.encode`: raw rows → model inputs with the vocabularies and statistics a preprocessing
  run saved (:func:`load_encoder`, :func:`iter_encoded`), exactly as preprocessing encoded them.
- :mod:`.predict`: :func:`predict_file` (one probability per input line, in input order) and the
  model/processed-dir resolution it shares with the exporter.
- :mod:`.export`: :func:`export_model` (a self-contained directory: ONNX graph, safetensors
  checkpoint, feature map and vocabularies) and :func:`verify_onnx` (onnxruntime vs PyTorch).
"""

from .encode import EncodedBatch, RawEncoder, iter_encoded, load_encoder
from .export import export_model, verify_onnx
from .predict import iter_probabilities, predict_file

__all__ = [
    "EncodedBatch",
    "RawEncoder",
    "export_model",
    "iter_encoded",
    "iter_probabilities",
    "load_encoder",
    "predict_file",
    "verify_onnx",
]
