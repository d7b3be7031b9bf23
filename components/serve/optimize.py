"""A trained model → its inference form (params.yaml ``inference:``, :class:`~components.config.InferenceParams`).

:func:`prepare_for_inference` applies the configured steps, in this order, to a copy (the trained
model is never modified):

1. :func:`fold_batch_norm` (``inference.fold_batch_norm``, default on): every eval-mode
   ``BatchNorm1d`` that directly follows an ``nn.Linear`` in an ``nn.Sequential`` (the zoo's
   :class:`~components.models.layers.mlp.MLP`: Linear → BN → ReLU → [Dropout]) is folded into that
   Linear, ``W' = W·γ/√(σ²+ε)`` (per output row), ``b' = (b − μ)·γ/√(σ²+ε) + β`` (computed in
   float64, stored float32), and replaced by ``nn.Identity``; every ``nn.Dropout`` (an identity in
   eval mode) is replaced by ``nn.Identity`` too. Logits equal the unfolded model's within 1e-5
   (tests/test_serve_optimize.py). A BatchNorm elsewhere (e.g. NFM's BN on the bi-interaction
   vector, which follows no Linear) is left as it is. The fold assumes what the zoo's MLP
   guarantees: the Linear → BN pair sees 2-D ``[B, features]`` input.
2. :func:`quantize_dynamic_int8` (``inference.quantize: dynamic_int8``, default ``none``): every
   ``nn.Linear`` becomes a dynamically quantised int8 Linear
   (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantised per batch).
   Embeddings, einsums and element-wise ops stay fp32, so it speeds up MLP-heavy models only and
   costs AUC: :func:`quantization_auc_cost` measures how much.
3. ``torch.compile`` (``inference.compile``, default off): compiled lazily on the first call (on
   the CPU that takes tens of seconds and needs a C++ compiler), recompiled when the batch shape
   changes.

ONNX export uses step 1 only (:func:`~components.serve.export.export_model`: an int8 or compiled
module does not trace to the exported graph).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from components.config import InferenceParams
from components.models.base import CTRModel
from components.models.embedding import FeatureEmbedding

QUANTIZE_CHOICES = ("none", "dynamic_int8")


def _fold_pair(linear: nn.Linear, bn: nn.BatchNorm1d) -> None:
    """Fold eval-mode ``bn`` (applied to ``linear``'s output) into ``linear`` in place."""
    w = linear.weight.detach().double()
    b = linear.bias.detach().double() if linear.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    mean, var = bn.running_mean.detach().double(), bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    dtype = linear.weight.dtype
    with torch.no_grad():
        linear.weight.copy_((w * scale[:, None]).to(dtype))
        new_bias = ((b - mean) * scale + beta).to(dtype)
        if linear.bias is None:
            linear.bias = nn.Parameter(new_bias)
        else:
            linear.bias.copy_(new_bias)


def _foldable(prev: nn.Module, cur: nn.Module) -> bool:
    return (
        isinstance(prev, nn.Linear)
        and isinstance(cur, nn.BatchNorm1d)
        and cur.running_mean is not None  # track_running_stats=False normalises with batch statistics
        and cur.num_features == prev.out_features
    )


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with Linear → BatchNorm1d pairs folded and dropout
    removed (module docstring, step 1). ``model`` itself is left untouched."""
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (_, prev), (name, cur) in zip(children, children[1:], strict=False):
                if _foldable(prev, cur):
                    _fold_pair(prev, cur)
                    module._modules[name] = nn.Identity()
    for parent in list(folded.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, nn.Dropout):
                parent._modules[name] = nn.Identity()
    return folded


def count_batch_norms(model: nn.Module) -> int:
    """Number of ``BatchNorm1d`` modules left in ``model``."""
    return sum(isinstance(m, nn.BatchNorm1d) for m in model.modules())


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose ``nn.Linear`` layers are dynamically quantised to int8."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; it still ships and works in this torch
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def is_quantized_linear(module: nn.Module) -> bool:
    """True for a dynamically quantised int8 Linear (what :func:`quantize_dynamic_int8` installs)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return isinstance(module, DynamicQuantizedLinear)


def prepare_for_inference(model: nn.Module, settings: InferenceParams | None = None) -> nn.Module:
    """``model`` in its inference form per ``settings`` (default :class:`InferenceParams()`):
    fold BatchNorm, then int8 dynamic quantisation, then ``torch.compile`` — each when enabled;
    the model's eval-mode row blocks (``CTRModel.block_rows``) are set to ``settings.score_rows``
    and its per-call id range check is off (the encoder only produces valid ids; the ONNX export
    never had the check).
    Always returns an eval-mode module that is not ``model`` itself."""
    settings = settings or InferenceParams()
    out = fold_batch_norm(model) if settings.fold_batch_norm else copy.deepcopy(model).eval()
    if settings.quantize == "dynamic_int8":
        out = quantize_dynamic_int8(out)
    elif settings.quantize != "none":
        raise ValueError(f"inference.quantize must be one of {QUANTIZE_CHOICES}, got {settings.quantize!r}")
    if isinstance(out, CTRModel):
        out.block_rows = settings.score_rows  # eval-mode row blocks (components/models/base.py)
        for module in out.modules():  # the model's embedding and its logistic base's, if any
            if isinstance(module, FeatureEmbedding):
                module.check_ids = False  # served ids come from the encoder (components/models/embedding.py)
    if settings.compile:
        out = torch.compile(out, dynamic=True)
    return out


def apply_threads(settings: InferenceParams) -> int:
    """Set torch's intra-op threads to ``settings.threads`` (0: leave torch's default, all cores);
    return the thread count torch now uses."""
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    return torch.get_num_threads()


def _logits(model: nn.Module, batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
    labels, logits = [], []
    with torch.inference_mode():
        for batch in batches:
            logits.append(model(batch.categorical, batch.dense).float().numpy())
            labels.append(batch.label.numpy())
    return np.concatenate(labels), np.concatenate(logits)


def quantization_auc_cost(model: nn.Module, loader: Iterable, *, fold: bool = True) -> dict:
    """AUC of ``model`` in fp32 and after :func:`quantize_dynamic_int8` on the batches of ``loader``
    (a :class:`~components.data.loader.BatchLoader`, or any iterable of batches with
    ``categorical``, ``dense`` and ``label``; iterated twice, so it must be re-iterable).

    ``fold``: fold BatchNorm first on both sides (as :func:`prepare_for_inference` does). Returns
    ``{"fp32_auc", "int8_auc", "auc_cost" (fp32 − int8), "max_abs_logit_diff", "logit_correlation",
    "rows"}``.
    """
    from components.train.metrics import auc

    base = fold_batch_norm(model) if fold else copy.deepcopy(model).eval()
    labels, fp32 = _logits(base, loader)
    _, int8 = _logits(quantize_dynamic_int8(base), loader)
    fp32_auc, int8_auc = auc(labels, fp32), auc(labels, int8)
    corr = float(np.corrcoef(fp32, int8)[0, 1]) if len(fp32) > 1 else float("nan")
    return {
        "fp32_auc": fp32_auc,
        "int8_auc": int8_auc,
        "auc_cost": fp32_auc - int8_auc,
        "max_abs_logit_diff": float(np.max(np.abs(fp32 - int8))) if len(fp32) else 0.0,
        "logit_correlation": corr,
        "rows": int(len(labels)),
    }
