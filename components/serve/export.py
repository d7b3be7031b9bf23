"""Export a checkpoint as a self-contained serving directory with an ONNX graph; check it.

:func:`export_model` writes ``out_dir`` (built in a hidden temporary sibling, swapped in at the
end, so a failed export leaves an earlier one intact):

- ``model.onnx``: the checkpoint's model with its BatchNorms folded into the preceding Linear
  layers (``inference.fold_batch_norm``, :mod:`.optimize`; no BatchNormalization node). Inputs
  ``categorical`` int64 [batch, F_cat] (ids, feature-map categorical order) and ``dense`` float32
  [batch, F_dense]; outputs ``logit`` and ``probability`` (= sigmoid(logit))
  float32 [batch]; the batch dimension is dynamic. Field names, model name and feature-map hash are
  also in the graph's ``metadata_props`` (``ctrflow.*``), for consumers that read only the ONNX file.
  A model with outer-type DAG layers (the DAGFM / KD-DAGFM+ students' default) is traced twice and
  the two graphs joined under one ``If`` on the row count: a single row (online scoring) runs its
  layers as grouped 1×1 convolutions and its readout as one Gemm (logistic base folded in), any
  other batch the batched form (:func:`_join_one_row_branch`; the DAGFM student's batch-1 call
  55 → 46 µs in onnxruntime with row-vector matmuls, → 37 µs with these, 1 thread; shared
  weights stored once);
- ``model.safetensors`` + ``model.json``: the checkpoint, copied byte for byte (PyTorch serving,
  :func:`~components.serve.predict.predict_file`);
- ``feature_map.json`` + ``vocab/``: the encodings of the processed directory the model was
  trained on, copied byte for byte, so the directory scores raw logs on its own;
- ``export.json``: format tag, input/output layout, versions, source paths, the number of
  BatchNorms folded (``batch_norm_folded``), and the max |Δ| between onnxruntime (folded graph) and
  PyTorch (the unfolded checkpoint) probabilities on a smoke batch (every field's OOV, missing and
  last id) and on its first row alone, that the export checks before it is published.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter. It needs only
the ``onnx`` package and takes well under a second per zoo model. The torch.export-based default
(``dynamo=True``, needs ``onnxscript``) fails on every zoo model: the shared embedding's id-range
check (``if bool((ids < 0) | (ids >= vocab)).any()): raise``) is data-dependent control flow.
Tracing runs that check once on the valid example ids and leaves it out of the graph, so the ONNX
model does NOT range-check ids; the encoder only produces valid ids (0 … vocab_size-1).

No TorchScript ``model.pt``: a TorchScript archive stores its constants as pickles (``data.pkl``),
which this project does not write, and ``torch.jit`` is deprecated; ONNX + safetensors cover both
runtimes.

:func:`verify_onnx` runs onnxruntime and PyTorch on a processed split and returns the max |Δ| of
the probabilities.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from components.atomic_dir import replace_dir
from components.config import InferenceParams, Params
from components.data.feature_map import FeatureMap
from components.data.hashing import HashedField
from components.data.loader import BatchLoader
from components.data.preprocess import FEATURE_MAP_FILE, load_feature_map
from components.data.vocab import VOCAB_DIR
from components.models.dagfm import DAGPropagation
from components.serve.encode import DEFAULT_BATCH_ROWS, load_encoder
from components.serve.onnx_runtime import ONNX_FILE, onnx_probabilities, onnx_session
from components.serve.optimize import count_batch_norms, fold_batch_norm
from components.serve.predict import in_row_blocks, resolve_model_dir, resolve_processed_dir
from components.train.checkpoint import MODEL_META, feature_map_hash, load_model

EXPORT_FORMAT = "ctrflow-export"
EXPORT_VERSION = 1
EXPORT_META = "export.json"
OPSET = 17
INPUT_NAMES = ("categorical", "dense")
OUTPUT_NAMES = ("logit", "probability")
SMOKE_TOLERANCE = 1e-4  # max |Δ probability| onnxruntime vs PyTorch accepted at export time


class _Scoring(nn.Module):
    """``model`` with both outputs: (logit [B], sigmoid(logit) [B])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit = self.model(categorical, dense)
        return logit, torch.sigmoid(logit)


def export_onnx(model: nn.Module, feature_map: FeatureMap, path: str | Path, *, opset: int = OPSET) -> Path:
    """Write ``model`` (an eval-mode CTRModel) to ONNX file ``path`` with a dynamic batch size.

    Layout and exporter: see the module docstring. Needs the ``onnx`` package.
    """
    import onnx

    path = Path(path)
    graph = _trace_to_onnx(model, feature_map, rows=2, opset=opset)
    one_row_dags = [m for m in model.modules() if isinstance(m, DAGPropagation) and m.interaction_type == "outer"]
    if one_row_dags:  # a second trace for one row, joined to the first under an If on the row count
        try:
            for dag in one_row_dags:
                dag.trace_one_row = True
            graph = _join_one_row_branch(graph, _trace_to_onnx(model, feature_map, rows=1, opset=opset))
        finally:
            for dag in one_row_dags:
                dag.trace_one_row = False
    onnx.save(graph, str(path))
    return path


def _trace_to_onnx(model: nn.Module, feature_map: FeatureMap, *, rows: int, opset: int):
    """``torch.onnx.export`` of ``model`` traced on ``rows`` example rows, batch dimension dynamic,
    as an in-memory ``onnx.ModelProto``."""
    import onnx

    n_cat, n_dense = len(feature_map.categorical_fields), len(feature_map.dense_fields)
    example = (torch.zeros((rows, n_cat), dtype=torch.int64), torch.zeros((rows, n_dense), dtype=torch.float32))
    wrapper = _Scoring(model).eval()
    batch = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the legacy exporter announces its deprecation; tracing flags the embedding's id check
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # DLRM's constant triangle indices are non-negative, which is what this warning asks for
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            wrapper, example, buffer, dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch for name in (*INPUT_NAMES, *OUTPUT_NAMES)},
            do_constant_folding=True,
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


def _join_one_row_branch(batch, one):
    """``If(rows == 1, then: one's graph, else: batch's graph)`` as one ``onnx.ModelProto``.

    The one-row graph (outer DAG layers as grouped convolutions, :class:`DAGPropagation`) is valid for
    a single row only; the If node costs onnxruntime ≈ 2 µs a call. Initializers both graphs hold
    with the same bytes (the embedding tables, under the same name; constants both traces folded,
    such as the flattened first-order table, under names of their own) are stored once, in the
    outer graph; the rest of the one-row graph is renamed under ``one_row/``."""
    import onnx
    from onnx import helper, numpy_helper

    bg, og = batch.graph, one.graph
    known = {t.name: t for t in bg.initializer}
    by_bytes = {(t.data_type, tuple(t.dims), t.raw_data): t.name for t in bg.initializer if len(t.raw_data) >= 1024}
    rename: dict[str, str] = {}
    one_inits = []
    for t in og.initializer:
        if t.name in known and known[t.name] == t:  # (protobuf equality: no serialised copies)
            continue  # shared: the outer graph's copy
        same = by_bytes.get((t.data_type, tuple(t.dims), t.raw_data)) if len(t.raw_data) >= 1024 else None
        if same is not None:  # a constant the exporter folded in both traces, named apart
            rename[t.name] = same
            continue
        rename[t.name] = f"one_row/{t.name}"
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = rename[t.name]
        one_inits.append(copy)
    for node in og.node:
        rename.update({out: f"one_row/{out}" for out in node.output if out})
    out_rename = {o.name: f"batch/{o.name}" for o in bg.output}

    def branch(graph, names: dict[str, str], name: str, initializers: list):
        nodes = []
        for node in graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"{name}/{node.name}"
            copy.input[:] = [names.get(i, i) for i in node.input]
            copy.output[:] = [names.get(o, o) for o in node.output]
            nodes.append(copy)
        outputs = [helper.make_tensor_value_info(names.get(o.name, o.name), o.type.tensor_type.elem_type, None)
                   for o in graph.output]
        return helper.make_graph(nodes, name, [], outputs, initializers)

    then_graph = branch(og, rename, "one_row", one_inits)
    else_graph = branch(bg, out_rename, "batch", [])
    rows_of = bg.input[0].name
    nodes = [
        helper.make_node("Shape", [rows_of], ["ctrflow/shape"], name="ctrflow/Shape"),
        helper.make_node("Gather", ["ctrflow/shape", "ctrflow/zero"], ["ctrflow/rows"], name="ctrflow/Gather", axis=0),
        helper.make_node("Equal", ["ctrflow/rows", "ctrflow/one"], ["ctrflow/one_row"], name="ctrflow/Equal"),
        helper.make_node("If", ["ctrflow/one_row"], [o.name for o in bg.output], name="ctrflow/If",
                         then_branch=then_graph, else_branch=else_graph),
    ]
    consts = [numpy_helper.from_array(np.array(0, np.int64), "ctrflow/zero"),
              numpy_helper.from_array(np.array(1, np.int64), "ctrflow/one")]
    graph = helper.make_graph(nodes, bg.name, list(bg.input), list(bg.output), list(bg.initializer) + consts)
    joined = helper.make_model(graph, opset_imports=list(batch.opset_import), producer_name=batch.producer_name,
                               producer_version=batch.producer_version)
    joined.ir_version = batch.ir_version
    onnx.checker.check_model(joined)
    return joined


def _add_metadata(path: Path, props: dict[str, str]) -> None:
    """Store ``props`` in the ONNX file's ``metadata_props`` (and run the ONNX checker)."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _torch_probabilities(model: nn.Module, categorical: np.ndarray, dense: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(categorical), torch.from_numpy(dense)).float()).numpy()


def _smoke_inputs(feature_map: FeatureMap) -> tuple[np.ndarray, np.ndarray]:
    """Three rows: every field at OOV, at missing (or 0 when the vocabulary is that small), at its last id."""
    sizes = np.asarray(feature_map.vocab_sizes, dtype=np.int64)
    cat = np.stack([np.zeros_like(sizes), np.minimum(1, sizes - 1), sizes - 1]).astype(np.int64)
    n_dense = len(feature_map.dense_fields)
    dense = np.asarray([[0.0] * n_dense, [1.0] * n_dense, [-2.5] * n_dense], dtype=np.float32).reshape(3, n_dense)
    return cat.reshape(3, len(sizes)), dense


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    processed_dir: str | Path | None = None,
    params: Params | None = None,
    opset: int = OPSET,
) -> Path:
    """Export checkpoint ``model_dir`` into the self-contained directory ``out_dir``; return it.

    The encodings come from :func:`~components.serve.predict.resolve_processed_dir` (explicit
    ``processed_dir``, else ``model_dir`` itself when self-contained, else
    ``params.preprocess.out_dir``); the checkpoint must have been trained on that feature map
    (ValueError otherwise). Raises RuntimeError when onnxruntime and PyTorch disagree by more than
    :data:`SMOKE_TOLERANCE` on the smoke batch. Contents: see the module docstring.

    ``params.inference`` (default :class:`InferenceParams()`): with ``fold_batch_norm`` the graph is
    exported from :func:`~components.serve.optimize.fold_batch_norm`'s model (no BatchNormalization
    node), while the smoke check compares it with the unfolded checkpoint.
    """
    import onnx
    import onnxruntime

    model_dir = resolve_model_dir(model_dir)
    source = resolve_processed_dir(model_dir, processed_dir, params)
    out_dir = Path(out_dir)
    if out_dir.resolve() in (model_dir.resolve(), source.resolve()):
        raise ValueError(f"{out_dir}: export into a new directory, not the checkpoint or processed dir itself")
    encoder = load_encoder(source)  # checks the vocabularies against the feature map
    fmap = encoder.feature_map
    model, meta = load_model(model_dir, fmap)
    settings = params.inference if params is not None else InferenceParams()
    graph_model = fold_batch_norm(model) if settings.fold_batch_norm else model
    folded = count_batch_norms(model) - count_batch_norms(graph_model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name in (meta["weights_file"], MODEL_META):
            shutil.copyfile(model_dir / name, tmp / name)
        shutil.copyfile(source / FEATURE_MAP_FILE, tmp / FEATURE_MAP_FILE)
        (tmp / VOCAB_DIR).mkdir()
        for name, vocab in encoder.vocabularies.items():
            if isinstance(vocab, HashedField):  # hashed: no vocabulary file, the feature map says how
                continue
            shutil.copyfile(source / VOCAB_DIR / f"{name}.parquet", tmp / VOCAB_DIR / f"{name}.parquet")
        fm_hash = feature_map_hash(fmap)
        export_onnx(graph_model, fmap, tmp / ONNX_FILE, opset=opset)
        _add_metadata(tmp / ONNX_FILE, {
            "ctrflow.model": meta["model"],
            "ctrflow.feature_map_hash": fm_hash,
            "ctrflow.categorical_fields": json.dumps(encoder.categorical_names),
            "ctrflow.dense_fields": json.dumps(encoder.dense_names),
        })  # fmt: skip
        cat, dense = _smoke_inputs(fmap)
        session = onnx_session(tmp, settings)
        diff = max(float(np.max(np.abs(onnx_probabilities(session, c, x) - _torch_probabilities(model, c, x))))
                   for c, x in ((cat, dense), (cat[:1], dense[:1])))  # the batch and the one-row graph
        if not diff <= SMOKE_TOLERANCE:
            raise RuntimeError(f"{model_dir}: ONNX and PyTorch probabilities differ by {diff:.3g} on the smoke batch")
        info = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "model": meta["model"],
            "onnx_file": ONNX_FILE,
            "opset": opset,
            "exporter": "torch.onnx.export(dynamo=False)",
            "inputs": {
                "categorical": {"dtype": "int64", "shape": ["batch", len(encoder.categorical_names)],
                                "fields": encoder.categorical_names},
                "dense": {"dtype": "float32", "shape": ["batch", len(encoder.dense_names)],
                          "fields": encoder.dense_names},
            },
            "outputs": {"logit": {"dtype": "float32", "shape": ["batch"]},
                        "probability": {"dtype": "float32", "shape": ["batch"]}},
            "feature_map_hash": fm_hash,
            "weights_sha256": meta["weights_sha256"],
            "source_model_dir": str(model_dir),
            "source_processed_dir": str(source),
            "smoke_max_abs_diff": diff,
            "batch_norm_folded": folded,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__},
        }
        (tmp / EXPORT_META).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def verify_onnx(
    export_dir: str | Path,
    processed_dir: str | Path,
    split: str = "test",
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> float:
    """Max |Δ| between onnxruntime's and PyTorch's probabilities over ``split`` of ``processed_dir``.

    Both run the export in ``export_dir`` (``model.onnx`` and its copied checkpoint); the checkpoint
    must belong to ``processed_dir``'s feature map (ValueError otherwise, also for a missing or
    empty split). The split is streamed (``batch_rows`` rows read at a time) and both runtimes are
    called on blocks of ``inference.score_rows``' default as in serving, so memory stays bounded by
    the block whatever the split's size (in memory, a Kaggle-size promotion peaked at 4.6 GB).
    """
    processed_dir = Path(processed_dir)
    fmap = load_feature_map(processed_dir)
    if split not in fmap.splits or not fmap.splits[split].get("rows", 0):
        raise ValueError(f"{processed_dir / FEATURE_MAP_FILE}: split {split!r} is absent or empty")
    model, _ = load_model(resolve_model_dir(export_dir), fmap)
    session = onnx_session(export_dir)
    loader = BatchLoader(processed_dir / fmap.splits[split]["path"], fmap, batch_rows, shuffle=False,
                         in_memory=False)
    block = InferenceParams().score_rows
    worst = 0.0
    for batch in loader:
        cat, dense = batch.categorical.numpy(), batch.dense.numpy()
        ort = in_row_blocks(partial(onnx_probabilities, session), cat, dense, block)
        eager = in_row_blocks(partial(_torch_probabilities, model), cat, dense, block)
        worst = max(worst, float(np.abs(ort - eager).max()))
    return worst
