"""The torch model zoo: shared embedding, reusable layers, one model a file, a name registry.

Use :func:`build_model` / :func:`list_models`; every model's ``forward(categorical, dense)``
returns logits [B].
"""

from .registry import ModelInfo, build_model, get_model_class, list_models, register

__all__ = ["ModelInfo", "build_model", "get_model_class", "list_models", "register"]
