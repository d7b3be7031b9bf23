"""Optuna tuning of the distilled students and of the teacher: search spaces, resumable multi-worker studies, outputs.

The procedures being tuned are passed in as an ``objective(trial) -> float``; nothing here imports
the training or distillation code (nor Prefect). The names below load their module (Optuna,
SQLAlchemy) on first use, not on import of the package: :mod:`.settings` is read by
``components.config`` and must stay light for every CLI command.
"""

from __future__ import annotations

_HOMES = {
    "write_study_outputs": "outputs",
    "fit_pruning_callback": "pruning", "make_pruner": "pruning", "pruning_callback": "pruning",
    "ParamSpec": "settings", "PrunerParams": "settings", "TeacherTuneParams": "settings", "TuneParams": "settings",
    "SearchSpaceError": "space", "fixed_values": "space", "parse_space": "space", "suggest_params": "space",
    "StorageError": "storage", "make_storage": "storage", "masked_url": "storage",
    "StudyResult": "study", "run_study": "study", "study_name": "study", "summarize": "study",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
