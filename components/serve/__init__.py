"""Serving: score raw log lines with a trained checkpoint, and export checkpoints to ONNX.

- :mod:`.encode`: raw rows → model inputs with the vocabularies and statistics a preprocessing
  run saved (:func:`load_encoder`, :func:`iter_encoded`), exactly as preprocessing encoded them.
- :mod:`.predict`: :func:`predict_file` (one probability per input line, in input order) and the
  model/processed-dir resolution it shares with the exporter.
- :mod:`.optimize`: a trained model → its inference form (:func:`prepare_for_inference`: BatchNorm
  folding, optional int8 dynamic quantisation and ``torch.compile``; params.yaml ``inference:``).
- :mod:`.export`: :func:`export_model` (a self-contained directory: ONNX graph, safetensors
  checkpoint, feature map and vocabularies) and :func:`verify_onnx` (onnxruntime vs PyTorch).

Importing the package loads none of them; each name below loads its module on first use (PEP 562),
so ``ctrflow predict`` with onnxruntime never imports torch (:mod:`.predict`).
"""

from components.lazy_exports import lazy_exports

_EXPORTS = {
    "EncodedBatch": "encode",
    "RawEncoder": "encode",
    "iter_encoded": "encode",
    "load_encoder": "encode",
    "export_model": "export",
    "verify_onnx": "export",
    "fold_batch_norm": "optimize",
    "prepare_for_inference": "optimize",
    "quantization_auc_cost": "optimize",
    "iter_probabilities": "predict",
    "predict_file": "predict",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
