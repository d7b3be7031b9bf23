"""Package attributes that import their module on first use (PEP 562 module ``__getattr__``).

A package whose ``__init__`` re-exports names from heavy submodules (torch, scikit-learn) would load
them on every import of the package, also for a caller that needs a light submodule only (the
evaluation settings read by ``components.config``; ``ctrflow predict`` with onnxruntime, which never
needs torch). ``__getattr__ = lazy_exports(__name__, {"name": "submodule", ...})`` in the package's
``__init__`` defers each import to the first access of the name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` → ``package.<homes[name]>.name``."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(import_module(f".{homes[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
