"""Data-parallel training over several processes (``torchrun``): the ranks,
how data is split among them, the collectives the training loop needs, and
the DistributedDataParallel wrapper around a model whose sparse weights can
change size.

N ranks with a per-rank share of a global batch B reproduce one process with
batch B: every rank holds the same model, computes the gradient of its share
of the batch's summed loss scaled by N / (items in the global batch), and
DDP averages the gradients (of every trainable parameter: for a sparse
weight that is its ``values``, nnz numbers, never a dense matrix). The
topology updates of sparse_kernels.dst then see the same values on every
rank and choose the same positions (their random choices come from one
seeded generator); :func:`check_topology` proves it when asked.

Outside a torch.distributed job every function here is the single-process
identity (one rank, nothing to reduce).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..storage import SparseWeight


# DDP's switch for the per-forward buffer broadcast: forward_sync_buffers in
# the torch this is pinned to, broadcast_buffers in older ones (torch 2.11).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


class DistributedError(RuntimeError):
    """A data-parallel job that cannot start or cannot go on (the message says why)."""


class TopologyMismatch(DistributedError):
    """The ranks of a data-parallel job hold different sparse patterns."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Ranks:
    """This process's rank in the default process group (rank 0 of 1 when
    none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def launched_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def init_from_env(device: str = "cpu") -> tuple[bool, str]:
    """Join the job torchrun launched (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): gloo for CPU training, nccl for CUDA, where
    each rank takes the GPU of its LOCAL_RANK ("cuda" becomes
    "cuda:<LOCAL_RANK>"). Returns (whether this call created the process
    group, the device this rank trains on). Does nothing for one process or
    when a process group already exists."""
    if launched_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False, device
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set: launch with torchrun")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise DistributedError(f"device {device!r} asked for but CUDA is not available")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.device(device).index is None:
            device = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True, device


def shard(n: int, ranks: Ranks) -> slice:
    """This rank's contiguous part of ``n`` items: sizes differ by at most
    one, the first ``n % world_size`` ranks take the larger ones; a rank may
    get none when n < world_size."""
    base, extra = divmod(n, ranks.world_size)
    start = ranks.rank * base + min(ranks.rank, extra)
    return slice(start, start + base + (ranks.rank < extra))


def _collective_device() -> torch.device:
    # nccl reduces CUDA tensors only; gloo takes CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values, op: str = "sum") -> list[float]:
    """Sum (or max) numbers over the ranks, in float64; every rank gets the
    same result."""
    values = [float(v) for v in values]
    if not current().distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t.tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any."""
    return bool(all_reduce([flag], op="max")[0])


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (pickled)."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def all_gather_dim(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` (same shapes) along ``dim``, in
    rank order."""
    if not current().distributed:
        return tensor
    tensor = tensor.contiguous()
    # gloo gathers CPU tensors; nccl CUDA ones.
    on = _collective_device()
    parts = [torch.empty_like(tensor, device=on) for _ in range(current().world_size)]
    dist.all_gather(parts, tensor.to(on))
    return torch.cat(parts, dim).to(tensor.device)


def _parameter_shapes(model: nn.Module) -> tuple:
    return tuple(tuple(p.shape) for p in model.parameters())


class DataParallel:
    """DistributedDataParallel around ``model`` that follows its sparse
    weights' size changes. A topology update that changes a weight's nnz
    (gradual pruning, SNFS's redistribution) gives its ``values`` a new
    gradient accumulator, which the DDP reducer built before no longer hooks:
    the gradient would silently stop being averaged. :meth:`refresh` builds a
    new wrapper whenever a parameter's shape changed (DDP then also checks
    that every rank holds the same shapes). Outside a distributed job
    ``module`` is ``model`` itself."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.module = model
        self._shapes = None
        if current().distributed:
            self._wrap(init_sync=True)

    def _wrap(self, init_sync: bool) -> None:
        device = next(self.model.parameters()).device
        # forward_sync_buffers=False: a CSR weight's pattern (row_ptr,
        # col_idx) is a buffer; ranks keep theirs (identical by construction,
        # checked by check_topology) instead of receiving rank 0's each step.
        # init_sync: rank 0's initial model goes to every rank once.
        self.module = None  # release the old reducer first
        self.module = nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device] if device.type == "cuda" else None, init_sync=init_sync,
            **_NO_BUFFER_SYNC)
        self._shapes = _parameter_shapes(self.model)

    def refresh(self) -> bool:
        """Re-wrap after a topology update if a parameter changed shape;
        True when it did."""
        if not current().distributed or _parameter_shapes(self.model) == self._shapes:
            return False
        self._wrap(init_sync=False)
        return True


def gradient_bytes(model: nn.Module) -> dict:
    """Bytes of the gradients a data-parallel step all-reduces: every
    trainable parameter once (a tied weight once). ``sparse``: the part from
    sparse weights (their values: nnz numbers); ``sparse_dense``: what those
    weights would send dense."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}
    total = sum(p.numel() * p.element_size() for p in params.values())
    sparse = sparse_dense = 0
    for module in model.modules():  # CSR and block-sparse (BSR) weights alike
        if isinstance(module, SparseWeight) and id(module.values) in params:
            size = module.values.element_size()
            sparse += module.values.numel() * size
            sparse_dense += module.shape.numel() * size
    return {"total": total, "sparse": sparse, "sparse_dense": sparse_dense}


def check_topology(sparsity, step: int) -> None:
    """Raise TopologyMismatch unless every rank holds the same sparse
    patterns (the scheduler's pattern digest, gathered from every rank)."""
    if not current().distributed:
        return
    mine = sparsity.pattern_checksum()
    everyone = [None] * current().world_size
    dist.all_gather_object(everyone, mine)
    if any(c != everyone[0] for c in everyone):
        listed = ", ".join(f"rank {r}: {c[:12]}" for r, c in enumerate(everyone))
        raise TopologyMismatch(f"sparse patterns differ across ranks after the topology update of step {step} "
                               f"({listed}); the ranks no longer train the same model")
