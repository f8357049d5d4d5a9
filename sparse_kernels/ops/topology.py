"""Topology updates (dynamic sparse training): magnitude prune, random and
gradient regrow, CSR rebuild. Checks and fake kernels."""

from __future__ import annotations

import torch

from .. import bsr as bsr_format
from ..csr import INDEX_DTYPE, row_indices, validate_csr
from ._checks import _INT32_MAX, _check_float, _check_index_like, _check_same, _check_values, _ops

# Topology updates (dynamic sparse training). Not differentiable: they act
# between optimizer steps. Group descriptors are int64 boundaries of
# contiguous ranges: slots for the prune ops, rows for the regrow ops.
# They run on the device that holds the pattern: CPU kernels, and for CUDA
# the device-generic implementation (csrc/include/sparse_kernels/topology_generic.h);
# only a build without CUDA kernels moves a CUDA pattern to the CPU and back.

def _has_device_kernel(name: str, device: torch.device) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device.type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_kernels::{name}", key)


def _topology_op(name: str, device: torch.device, *args):
    """torch.ops.sparse_kernels.<name>(*args) on ``device``, or, where the
    build has no kernel for it, on the CPU with the results moved back."""
    op = getattr(_ops, name)
    if _has_device_kernel(name, device):
        return op(*args)
    out = op(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args))
    return tuple(t.to(device) for t in out) if isinstance(out, tuple) else out.to(device)


def _check_pattern(row_ptr, col_idx, n_cols: int | None = None, names=("row_ptr", "col_idx")) -> None:
    """A sparsity pattern, in full: the topology kernels walk it row by row.
    ``n_cols`` None: the column count is not known (any column >= 0 is in range)."""
    ptr_name, idx_name = names
    if not isinstance(row_ptr, torch.Tensor):
        raise TypeError(f"{ptr_name} must be a torch.Tensor, got {type(row_ptr).__name__}")
    _check_index_like(ptr_name, row_ptr, row_ptr)
    _check_index_like(idx_name, col_idx, row_ptr, ptr_name)
    if row_ptr.numel() < 1:
        raise ValueError(f"{ptr_name} must have rows + 1 >= 1 entries")
    validate_csr(row_ptr, col_idx, (row_ptr.numel() - 1, _INT32_MAX if n_cols is None else n_cols), names=names)


def _check_mask(name: str, mask, nnz: int, device) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    if mask.shape != (nnz,) or not mask.is_contiguous():
        raise ValueError(f"{name} must be contiguous with shape ({nnz},), got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} must be on {device}, got {mask.device}")


def _group_bounds(name: str, bounds, total: int, device) -> torch.Tensor:
    """int64 group boundaries from 0 to total; None = one group."""
    if bounds is None:
        return torch.tensor([0, total], dtype=torch.int64, device=device)
    bounds = torch.as_tensor(bounds, device=device)
    if bounds.dtype not in (torch.int32, torch.int64) or bounds.dim() != 1 or bounds.numel() < 1:
        raise ValueError(f"{name} must be a 1-D integer tensor of group boundaries")
    bounds = bounds.to(torch.int64).contiguous()
    if int(bounds[0]) != 0 or int(bounds[-1]) != total or bool((bounds.diff() < 0).any()):
        raise ValueError(f"{name} must be non-decreasing from 0 to {total}, got {bounds.tolist()}")
    return bounds


def _group_counts(name: str, counts, bounds: torch.Tensor, limit: torch.Tensor, what: str) -> torch.Tensor:
    counts = torch.as_tensor(counts, device=bounds.device)
    if counts.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        # as_tensor(..., dtype=int64) would truncate 0.5 to 0 without a word.
        raise TypeError(f"{name} must hold integers, got {counts.dtype}")
    counts = counts.to(torch.int64).reshape(-1).contiguous()
    if counts.numel() != bounds.numel() - 1:
        raise ValueError(f"{name} must have one entry per group ({bounds.numel() - 1}), got {counts.numel()}")
    bad = (counts < 0) | (counts > limit)
    if bool(bad.any()):
        g = int(bad.nonzero()[0])
        raise ValueError(f"{name}[{g}] = {int(counts[g])} must be in [0, {int(limit[g])}] ({what})")
    return counts


def magnitude_prune(values: torch.Tensor, drop_counts, group_ptr=None) -> torch.Tensor:
    """The keep mask (nnz, bool) after dropping, in each slot group (default:
    the whole tensor), the ``drop_counts`` stored values of smallest |w| (ties:
    the lower slot goes first). A row's or an LSTM gate's slots are a
    contiguous range, so ``group_ptr = row_ptr`` prunes per row."""
    _check_values(values, no_half="magnitude_prune")
    group_ptr = _group_bounds("group_ptr", group_ptr, values.numel(), values.device)
    drop_counts = _group_counts("drop_counts", drop_counts, group_ptr, group_ptr.diff(), "the size of its group")
    return _topology_op("magnitude_prune", values.device, values, group_ptr, drop_counts)


def signed_magnitude_prune(values: torch.Tensor, fraction: float, group_ptr=None) -> torch.Tensor:
    """SET's prune: drop round(fraction * n) of the smallest non-negative and
    round(fraction * n) of the largest negative values in each slot group."""
    _check_values(values, no_half="signed_magnitude_prune")
    if not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    group_ptr = _group_bounds("group_ptr", group_ptr, values.numel(), values.device)
    return _topology_op("signed_magnitude_prune", values.device, values, group_ptr, float(fraction))


def _free_per_group(row_ptr, occupied, n_cols: int, group_rows: torch.Tensor) -> torch.Tensor:
    taken_before = torch.zeros(occupied.numel() + 1, dtype=torch.int64, device=occupied.device)
    taken_before[1:] = occupied.cumsum(0)
    slot_bounds = row_ptr.long()[group_rows]
    taken = taken_before[slot_bounds].diff()
    return group_rows.diff() * n_cols - taken


def random_regrow(row_ptr: torch.Tensor, col_idx: torch.Tensor, occupied: torch.Tensor, n_cols: int,
                  grow_counts, seed: int, group_rows=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly ``grow_counts`` new positions per row group (default: the whole
    matrix), uniform among the unoccupied positions of its rows, no duplicates.
    ``occupied`` (nnz, bool) marks the stored slots to avoid: the kept ones, or
    all of them to forbid re-picking what was just pruned. Deterministic in
    ``seed`` on a given device type (the CPU kernel and the device one draw
    from different streams). Returns the new positions as CSR (grow_row_ptr,
    grow_col_idx)."""
    if not isinstance(n_cols, int) or not 0 <= n_cols <= _INT32_MAX:
        raise ValueError(f"n_cols must be an int in [0, 2**31 - 1], got {n_cols!r}")
    _check_pattern(row_ptr, col_idx, n_cols)
    _check_mask("occupied", occupied, col_idx.numel(), col_idx.device)
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    group_rows = _group_bounds("group_rows", group_rows, row_ptr.numel() - 1, row_ptr.device)
    free = _free_per_group(row_ptr, occupied, n_cols, group_rows)
    grow_counts = _group_counts("grow_counts", grow_counts, group_rows, free,
                                "the unoccupied positions of its rows")
    return _topology_op("random_regrow", row_ptr.device, row_ptr, col_idx, occupied, n_cols, group_rows,
                        grow_counts, seed)


def gradient_regrow(grad_output: torch.Tensor, input: torch.Tensor, row_ptr: torch.Tensor,
                    col_idx: torch.Tensor, occupied: torch.Tensor, k: int,
                    block_rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """RigL's regrow: the k unoccupied positions of largest |grad_output^T @ input|
    (grad_output (N, out), input (N, in): the dense weight gradient of
    y = input W^T), computed ``block_rows`` rows at a time with a running
    top-k so the dense gradient is never held. Returns CSR (grow_row_ptr,
    grow_col_idx)."""
    _check_float("grad_output", grad_output, no_half="gradient_regrow")
    _check_float("input", input, no_half="gradient_regrow")
    _check_same("input", input, "grad_output", grad_output)
    if grad_output.dim() != 2 or input.dim() != 2 or grad_output.shape[0] != input.shape[0]:
        raise ValueError(f"grad_output (N, out) and input (N, in) must be 2-D with equal N, got "
                         f"{tuple(grad_output.shape)} and {tuple(input.shape)}")
    _check_pattern(row_ptr, col_idx, input.shape[1])
    _check_mask("occupied", occupied, col_idx.numel(), col_idx.device)
    if grad_output.shape[1] != row_ptr.numel() - 1:
        raise ValueError(f"grad_output must have out_features = {row_ptr.numel() - 1} columns, "
                         f"got {grad_output.shape[1]}")
    if not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
    free = (row_ptr.numel() - 1) * input.shape[1] - int(occupied.sum())
    if not isinstance(k, int) or not 0 <= k <= free:
        raise ValueError(f"k must be an int in [0, {free}] (the unoccupied positions), got {k!r}")
    return _topology_op("gradient_regrow", grad_output.device, grad_output, input, row_ptr, col_idx, occupied, k,
                        block_rows)


def block_gradient_regrow(grad_output: torch.Tensor, input: torch.Tensor, block_row_ptr: torch.Tensor,
                          block_col_idx: torch.Tensor, occupied: torch.Tensor, k: int, block_shape,
                          block_rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """RigL's regrow for a block-sparse weight: the k unoccupied blocks whose
    dense gradient block (of grad_output^T @ input) has the largest Frobenius
    norm. The gradient is computed ``block_rows`` weight rows at a time
    (whole block rows, at least one) with a running top-k, so it is never
    held whole. Ties go to the lower position (row-major over the grid).
    Returns CSR (grow_row_ptr, grow_col_idx) over the grid of blocks.
    A torch implementation (one BLAS product per row chunk), on the inputs'
    device."""
    bh, bw = bsr_format.check_block_shape(block_shape)
    _check_float("grad_output", grad_output, no_half="block_gradient_regrow")
    _check_float("input", input, no_half="block_gradient_regrow")
    _check_same("input", input, "grad_output", grad_output)
    _check_pattern(block_row_ptr, block_col_idx)
    _check_mask("occupied", occupied, block_col_idx.numel(), block_col_idx.device)
    if grad_output.dim() != 2 or input.dim() != 2 or grad_output.shape[0] != input.shape[0]:
        raise ValueError(f"grad_output (N, out) and input (N, in) must be 2-D with equal N, got "
                         f"{tuple(grad_output.shape)} and {tuple(input.shape)}")
    grid_rows = block_row_ptr.numel() - 1
    if grad_output.shape[1] != grid_rows * bh:
        raise ValueError(f"grad_output must have out_features = {grid_rows * bh} columns, "
                         f"got {grad_output.shape[1]}")
    if input.shape[1] % bw:
        raise ValueError(f"input must have a multiple of the block width {bw} as in_features, got {input.shape[1]}")
    if not isinstance(block_rows, int) or isinstance(block_rows, bool) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
    grid_cols = input.shape[1] // bw
    free = grid_rows * grid_cols - int(occupied.sum())
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= free:
        raise ValueError(f"k must be an int in [0, {free}] (the unoccupied blocks), got {k!r}")
    if block_col_idx.numel() and (int(block_col_idx.min()) < 0 or int(block_col_idx.max()) >= grid_cols):
        raise ValueError(f"block_col_idx must be in [0, {grid_cols})")
    device = grad_output.device
    occupied_rows = torch.repeat_interleave(torch.arange(grid_rows, device=device),
                                            block_row_ptr.diff().long().to(device))[occupied.to(device)]
    occupied_flat = occupied_rows * grid_cols + block_col_idx.long().to(device)[occupied.to(device)]
    chunk = max(1, block_rows // bh)
    best_scores = grad_output.new_empty(0)
    best_flat = torch.empty(0, dtype=torch.int64, device=device)
    for r0 in range(0, grid_rows if k else 0, chunk):
        r1 = min(grid_rows, r0 + chunk)
        dense = grad_output[:, r0 * bh:r1 * bh].T @ input            # ((r1 - r0) * bh, in)
        scores = bsr_format.block_norms(dense, (bh, bw)).reshape(-1)  # (r1 - r0) * grid_cols
        here = occupied_flat[(occupied_flat >= r0 * grid_cols) & (occupied_flat < r1 * grid_cols)]
        scores[here - r0 * grid_cols] = -1.0  # below every norm; at least k free blocks exist
        flat = torch.arange(r0 * grid_cols, r1 * grid_cols, device=device)
        if best_scores.numel() == k:
            # Once k are held, only a score above the smallest held can enter
            # (a tie loses: the held one has the lower position).
            entering = scores > best_scores.min()
            scores, flat = scores[entering], flat[entering]
        # Ties to the lower position: a stable descending sort of the held
        # candidates (already in position order) and the new ones after them.
        scores, flat = torch.cat([best_scores, scores]), torch.cat([best_flat, flat])
        order = torch.sort(scores, descending=True, stable=True).indices[:k]
        order = order.sort().values  # keep position order for the next round's ties
        best_scores, best_flat = scores[order], flat[order]
    flat = best_flat.sort().values
    grow_rows = flat // grid_cols
    grow_row_ptr = torch.zeros(grid_rows + 1, dtype=INDEX_DTYPE, device=block_row_ptr.device)
    grow_row_ptr[1:] = torch.cumsum(torch.bincount(grow_rows, minlength=grid_rows), 0).to(block_row_ptr.device)
    return grow_row_ptr, (flat - grow_rows * grid_cols).to(INDEX_DTYPE).to(block_row_ptr.device).contiguous()


def rebuild_csr(row_ptr: torch.Tensor, col_idx: torch.Tensor, keep: torch.Tensor, grow_row_ptr: torch.Tensor,
                grow_col_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The new sorted CSR of the kept slots plus the grown positions, and the
    slot permutation ``perm`` (int64, new nnz): the old slot of every new slot,
    -1 for a grown one. A grown position that is also kept raises."""
    _check_pattern(row_ptr, col_idx)
    _check_pattern(grow_row_ptr, grow_col_idx, names=("grow_row_ptr", "grow_col_idx"))
    _check_mask("keep", keep, col_idx.numel(), col_idx.device)
    if grow_row_ptr.numel() != row_ptr.numel():
        raise ValueError(f"grow_row_ptr must have {row_ptr.numel()} entries (rows + 1), got {grow_row_ptr.numel()}")
    if grow_row_ptr.device != row_ptr.device:
        raise ValueError(f"grow_row_ptr must be on {row_ptr.device}, got {grow_row_ptr.device}")
    if grow_col_idx.numel() and bool(keep.any()):
        width = max(int(col_idx.max()), int(grow_col_idx.max())) + 1
        kept = row_indices(row_ptr)[keep] * width + col_idx[keep]
        grown = row_indices(grow_row_ptr) * width + grow_col_idx
        clash = torch.isin(grown, kept)
        if bool(clash.any()):
            position = int(grown[clash][0])
            raise ValueError(f"grown position {divmod(position, width)} is already stored (kept): "
                             "grow_row_ptr/grow_col_idx may name only positions that keep drops or never held")
    return _topology_op("rebuild_csr", row_ptr.device, row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx)


@torch.library.register_fake("sparse_kernels::magnitude_prune")
def _(values, group_ptr, drop_counts):
    return values.new_empty(values.shape, dtype=torch.bool)


@torch.library.register_fake("sparse_kernels::signed_magnitude_prune")
def _(values, group_ptr, fraction):
    return values.new_empty(values.shape, dtype=torch.bool)


@torch.library.register_fake("sparse_kernels::random_regrow")
def _(row_ptr, col_idx, occupied, n_cols, group_rows, grow_counts, seed):
    grown = torch.library.get_ctx().new_dynamic_size()  # the sum of grow_counts: data-dependent
    return torch.empty_like(row_ptr), col_idx.new_empty((grown,))


@torch.library.register_fake("sparse_kernels::gradient_regrow")
def _(grad_output, input, row_ptr, col_idx, occupied, k, block_rows):
    return torch.empty_like(row_ptr), col_idx.new_empty((k,))


@torch.library.register_fake("sparse_kernels::rebuild_csr")
def _(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx):
    nnz = torch.library.get_ctx().new_dynamic_size()  # kept + grown: data-dependent
    return torch.empty_like(row_ptr), col_idx.new_empty((nnz,)), col_idx.new_empty((nnz,), dtype=torch.int64)
