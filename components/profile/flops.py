"""FLOPs per sample of what really runs: matmuls, element-wise, reductions, norms and embedding gathers.

``torch.utils.flop_counter.FlopCounterMode`` counts matmul-like ops only (toolchain.md §7): an FM's
mul/sum/sub, BatchNorm, ReLU and embedding lookups all count 0, so it says an FM costs nothing.
:class:`OpCostMode` is a ``TorchDispatchMode`` that sees every aten op the forward runs (after
``einsum``/``linear``/``layer_norm`` are lowered to aten ops) and applies the cost table below to the
op's real shapes. The forward really executes (no meta tensors), so data-dependent checks work.

Cost table (FLOPs; "out" = elements of the op's first output, "in" = elements of its first input):

==================  ==========================================================================
category            rule
==================  ==========================================================================
matmul              torch's own formulas (``flop_counter.flop_registry``: mm, bmm, addmm,
                    baddbmm, convolution, attention, … = 2·M·N·K), plus ``mv``/``addmv``/``dot``
                    (2·M·N, 2·N). ``addmm``/``baddbmm``/``addmv`` add one FLOP per output element
                    for the bias/input add. ``matmul_flops_per_sample`` holds the torch-formula
                    part only, i.e. exactly what FlopCounterMode reports.
elementwise         1 per output element (add, sub, mul, div, relu, sigmoid, tanh, exp, where,
                    comparisons, binary max/min, …); transcendental functions count 1 too (the
                    usual convention, not their instruction count). addcmul/addcdiv/lerp and
                    training-mode ``native_dropout`` count 2.
reduction           sum/prod/amax/amin/max/min/argmax/argmin: in − out (one op per element
                    folded in); mean: in (adds + one divide per output); norm: 2·in;
                    var/std/logsumexp: 3·in; cumsum/cumprod: in.
normalization       BatchNorm: 4·out in eval (subtract mean, scale by 1/σ, γ, β), 7·out when it
                    also computes batch statistics (training); LayerNorm/GroupNorm: 5·out (+2·out
                    with an affine weight).
softmax             ``_softmax``/``_log_softmax``: 5·out (max, subtract, exp, sum, divide/log).
gather              ``embedding``, ``index``, ``index_select``, ``gather``, ``take``: out, i.e. an
                    embedding lookup of a d-dim row counts d (B·F·d for a [B, F] id batch). These
                    are memory reads, not arithmetic; they are counted because they are real work
                    and are reported separately (``gather_flops_per_sample``) so a reader can drop
                    them.
zero                views, reshapes, transposes, copies, ``cat``/``stack``, tensor creation: 0
                    (data movement; listed in :data:`ZERO_COST_OPS`).
==================  ==========================================================================

Only floating-point work counts: an op none of whose tensor inputs or outputs is floating point
(the embedding layer's integer id-offset add and its range checks) is skipped. A floating-point op
with no rule is counted 0 and listed in ``FlopReport.uncounted_ops`` (name → calls) so a gap in the
table is visible instead of silent.

Per sample: the forward runs once at batch ``B`` and every count is divided by B, so work that does
not scale with B (e.g. DAGFM's mask·weight products, F²·d per layer per batch) is amortised over B.
MACs: ``macs_per_sample = flops_per_sample / 2`` by definition (1 MAC = 2 FLOPs) for every op, so for
element-wise ops it is a FLOP-equivalent figure, not a count of fused multiply-adds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from components.data.feature_map import FeatureMap

from .synthetic import synthetic_batch

# name of the aten op packet with a trailing "_" (in-place variant) removed → FLOPs per element
ELEMENTWISE_OPS: dict[str, int] = {
    **dict.fromkeys(
        (
            "add", "sub", "rsub", "mul", "div", "neg", "reciprocal", "abs", "sign", "sgn",
            "square", "pow", "sqrt", "rsqrt", "exp", "exp2", "expm1", "log", "log1p", "log2",
            "log10", "sigmoid", "tanh", "relu", "gelu", "silu", "mish", "elu", "leaky_relu",
            "hardtanh", "hardsigmoid", "hardswish", "softplus", "log_sigmoid_forward",
            "_prelu_kernel", "threshold", "clamp", "clamp_min", "clamp_max", "maximum", "minimum",
            "where", "masked_fill", "erf", "sin", "cos", "floor", "ceil", "round", "trunc",
            "fmod", "remainder", "xlogy", "atan2", "eq", "ne", "lt", "le", "gt", "ge",
        ),
        1,
    ),
    **dict.fromkeys(("addcmul", "addcdiv", "lerp", "native_dropout"), 2),
}  # fmt: skip

# reduction → (FLOPs per input element, minus one per output element?)
REDUCTION_OPS: dict[str, tuple[int, bool]] = {
    **dict.fromkeys(("sum", "prod", "amax", "amin", "max", "min", "argmax", "argmin"), (1, True)),
    **dict.fromkeys(("mean", "cumsum", "cumprod"), (1, False)),
    **dict.fromkeys(("norm", "linalg_vector_norm"), (2, False)),
    **dict.fromkeys(("var", "std", "var_mean", "std_mean", "logsumexp"), (3, False)),
}

GATHER_OPS = frozenset({"embedding", "index", "_unsafe_index", "index_select", "gather", "take"})
SOFTMAX_OPS = frozenset({"_softmax", "_log_softmax"})
BATCH_NORM_OPS = frozenset(
    {
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "_native_batch_norm_legit_functional",
    }
)
LAYER_NORM_OPS = frozenset({"native_layer_norm", "native_group_norm"})
BIAS_MATMUL_OPS = frozenset({"addmm", "baddbmm", "addmv"})

ZERO_COST_OPS = frozenset(
    {
        "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute",
        "expand", "unsqueeze", "squeeze", "slice", "select", "narrow", "flatten", "unflatten",
        "as_strided", "alias", "detach", "clone", "copy", "_to_copy", "contiguous", "cat",
        "stack", "split", "split_with_sizes", "unbind", "chunk", "repeat", "repeat_interleave",
        "roll", "flip", "diagonal", "diag_embed", "tril", "triu", "constant_pad_nd",
        "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like",
        "full", "full_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_empty_strided",
        "fill", "zero", "arange", "lift_fresh", "lift_fresh_copy", "_local_scalar_dense",
        "rand", "randn", "randint", "normal", "uniform", "bernoulli", "index_put", "scatter",
        "view_copy", "permute_copy", "transpose_copy", "t_copy", "unsqueeze_copy",
        "squeeze_copy", "slice_copy", "select_copy", "expand_copy", "set", "resize",
    }
)  # fmt: skip

CATEGORIES = (
    "matmul",
    "elementwise",
    "reduction",
    "normalization",
    "softmax",
    "gather",
)


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


def _is_float(t: torch.Tensor) -> bool:
    return t.dtype.is_floating_point or t.dtype.is_complex


def _first_numel(tree: Any) -> int:
    ts = _tensors(tree)
    return ts[0].numel() if ts else 0


def _extra_matmul_flops(name: str, args: tuple) -> int:
    """mv / addmv / dot, which torch's flop registry does not cover."""
    if name == "mv":
        m, n = args[0].shape
        return 2 * m * n
    if name == "addmv":
        m, n = args[1].shape
        return 2 * m * n
    if name in ("dot", "vdot"):
        return 2 * args[0].numel()
    return 0


def _batch_norm_training(name: str, overload: str, args: tuple, kwargs: dict) -> bool:
    """Whether a batch-norm op computes batch statistics (its ``training`` argument)."""
    if name == "_native_batch_norm_legit_no_training":
        return False
    if "training" in kwargs:
        return bool(kwargs["training"])
    # (input, weight, bias, [running_mean, running_var,] training, ...)
    index = 3 if overload == "no_stats" else 5
    return bool(args[index]) if len(args) > index else False


@dataclass(frozen=True)
class FlopReport:
    """FLOPs (and MACs = FLOPs / 2) per sample of one forward pass, with per-op breakdowns.

    ``by_op`` / ``by_category``: FLOPs per sample keyed by aten op name / cost category (sorted,
    largest first; ops costing 0 are omitted). ``matmul_flops_per_sample``: the part torch's
    FlopCounterMode counts. ``gather_flops_per_sample``: embedding/index reads (see module doc).
    ``uncounted_ops``: floating-point ops with no cost rule (counted 0), name → calls.
    """

    flops_per_sample: float
    macs_per_sample: float
    by_op: dict[str, float]
    matmul_flops_per_sample: float
    gather_flops_per_sample: float = 0.0
    by_category: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1
    uncounted_ops: dict[str, int] = field(default_factory=dict)

    @property
    def flops_excluding_gather_per_sample(self) -> float:
        """FLOPs per sample without embedding/index reads: the arithmetic alone."""
        return self.flops_per_sample - self.gather_flops_per_sample

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (for metrics files)."""
        d = asdict(self)
        d["flops_excluding_gather_per_sample"] = self.flops_excluding_gather_per_sample
        return d


class OpCostMode(TorchDispatchMode):
    """Dispatch mode that prices every aten op by the module's cost table (totals, not per sample).

    After the ``with`` block: ``by_op`` (name → FLOPs), ``by_category``, ``matmul_flops`` (torch's
    formulas only) and ``uncounted`` (name → calls of floating-point ops without a rule).
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()
        self.by_category: Counter[str] = Counter()
        self.uncounted: Counter[str] = Counter()
        self.matmul_flops = 0

    def _add(self, name: str, category: str, flops: int) -> None:
        if flops:
            self.by_op[name] += flops
            self.by_category[category] += flops

    def _price(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        packet = func.overloadpacket
        raw = packet.__name__
        name = raw[:-1] if raw.endswith("_") and not raw.endswith("__") else raw
        if packet in flop_registry:
            mm = int(flop_registry[packet](*args, **kwargs, out_val=out))
            self.matmul_flops += mm
            bias = _first_numel(out) if name in BIAS_MATMUL_OPS else 0
            self._add(name, "matmul", mm + bias)
            return
        if not any(_is_float(t) for t in _tensors((args, kwargs, out))):
            return  # integer / boolean bookkeeping (id offsets, range checks)
        n_out = _first_numel(out)
        if name in ("max", "min") and func._overloadname == "other":  # binary max(a, b)
            self._add(name, "elementwise", n_out)
        elif name in ELEMENTWISE_OPS:
            self._add(name, "elementwise", ELEMENTWISE_OPS[name] * n_out)
        elif name in REDUCTION_OPS:
            per_in, minus_out = REDUCTION_OPS[name]
            n_in = _first_numel(args)
            self._add(name, "reduction", max(per_in * n_in - (n_out if minus_out else 0), 0))
        elif name in ("mv", "addmv", "dot", "vdot"):
            mm = _extra_matmul_flops(name, args)
            self._add(name, "matmul", mm + (n_out if name == "addmv" else 0))
        elif name in GATHER_OPS:
            self._add(name, "gather", n_out)
        elif name in SOFTMAX_OPS:
            self._add(name, "softmax", 5 * n_out)
        elif name in BATCH_NORM_OPS:
            training = _batch_norm_training(name, func._overloadname, args, kwargs)
            self._add(name, "normalization", (7 if training else 4) * n_out)
        elif name in LAYER_NORM_OPS:
            weight = args[2] if name == "native_layer_norm" else args[1]
            self._add(name, "normalization", (7 if weight is not None else 5) * n_out)
        elif name not in ZERO_COST_OPS:
            self.uncounted[name] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._price(func, args, kwargs, out)
        return out

    def report(self, batch_size: int) -> FlopReport:
        """The recorded totals divided by ``batch_size``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total = sum(self.by_op.values())
        per = float(batch_size)
        return FlopReport(
            flops_per_sample=total / per,
            macs_per_sample=total / per / 2.0,
            by_op={k: v / per for k, v in self.by_op.most_common()},
            matmul_flops_per_sample=self.matmul_flops / per,
            gather_flops_per_sample=self.by_category.get("gather", 0) / per,
            by_category={k: v / per for k, v in self.by_category.most_common()},
            batch_size=batch_size,
            uncounted_ops=dict(self.uncounted),
        )


def count_callable_flops(fn: Callable[..., Any], *inputs: Any, batch_size: int) -> FlopReport:
    """Run ``fn(*inputs)`` once under ``torch.no_grad`` and :class:`OpCostMode`; FLOPs / batch_size."""
    with torch.no_grad(), OpCostMode() as mode:
        fn(*inputs)
    return mode.report(batch_size)


def count_module_flops(
    module: nn.Module, *inputs: Any, batch_size: int | None = None
) -> FlopReport:
    """FLOPs per sample of ``module(*inputs)`` in eval mode (training flag restored afterwards).

    ``batch_size`` defaults to the first dimension of the first tensor input. Use this to count an
    interaction module alone (e.g. ``DAGPropagation`` on an E of shape [B, F, d]).
    """
    if batch_size is None:
        ts = _tensors(inputs)
        if not ts or ts[0].dim() == 0:
            raise ValueError("batch_size not given and the first input has no batch dimension")
        batch_size = int(ts[0].shape[0])
    was_training = module.training
    module.eval()
    try:
        return count_callable_flops(module, *inputs, batch_size=batch_size)
    finally:
        module.train(was_training)


def count_flops(
    model: nn.Module, feature_map: FeatureMap, batch_size: int = 1024, *, seed: int = 0
) -> FlopReport:
    """FLOPs per sample of ``model(categorical, dense)`` (eval mode) on a synthetic batch of size B.

    The batch comes from :func:`components.profile.synthetic.synthetic_batch` on the model's device.
    The whole forward is counted: embedding gathers, the interaction part and the head.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    categorical, dense = synthetic_batch(feature_map, batch_size, seed=seed, device=device)
    return count_module_flops(model, categorical, dense, batch_size=batch_size)
