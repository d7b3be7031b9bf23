"""An exported ``model.onnx`` in onnxruntime, as ctrflow scores with it (predict, export checks,
benchmarks).

:func:`onnx_session` returns an :class:`OnnxScorer`: a session on ``inference.threads`` intra-op
threads for calls of several rows and, when that is more than ``inference.onnx_one_row_threads``
(default 1), a second session on that many threads for single rows (online scoring), opened on
the first one. Both sessions run the same graph on one copy of the embedding tables (arrays read
from the file, ``SessionOptions.add_initializer``).

Why a one-row session: onnxruntime hands every batched matmul and grouped convolution to its
intra-op threads whatever its size (MLAS splits the batch or group count over them), so with two
threads each of a one-row call's few-microsecond nodes pays a hand-off. Measured on 2 cores with
idle threads asleep: the DCNv2 teacher's one-row call 0.086 ms on one thread, 0.100–0.110 ms on two;
the DAGFM student's 0.037 vs 0.050 ms. A batch of rows gains from both threads (the teacher
1.8×, the student 1.5–1.8× at 1,024 rows).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from components.config import InferenceParams

ONNX_FILE = "model.onnx"
ORT_LEVELS = {  # inference.onnx_graph_optimization → onnxruntime.GraphOptimizationLevel member
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disabled": "ORT_DISABLE_ALL",
}
SHARED_MIN_BYTES = 1 << 20  # initializers both sessions take from one array: gathered tables this large


def onnx_session_options(settings: InferenceParams | None = None, *, optimized_model_path: str | Path | None = None,
                         threads: int | None = None):
    """onnxruntime ``SessionOptions`` per ``settings`` (default :class:`InferenceParams()`):
    graph optimisation level ``inference.onnx_graph_optimization`` (default ``all`` =
    ``ORT_ENABLE_ALL``), intra-op threads ``threads`` or else ``inference.threads`` (0:
    onnxruntime's default, all cores); idle threads spin per ``inference.onnx_spinning``.
    ``optimized_model_path``: also save the optimised graph there (inspection, tests)."""
    import onnxruntime as ort

    settings = settings or InferenceParams()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[settings.onnx_graph_optimization])
    options.intra_op_num_threads = settings.threads if threads is None else threads
    # inference.onnx_spinning false: idle intra-op threads sleep instead of spinning, as between
    # model calls Polars parses and encodes on the same cores (predict on 300k rows, DAGFM-inner
    # export, 2 cores: 7.4-8.1 s vs 10.6-13.2 s); true: onnxruntime's default, they spin; within_call:
    # they spin while a call runs (no wake-up between its nodes) and stop when it returns
    spinning = settings.onnx_spinning
    options.add_session_config_entry("session.intra_op.allow_spinning", "0" if spinning is False else "1")
    if spinning == "within_call":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return options


class OnnxScorer:
    """The sessions of one exported graph (module doc). :meth:`run` sends a single row to the
    one-row session, any other call to :attr:`batch`; everything else (inputs, options, profiling)
    is the batch session's. The one-row session opens on the first single-row call (a process that
    scores blocks of rows, ``ctrflow predict``, never pays for it): the embedding tables are then
    read once into arrays both sessions use, and the batch session is reopened on them."""

    def __init__(self, path: str | Path, settings: InferenceParams, *,
                 optimized_model_path: str | Path | None = None) -> None:
        self.path, self.settings = Path(path), settings
        threads = settings.threads or len(os.sched_getaffinity(0))
        self.one_row_threads = settings.onnx_one_row_threads if 0 < settings.onnx_one_row_threads < threads else 0
        self.batch = self._open(settings.threads, {}, optimized_model_path)
        self.one_row = None
        self.shared: dict = {}  # name → (array, OrtValue): the arrays must outlive the sessions

    def run(self, output_names, feeds: dict, run_options=None):
        if self.one_row_threads and len(next(iter(feeds.values()))) == 1:
            if self.one_row is None:
                self.open_one_row()
            return self.one_row.run(output_names, feeds, run_options)
        return self.batch.run(output_names, feeds, run_options)

    def open_one_row(self) -> None:
        """Open the one-row session (and reopen the batch one) on shared embedding tables."""
        self.shared = _gather_tables(self.path)
        self.batch = self._open(self.settings.threads, self.shared)
        self.one_row = self._open(self.one_row_threads, self.shared)

    def _open(self, threads: int, shared: dict, optimized_model_path=None):
        import onnxruntime as ort

        options = onnx_session_options(self.settings, threads=threads, optimized_model_path=optimized_model_path)
        for name, (_, value) in shared.items():
            options.add_initializer(name, value)
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __getattr__(self, name: str):
        if name == "batch":  # not opened (yet): no recursion through this method
            raise AttributeError(name)
        return getattr(self.batch, name)


def open_onnx(path: str | Path, settings: InferenceParams | None = None, *,
              optimized_model_path: str | Path | None = None) -> OnnxScorer:
    """An :class:`OnnxScorer` of the ONNX file ``path`` on the CPU (``settings``: params.yaml
    ``inference:``)."""
    return OnnxScorer(path, settings or InferenceParams(), optimized_model_path=optimized_model_path)


def _gather_tables(path: str | Path) -> dict:
    """The graph's large initializers read only as the data of ``Gather`` / ``GatherElements`` nodes
    (the embedding and first-order tables), as numpy arrays and onnxruntime values over them:
    name → (array, OrtValue)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    gathered, other = set(), set()

    def walk(graph) -> None:
        for node in graph.node:
            for k, name in enumerate(node.input):
                (gathered if node.op_type in ("Gather", "GatherElements") and k == 0 else other).add(name)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    walk(sub)

    walk(model.graph)
    shared = {}
    for tensor in model.graph.initializer:
        if tensor.name in gathered and tensor.name not in other and len(tensor.raw_data) >= SHARED_MIN_BYTES:
            array = numpy_helper.to_array(tensor)
            shared[tensor.name] = (array, ort.OrtValue.ortvalue_from_numpy(array))
    return shared


def onnx_session(export_dir: str | Path, settings: InferenceParams | None = None, *,
                 optimized_model_path: str | Path | None = None) -> OnnxScorer:
    """:func:`open_onnx` of ``<export_dir>/model.onnx``."""
    path = Path(export_dir) / ONNX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ONNX model here; export the checkpoint first (ctrflow export)")
    return open_onnx(path, settings, optimized_model_path=optimized_model_path)


def onnx_probabilities(session, categorical: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """float32 [B] probabilities from an exported graph for ids [B, F_cat] and dense [B, F_dense]."""
    feeds = {"categorical": categorical.astype(np.int64, copy=False), "dense": dense.astype(np.float32, copy=False)}
    names = {i.name for i in session.get_inputs()}  # the exporter drops an input the graph never reads
    (probs,) = session.run(["probability"], {k: v for k, v in feeds.items() if k in names})
    return np.asarray(probs, dtype=np.float32).reshape(-1)
