"""The train_teacher stage's logic: processed splits → trained zoo model + metrics + curve.

Reads ``<preprocess.out_dir>/feature_map.json`` and its splits, trains ``train.model`` with the
recipe of :func:`components.train.loop.fit`, then scores the validation and test splits with the
restored best weights. Writes:

- ``train.out_dir``: ``model.safetensors`` + ``model.json``, the resume state of the last epoch,
  the gate's ``baseline_lr/`` (with ``fit.json``, its epoch counts) and the teacher's
  ``logistic_base/``;
- ``train.metrics``: valid/test AUC and LogLoss, epochs, best epoch, samples/s, parameter counts;
- ``train.curve``: one CSV row per validation evaluation (epoch, epochs_done, lr, train_loss,
  valid_auc, valid_logloss, samples_per_s, seconds) for DVC plots.

Every run also fits the baseline gate's LR and scores the constant predictor on the same split
(:mod:`components.train.gate`); their metrics and the gate's verdict are in the metrics JSON under
``baselines`` and ``gate``. Raising on a failed gate is the stage's job (``components/stages.py``),
after these files are written, so a user can read why.

With ``train.logistic_base`` (params.yaml default on) the gate's LR is fitted *first* and the
teacher is built with its best weights of the first ``train.logistic_base_max_epochs`` epochs as a
frozen logistic base (:mod:`components.models.base`, ``<out_dir>/logistic_base``): the network
learns the residual over LR; the gate judges the teacher against the same fit run to convergence
(``baseline_lr``; the same weights where LR converges within those epochs). Measured on
Criteo 117k (3 seeds, DCNv2, 1 thread): valid AUC above LR on every seed (+0.0004 / +0.0006 / +0.0009; the
plain DCNv2 was −0.0014 / −0.0003 / +0.0010), test AUC 0.7562 vs 0.7558.

Nothing of an earlier teacher changes until the new one is complete: training (checkpoints, resume
state, the gate's LR) happens in the sibling :func:`staged_dir` ``.<out_dir name>.partial``, which is
swapped in as ``train.out_dir`` (:func:`components.atomic_dir.replace_dir`) together with the metrics
and curve (written in full to temporaries first) only at the end. A run that fails (disk full,
read-only, a kill) leaves the earlier outputs byte-identical and no temporary file; the staged
directory stays only when it holds a complete resume state, which the next run with ``resume``
continues (a finished run's state in ``train.out_dir`` is continued the same way, e.g. after
``max_epochs`` was raised). ``ctrflow gc`` counts a staged directory as a killed run's leftover.

:func:`keep_teacher` installs a teacher trained elsewhere (the best trial of the teacher's Optuna
study, :mod:`.tuning`) as these same outputs, scored by the same :func:`score_splits` and gated by
the same :func:`baseline_gate`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import TrainParams
from components.data.feature_map import FeatureMap
from components.train import gate

CURVE_COLUMNS = ("epoch", "epochs_done", "lr", "train_loss", "valid_auc", "valid_logloss",
                 "samples_per_s", "seconds")


@dataclass(frozen=True)
class TeacherResult:
    metrics: dict
    model_dir: Path
    metrics_path: Path
    curve_path: Path


def _atomic_text(path: Path, text: str) -> None:
    tmp = _write_temp(path, text)
    tmp.replace(path)


def _write_temp(path: Path, text: str) -> Path:
    """Write ``text`` to ``.<name>.tmp-<pid>`` beside ``path`` (deleted again when the write fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e  # write(2) errors carry no name
        raise
    return tmp


def staged_dir(out_dir: str | Path) -> Path:
    """The sibling ``.<name>.partial`` where a teacher for ``out_dir`` is trained (with its resume
    state) until it is complete; a stale-temporary name for ``ctrflow gc`` (components/gc.py)."""
    out = Path(out_dir)
    return out.parent / f".{out.name}.partial"


def _link_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` as hard links (a copy where linking fails): the writers here replace
    files by rename, never in place, so the original files stay untouched."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, symlinks=True)


def _install(staged: Path, out: Path, texts: dict[Path, str]) -> tuple[Path, ...]:
    """Swap the complete ``staged`` directory in as ``out`` and write ``texts`` (path → content).

    A text whose path lies inside ``out`` (an Optuna trial's metrics.json) is written into ``staged``
    and moves with it; the others are first written in full to temporaries beside their paths, and
    renamed only after the swap, so a failed write (disk full, read-only) changes nothing: the
    temporaries are deleted and the earlier ``out`` and texts stay as they were. Returns the paths."""
    from components.atomic_dir import replace_dir

    temps: list[tuple[Path, Path]] = []
    try:
        for path, text in texts.items():
            if path.resolve().is_relative_to(out.resolve()):
                inside = staged / path.resolve().relative_to(out.resolve())
                inside.parent.mkdir(parents=True, exist_ok=True)
                _atomic_text(inside, text)
            else:
                temps.append((_write_temp(path, text), path))
        replace_dir(staged, out)
        for tmp, path in temps:
            tmp.replace(path)
    finally:
        for tmp, _path in temps:
            tmp.unlink(missing_ok=True)
    return tuple(texts)


def _curve_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rec in history:
        writer.writerow({k: rec.get(k) for k in CURVE_COLUMNS})
    return buf.getvalue()


def _split_loader(params: TrainParams, processed: Path, fmap: FeatureMap, split: str, shuffle: bool,
                  device: str):
    from components.data.loader import BatchLoader

    if split not in fmap.splits:
        raise ValueError(f"{processed / 'feature_map.json'}: no {split!r} split (has {sorted(fmap.splits)})")
    return BatchLoader(processed / fmap.splits[split]["path"], fmap, train_batch_size(params, fmap),
                       shuffle=shuffle, seed=params.seed, in_memory=params.in_memory, device=device)


def train_batch_size(params: TrainParams, fmap: FeatureMap) -> int:
    """``train.batch_size``, with ``auto`` resolved from the training rows (components/train/recipe.py)."""
    from components.train.recipe import resolve_batch_size

    return resolve_batch_size(params.batch_size, int(fmap.splits.get("train", {}).get("rows", 0) or 0))


def teacher_hparams(params: TrainParams) -> dict:
    """The teacher's ``build_model`` keyword arguments: ``embedding_dim``, ``model_params`` and
    ``logistic_base`` when ``train.logistic_base`` is on (not for ``lr`` itself)."""
    hparams = {"embedding_dim": params.embedding_dim, **params.model_params}
    if params.logistic_base and params.model.strip().lower() != "lr":
        hparams["logistic_base"] = True
    return hparams


@dataclass(frozen=True)
class FittedLR:
    """The baseline gate's LR after :func:`fit_gate_lr`: best weights loaded, its epoch counts, the
    epoch cap it ran under (``train.gate.baseline_max_epochs``) and the teacher's logistic base
    taken from the same fit: the best weights of its first ``base_max_epochs`` epochs
    (``train.logistic_base_max_epochs``), in ``base_model`` (None when the fit made no base)."""

    model: Any
    best_epoch: int
    epochs: int
    max_epochs: int
    base_max_epochs: int = 0
    base_best_epoch: int = 0
    base_model: Any = None

    @property
    def converged(self) -> bool:
        """True when the early stop ended the fit before the epoch cap (LR stopped improving on
        validation); False when it ran into the cap, still improving."""
        return self.epochs < self.max_epochs

    @property
    def base_converged(self) -> bool:
        """True when the logistic base is the converged LR itself: the fit stopped early and its
        best epoch lies within the base's epochs."""
        return self.converged and self.best_epoch <= self.base_max_epochs

    def record(self) -> dict:
        """What ``baseline_lr/fit.json`` holds (:func:`read_fitted_lr` reads it back)."""
        return {"best_epoch": self.best_epoch, "epochs": self.epochs, "max_epochs": self.max_epochs,
                "converged": self.converged, "base_max_epochs": self.base_max_epochs,
                "base_best_epoch": self.base_best_epoch, "base_converged": self.base_converged}


LR_FIT_FILE = "fit.json"  # beside the gate LR's checkpoint: its epoch counts (the DDP ranks read it)


def resolve_first_order_l2(params: TrainParams, lr: FittedLR | None) -> bool:
    """``train.first_order_l2`` resolved: ``true`` / ``false`` as set; ``auto`` is true only over
    a logistic base that is the converged LR (:attr:`FittedLR.base_converged`).

    Why: a model with first-order weights of its own (DeepFM, FM, xDeepFM, Wide&Deep, …) over the
    frozen LR learns a first-order *residual*. Over a converged LR there is none worth learning and
    unpenalised those weights only fit noise: Criteo 117k DeepFM 3 seeds 0.7571 / LogLoss 0.4852
    (= LR's) → 0.7576 / 0.4843 with the penalty, the embedded 100k log DeepFM 0.7741 → 0.7770, FM
    0.7515 → 0.7565. Over a base stopped by its epoch budget (MovieLens-100K, Frappe, Avazu 10k) the
    residual makes up what LR had no epochs for, and the penalty cost MovieLens DeepFM 0.0014 and
    Frappe 0.0023 (benchmarks/results/quality.md)."""
    if params.first_order_l2 != "auto":
        return bool(params.first_order_l2)
    return lr is not None and lr.base_converged


def read_fitted_lr(lr_dir: str | Path, model=None) -> FittedLR | None:
    """The :class:`FittedLR` record :func:`fit_gate_lr` left in ``lr_dir`` (the gate LR's
    directory; ``model`` as given, no base model), None when there is none."""
    path = Path(lr_dir) / LR_FIT_FILE
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    return FittedLR(model, int(rec["best_epoch"]), int(rec["epochs"]), int(rec["max_epochs"]),
                    int(rec.get("base_max_epochs", 0)), int(rec.get("base_best_epoch", 0)))


def apply_first_order_l2(model, params: TrainParams, lr: FittedLR | None, log=print) -> bool:
    """Set ``model``'s embedding to penalise its first-order weights when
    :func:`resolve_first_order_l2` says so and it has any; returns whether it now does."""
    on = resolve_first_order_l2(params, lr) and bool(model.embedding.first_order_parameters())
    model.embedding.first_order_l2 = on
    if on and params.first_order_l2 == "auto":
        log(f"first-order L2: the base LR converged (epoch {lr.best_epoch}, stopped at {lr.epochs} of "
            f"{lr.max_epochs}), so the model's own first-order weights get train.embedding_l2 too "
            f"(train.first_order_l2: auto)")
    return on


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy the checkpoint (weights + metadata) in ``src`` to ``dst``, replacing what is there."""
    from components.atomic_dir import replace_dir
    from components.train.checkpoint import MODEL_META, read_model_metadata

    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(src / MODEL_META, tmp / MODEL_META)
    shutil.copy2(src / read_model_metadata(src)["weights_file"], tmp)
    replace_dir(tmp, dst)


def fit_gate_lr(params: TrainParams, processed_dir: str | Path, fmap: FeatureMap, dev, *,
                with_base: bool = True) -> FittedLR:
    """Fit the gate's LR (:func:`components.train.gate.baseline_params`: the teacher's batch size and
    seed, the gate's optimiser settings, up to ``train.gate.baseline_max_epochs``) into
    ``<params.out_dir>/baseline_lr``, its epoch counts into ``baseline_lr/fit.json``.

    ``with_base``: the same fit also leaves the teacher's logistic base in
    ``<params.out_dir>/logistic_base``: its best weights of the first ``train.logistic_base_max_epochs``
    epochs (the checkpoint on disk at that epoch's end), or the whole fit's best when that lies
    within them. Why two: the gate compares the teacher with LR trained to convergence, while the
    network learns best over a base stopped early on the small samples (MovieLens-100K: DCNv2 over
    the converged LR collapses onto it, 0.8447 against 0.8662 over the 20-epoch one;
    benchmarks/results/quality.md, observation 10)."""
    from components.models import build_model
    from components.train.checkpoint import load_model_weights
    from components.train.loop import fit, seed_everything

    processed = Path(processed_dir)
    lr_params = gate.baseline_params(params)
    lr_dir = Path(lr_params.out_dir)
    base_dir = Path(params.out_dir) / gate.LOGISTIC_BASE_DIR
    base_cap = min(params.logistic_base_max_epochs, lr_params.max_epochs)
    if with_base:  # a base from an earlier fit must not outlive this one
        shutil.rmtree(base_dir, ignore_errors=True)

    def snapshot(record: dict) -> None:  # the best of the first base_cap epochs is on disk now
        if with_base and record.get("epochs_done") == base_cap:
            _copy_checkpoint(lr_dir, base_dir)

    seed_everything(lr_params.seed)
    lr_model = build_model("lr", fmap, embedding_dim=params.embedding_dim)
    device = str(dev)
    lr_fit = fit(lr_model, _split_loader(params, processed, fmap, "train", True, device),
                 _split_loader(params, processed, fmap, "valid", False, device), lr_params,
                 lr_dir, resume=False, hparams={"embedding_dim": params.embedding_dim},
                 log=lambda _m: None, pause_name="baseline_lr.batch", on_epoch_end=snapshot)
    base_model, base_best = None, 0
    if with_base:
        if lr_fit.best_epoch <= base_cap:  # the whole fit's best: the base is the gate's LR itself
            _copy_checkpoint(lr_dir, base_dir)
        base_model = build_model("lr", fmap, embedding_dim=params.embedding_dim)
        base_best = int(load_model_weights(base_model, base_dir)["epoch"])
    fitted = FittedLR(lr_model, lr_fit.best_epoch, lr_fit.epochs_run, lr_params.max_epochs,
                      base_cap if with_base else 0, base_best, base_model)
    _atomic_text(lr_dir / LR_FIT_FILE, json.dumps(fitted.record(), indent=2) + "\n")
    return fitted


def install_logistic_base(model, lr: FittedLR | str | Path) -> None:
    """Copy the logistic base of the fitted LR (a :class:`FittedLR`, or the directory of the base's
    checkpoint, ``<train.out_dir>/logistic_base``) into ``model``'s frozen logistic base."""
    from components.train.checkpoint import load_model_weights

    if isinstance(lr, FittedLR):
        model.load_logistic_base(lr.base_model)
    else:
        load_model_weights(model.logistic_base, lr)


def score_splits(model, params: TrainParams, processed_dir: str | Path, fmap: FeatureMap, dev) -> dict:
    """``{"valid": {auc, logloss}, "test": …}`` of ``model`` on every non-empty valid/test split
    (loaders built from ``params``: batch size, in_memory)."""
    from components.train.loop import predict
    from components.train.metrics import evaluate_logits

    processed = Path(processed_dir)
    out = {}
    for split in ("valid", "test"):
        if split in fmap.splits and fmap.splits[split].get("rows", 1) > 0:
            logits, labels = predict(model, _split_loader(params, processed, fmap, split, False, str(dev)),
                                     device=dev)
            out[split] = evaluate_logits(labels, logits)
    return out


def baseline_gate(params: TrainParams, processed_dir: str | Path, fmap: FeatureMap, dev,
                  teacher_valid: dict, log=print, lr: FittedLR | None = None) -> dict:
    """The baseline gate (:mod:`components.train.gate`) of a teacher trained with ``params`` whose
    valid scores are ``teacher_valid``: fits LR (into ``<params.out_dir>/baseline_lr``; ``lr``: the
    one already fitted there for the teacher's logistic base), scores it and the constant predictor;
    returns the metrics entries ``baselines`` and ``gate``."""
    processed = Path(processed_dir)
    lr_params = gate.baseline_params(params)
    if lr is None:
        lr = fit_gate_lr(params, processed, fmap, dev, with_base=False)
    baselines = {"lr": {**score_splits(lr.model, params, processed, fmap, dev),
                        "best_epoch": lr.best_epoch, "epochs": lr.epochs, "lr": lr_params.lr,
                        "max_epochs": lr.max_epochs, "converged": lr.converged,
                        **({"base_best_epoch": lr.base_best_epoch, "base_max_epochs": lr.base_max_epochs}
                           if lr.base_max_epochs else {})},
                 "constant": gate.constant_predictor(processed, fmap)}
    verdict = gate.judge(teacher_valid, baselines["lr"]["valid"], baselines["constant"]["valid"],
                         min_auc_gain=params.gate.min_auc_gain, on_fail=params.gate.on_fail)
    log(verdict.message)
    return {"baselines": baselines, "gate": verdict.record}


def write_teacher_outputs(metrics: dict, curve_csv: str, params: TrainParams) -> tuple[Path, Path]:
    """Write ``metrics`` (JSON) to ``params.metrics`` and the curve CSV text to ``params.curve``,
    each atomically; returns both paths."""
    metrics_path, curve_path = Path(params.metrics), Path(params.curve)
    _atomic_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    _atomic_text(curve_path, curve_csv)
    return metrics_path, curve_path


def _output_texts(metrics: dict, curve_csv: str, params: TrainParams) -> dict[Path, str]:
    return {Path(params.metrics): json.dumps(metrics, indent=2, sort_keys=True) + "\n",
            Path(params.curve): curve_csv}


def prepare_staged(params: TrainParams, model, hparams: dict, *, resume: bool, log=print,
                   world_size: int = 1) -> Path:
    """Decide what the run in :func:`staged_dir` continues and return that directory (not yet created).

    With ``resume`` a staged resume state written by the same configuration (``world_size`` ranks
    included) is continued; else the staged directory is emptied and, when ``train.out_dir`` holds a
    finished run's matching state (e.g. ``max_epochs`` raised since), linked into it to continue that.
    A state from another configuration or data is noted in ``log`` and training starts afresh.
    """
    from components.train.checkpoint import has_train_state
    from components.train.loop import resume_state_matches

    out = Path(params.out_dir)
    staged = staged_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if resume and resume_state_matches(staged, params, model, hparams, world_size) is False:
        log(f"{staged}: resume state is from another configuration or data; training afresh")
        resume_from_staged = False
    else:
        resume_from_staged = resume and has_train_state(staged)
    if not resume_from_staged:
        shutil.rmtree(staged, ignore_errors=True)
        if resume and resume_state_matches(out, params, model, hparams, world_size):
            # a finished run's state (e.g. max_epochs raised since): continue it in the staged copy
            _link_tree(out, staged)
        elif resume and has_train_state(out):
            log(f"{out}: resume state is from another configuration or data; training afresh")
    return staged


def discard_incomplete(staged: Path, resume: bool) -> None:
    """After a failed run: keep ``staged`` only when it holds a complete resume state that the next
    run (with ``resume``) continues, e.g. after a kill or once space is back; anything less goes."""
    from components.train.checkpoint import has_train_state

    if not (resume and staged.is_dir() and has_train_state(staged)):
        shutil.rmtree(staged, ignore_errors=True)


def finish_teacher(params: TrainParams, processed: Path, fmap: FeatureMap, model, dev, result,
                   wall: float, *, with_gate: bool = True, log=print,
                   extra: dict | None = None, lr: FittedLR | None = None) -> TeacherResult:
    """Score the trained ``model`` (best weights, checkpoint in the staged directory), run the gate
    there (``lr``: the gate's LR already fitted for the logistic base), and install the staged
    directory as ``train.out_dir`` with the metrics (``extra`` merged in) and the curve of
    ``result`` (a :class:`~components.train.loop.FitResult`)."""
    from components.train.checkpoint import count_parameters
    from components.train.loop import resolve_precision

    out = Path(params.out_dir)
    staged = staged_dir(out)
    stage_params = params.model_copy(update={"out_dir": str(staged)})
    hparams = teacher_hparams(params)
    scores = score_splits(model, params, processed, fmap, dev)
    gated = baseline_gate(stage_params, processed, fmap, dev, scores["valid"], log, lr) if with_gate else {}
    sps = [h["samples_per_s"] for h in result.history if h.get("samples_per_s")]
    metrics = {
        "model": params.model,
        "hparams": hparams,
        "valid": scores.get("valid"),
        "test": scores.get("test"),
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "train_samples_per_s": round(sum(sps) / len(sps), 1) if sps else None,
        "train_seconds": round(wall, 2),
        "device": str(dev),
        "precision": "bf16" if resolve_precision(dev, params.precision) is not None else "fp32",
        "parameters": count_parameters(model),
        "best_eval": result.best_eval,
        "eval_every": params.eval_every,
        "batch_size": train_batch_size(params, fmap),
        "first_order_l2": resolve_first_order_l2(params, lr) and bool(model.embedding.first_order_parameters()),
        **gated,
        **(extra or {}),
    }
    metrics_path, curve_path = _install(staged, out, _output_texts(metrics, _curve_csv(result.history),
                                                                   params))
    return TeacherResult(metrics, out, metrics_path, curve_path)


def train_teacher(params: TrainParams, processed_dir: str | Path, *, resume: bool = True,
                  log=print, on_epoch_end: Callable[[dict], Any] | None = None,
                  with_gate: bool = True) -> TeacherResult:
    """Train ``params.model`` on the processed splits and write checkpoint, metrics and curve.

    ``on_epoch_end(record)`` is passed to :func:`components.train.loop.fit` (e.g. an Optuna
    pruning callback; an exception it raises stops training and propagates). ``with_gate`` False
    skips the baseline gate (no ``baselines`` / ``gate`` in the metrics): the teacher's Optuna
    trials, whose kept best gets the gate in :func:`keep_teacher`. One process; the data-parallel
    run of ``train.distributed`` is :func:`components.train.teacher_ddp.train_teacher_distributed`.
    """
    from components.models import build_model
    from components.train.loop import fit, resolve_device, seed_everything

    processed = Path(processed_dir)
    fmap = FeatureMap.load(processed / "feature_map.json")
    dev = resolve_device(params.device)
    device = str(dev)

    seed_everything(params.seed)
    hparams = teacher_hparams(params)
    model = build_model(params.model, fmap, **hparams)
    staged = prepare_staged(params, model, hparams, resume=resume, log=log)
    stage_params = params.model_copy(update={"out_dir": str(staged)})
    try:
        staged.mkdir(exist_ok=True)
        lr = None
        if model.logistic_base is not None:  # the gate's LR first: it is the teacher's frozen base
            started = time.perf_counter()
            lr = fit_gate_lr(stage_params, processed, fmap, dev)
            install_logistic_base(model, lr)
            log(f"logistic base: the gate's LR fitted in {time.perf_counter() - started:.1f}s (best epoch "
                f"{lr.best_epoch} of {lr.epochs}); the teacher learns the residual over its best of the first "
                f"{lr.base_max_epochs} epochs (epoch {lr.base_best_epoch})")
        apply_first_order_l2(model, params, lr, log)
        train = _split_loader(params, processed, fmap, "train", True, device)
        valid = _split_loader(params, processed, fmap, "valid", False, device)
        started = time.perf_counter()
        result = fit(model, train, valid, stage_params, staged, resume=resume, hparams=hparams, log=log,
                     on_epoch_end=on_epoch_end)
        wall = time.perf_counter() - started
        del train, valid  # free the in-memory splits before the gate's LR loads its own
        return finish_teacher(params, processed, fmap, model, dev, result, wall, with_gate=with_gate,
                              log=log, lr=lr)
    except BaseException:
        discard_incomplete(staged, resume)
        raise


def keep_teacher(source: TrainParams, params: TrainParams, processed_dir: str | Path, *,
                 extra: dict | None = None, log=print) -> TeacherResult:
    """Make the teacher that :func:`train_teacher` wrote under ``source`` (e.g. an Optuna trial's
    settings, whose out_dir/metrics/curve point into the trial's directory) the teacher of
    ``params``.

    Copies ``model.safetensors`` + ``model.json`` from ``source.out_dir`` into a temporary sibling
    of ``params.out_dir``, scores the copied checkpoint on valid/test with :func:`score_splits`
    (loaders of ``source``), runs the baseline gate there (:func:`baseline_gate`, ``params.gate``,
    the LR with ``source``'s batch size and seed), then swaps it in as ``params.out_dir`` (whatever an
    earlier training left there goes with the old directory) and writes ``params.metrics``
    (``source``'s training record with these scores and the gate, plus ``extra``) and
    ``params.curve`` (``source``'s curve), all three only once everything is complete
    (:func:`_install`). Raising on a failed gate stays the stage's job.
    """
    from components.train.checkpoint import MODEL_META, MODEL_WEIGHTS, load_model
    from components.train.loop import resolve_device

    src, out = Path(source.out_dir), Path(params.out_dir)
    record = json.loads(Path(source.metrics).read_text())
    curve = Path(source.curve).read_text()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name in (MODEL_WEIGHTS, MODEL_META):
            shutil.copy2(src / name, tmp / name)
        processed = Path(processed_dir)
        fmap = FeatureMap.load(processed / "feature_map.json")
        dev = resolve_device(source.device)
        model, _ = load_model(tmp, fmap, device=dev)
        scores = score_splits(model, source, processed, fmap, dev)
        gate_params = source.model_copy(update={"out_dir": str(tmp), "gate": params.gate})
        gated = baseline_gate(gate_params, processed, fmap, dev, scores["valid"], log)
        metrics = {**record, "valid": scores.get("valid"), "test": scores.get("test"), **gated,
                   **(extra or {})}
        # swapped in only now, complete with the gate's LR: a failure before leaves the old teacher
        metrics_path, curve_path = _install(tmp, out, _output_texts(metrics, curve, params))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"teacher: {src} → {out}")
    return TeacherResult(metrics, out, metrics_path, curve_path)
