"""Serving: score raw log lines with a trained checkpoint, and export checkpoints to ONNX.

- :mod:`.encode`: raw rows → model inputs with the vocabularies and statistics a preprocessing
  run saved (:func:`load_encoder`, :func:`iter_encoded`), exactly as preprocessing encoded them.
- :mod:`.predict`: :func:`predict_file` (one probability per input line, in input order) and the
  model/processed-dir resolution it shares with the exporter.
- :mod:`.optimize`: a trained model → its inference form (:func:`prepare_for_inference`: BatchNorm
  folding, optional int8 dynamic quantisation and ``torch.compile``; params.yaml ``inference:``).
- :mod:`.export`: :func:`export_model` (a self-contained directory: ONNX graph, safetensors
  checkpoint, feature map and vocabularies) and :func:`verify_onnx` (onnxruntime vs PyTorch).
"""

from .encode import EncodedBatch, RawEncoder, iter_encoded, load_encoder
from .export import export_model, verify_onnx
from .optimize import fold_batch_norm, prepare_for_inference, quantization_auc_cost
from .predict import iter_probabilities, predict_file

__all__ = [
    "EncodedBatch",
    "RawEncoder",
    "export_model",
    "fold_batch_norm",
    "iter_encoded",
    "iter_probabilities",
    "load_encoder",
    "predict_file",
    "prepare_for_inference",
    "quantization_auc_cost",
    "verify_onnx",
]
