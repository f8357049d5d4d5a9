"""What a run reports besides its loss: parameters stored vs the dense
equivalent, FLOPs normalised by the dense model (as in Liu et al.'s Tables
2-3), weight and optimizer memory, peak memory."""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn

from ..storage import SparseWeight


def _unique_parameters(module: nn.Module):
    return list({id(p): p for p in module.parameters()}.values())


def parameter_counts(model: nn.Module) -> dict:
    """``stored``: numbers actually kept (nonzeros of sparse weights + dense
    parameters, a tied weight once); ``dense``: the same model with every
    sparse weight dense; ``recurrent_stored``/``recurrent_dense``: the same
    for the recurrent stack alone (``model.rnn``)."""
    def counts(module):
        stored = sum(p.numel() for p in _unique_parameters(module))
        dense = stored + sum(w.shape.numel() - w.nnz for w in module.modules() if isinstance(w, SparseWeight))
        return stored, dense
    stored, dense = counts(model)
    out = {"stored": stored, "dense": dense}
    if hasattr(model, "rnn"):
        out["recurrent_stored"], out["recurrent_dense"] = counts(model.rnn)
    return out


def flops_ratio(model: nn.Module) -> float:
    """Multiply-adds per token of the recurrent stack and the output layer
    relative to the same model dense. Every weight is used once per token in
    the forward and twice in the backward, so the ratio holds for inference
    and (averaged over training when the density changes) for training. The
    embedding is a lookup and costs no multiply-adds."""
    layers = [m for name, m in model.named_children() if name != "encoder"]
    stored = sum(parameter_counts(m)["stored"] for m in layers)
    dense = sum(parameter_counts(m)["dense"] for m in layers)
    return stored / dense if dense else 1.0


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Bytes of the weights (parameters and index buffers) and of the
    optimizer's state tensors."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    opt = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            opt += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return {"weights": weights, "optimizer": opt}


def peak_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Peak resident memory of this process (CPU) or peak allocated memory (CUDA)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table, columns padded so it also reads as plain text."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])
