"""Score a raw log end to end: one click probability per input line, in input order.

:func:`predict_file` reads a raw log in any supported format (labelled or not; labels are
ignored), encodes it with the saved vocabularies (:mod:`.encode`), runs a trained checkpoint
(teacher or student: anything :func:`~components.train.checkpoint.load_model` rebuilds) and writes
``sigmoid(logit)`` one per line.

Where the encodings come from (:func:`resolve_processed_dir`), first match wins:

1. ``processed_dir`` when given;
2. the model directory itself when it holds ``feature_map.json`` and ``vocab/`` — what
   :func:`~components.serve.export.export_model` writes, so an export directory is self-contained
   and keeps working after ``data/processed`` is rebuilt or deleted (the recommended way to serve);
3. ``params.preprocess.out_dir`` when ``params`` is given (a training checkpoint next to the
   pipeline's processed data).

The checkpoint records the hash of the feature map it was trained on, so a model scored with the
encodings of another preprocessing run is refused (ValueError) instead of reading wrong ids.

Reading: the format defaults to the feature map's; the reader gets ``params`` (schema section,
validation limits) with the MovieLens rating settings taken from the feature map and
``drop_neutral_rating`` off, so every input line gets a probability.

Scoring: :class:`Scorer` with params.yaml ``inference:`` (``params.inference``, defaults when
``params`` is None) in the runtime :func:`resolve_runtime` picks (``auto``: ONNX Runtime for an
export or registry version, which holds ``model.onnx``; PyTorch for a bare checkpoint). The PyTorch
runtime runs
:func:`~components.serve.optimize.prepare_for_inference`'s model (BatchNorm folded by default), the
ONNX runtime the export's graph at the configured onnxruntime optimisation level (torch is then
never imported: the checkpoint's ``model.json`` alone is checked against the feature map,
:mod:`components.train.model_meta`); both with
``inference.threads`` threads, ``inference.score_rows`` rows per model call (:func:`in_row_blocks`;
default 1,024: a block's activations stay in the CPU cache, DAGFM's forward measured 2–4× faster in
small calls than in one 65,536-row call on 2 cores, and it bounds the model's scratch memory: peak
RSS no longer grows with ``batch_rows`` through the model).

Output: text, one probability per line, written as the shortest decimal that round-trips the
float32 value (``float32(text) == probability`` exactly). A file is written to a temporary name
and renamed at the end; ``"-"`` writes to standard output batch by batch.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from components.config import InferenceParams, Params
from components.data.feature_map import FeatureMap
from components.data.formats import SourceTable, read_source
from components.data.preprocess import FEATURE_MAP_FILE
from components.data.vocab import VOCAB_DIR
from components.serve.encode import (
    DEFAULT_BATCH_ROWS,
    EncodedBatch,
    RawEncoder,
    iter_encoded,
    load_encoder,
)
from components.train.model_meta import MODEL_META, check_feature_map

Runtime = Literal["auto", "torch", "onnx"]
STDOUT = "-"


def resolve_runtime(model_dir: str | Path, runtime: Runtime = "auto") -> Literal["torch", "onnx"]:
    """``auto``: ONNX Runtime when ``model_dir`` holds an exported ``model.onnx`` (an export, a
    registry version), else PyTorch. On 2 cores ORT scored the DAGFM student 2.3× faster than
    PyTorch eager in ``predict`` (benchmarks/results/predict_throughput.md); both give the same
    probabilities to float rounding (the export checks it: ``verify_onnx``)."""
    if runtime != "auto":
        return runtime
    from components.serve.onnx_runtime import ONNX_FILE

    return "onnx" if (Path(model_dir) / ONNX_FILE).is_file() else "torch"


def resolve_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` if it holds a checkpoint (``model.json``); else FileNotFoundError naming the
    subdirectories that do (e.g. a KD-DAGFM run's ``distill/`` and ``finetune/``)."""
    model_dir = Path(model_dir)
    if (model_dir / MODEL_META).is_file():
        return model_dir
    below = sorted(str(p.parent) for p in model_dir.glob(f"*/{MODEL_META}")) if model_dir.is_dir() else []
    hint = f"; checkpoints below it: {', '.join(below)}" if below else ""
    raise FileNotFoundError(f"{model_dir / MODEL_META}: no model checkpoint here{hint}")


def is_self_contained(model_dir: str | Path) -> bool:
    """True when ``model_dir`` carries its own ``feature_map.json`` and ``vocab/`` (an export)."""
    model_dir = Path(model_dir)
    return (model_dir / FEATURE_MAP_FILE).is_file() and (model_dir / VOCAB_DIR).is_dir()


def resolve_processed_dir(
    model_dir: str | Path, processed_dir: str | Path | None = None, params: Params | None = None
) -> Path:
    """The directory whose feature map and vocabularies encode inputs for ``model_dir`` (module
    docstring: explicit > self-contained model dir > ``params.preprocess.out_dir``)."""
    if processed_dir is not None:
        return Path(processed_dir)
    if is_self_contained(model_dir):
        return Path(model_dir)
    if params is not None:
        return Path(params.preprocess.out_dir)
    raise FileNotFoundError(
        f"{model_dir}: no {FEATURE_MAP_FILE} + {VOCAB_DIR}/ beside the model; pass the processed "
        "directory it was trained on (or params), or export the model first (ctrflow export)"
    )


def reader_params(feature_map: FeatureMap, params: Params | None = None) -> Params:
    """``params`` (default ``Params()``) with the feature map's MovieLens rating threshold and
    ``drop_neutral_rating`` off: scoring keeps every input line."""
    params = params or Params()
    pre = params.preprocess.model_copy(
        update={
            "rating_threshold": feature_map.params.get("rating_threshold", params.preprocess.rating_threshold),
            "drop_neutral_rating": False,
        }
    )
    return params.model_copy(update={"preprocess": pre})


def read_raw(
    raw_path: str | Path,
    encoder: RawEncoder,
    *,
    fmt: str | None = None,
    params: Params | None = None,
    work_dir: Path | None = None,
) -> SourceTable:
    """Open ``raw_path`` (format ``fmt``, default the feature map's) as an unlabelled-or-labelled
    :class:`SourceTable` fit for ``encoder`` (ValueError when its fields differ)."""
    fmap = encoder.feature_map
    table = read_source(
        fmt or fmap.format,
        raw_path,
        params=reader_params(fmap, params),
        work_dir=work_dir,
        require_label=False,
    )
    encoder.check_source(table)
    return table


class Scorer:
    """A loaded model + its encoder: :meth:`probabilities` of an :class:`EncodedBatch`.

    ``runtime`` as :func:`resolve_runtime` resolves it. ``"torch"`` runs the safetensors checkpoint
    in its inference form
    (:func:`~components.serve.optimize.prepare_for_inference` per ``settings``: BatchNorm folded by
    default, optionally int8 / ``torch.compile``); ``"onnx"`` runs ``model.onnx`` of an export
    directory with onnxruntime at ``settings.onnx_graph_optimization`` (see :mod:`.export`). Both
    use ``settings.threads`` intra-op threads (0: all cores; for torch this sets the process-wide
    ``torch.set_num_threads``) and call the model on at most ``settings.score_rows`` rows at a time.
    """

    def __init__(
        self, model_dir: Path, encoder: RawEncoder, runtime: Runtime = "auto",
        settings: InferenceParams | None = None,
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.runtime = runtime = resolve_runtime(model_dir, runtime)
        self.settings = settings or InferenceParams()
        self.model = self.session = None
        if runtime == "onnx":  # torch is never imported: the checkpoint's model.json is checked alone
            from components.serve.onnx_runtime import onnx_session

            self.meta = check_feature_map(model_dir, encoder.feature_map)
            self.session = onnx_session(model_dir, self.settings)
        elif runtime == "torch":
            from components.serve.optimize import apply_threads, prepare_for_inference
            from components.train.checkpoint import load_model

            self.model, self.meta = load_model(model_dir, encoder.feature_map)
            apply_threads(self.settings)
            self.model = prepare_for_inference(self.model, self.settings)
        else:
            raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")

    def probabilities(self, batch: EncodedBatch) -> np.ndarray:
        """float32 [B] click probabilities, ``sigmoid(logit)``, in batch order."""
        return in_row_blocks(self._score, batch.categorical, batch.dense, self.settings.score_rows)

    def _score(self, categorical: np.ndarray, dense: np.ndarray) -> np.ndarray:
        if self.session is not None:
            from components.serve.onnx_runtime import onnx_probabilities

            return onnx_probabilities(self.session, categorical, dense)
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(categorical), torch.from_numpy(dense))
            return torch.sigmoid(logits.float()).numpy()


def in_row_blocks(
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    categorical: np.ndarray, dense: np.ndarray, rows: int,
) -> np.ndarray:
    """``score(categorical, dense)`` called on consecutive blocks of at most ``rows`` rows, the
    float32 results concatenated in order (what a served model is called with: each block's
    activations stay in the CPU cache; ONNX Runtime runs a graph one op at a time over the whole
    input, so it gains the most)."""
    n = len(categorical)
    if n <= rows:
        return score(categorical, dense)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        out[start:stop] = score(categorical[start:stop], dense[start:stop])
    return out


def load_scorer(
    model_dir: str | Path,
    *,
    processed_dir: str | Path | None = None,
    params: Params | None = None,
    runtime: Runtime = "auto",
) -> Scorer:
    """The :class:`Scorer` of checkpoint ``model_dir`` with the encodings found by
    :func:`resolve_processed_dir` (ValueError when the checkpoint was trained on another map)."""
    model_dir = resolve_model_dir(model_dir)
    encoder = load_encoder(resolve_processed_dir(model_dir, processed_dir, params))
    return Scorer(model_dir, encoder, runtime, params.inference if params is not None else None)


def iter_probabilities(
    model_dir: str | Path,
    raw_path: str | Path,
    *,
    fmt: str | None = None,
    processed_dir: str | Path | None = None,
    params: Params | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    runtime: Runtime = "auto",
) -> Iterator[np.ndarray]:
    """float32 probabilities of every row of ``raw_path``, one array per batch, in input order.

    The whole input is read and checked before the first batch (bad input raises
    ``DataFormatError`` naming file, line and column before anything is yielded).
    """
    scorer = load_scorer(model_dir, processed_dir=processed_dir, params=params, runtime=runtime)
    with tempfile.TemporaryDirectory(prefix="ctrflow-predict-") as work:
        table = read_raw(raw_path, scorer.encoder, fmt=fmt, params=params, work_dir=Path(work))
        for batch in iter_encoded(table, scorer.encoder, work, batch_rows=batch_rows):
            yield scorer.probabilities(batch)


def _csv_bytes(probabilities: np.ndarray) -> bytes:
    """One value a line, the shortest text that round-trips the float32 (Polars' writer)."""
    buf = io.BytesIO()
    pl.DataFrame({"p": probabilities.astype(np.float32, copy=False)}).write_csv(buf, include_header=False)
    return buf.getvalue()


def predict_file(
    model_dir: str | Path,
    raw_path: str | Path,
    out_path: str | Path,
    *,
    fmt: str | None = None,
    processed_dir: str | Path | None = None,
    params: Params | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    runtime: Runtime = "auto",
) -> int:
    """Write one probability per row of ``raw_path`` to ``out_path`` (``"-"``: stdout); return the
    number of rows scored.

    See the module docstring for how the encodings are found, the reader settings and the output
    format. A file output is replaced atomically only when every row was scored.
    """
    batches = iter_probabilities(
        model_dir, raw_path, fmt=fmt, processed_dir=processed_dir, params=params,
        batch_rows=batch_rows, runtime=runtime,
    )  # fmt: skip
    rows = 0
    if str(out_path) == STDOUT:
        sys.stdout.flush()  # text already buffered goes first
        binary = getattr(sys.stdout, "buffer", None)
        for probs in batches:
            text = _csv_bytes(probs)
            if binary is not None:
                binary.write(text)
            else:
                sys.stdout.write(text.decode())
            rows += len(probs)
        sys.stdout.flush()
        return rows
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            for probs in batches:
                fh.write(_csv_bytes(probs))
                rows += len(probs)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows
