"""The ``tune`` section of params.yaml: Optuna budget, storage, pruner, search spaces, defaults.

Unknown keys are rejected and every rule names the key at fault. A search space maps a student
name (``dagfm``, ``fsdnet``) to its hyperparameters, each a :class:`ParamSpec`; ``defaults`` holds
the reference hyperparameters of each student, enqueued as the first trial of its study, and must
name exactly the keys of that student's space with values inside it.
"""

from __future__ import annotations

import math
import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Choice = bool | int | float | str
"""A categorical value Optuna can store (None is excluded: YAML null is too easy to mistype)."""

STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
"""SQLAlchemy dialects accepted for ``tune.storage`` (RDBStorage: heartbeats need an RDB)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_integral(v: float) -> bool:
    return float(v).is_integer()


class ParamSpec(_Section):
    """One hyperparameter: ``float``/``int`` in [low, high] (optionally log or stepped), or
    ``categorical`` over ``choices``."""

    type: Literal["float", "int", "categorical"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Choice] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty `choices` list")
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
            if extra or self.log:
                raise ValueError(f"categorical takes only `choices`, not {extra + ['log'] * self.log}")
            if len({(type(c), c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"categorical `choices` repeat a value: {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high (log, step), not `choices`")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both `low` and `high`")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"needs finite low <= high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined (Optuna rejects it)")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.type == "int":
            bad = [k for k in ("low", "high", "step") if getattr(self, k) is not None
                   and not _is_integral(getattr(self, k))]
            if bad:
                raise ValueError(f"int needs whole numbers for {bad}")
        return self

    def contains(self, value: object) -> bool:
        """True when ``value`` is a value this spec can produce (a valid default)."""
        if self.type == "categorical":
            return any(type(value) is type(c) and value == c for c in self.choices or [])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and not _is_integral(value):
            return False
        return self.low <= value <= self.high


class PrunerParams(_Section):
    """Median pruner (stop a trial whose intermediate valid AUC is below the median of earlier
    trials at the same step) or none."""

    type: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(3, ge=0)
    n_warmup_steps: int = Field(1, ge=0)


def _default_search_space() -> dict[str, dict[str, ParamSpec]]:
    f = ParamSpec
    return {
        "dagfm": {
            "alpha": f(type="float", low=0.01, high=1.0, log=True),
            "beta": f(type="float", low=10.0, high=10_000.0, log=True),
            "lr": f(type="float", low=1e-4, high=1e-2, log=True),
            "depth": f(type="int", low=2, high=4),
            "embedding_l2": f(type="float", low=1e-7, high=1e-1, log=True),
        },
        "fsdnet": {
            "mu": f(type="float", low=0.1, high=0.9),
            "tau": f(type="float", low=0.5, high=3.0),
            "hint_weight": f(type="float", low=1e-3, high=1e-1, log=True),
            "lr": f(type="float", low=1e-4, high=1e-2, log=True),
            "embedding_l2": f(type="float", low=1e-7, high=1e-1, log=True),
        },
    }


def _default_defaults() -> dict[str, dict[str, Choice]]:
    return {
        "dagfm": {"alpha": 0.1, "beta": 921.6, "lr": 1e-3, "depth": 3, "embedding_l2": 1e-5},
        "fsdnet": {"mu": 0.5, "tau": 1.0, "hint_weight": 0.01, "lr": 1e-3, "embedding_l2": 1e-3},
    }


class TuneParams(_Section):
    """params.yaml ``tune``: how many trials, where the study lives, how it samples and prunes."""

    n_trials: int = Field(3, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    storage: str = "sqlite:///optuna/ctrflow.db"
    storage_env: str | None = "CTRFLOW_OPTUNA_STORAGE"
    trials_dir: str = "optuna/trials"
    study_prefix: str = Field("ctrflow", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 2024
    pruner: PrunerParams = PrunerParams()
    heartbeat_interval: int = Field(60, ge=1)
    grace_period: int = Field(180, ge=1)
    search_space: dict[str, dict[str, ParamSpec]] = Field(default_factory=_default_search_space)
    defaults: dict[str, dict[str, Choice]] = Field(default_factory=_default_defaults)

    @model_validator(mode="before")
    @classmethod
    def _storage_from_environment(cls, data):
        """A database URL with a password comes from the environment variable named by
        ``storage_env`` (default ``CTRFLOW_OPTUNA_STORAGE``), never from params.yaml: when that variable
        is set and not empty it replaces ``storage``. Everything the project logs or writes shows the
        URL through :func:`components.tune.storage.masked_url` (password as ``***``)."""
        if isinstance(data, dict):
            name = data.get("storage_env", cls.model_fields["storage_env"].default)
            value = os.environ.get(name, "") if name else ""
            if value.strip():
                data = {**data, "storage": value.strip()}
        return data

    @field_validator("storage")
    @classmethod
    def _rdb_url(cls, v: str) -> str:
        scheme = v.split("://", 1)[0].split("+", 1)[0] if "://" in v else ""
        if scheme not in STORAGE_SCHEMES:
            shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", v)  # never echo a password
            raise ValueError(
                f"must be an SQLAlchemy URL of {list(STORAGE_SCHEMES)} (heartbeats need an RDB), "
                f"e.g. sqlite:///optuna/ctrflow.db or postgresql+psycopg://user@host:5432/db; got {shown!r}")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> TuneParams:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"tune.grace_period ({self.grace_period}) must exceed tune.heartbeat_interval "
                f"({self.heartbeat_interval}), or live trials would be failed as stale")
        for student, values in self.defaults.items():
            if student not in self.search_space:
                raise ValueError(f"tune.defaults.{student}: no tune.search_space.{student} to match")
            space = self.search_space[student]
            missing, unknown = sorted(set(space) - set(values)), sorted(set(values) - set(space))
            if missing or unknown:
                raise ValueError(f"tune.defaults.{student}: keys must match tune.search_space."
                                 f"{student}; missing {missing}, unknown {unknown}")
            for key, value in values.items():
                if not space[key].contains(value):
                    raise ValueError(f"tune.defaults.{student}.{key}: {value!r} is outside "
                                     f"tune.search_space.{student}.{key}")
        return self

    def space_for(self, student: str) -> dict[str, ParamSpec]:
        """The search space of ``student``; KeyError naming the declared students otherwise."""
        if student not in self.search_space:
            raise KeyError(f"tune.search_space has no {student!r}; declared: {sorted(self.search_space)}")
        return self.search_space[student]

    def defaults_for(self, student: str) -> dict[str, Choice] | None:
        """The reference hyperparameters of ``student`` (its first trial), or None if undeclared."""
        values = self.defaults.get(student)
        return dict(values) if values is not None else None


# ---------------------------------------------------------------- the teacher's study (train.tune)

TEACHER_TUNABLE = ("embedding_dim", "batch_size", "optimizer", "lr", "embedding_l2", "net_l2",
                   "lr_decay", "min_lr", "grad_clip", "patience")
"""Top-level ``train`` keys a teacher search space may name (besides ``model_params.<name>``)."""
MODEL_PARAMS_PREFIX = "model_params."
"""Search-space keys ``model_params.<name>`` set one keyword argument of the model class."""


def _flatten_teacher_keys(raw: object) -> object:
    """``{model_params: {dropout: …}}`` → ``{"model_params.dropout": …}``; dotted keys pass as is."""
    if not isinstance(raw, dict):
        return raw
    flat: dict[str, object] = {}
    for key, value in raw.items():
        nested = key == "model_params" and isinstance(value, dict)
        for name, v in (value.items() if nested else [(key, value)]):
            full = f"{MODEL_PARAMS_PREFIX}{name}" if nested else str(name)
            if full in flat:
                raise ValueError(f"{full} is given twice (nested under model_params and dotted)")
            flat[full] = v
    return flat


def check_teacher_key(key: str, where: str) -> None:
    """ValueError naming ``<where>.<key>`` unless ``key`` is a tunable train key or
    ``model_params.<identifier>`` (whether the model takes it is checked when the study starts)."""
    if key.startswith(MODEL_PARAMS_PREFIX):
        name = key[len(MODEL_PARAMS_PREFIX):]
        if not name.isidentifier():
            raise ValueError(f"{where}.{key}: `{name}` is not a model hyperparameter name")
        if name == "embedding_dim":
            raise ValueError(f"{where}.{key}: tune the top-level `embedding_dim` instead")
        return
    if key not in TEACHER_TUNABLE:
        raise ValueError(f"{where}.{key}: not a tunable train key; tunable: "
                         f"{list(TEACHER_TUNABLE)} and model_params.<name>")


class TeacherTuneParams(_Section):
    """params.yaml ``train.tune``: an Optuna study over the teacher's hyperparameters.

    With ``n_trials`` 0 (the default) the teacher is trained once with the ``train`` settings.
    Otherwise the train_teacher stage runs (or resumes) the study
    ``<tune.study_prefix>-teacher-<model>-<key>`` until it holds ``n_trials`` finished trials,
    then keeps the best trial's checkpoint as the teacher (:func:`components.train.tuning.tune_teacher`).
    Where the study lives and how killed trials are retried come from the top-level ``tune``
    section, shared with the student studies: ``storage``, ``trials_dir``, ``study_prefix``,
    ``heartbeat_interval``, ``grace_period``; ``seed`` and ``pruner`` too unless set here.

    Search-space keys are top-level train keys (:data:`TEACHER_TUNABLE`) or model keyword arguments,
    nested under ``model_params`` (or dotted: ``model_params.dropout``). A list-valued argument
    (``hidden_units``) is categorical over strings of widths joined by ``-``: ``"400-400-400"``.
    ``search_space`` null: a default space for the model (:data:`components.train.tuning.DEFAULT_SPACE`,
    restricted to the arguments the model takes and widened to hold the current values). Trial 0
    is the current ``train`` settings; ``defaults`` replaces some of its values.
    """

    n_trials: int = Field(0, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    study_name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int | None = None
    pruner: PrunerParams | None = None
    search_space: dict[str, ParamSpec] | None = None
    defaults: dict[str, Choice] | None = None

    @field_validator("search_space", "defaults", mode="before")
    @classmethod
    def _flat_keys(cls, v: object) -> object:
        return _flatten_teacher_keys(v)

    @model_validator(mode="after")
    def _known_keys(self) -> TeacherTuneParams:
        for key in self.search_space or {}:
            check_teacher_key(key, "train.tune.search_space")
        for key, value in (self.defaults or {}).items():
            check_teacher_key(key, "train.tune.defaults")
            if self.search_space is None:
                continue
            if key not in self.search_space:
                raise ValueError(f"train.tune.defaults.{key}: not in train.tune.search_space "
                                 f"(declared: {sorted(self.search_space)})")
            if not self.search_space[key].contains(value):
                raise ValueError(f"train.tune.defaults.{key}: {value!r} is outside "
                                 f"train.tune.search_space.{key}")
        return self
