"""params.yaml section ``distill``: which students to train and every knob of their procedures.

One frozen pydantic model per block, unknown keys rejected (the ``components/config.py`` rules).
Defaults are the published configurations (models.md §2.3 for KD-DAGFM, §3.4 for FSDNet, Criteo):

Every block's ``monitor`` (as ``train.monitor``) is what its phases' early stop, best checkpoint and
``finetune_must_improve`` maximise on the validation split: ``auc`` (default: the KD-DAGFM trainer's
and FSDNet's released configs) or ``auc_minus_logloss`` (the teacher's; params.yaml says which the
product uses); the Optuna studies maximise valid AUC either way.

- ``dagfm`` / ``kd_dagfm_plus``: the KD-DAGFM chain (teacher → distillation → finetuning). Official
  trainer: Adam lr 1e-4, L2 1e-5 on every parameter (Adam's coupled weight decay = our explicit
  ``embedding_l2`` + ``net_l2`` penalties), batch 1024, no LR schedule (``lr_decay`` 1), no gradient
  clipping, early stop after 10 epochs without a validation-AUC gain, α = 0.1, β = 921.6 with a
  mean-reduced logit MSE (see :mod:`components.distill.losses` before changing β, the reduction or
  the batch size).
- ``fsdnet``: FuxiCTR recipe — Adam lr 1e-3, batch 4096, LR ×0.1 per non-improving epoch (min 1e-6),
  patience 2, gradient-norm clip 10, embedding L2 1e-5; μ 0.5, τ 1, hint λ 0.01, dropout 0.2.

The student baseline ("same student without distillation", :mod:`components.distill.baseline`)
trains a KD-DAGFM student from scratch with BCE under the block's ``finetune_lr`` /
``finetune_max_epochs`` (the BCE-only, trainable-embedding configuration), and FSDNet with BCE on its
inference output under ``lr`` / ``max_epochs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.config import TrainParams
from components.train.recipe import check_batch_size

StudentName = Literal["dagfm", "kd_dagfm_plus", "fsdnet"]
KD_STUDENTS = ("dagfm", "kd_dagfm_plus")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Optimisation(_Section):
    """Optimisation knobs shared by every student block (defaults: the official KD-DAGFM trainer)."""

    batch_size: int | Literal["auto"] = 1024
    optimizer: Literal["adam", "adamw"] = "adam"
    embedding_l2: float = Field(1e-5, ge=0)
    net_l2: float = Field(1e-5, ge=0)
    lr_decay: float = Field(1.0, gt=0, le=1)
    min_lr: float = Field(1e-6, ge=0)
    grad_clip: float = Field(0.0, ge=0)
    patience: int = Field(10, ge=1)
    # what a phase's early stop and best checkpoint maximise, as train.monitor: valid AUC (the published
    # trainers'), or AUC − LogLoss
    monitor: Literal["auc", "auc_minus_logloss"] = "auc"

    _batch_size_ok = field_validator("batch_size")(classmethod(lambda cls, v: check_batch_size(v)))


class DAGFMSettings(_Optimisation):
    """KD-DAGFM with the plain DAGFM student (models.md §1, §2)."""

    embedding_dim: int | None = Field(None, gt=0)  # None: the teacher's (they must be equal)
    interaction_type: Literal["inner", "outer", "kernel"] = "outer"
    depth: int = Field(3, ge=1)
    alpha: float = Field(0.1, ge=0)
    beta: float = Field(921.6, ge=0)
    mse_reduction: Literal["mean", "sum"] = "mean"
    lr: float = Field(1e-4, gt=0)
    distill_max_epochs: int = Field(1000, ge=1)
    teacher_embedding_rms: float | None = Field(None, gt=0)  # None: the teacher's scale as is
    finetune_lr: float = Field(1e-4, gt=0)
    finetune_max_epochs: int = Field(1000, ge=1)
    finetune_must_improve: bool = False  # True: keep the distilled student unless finetuning beats it in `monitor`

    def model_hparams(self) -> dict:
        """``build_model`` keyword arguments of the student, except ``embedding_dim``."""
        return {"interaction_type": self.interaction_type, "depth": self.depth}


class KDDAGFMPlusSettings(DAGFMSettings):
    """KD-DAGFM+ : DAGFM + MLP student (models.md §1.7), same procedure."""

    structure: Literal["stacked", "parallel"] = "stacked"
    hidden_units: tuple[int, ...] = (400, 400, 400)
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_norm: bool = True

    def model_hparams(self) -> dict:
        """``build_model`` keyword arguments of the student, except ``embedding_dim``."""
        return {
            **super().model_hparams(),
            "structure": self.structure,
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
        }


class FSDNetSettings(_Optimisation):
    """FSDNet self-distillation (models.md §3), optionally plus an external teacher's logit MSE."""

    batch_size: int | Literal["auto"] = "auto"
    embedding_l2: float = Field(1e-5, ge=0)  # params.yaml: 1e-3 (the teacher's; measured in distillation.md)
    net_l2: float = Field(0.0, ge=0)
    lr_decay: float = Field(0.1, gt=0, le=1)
    grad_clip: float = Field(10.0, ge=0)
    patience: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_epochs: int = Field(100, ge=1)
    embedding_dim: int = Field(16, gt=0)
    num_layers: int = Field(3, ge=1)
    hidden_dim: int = Field(400, ge=1)
    cross_type: Literal["full", "low_rank", "mixture"] = "full"
    dropout: float = Field(0.2, ge=0, lt=1)
    batch_norm: bool = True
    inference: Literal["mean", "deepest"] = "mean"
    mu: float = Field(0.5, ge=0, le=1)
    tau: float = Field(1.0, gt=0)
    hint_weight: float = Field(0.01, ge=0)
    hint_reduction: Literal["mean", "per_sample_sum"] = "mean"
    detach_teacher: bool = False
    external_teacher_weight: float = Field(0.0, ge=0)
    external_target: Literal["deepest", "mean"] = "deepest"
    external_mse_reduction: Literal["mean", "sum"] = "mean"

    def model_hparams(self) -> dict:
        """``build_model("fsdnet", ...)`` keyword arguments, ``embedding_dim`` included."""
        return {
            "embedding_dim": self.embedding_dim,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "cross_type": self.cross_type,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "inference": self.inference,
        }


class DistillParams(_Section):
    """The ``distill`` section: students to run, where outputs go, runtime, one block per student."""

    students: tuple[StudentName, ...] = ("dagfm", "kd_dagfm_plus", "fsdnet")
    baselines: tuple[StudentName, ...] = ("dagfm",)
    out_dir: str = "models/students"
    metrics: str = "metrics/students.json"
    logit_cache_dir: str = "data/teacher_logits"
    eval_batch_size: int = Field(8192, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: int = Field(0, ge=0)
    seed: int = 2022
    in_memory: bool = True
    max_train_rows: int | None = Field(None, gt=0)
    logistic_base: bool = True  # the students carry the teacher's frozen LR when it has one (train.logistic_base)
    dagfm: DAGFMSettings = DAGFMSettings()
    kd_dagfm_plus: KDDAGFMPlusSettings = KDDAGFMPlusSettings()
    fsdnet: FSDNetSettings = FSDNetSettings()

    @model_validator(mode="after")
    def _unique(self) -> DistillParams:
        for key in ("students", "baselines"):
            names = getattr(self, key)
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{key} lists {dup} more than once")
        return self

    def block(self, student: str) -> DAGFMSettings | KDDAGFMPlusSettings | FSDNetSettings:
        """The settings block of ``student`` (ValueError for an unknown name)."""
        if student not in ("dagfm", "kd_dagfm_plus", "fsdnet"):
            raise ValueError(f"unknown student {student!r}; known: dagfm, kd_dagfm_plus, fsdnet")
        return getattr(self, student)

    def train_params(
        self,
        block: _Optimisation,
        *,
        model: str,
        embedding_dim: int,
        lr: float,
        max_epochs: int,
        out_dir: str | Path,
    ) -> TrainParams:
        """The :class:`TrainParams` of one phase: ``block``'s optimisation knobs + this runtime."""
        return TrainParams(
            model=model,
            embedding_dim=embedding_dim,
            batch_size=block.batch_size,
            optimizer=block.optimizer,
            lr=lr,
            embedding_l2=block.embedding_l2,
            net_l2=block.net_l2,
            # dense gradients as always (the teacher's lazy row-wise L2 path is not measured on students)
            sparse_embeddings="off",
            max_epochs=max_epochs,
            patience=block.patience,
            lr_decay=block.lr_decay,
            min_lr=block.min_lr,
            grad_clip=block.grad_clip,
            monitor=block.monitor,
            device=self.device,
            precision=self.precision,
            num_threads=self.num_threads,
            seed=self.seed,
            in_memory=self.in_memory,
            out_dir=str(out_dir),
        )
