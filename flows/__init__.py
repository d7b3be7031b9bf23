"""Prefect flows: thin orchestration over components.stages (no logic of their own)."""

from flows import _env  # noqa: F401  (sets offline-safe env defaults before prefect is imported)
