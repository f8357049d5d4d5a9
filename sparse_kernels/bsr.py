"""The BSR (block-sparse row) format as index tensors: validation, the
element-level CSR view, random block topologies, dense conversions. Pure
tensor functions on any device, used by the op wrappers (sparse_kernels.ops)
and the storage (sparse_kernels.storage).

Conventions (shared with the C++ kernels): a (rows x cols) matrix with
blocks of ``block_shape`` = (bh, bw), bh dividing rows and bw dividing cols,
is a CSR pattern over its (rows / bh) x (cols / bw) grid of blocks,
``block_row_ptr`` (rows / bh + 1, int32) and ``block_col_idx`` (nblocks,
int32, strictly increasing within a block row), and ``values`` (nblocks, bh,
bw), each block dense and row-major: ``values[k, i, j]`` is the entry at
(block_row(k) * bh + i, block_col_idx[k] * bw + j). The transposed block
index is csr.csr_transpose of the grid pattern (block_col_ptr,
block_row_idx, block_csr2csc).
"""

from __future__ import annotations

import operator

import torch

from .csr import INDEX_DTYPE, row_indices, validate_csr

BLOCK_NAMES = ("block_row_ptr", "block_col_idx")


def check_block_shape(block_shape, name: str = "block_shape") -> tuple[int, int]:
    """(bh, bw) as positive ints, or a TypeError/ValueError naming ``name``."""
    if isinstance(block_shape, torch.Size):
        block_shape = tuple(block_shape)
    if not isinstance(block_shape, (tuple, list)) or len(block_shape) != 2:
        raise TypeError(f"{name} must be a pair (block_height, block_width), got {block_shape!r}")
    try:
        bh, bw = (operator.index(s) for s in block_shape)
    except TypeError:
        raise TypeError(f"{name} must hold two ints, got {block_shape!r}") from None
    if bh < 1 or bw < 1:
        raise ValueError(f"{name} must be positive, got {(bh, bw)}")
    return bh, bw


def grid_shape(shape, block_shape, what: str = "the weight") -> tuple[int, int]:
    """The (block rows, block columns) of a (rows x cols) matrix; a ValueError
    when the blocks do not tile it exactly."""
    rows, cols = (int(s) for s in shape)
    bh, bw = check_block_shape(block_shape)
    if rows < 0 or cols < 0:
        raise ValueError(f"shape must be non-negative, got {(rows, cols)}")
    if rows % bh or cols % bw:
        raise ValueError(f"{what} of shape ({rows}, {cols}) is not tiled by block_shape ({bh}, {bw}): "
                         f"the block height must divide the rows and the block width the columns")
    return rows // bh, cols // bw


def validate_bsr(block_row_ptr: torch.Tensor, block_col_idx: torch.Tensor, shape, block_shape,
                 values=None) -> None:
    """Check a BSR structure once (O(nblocks)); raise TypeError/ValueError
    naming the argument. The kernels never re-check it."""
    bh, bw = check_block_shape(block_shape)
    grid = grid_shape(shape, (bh, bw))
    validate_csr(block_row_ptr, block_col_idx, grid, names=BLOCK_NAMES)
    if values is not None:
        nblocks = block_col_idx.numel()
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if not values.is_floating_point():
            raise TypeError(f"values must be a floating-point tensor, got {values.dtype}")
        if tuple(values.shape) != (nblocks, bh, bw):
            raise ValueError(f"values must have shape (nblocks, block_height, block_width) = "
                             f"({nblocks}, {bh}, {bw}), got {tuple(values.shape)}")
        if values.device != block_col_idx.device:
            raise ValueError(f"values must be on {block_col_idx.device}, got {values.device}")


def element_csr(block_row_ptr: torch.Tensor, block_col_idx: torch.Tensor, block_shape):
    """The element-level CSR of a BSR pattern, every entry of every stored
    block included: (row_ptr, col_idx, gather) with ``values.reshape(-1)[gather]``
    the values in that CSR's order. O(nblocks * bh * bw)."""
    bh, bw = check_block_shape(block_shape)
    device = block_col_idx.device
    nblocks = block_col_idx.numel()
    block_rows = row_indices(block_row_ptr)
    # One segment per (block, row of the block), bw entries long; element
    # row r = block_row * bh + i lists its blocks left to right, so order the
    # segments by (element row, block) with a stable sort of the k-major list.
    seg_row = (block_rows.unsqueeze(1) * bh + torch.arange(bh, device=device)).reshape(-1)
    seg = torch.argsort(seg_row, stable=True)
    seg_block, seg_i = seg // bh, seg % bh
    lanes = torch.arange(bw, device=device)
    gather = ((seg_block * (bh * bw) + seg_i * bw).unsqueeze(1) + lanes).reshape(-1)
    col_idx = ((block_col_idx.long()[seg_block] * bw).unsqueeze(1) + lanes).reshape(-1)
    per_row = torch.repeat_interleave(block_row_ptr.diff().long() * bw, bh)
    row_ptr = torch.zeros(per_row.numel() + 1, dtype=torch.int64, device=device)
    row_ptr[1:] = torch.cumsum(per_row, 0)
    if nblocks * bh * bw > 2**31 - 1:
        raise ValueError(f"{nblocks} blocks of {bh} x {bw} do not fit int32 element indices")
    return row_ptr.to(INDEX_DTYPE), col_idx.to(INDEX_DTYPE), gather


def blocks_of(dense: torch.Tensor, block_shape) -> torch.Tensor:
    """(rows / bh, cols / bw, bh, bw): the blocks of a dense matrix (a view
    when ``dense`` is contiguous)."""
    bh, bw = check_block_shape(block_shape)
    rows, cols = grid_shape(dense.shape, (bh, bw), "dense")
    return dense.reshape(rows, bh, cols, bw).transpose(1, 2)


def block_norms(dense: torch.Tensor, block_shape) -> torch.Tensor:
    """(rows / bh, cols / bw): the Frobenius norm of every block of ``dense``."""
    return blocks_of(dense, block_shape).pow(2).sum((2, 3)).sqrt()


def bsr_to_dense(values: torch.Tensor, block_row_ptr: torch.Tensor, block_col_idx: torch.Tensor,
                 shape) -> torch.Tensor:
    """The dense matrix (differentiable in ``values``)."""
    nblocks, bh, bw = values.shape
    n_rows, n_cols = grid_shape(shape, (bh, bw))
    grid = values.new_zeros(n_rows, n_cols, bh, bw)
    grid = grid.index_put((row_indices(block_row_ptr), block_col_idx.long()), values)
    return grid.transpose(1, 2).reshape(n_rows * bh, n_cols * bw)


def block_mask_to_pattern(block_mask: torch.Tensor):
    """(block_row_ptr, block_col_idx, block_rows, block_cols) of a (grid rows,
    grid cols) bool mask, blocks in row-major (CSR) order."""
    rows, cols = block_mask.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=block_mask.shape[0])
    block_row_ptr = torch.zeros(block_mask.shape[0] + 1, dtype=INDEX_DTYPE, device=block_mask.device)
    block_row_ptr[1:] = torch.cumsum(counts, 0)
    return block_row_ptr, cols.to(INDEX_DTYPE), rows, cols
