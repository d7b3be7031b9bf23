"""Model size: parameters split into embedding vs dense, and the size of the weights file.

Parameter counts come from :func:`components.train.checkpoint.count_parameters` (the models expose
``embedding_parameters()`` / ``dense_parameters()``, base.py). For a plain ``nn.Module`` without that
split, the parameters of its ``nn.Embedding``/``nn.EmbeddingBag`` submodules count as embedding.
Parameters are counted once even when shared; buffers are not parameters and are not counted.

File size: the byte size of a safetensors file on disk when a path is given; otherwise the exact
size the model's ``state_dict`` would have as a safetensors file, obtained by serialising it in
memory with ``safetensors.torch.save`` (the same tensors ``checkpoint.save_model`` writes; this
briefly holds one extra copy of the weights in RAM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save
from torch import nn

from components.train.checkpoint import count_parameters


@dataclass(frozen=True)
class SizeReport:
    """Parameter counts (total = embedding + dense) and weights-file bytes (``file_source``:
    ``"file"`` when read from disk, ``"serialised"`` when measured in memory)."""

    total_parameters: int
    embedding_parameters: int
    dense_parameters: int
    file_bytes: int
    file_source: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def parameter_split(model: nn.Module) -> dict[str, int]:
    """``{"total", "embedding", "dense"}`` parameter counts of ``model``."""
    counts = count_parameters(model)
    if "embedding" in counts:
        return {k: counts[k] for k in ("total", "embedding", "dense")}
    seen: set[int] = set()
    embedding = 0
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    embedding += p.numel()
    return {"total": counts["total"], "embedding": embedding, "dense": counts["total"] - embedding}


def model_file_bytes(model: nn.Module, path: str | Path | None = None) -> int:
    """Bytes of the safetensors file at ``path``, else of ``model.state_dict()`` serialised as one."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found")
        return path.stat().st_size
    module = getattr(model, "module", model)  # DDP / DataParallel wrapper
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    return len(save(tensors))


def model_size(model: nn.Module, path: str | Path | None = None) -> SizeReport:
    """Parameter split and weights-file size of ``model`` (see the module doc for both)."""
    split = parameter_split(model)
    return SizeReport(
        total_parameters=split["total"],
        embedding_parameters=split["embedding"],
        dense_parameters=split["dense"],
        file_bytes=model_file_bytes(model, path),
        file_source="file" if path is not None else "serialised",
    )
