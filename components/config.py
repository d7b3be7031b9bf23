"""params.yaml → typed, validated settings.

One pydantic model per params.yaml section. Unknown keys are rejected (a typo must not be silently
ignored) and every error names the dotted key at fault, e.g. ``preprocess.split_ratios``.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.train.recipe import check_batch_size
from components.tune.settings import TeacherTuneParams

RawFormatName = Literal["criteo", "avazu", "movielens", "schema"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowParams(_Section):
    """``data.window``: the newest ``last`` partitions, or those dated within [``from``, ``to``]
    (components/data/partitions.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    last: int | None = Field(None, ge=1)
    from_: _dt.date | _dt.datetime | None = Field(None, alias="from")
    to: _dt.date | _dt.datetime | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> WindowParams:
        if self.last is None and self.from_ is None and self.to is None:
            raise ValueError("give last: N, or from/to dates (or set data.window: null for all partitions)")
        if self.last is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("give either last or from/to, not both")
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError(f"from {self.from_} is after to {self.to}")
        return self


class DataParams(_Section):
    format: RawFormatName = "criteo"
    input: str = "data/raw/synthetic.txt"  # a file, or a directory / glob of partitions
    window: WindowParams | None = None      # partitioned input: which partitions a run uses (null: all)


class GenerateParams(_Section):
    format: Literal["criteo", "avazu", "movielens"] = "criteo"
    rows: int = Field(200_000, gt=0)
    seed: int = 2024
    out: str = "data/raw/synthetic.txt"
    partitions: int = Field(0, ge=0)  # 0: one file; N: a directory of N drifting partitions (rows each)
    cardinality: Literal["sample", "kaggle"] = "sample"  # kaggle (criteo): the Kaggle set's field sizes


class ValidateParams(_Section):
    out_dir: str = "data/validation"
    min_rows: int = Field(100, ge=1)
    max_field_bytes: int = Field(65_536, gt=0)
    gx_chunk_rows: int = Field(200_000, gt=0)
    gx_max_rows: int = Field(2_000_000, gt=0)
    max_null_fraction: float = Field(0.99, ge=0, le=1)
    seed: int = 2024
    cache_dir: str = "data/validation-cache"  # partitioned input: passed partitions, by content hash
    workers: int = Field(1, ge=1)  # partitioned input: partitions validated at once, one process each


class HashBucketsParams(_Section):
    """``preprocess.hash_buckets``: fields whose train vocabulary (after min_count) holds more than
    ``min_vocab`` values are hashed into ``buckets`` buckets (components/data/hashing.py)."""

    min_vocab: int = Field(gt=0)
    buckets: int = Field(gt=0, le=2**31 - 3)  # ids are Int32: buckets + 2 must fit


class ParallelParams(_Section):
    """``preprocess.parallel``: where the per-partition steps of a partitioned input run
    (components/data/partwise.py). The outputs are the same bytes with every runner."""

    runner: Literal["none", "process", "dask"] = "none"
    workers: int = Field(0, ge=0)  # process pool / local Dask cluster size; 0 = the machine's cores
    dask_address: str | None = None  # runner dask: a running scheduler; None: a local cluster

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z][a-z0-9+]*://\S+", v):
            raise ValueError(f"must be a Dask scheduler address such as tcp://host:8786, got {v!r}")
        return v


class PreprocessParams(_Section):
    out_dir: str = "data/processed"
    preset: Literal["none", "dagfm", "bars_x4_001"] = "none"
    split: Literal["random", "time", "partition"] = "random"
    holdout_partitions: int = Field(1, ge=1)  # split: partition: the newest N partitions are valid + test
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2022
    min_count: int = Field(10, ge=1)
    numeric: Literal["log2_bucket", "log2_bucket_dagfm", "dense"] = "log2_bucket"
    numeric_min_count: int = Field(1, ge=1)
    numeric_also_dense: bool = False  # a bucket mode also feeds each numeric field as a dense value
    rating_threshold: int = Field(4, ge=1, le=5)
    drop_neutral_rating: bool = True
    batch_rows: int = Field(500_000, gt=0)
    hash_buckets: HashBucketsParams | None = None  # null: every field keeps its vocabulary
    embedding_budget_mb: float | None = Field(None, gt=0)  # null: no budget (min_count as given)
    # the embedding_dim the budget counts; load_params fills it from train.embedding_dim when null
    budget_embedding_dim: int | None = Field(None, gt=0)

    @property
    def dense_copies(self) -> bool:
        """Whether the numeric fields get dense copies: ``numeric_also_dense`` under a bucket mode
        (under ``numeric: dense`` the fields are dense already and the setting does nothing)."""
        return self.numeric_also_dense and self.numeric != "dense"

    @model_validator(mode="after")
    def _budget_has_dim(self) -> PreprocessParams:
        if self.embedding_budget_mb is not None and self.budget_embedding_dim is None:
            raise ValueError("embedding_budget_mb needs budget_embedding_dim (load_params takes it from "
                             "train.embedding_dim; give it when building PreprocessParams directly)")
        return self
    parallel: ParallelParams = ParallelParams()  # how the steps run, not what they compute

    @field_validator("split_ratios")
    @classmethod
    def _ratios_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or abs(sum(v) - 1.0) > 1e-6 or v[0] <= 0:
            raise ValueError(f"must be three non-negative numbers summing to 1 with train > 0, got {list(v)}")
        return v


class SchemaParams(_Section):
    separator: str = ","
    has_header: bool = True
    label: str = "label"
    categorical: list[str] = []
    numeric: list[str] = []
    time_column: str | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> SchemaParams:
        both = set(self.categorical) & set(self.numeric)
        if both:
            raise ValueError(f"columns declared both categorical and numeric: {sorted(both)}")
        return self


class GateParams(_Section):
    """The baseline gate of train_teacher (components/train/gate.py)."""

    min_auc_gain: float = 0.0
    on_fail: Literal["fail", "warn"] = "fail"
    baseline_lr: float = Field(1e-3, gt=0)
    baseline_max_epochs: int = Field(20, ge=1)  # params.yaml: 100 (LR to convergence)
    baseline_patience: int = Field(2, ge=1)


class DistributedParams(_Section):
    """``train.distributed``: data-parallel teacher training over ``nproc`` × ``nnodes`` processes,
    launched by torchrun from the train_teacher stage (components/train/launch.py)."""

    nproc: int = Field(1, ge=1)              # processes (ranks) on this machine
    nnodes: int = Field(1, ge=1)             # machines; each runs the same stage with its node_rank
    node_rank: int = Field(0, ge=0)          # this machine's index (0 writes the outputs)
    rdzv_endpoint: str | None = None         # host:port of the c10d rendezvous (nnodes > 1)
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl with CUDA, else gloo

    @property
    def world_size(self) -> int:
        """Ranks in all: ``nproc × nnodes``."""
        return self.nproc * self.nnodes

    @model_validator(mode="after")
    def _rendezvous(self) -> DistributedParams:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes {self.nnodes} > 1 needs rdzv_endpoint (host:port of node 0)")
        return self


class TrainParams(_Section):
    model: str = "dcnv2"
    embedding_dim: int = Field(16, gt=0)
    model_params: dict = {}
    logistic_base: bool = False  # params.yaml: true (a frozen gate LR under the teacher's logit)
    logistic_base_max_epochs: int = Field(20, ge=1)  # the base: the gate LR's best of its first N epochs
    batch_size: int | Literal["auto"] = "auto"
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    embedding_lr_scale: float = Field(1.0, gt=0)
    embedding_l2: float = Field(0.0, ge=0)  # params.yaml: 1e-3 (the measured default recipe)
    first_order_l2: bool | Literal["auto"] = False  # params.yaml: auto (over a converged logistic base)
    net_l2: float = Field(0.0, ge=0)
    sparse_embeddings: Literal["auto", "on", "off"] = "auto"  # sparse grads + lazy Adam (large tables)
    sparse_min_ids: int = Field(1_000_000, ge=0)  # auto: on from this many embedding ids
    max_epochs: int = Field(20, ge=1)
    eval_every: float = Field(1.0, gt=0, le=1)
    patience: int = Field(2, ge=1)
    lr_decay: float = Field(0.1, gt=0, le=1)
    restore_best_on_decay: bool = False
    monitor: Literal["auc", "auc_minus_logloss"] = "auc_minus_logloss"
    min_lr: float = Field(1e-6, ge=0)
    grad_clip: float = Field(10.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: int = Field(0, ge=0)
    seed: int = 2024
    in_memory: bool = True
    out_dir: str = "models/teacher"
    metrics: str = "metrics/teacher.json"
    curve: str = "metrics/teacher_curve.csv"
    gate: GateParams = GateParams()

    _batch_size_ok = field_validator("batch_size")(classmethod(lambda cls, v: check_batch_size(v)))
    tune: TeacherTuneParams = TeacherTuneParams()  # n_trials > 0: an Optuna study picks the teacher
    distributed: DistributedParams = DistributedParams()  # world size > 1: torchrun DDP (one teacher)

    @model_validator(mode="after")
    def _tune_is_single_process(self) -> TrainParams:
        if self.tune.n_trials > 0 and self.distributed.world_size > 1:
            raise ValueError(
                f"train.tune.n_trials {self.tune.n_trials} > 0 cannot run with train.distributed "
                f"(nproc {self.distributed.nproc} x nnodes {self.distributed.nnodes} ranks): the teacher's "
                f"Optuna trials train in one process; set train.distributed.nproc and nnodes to 1 to tune, "
                f"then train the chosen settings distributed with train.tune.n_trials: 0")
        if self.sparse_embeddings == "on" and self.distributed.world_size > 1:
            raise ValueError("train.sparse_embeddings: on cannot train with train.distributed (DDP all-reduces "
                             "dense gradients); use auto (dense under DDP) or off")
        return self


class InferenceParams(_Section):
    """Serving: how a trained model is turned into its inference form (components/serve/optimize.py)
    and how predict/export run it."""

    fold_batch_norm: bool = True
    quantize: Literal["none", "dynamic_int8"] = "none"
    compile: bool = False
    onnx_graph_optimization: Literal["all", "extended", "basic", "disabled"] = "all"
    threads: int = Field(0, ge=0)
    onnx_spinning: bool | Literal["within_call"] = "within_call"
    onnx_one_row_threads: int = Field(1, ge=0)
    score_rows: int = Field(512, gt=0)


class RunParams(_Section):
    """One pipeline run at a time per checkout (components/runlock.py)."""

    on_busy: Literal["wait", "fail"] = "wait"
    wait_timeout_s: float | None = Field(3600, gt=0)
    poll_s: float = Field(2.0, gt=0)
    lock_file: str = ".ctrflow/run.lock"
    skip_unchanged: bool = True  # the flow skips a stage DVC reports unchanged since dvc.lock
    if_nothing_new: Literal["skip", "run"] = "skip"  # partitioned input, no new partition: end early?
    state_file: str = ".ctrflow/last_success.json"   # what the last successful run used
    retries: int = Field(2, ge=0)            # flow: retries of a stage task after a transient error
    retry_delay_s: float = Field(30, ge=0)   # first retry delay, doubled at each further retry
    stage_timeout_s: dict[str, float] = {}   # flow: stage name -> seconds before its task fails
    parallel_students: int = Field(1, ge=1)  # flow: students distilled at once (separate tasks)

    @field_validator("stage_timeout_s")
    @classmethod
    def _known_stages(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(FLOW_STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {list(FLOW_STAGES)}")
        if any(t <= 0 for t in v.values()):
            raise ValueError("stage timeouts must be > 0 seconds")
        return v


# The flow's stages (DVC stage names, in order); `distill` runs one task per student inside it.
FLOW_STAGES = ("generate", "validate", "preprocess", "train_teacher", "distill", "evaluate", "profile",
               "report", "promote")


class RetentionParams(_Section):
    """What accumulates across runs and how much of it to keep (components/gc.py, `ctrflow gc`)."""

    keep_runs: int = Field(3, ge=1)
    dvc_cache: bool = True
    dvc_keep_commits: int = Field(3, ge=0)
    dvc_keep_tags: bool = True
    dvc_keep_branches: bool = False
    stale_temp: bool = True
    prefect_results: bool = True
    after_run: bool = True
    ledger: str = ".ctrflow/retention.jsonl"


# Sections owned by later stages import TrainParams from here, so they are imported after it.
from components.distill.settings import DistillParams  # noqa: E402
from components.evaluate.settings import EvaluateParams  # noqa: E402
from components.registry.settings import PromoteParams  # noqa: E402
from components.tune.settings import TuneParams  # noqa: E402


class Params(_Section):
    """The whole params.yaml. Sections added by later stages are optional here."""

    model_config = ConfigDict(extra="allow", frozen=True)

    data: DataParams = DataParams()
    generate: GenerateParams = GenerateParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    preprocess: PreprocessParams = PreprocessParams()
    schema_: SchemaParams = Field(SchemaParams(), alias="schema")
    train: TrainParams = TrainParams()
    distill: DistillParams = DistillParams()
    tune: TuneParams = TuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    inference: InferenceParams = InferenceParams()
    run: RunParams = RunParams()
    promote: PromoteParams = PromoteParams()  # champion/challenger promotion (components/registry/)
    retention: RetentionParams = RetentionParams()

    @model_validator(mode="before")
    @classmethod
    def _budget_dim_from_train(cls, raw):
        """preprocess.budget_embedding_dim null → train.embedding_dim (the teacher the budget is for)."""
        if isinstance(raw, dict) and isinstance(raw.get("preprocess"), dict):
            pre = raw["preprocess"]
            if pre.get("embedding_budget_mb") is not None and pre.get("budget_embedding_dim") is None:
                train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
                dim = train.get("embedding_dim", TrainParams.model_fields["embedding_dim"].default)
                raw = {**raw, "preprocess": {**pre, "budget_embedding_dim": dim}}
        return raw

    @model_validator(mode="after")
    def _synthetic_format_matches(self) -> Params:
        if self.uses_synthetic and self.generate.format != self.data.format:
            raise ValueError(
                f"data.input is the synthetic log (generate.out) but data.format is "
                f"{self.data.format!r} while generate.format is {self.generate.format!r}")
        return self

    @property
    def validation(self) -> ValidateParams:
        return self.validate_

    @property
    def schema_spec(self) -> SchemaParams:
        return self.schema_

    def raw_input(self) -> tuple[str, Path]:
        """(format, path) of the raw log the pipeline reads."""
        return self.data.format, Path(self.data.input)

    @property
    def uses_synthetic(self) -> bool:
        """True when the pipeline reads the log that the `generate` stage writes."""
        return Path(self.data.input) == Path(self.generate.out)


class ConfigError(ValueError):
    """params.yaml is missing, unparsable or breaks a rule; the message names file and key."""


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate params.yaml; ``overrides`` maps dotted keys to values (CLI ``--set``)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]).replace("validate_", "validate").replace("schema_", "schema")
            msgs.append(f"{path}: {key}: {err['msg']}")
        raise ConfigError("\n".join(msgs)) from e
