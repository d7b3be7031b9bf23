"""Declared search space → ``trial.suggest_*`` calls.

A space is a mapping ``name → ParamSpec`` (or the equivalent plain dict, as read from YAML).
Every bad entry raises :class:`SearchSpaceError` naming the key, e.g.
``search_space.dagfm.lr: log scale needs low > 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from pydantic import ValidationError

from components.tune.settings import ParamSpec


class SearchSpaceError(ValueError):
    """A search-space entry (or a value meant for it) breaks a rule; the message names the key."""


def parse_space(raw: Mapping[str, Any], where: str = "search_space") -> dict[str, ParamSpec]:
    """Validate every entry of ``raw`` into a :class:`ParamSpec`; errors name ``where.<key>``."""
    if not isinstance(raw, Mapping):
        raise SearchSpaceError(f"{where}: must be a mapping name -> spec, got {type(raw).__name__}")
    specs: dict[str, ParamSpec] = {}
    for key, spec in raw.items():
        if isinstance(spec, ParamSpec):
            specs[key] = spec
            continue
        try:
            specs[key] = ParamSpec.model_validate(spec)
        except ValidationError as e:
            rules = "; ".join(
                (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "") + err["msg"]
                for err in e.errors())
            raise SearchSpaceError(f"{where}.{key}: {rules}") from e
    return specs


def suggest_params(trial: optuna.Trial, space: Mapping[str, Any],
                   where: str = "search_space") -> dict[str, Any]:
    """Ask ``trial`` for one value of every entry of ``space``; returns ``{name: value}``.

    Enqueued trials (the reference defaults, a retried stale trial) get their fixed values back.
    """
    values: dict[str, Any] = {}
    for name, spec in parse_space(space, where).items():
        if spec.type == "categorical":
            values[name] = trial.suggest_categorical(name, list(spec.choices or []))
        elif spec.type == "int":
            values[name] = trial.suggest_int(name, int(spec.low), int(spec.high),
                                             step=int(spec.step or 1), log=spec.log)
        else:
            values[name] = trial.suggest_float(name, float(spec.low), float(spec.high),
                                               step=None if spec.step is None else float(spec.step),
                                               log=spec.log)
    return values


def fixed_values(space: Mapping[str, Any], values: Mapping[str, Any],
                 where: str = "defaults") -> dict[str, Any]:
    """Check ``values`` against ``space`` (same keys, each inside its spec) and cast numbers to the
    spec's type (YAML ``tau: 1`` → 1.0 for a float); the result is safe to enqueue."""
    specs = parse_space(space)
    missing, unknown = sorted(set(specs) - set(values)), sorted(set(values) - set(specs))
    if missing or unknown:
        raise SearchSpaceError(f"{where}: keys must match the search space; "
                               f"missing {missing}, unknown {unknown}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        spec = specs[key]
        if not spec.contains(value):
            raise SearchSpaceError(f"{where}.{key}: {value!r} is outside the search space {spec}")
        out[key] = (value if spec.type == "categorical"
                    else int(value) if spec.type == "int" else float(value))
    return out
