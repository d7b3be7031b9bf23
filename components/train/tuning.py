"""The teacher's Optuna study (``train.tune``, issue 11 §2): tune, then keep the best trial.

:func:`tune_teacher` runs (or resumes) the study with the student studies' machinery
(:func:`components.tune.study.run_study`: total-``n_trials`` semantics, the reference trial 0,
heartbeat retry of a killed trial, seeded TPE; :func:`components.tune.pruning.fit_pruning_callback`
after every evaluation), each trial being one :func:`components.train.teacher.train_teacher` run in
``<tune.trials_dir>/<study>/<trial number>`` (outside DVC's outputs, so a killed study resumes with
its finished trials; trials skip the baseline gate). Then the best trial's checkpoint becomes the
teacher (:func:`components.train.teacher.keep_teacher`, which runs the baseline gate on it), and
``train.metrics`` gains a ``tuning`` entry: the study, its storage URL (password masked), the best
trial and params, one row per trial.

- Study name: ``<tune.study_prefix>-teacher-<model>-<key>``, where ``<key>`` is ``train.tune.study_name``
  or a hash of the feature map, every ``train`` setting that shapes training (not the paths, device,
  threads, ``in_memory`` or the gate), the space and ``train.tune.defaults``: changed inputs start a
  new study.
- Search space: ``train.tune.search_space``, every ``model_params.<name>`` checked against the
  model's keyword arguments; or, when null, :data:`DEFAULT_SPACE` restricted to the arguments the
  model takes and widened to hold the current values.
- Trial 0: the current ``train`` values of the space's keys (``train.tune.defaults`` replaces some);
  a number outside its range is moved to the nearest bound (e.g. ``embedding_l2: 0`` → the log
  range's ``low``) and logged; a categorical value not among the choices is an error.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from components.config import TrainParams
from components.train import teacher as teacher_module
from components.tune.settings import MODEL_PARAMS_PREFIX, ParamSpec, TuneParams
from components.tune.space import SearchSpaceError, fixed_values
from components.tune.storage import make_storage, masked_url

SPACE_WHERE = "train.tune.search_space"
DEFAULTS_WHERE = "train.tune.defaults"
_LAYERS = re.compile(r"^(\d+(-\d+)*)?$")
_NOT_IN_STUDY_KEY = {"out_dir", "metrics", "curve", "device", "num_threads", "in_memory", "gate", "tune"}


def _f(**kw) -> ParamSpec:
    return ParamSpec(**kw)


DEFAULT_SPACE: dict[str, ParamSpec] = {
    "lr": _f(type="float", low=1e-4, high=1e-2, log=True),
    "batch_size": _f(type="categorical", choices=["auto", 256, 512, 1024, 2048, 4096]),
    "embedding_l2": _f(type="float", low=1e-8, high=1e-2, log=True),
    "net_l2": _f(type="float", low=1e-8, high=1e-2, log=True),
    "model_params.dropout": _f(type="float", low=0.0, high=0.5),
    "model_params.batch_norm": _f(type="categorical", choices=[True, False]),
    "model_params.hidden_units": _f(type="categorical",
                                    choices=["256-256", "400-400-400", "512-512-512", "1024-512-256"]),
    "model_params.num_cross_layers": _f(type="int", low=1, high=4),
}
"""The space used when ``train.tune.search_space`` is null; ``model_params.*`` entries apply only to
models taking that argument (e.g. ``num_cross_layers``: dcn, dcnv2, crossnet)."""


# ---------------------------------------------------------------- space, values, settings


def model_hyperparameters(model: str) -> tuple[str, dict[str, Any]]:
    """(registered name, keyword arguments with defaults) of ``model``'s class."""
    from components.models import get_model_class, list_models

    name = get_model_class(model).model_name
    return name, dict(next(i.hyperparameters for i in list_models() if i.name == name))


def _arg(key: str) -> str | None:
    return key[len(MODEL_PARAMS_PREFIX):] if key.startswith(MODEL_PARAMS_PREFIX) else None


def _is_layer_list(accepted: Mapping[str, Any], name: str) -> bool:
    return isinstance(accepted.get(name), list | tuple)


def encode_layers(units) -> str:
    """``[400, 400, 400]`` → ``"400-400-400"`` (how a list-valued argument is a categorical choice)."""
    return "-".join(str(int(u)) for u in units)


def decode_layers(text: str) -> list[int]:
    """``"400-400-400"`` → ``[400, 400, 400]``; ``""`` → ``[]``."""
    return [int(u) for u in text.split("-")] if text else []


def _check_model_key(key: str, spec: ParamSpec, model: str, accepted: Mapping[str, Any]) -> None:
    name = _arg(key)
    if name is None:
        return
    if name not in accepted:
        raise SearchSpaceError(
            f"{SPACE_WHERE}.{key}: model {model!r} takes no hyperparameter {name!r}; it takes: "
            f"{', '.join(sorted(k for k in accepted if k != 'embedding_dim'))}")
    if _is_layer_list(accepted, name):
        bad = [c for c in spec.choices or [] if not (isinstance(c, str) and _LAYERS.match(c))]
        if spec.type != "categorical" or bad:
            raise SearchSpaceError(
                f"{SPACE_WHERE}.{key}: {name} is a list of layer widths: declare it categorical "
                f"over strings of widths joined by '-', e.g. \"400-400-400\""
                + (f"; bad choices: {bad}" if bad else ""))


def current_value(params: TrainParams, key: str, accepted: Mapping[str, Any]) -> Any:
    """The value ``params`` trains with for search-space ``key`` (a model argument not set in
    ``model_params``: the class default), encoded as the space holds it."""
    name = _arg(key)
    if name is None:
        return getattr(params, key)
    value = params.model_params.get(name, accepted.get(name))
    return encode_layers(value) if _is_layer_list(accepted, name) and not isinstance(value, str) else value


def _widened(spec: ParamSpec, value: Any) -> ParamSpec:
    """``spec`` grown to contain ``value`` where it can (never a non-positive value on a log scale)."""
    if spec.contains(value) or value is None:
        return spec
    data = spec.model_dump()
    if spec.type == "categorical":
        data["choices"] = [*spec.choices, value]
    elif isinstance(value, int | float) and not isinstance(value, bool) and (value > 0 or not spec.log):
        if spec.type == "int" and not float(value).is_integer():
            return spec
        data["low"], data["high"] = min(spec.low, value), max(spec.high, value)
    else:
        return spec
    return ParamSpec.model_validate(data)


def teacher_space(params: TrainParams, accepted: Mapping[str, Any] | None = None) -> dict[str, ParamSpec]:
    """The teacher's search space (module doc), every key checked against ``params.model``.

    Raises :class:`SearchSpaceError` naming ``train.tune.search_space.<key>`` for an argument the
    model does not take or a list-valued one not declared as ``"w1-w2-…"`` choices.
    """
    model, accepted = model_hyperparameters(params.model) if accepted is None else (params.model, accepted)
    declared = params.tune.search_space
    if declared is not None:
        if not declared:
            raise SearchSpaceError(f"{SPACE_WHERE}: empty; declare at least one key or null for the default")
        for key, spec in declared.items():
            _check_model_key(key, spec, model, accepted)
        return dict(declared)
    space = {}
    for key, spec in DEFAULT_SPACE.items():
        name = _arg(key)
        if name is not None and name not in accepted:
            continue
        space[key] = _widened(spec, current_value(params, key, accepted))
    return space


def _into(spec: ParamSpec, value: Any, key: str, log: Callable[[str], Any]) -> Any:
    """``value`` moved into ``spec``: numbers clamped (and put on the step grid); a categorical
    value outside the choices raises."""
    if spec.contains(value):
        return value
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.type == "categorical" or not numeric:
        raise SearchSpaceError(
            f"{SPACE_WHERE}.{key}: trial 0 takes the current train value {value!r}, which the space "
            f"cannot produce ({spec.choices if spec.type == 'categorical' else [spec.low, spec.high]}); "
            f"add it to the space or set {DEFAULTS_WHERE}.{key}")
    moved = min(max(float(value), float(spec.low)), float(spec.high))
    if spec.step is not None:
        k = math.floor((moved - spec.low) / spec.step + 0.5)
        moved = spec.low + k * spec.step
        if moved > spec.high:
            moved -= spec.step
    moved = int(round(moved)) if spec.type == "int" else moved
    log(f"teacher study: trial 0 takes {key} = {moved!r}: the current value {value!r} is outside "
        f"[{spec.low}, {spec.high}]{' (log)' if spec.log else ''}")
    return moved


def trial_zero(params: TrainParams, space: Mapping[str, ParamSpec], accepted: Mapping[str, Any],
               log: Callable[[str], Any] = print) -> dict[str, Any]:
    """The values enqueued as trial 0: the current train values (moved into the space, module doc)
    with ``train.tune.defaults`` on top, checked and cast by :func:`fixed_values`."""
    given = dict(params.tune.defaults or {})
    unknown = sorted(set(given) - set(space))
    if unknown:
        raise SearchSpaceError(f"{DEFAULTS_WHERE}: {unknown} not in the search space ({sorted(space)})")
    values = {key: given[key] if key in given else _into(spec, current_value(params, key, accepted), key, log)
              for key, spec in space.items()}
    return fixed_values(space, values, DEFAULTS_WHERE)


def trial_params(params: TrainParams, values: Mapping[str, Any], out_dir: str | Path,
                 accepted: Mapping[str, Any]) -> TrainParams:
    """``params`` with the trial's ``values`` applied (``model_params.<name>`` into model_params,
    layer lists decoded), writing into ``out_dir`` (checkpoint, ``metrics.json``, ``curve.csv``),
    with tuning off. A value TrainParams rejects raises pydantic's ValidationError."""
    data = params.model_dump()
    model_params = dict(params.model_params)
    for key, value in values.items():
        name = _arg(key)
        if name is None:
            data[key] = value
        else:
            model_params[name] = decode_layers(value) if _is_layer_list(accepted, name) else value
    out = Path(out_dir)
    data.update(model_params=model_params, out_dir=str(out), metrics=str(out / "metrics.json"),
                curve=str(out / "curve.csv"), tune={})
    return TrainParams.model_validate(data)


def _check_values_train(params: TrainParams, space: Mapping[str, ParamSpec],
                        accepted: Mapping[str, Any]) -> None:
    """Every categorical choice and every numeric bound must make valid TrainParams (before any trial)."""
    from pydantic import ValidationError

    for key, spec in space.items():
        probes = spec.choices if spec.type == "categorical" else [spec.low, spec.high]
        for value in probes or []:
            try:
                trial_params(params, {key: value}, ".", accepted)
            except ValidationError as e:
                msg = "; ".join(err["msg"] for err in e.errors())
                raise SearchSpaceError(f"{SPACE_WHERE}.{key}: {value!r} is not a valid train "
                                       f"value: {msg}") from e


def teacher_study_name(params: TrainParams, model: str, space: Mapping[str, ParamSpec],
                       feature_map_hash: str) -> str:
    """``teacher-<model>-<key>`` (module doc); the stored name gets ``<tune.study_prefix>-`` in front."""
    key = params.tune.study_name
    if key is None:
        blob = json.dumps({
            "train": params.model_dump(mode="json", exclude=_NOT_IN_STUDY_KEY),
            "space": {k: v.model_dump(mode="json") for k, v in sorted(space.items())},
            "defaults": params.tune.defaults,
            "feature_map": feature_map_hash,
        }, sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"teacher-{model}-{key}"


def study_settings(params: TrainParams, tune: TuneParams) -> TuneParams:
    """The top-level ``tune`` section with the teacher's budget, timeout, seed and pruner."""
    t = params.tune
    return tune.model_copy(update={"n_trials": t.n_trials, "timeout_s": t.timeout_s,
                                   "seed": tune.seed if t.seed is None else t.seed,
                                   "pruner": tune.pruner if t.pruner is None else t.pruner})


# ---------------------------------------------------------------- the study


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _trial_rows(trials, notes: Mapping[int, str]) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE:
            auc = t.value
        else:  # PRUNED: its last evaluation; FAIL/RUNNING: its last one, if any
            auc = t.intermediate_values.get(t.last_step) if t.last_step is not None else None
        epochs = t.user_attrs.get("epochs", (t.user_attrs.get("last_report") or {}).get("epoch"))
        rows.append({"number": t.number, "state": t.state.name, "params": dict(t.params),
                     "valid_auc": _finite(auc), "epochs": epochs, "note": notes.get(t.number, "")})
    return rows


def _teacher_study(params: TrainParams, tune: TuneParams, processed_dir: str | Path, *,
                   log: Callable[[str], Any], worker: int = 0, ran: list[int] | None = None):
    """Run (or resume, or join) the teacher's study (sampler-seed index ``worker``; the number of every
    trial this call runs is appended to ``ran``). Returns (result, full_name, trials_dir, settings,
    accepted, storage_shown)."""
    import optuna

    from components.data.feature_map import FeatureMap
    from components.train.checkpoint import feature_map_hash
    from components.tune.pruning import fit_pruning_callback
    from components.tune.space import suggest_params
    from components.tune.study import run_study, study_name

    if params.tune.n_trials < 1:
        raise ValueError("tune_teacher needs train.tune.n_trials >= 1 (0 trains one teacher)")
    processed = Path(processed_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    model, accepted = model_hyperparameters(params.model)
    space = teacher_space(params, accepted)
    _check_values_train(params, space, accepted)
    defaults = trial_zero(params, space, accepted, log)
    settings = study_settings(params, tune)
    name = teacher_study_name(params, model, space, feature_map_hash(fmap))
    full_name = study_name(settings, name)
    trials_dir = Path(tune.trials_dir) / full_name
    storage_shown = masked_url(tune.storage)

    def objective(trial: optuna.Trial) -> float:
        if ran is not None:
            ran.append(trial.number)
        values = suggest_params(trial, space, SPACE_WHERE)
        tp = trial_params(params, values, trials_dir / str(trial.number), accepted)
        log(f"[teacher trial {trial.number}] {values}")
        try:
            res = teacher_module.train_teacher(tp, processed, resume=False, log=log, with_gate=False,
                                               on_epoch_end=fit_pruning_callback(trial))
        except FloatingPointError as e:  # diverged (e.g. too high an lr): this trial fails alone
            log(f"[teacher trial {trial.number}] failed: {e}")
            trial.set_user_attr("error", str(e))
            return float("nan")
        trial.set_user_attr("epochs", res.metrics["epochs"])
        return float(res.metrics["valid"]["auc"])

    log(f"[teacher] Optuna study {full_name} in {storage_shown}: {settings.n_trials} trials in total "
        f"over {sorted(space)}")
    result = run_study(name, objective, settings, defaults=defaults, worker=worker)
    return result, full_name, trials_dir, settings, accepted, storage_shown


def join_teacher_study(params: TrainParams, tune: TuneParams, processed_dir: str | Path, *,
                       worker: int, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """A tuning worker's share of the teacher's study: run trials until it holds
    ``train.tune.n_trials`` finished trials, then return, keeping no teacher and writing no metrics.
    Returns the study's counts, best trial and this call's trials."""
    ran: list[int] = []
    result, full_name, trials_dir, settings, _, _ = _teacher_study(params, tune, processed_dir, log=log,
                                                                   worker=worker, ran=ran)
    return {"study": full_name, "n_trials": settings.n_trials, "n_complete": result.n_complete,
            "n_pruned": result.n_pruned, "n_failed": result.n_failed, "n_running": result.n_running,
            "best_trial": result.best_number, "best_value": result.best_value, "ran": sorted(ran),
            "trials_dir": str(trials_dir)}


def tune_teacher(params: TrainParams, tune: TuneParams, processed_dir: str | Path, *,
                 log: Callable[[str], Any] = print) -> teacher_module.TeacherResult:
    """Run or resume the teacher's study until it holds ``params.tune.n_trials`` finished trials,
    then keep its best trial as the teacher of ``params`` (module doc).

    ``tune`` is the top-level tune section (storage, trials_dir, study_prefix, heartbeat_interval,
    grace_period; seed and pruner unless ``params.tune`` sets them). A trial whose training diverges
    (FloatingPointError) fails alone; any other error fails the trial and propagates. Raises
    :class:`SearchSpaceError` for a bad space before any trial, RuntimeError when no trial completed.
    """
    import optuna

    from components.train.checkpoint import MODEL_META

    result, full_name, trials_dir, settings, accepted, storage_shown = _teacher_study(
        params, tune, processed_dir, log=log)
    processed = Path(processed_dir)
    if result.best_number is None:
        raise RuntimeError(f"study {full_name}: no trial completed; see its trials in {storage_shown}")
    best_dir = trials_dir / str(result.best_number)
    if not (best_dir / MODEL_META).exists():
        raise RuntimeError(f"study {full_name}: best trial {result.best_number} has no checkpoint in "
                           f"{best_dir} (run on another machine? give every worker the same tune.trials_dir, "
                           f"or copy that directory here: docs/scale.md)")
    storage = make_storage(tune.storage, heartbeat_interval=tune.heartbeat_interval,
                           grace_period=tune.grace_period)
    trials = optuna.load_study(study_name=full_name, storage=storage).get_trials(deepcopy=False)
    notes = {row["number"]: row["note"] for row in result.trials_table}
    tuning = {
        "study": full_name,
        "storage": storage_shown,
        "n_trials": settings.n_trials,
        "n_complete": result.n_complete,
        "n_pruned": result.n_pruned,
        "n_failed": result.n_failed,
        "best_trial": result.best_number,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "trials_dir": str(trials_dir),
        "trials": _trial_rows(trials, notes),
    }
    best = trial_params(params, result.best_params, best_dir, accepted)
    log(f"[teacher] best trial {result.best_number} (valid AUC {result.best_value:.6f}): "
        f"{result.best_params}")
    return teacher_module.keep_teacher(best, params, processed, extra={"tuning": tuning}, log=log)
