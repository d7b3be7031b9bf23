"""Model registry: name → model class, with the paper each implements.

Models register themselves with ``@register("dcnv2", family="cross", paper="...")``. The zoo
modules are imported lazily on the first lookup (:data:`ZOO_MODULES`, plus any of
:data:`OPTIONAL_MODULES` whose file exists), so importing this module is cheap and cycle-free.

``build_model(name, feature_map, **hparams)`` checks the hyperparameters against the class
signature and raises a TypeError naming any unknown one (a typo in params.yaml must not be ignored).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.data.feature_map import FeatureMap

    from .base import CTRModel

ZOO_MODULES = (
    "lr", "fm", "ffm", "afm", "nfm", "wide_deep", "deepfm", "dlrm", "dcn", "dcnv2",
    "crossnet", "xdeepfm", "cin", "autoint", "ipnn", "dnn",
)  # fmt: skip
OPTIONAL_MODULES = ("dagfm", "fsdnet")  # imported when present (written by other components)
_PACKAGE = "components.models"


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its name, family, paper, and hyperparameter defaults."""

    name: str
    family: str
    paper: str
    hyperparameters: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


_REGISTRY: dict[str, tuple[type, ModelInfo]] = {}
_loaded = False


def _hyperparameters(cls: type) -> dict[str, Any]:
    """Keyword parameters of ``cls.__init__`` after ``feature_map``, with their defaults."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, feature_map
    return {
        p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def register(name: str, *, family: str, paper: str):
    """Class decorator adding a CTRModel subclass to the registry under a lower-case ``name``."""
    if name != name.lower() or not name:
        raise ValueError(f"model names are lower case and non-empty, got {name!r}")

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            prev = _REGISTRY[name][0]
            if (prev.__module__, prev.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ValueError(
                    f"model name {name!r} is already registered by {prev.__module__}.{prev.__qualname__}"
                )
        _REGISTRY[name] = (cls, ModelInfo(name, family, paper, _hyperparameters(cls)))
        cls.model_name = name
        return cls

    return deco


def _load_zoo() -> None:
    global _loaded
    if _loaded:
        return
    for mod in ZOO_MODULES:
        importlib.import_module(f"{_PACKAGE}.{mod}")
    for mod in OPTIONAL_MODULES:
        if importlib.util.find_spec(f"{_PACKAGE}.{mod}") is not None:
            importlib.import_module(f"{_PACKAGE}.{mod}")
    _loaded = True


def list_models() -> list[ModelInfo]:
    """Every registered model, sorted by name."""
    _load_zoo()
    return [info for _, (_, info) in sorted(_REGISTRY.items())]


def get_model_class(name: str) -> type[CTRModel]:
    """The class registered under ``name``; ValueError listing the known names otherwise."""
    _load_zoo()
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key][0]


def build_model(name: str, feature_map: FeatureMap, *, logistic_base: bool = False, **hparams: Any) -> CTRModel:
    """Instantiate model ``name`` for ``feature_map``; unknown hyperparameters raise TypeError.

    ``logistic_base``: a model-independent option (not one of the class's hyperparameters): the
    model also holds a frozen LR whose logit is added to its own (:mod:`.base`); refused for ``lr``.
    """
    cls = get_model_class(name)
    if logistic_base:
        if cls.model_name == "lr":
            raise ValueError("logistic_base adds a logistic regression to a model; the model 'lr' is one already")
        model = build_model(name, feature_map, **hparams)
        model.attach_logistic_base()
        return model
    accepted = _hyperparameters(cls)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {cls.model_name!r} got unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return cls(feature_map, **hparams)
