"""Optuna tuning of the distilled students and of the teacher: search spaces, resumable multi-worker studies, outputs.

The procedures being tuned are passed in as an ``objective(trial) -> float``; nothing here imports
the training or distillation code (nor Prefect).
"""

from components.tune.outputs import write_study_outputs
from components.tune.pruning import fit_pruning_callback, make_pruner, pruning_callback
from components.tune.settings import ParamSpec, PrunerParams, TeacherTuneParams, TuneParams
from components.tune.space import SearchSpaceError, fixed_values, parse_space, suggest_params
from components.tune.storage import StorageError, make_storage, masked_url
from components.tune.study import StudyResult, run_study, study_name, summarize

__all__ = [
    "ParamSpec", "PrunerParams", "SearchSpaceError", "StorageError", "StudyResult",
    "TeacherTuneParams", "TuneParams", "fit_pruning_callback", "fixed_values", "make_pruner",
    "make_storage", "masked_url", "parse_space", "pruning_callback", "run_study", "study_name",
    "suggest_params", "summarize", "write_study_outputs",
]
