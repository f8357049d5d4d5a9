"""The CSR format as index tensors: validation, transposition, random
topologies. Pure tensor functions on any device, used by the op wrappers
(sparse_kernels.ops) and the storage (sparse_kernels.storage).

Conventions (shared with the C++ kernels): a sparse (rows x cols) matrix is
``row_ptr`` (rows + 1, int32), ``col_idx`` (nnz, int32, strictly increasing
within a row) and ``values`` (nnz). Its transposed index is ``col_ptr``
(cols + 1), ``row_idx`` (nnz) and ``csr2csc`` (nnz): ``values[csr2csc]`` are
the values in column-major order.
"""

from __future__ import annotations

import numbers
import operator
from typing import NamedTuple

import torch

INDEX_DTYPE = torch.int32
_INT32_MAX = 2**31 - 1


class CSCIndex(NamedTuple):
    col_ptr: torch.Tensor
    row_idx: torch.Tensor
    csr2csc: torch.Tensor


def _check_index_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != INDEX_DTYPE:
        raise TypeError(f"{name} must have dtype torch.int32, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def check_shape(shape) -> tuple[int, int]:
    """(rows, cols) as ints; TypeError/ValueError naming ``shape`` otherwise
    (a float is not truncated)."""
    try:
        rows, cols = shape
        rows, cols = operator.index(rows), operator.index(cols)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be a pair of ints (rows, cols), got {shape!r}") from None
    if rows < 0 or cols < 0:
        raise ValueError(f"shape must be non-negative, got {(rows, cols)}")
    return rows, cols


def validate_csr(row_ptr: torch.Tensor, col_idx: torch.Tensor, shape, values=None, *,
                 names: tuple[str, str] = ("row_ptr", "col_idx")) -> None:
    """Check a CSR structure once (O(nnz)); raise TypeError/ValueError naming
    the argument. The kernels never re-check it. ``names``: what to call the
    two index tensors in messages (e.g. ("col_ptr", "row_idx") for a CSC
    index, which is the CSR of the transpose)."""
    ptr_name, idx_name = names
    _check_index_tensor(ptr_name, row_ptr)
    _check_index_tensor(idx_name, col_idx)
    rows, cols = check_shape(shape)
    if row_ptr.device != col_idx.device:
        raise ValueError(f"{ptr_name} and {idx_name} must be on one device, got {row_ptr.device} and "
                         f"{col_idx.device}")
    nnz = col_idx.numel()
    if row_ptr.numel() != rows + 1:
        raise ValueError(f"{ptr_name} must have rows + 1 = {rows + 1} entries, got {row_ptr.numel()}")
    if nnz > _INT32_MAX:
        raise ValueError(f"nnz = {nnz} does not fit int32 indices")
    if int(row_ptr[0]) != 0:
        raise ValueError(f"{ptr_name} must start at 0, got {int(row_ptr[0])}")
    if int(row_ptr[-1]) != nnz:
        raise ValueError(f"{ptr_name} must end at nnz = len({idx_name}) = {nnz}, got {int(row_ptr[-1])}")
    row_lengths = row_ptr.diff()
    if bool((row_lengths < 0).any()):
        raise ValueError(f"{ptr_name} must be non-decreasing")
    if nnz:
        if int(col_idx.min()) < 0 or int(col_idx.max()) >= cols:
            raise ValueError(f"{idx_name} must be in [0, {cols}), got values in [{int(col_idx.min())}, "
                             f"{int(col_idx.max())}]")
        if bool((row_lengths > cols).any()):
            raise ValueError(f"a row of {ptr_name} holds more entries than there are columns")
        # Within a row, columns strictly increase: a non-increase is only
        # allowed where a new row starts.
        non_increasing = col_idx[1:] <= col_idx[:-1]
        row_starts = torch.zeros(nnz, dtype=torch.bool, device=col_idx.device)
        starts = row_ptr[:-1][row_lengths > 0].long()
        row_starts[starts] = True
        if bool((non_increasing & ~row_starts[1:]).any()):
            raise ValueError(f"{idx_name} must be strictly increasing within each row (sorted, no duplicates)")
    if values is not None:
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if not values.is_floating_point():
            raise TypeError(f"values must be a floating-point tensor, got {values.dtype}")
        if values.dim() != 1 or values.numel() != nnz:
            raise ValueError(f"values must be 1-D with nnz = {nnz} entries, got shape {tuple(values.shape)}")
        if values.device != col_idx.device:
            raise ValueError(f"values must be on {col_idx.device}, got {values.device}")


def row_indices(row_ptr: torch.Tensor) -> torch.Tensor:
    """The row of every stored nonzero (int64, length nnz)."""
    rows = row_ptr.numel() - 1
    lengths = row_ptr.diff().long()
    nnz = int(row_ptr[-1]) if rows >= 0 else 0
    return torch.repeat_interleave(torch.arange(rows, device=row_ptr.device), lengths, output_size=nnz)


def csr_transpose(row_ptr: torch.Tensor, col_idx: torch.Tensor, cols: int) -> CSCIndex:
    """The transposed (CSC) index of a CSR structure."""
    # A stable sort by column keeps the row order inside each column, because
    # CSR lists the nonzeros row by row.
    csr2csc = torch.argsort(col_idx, stable=True)
    counts = torch.bincount(col_idx.long(), minlength=cols)
    col_ptr = torch.zeros(cols + 1, dtype=INDEX_DTYPE, device=col_idx.device)
    col_ptr[1:] = torch.cumsum(counts, 0)
    row_idx = row_indices(row_ptr)[csr2csc]
    return CSCIndex(col_ptr, row_idx.to(INDEX_DTYPE), csr2csc.to(INDEX_DTYPE))


# The most columns a uint16 column index can address (0 .. 65535).
INDEX16_MAX_COLS = 2**16


class Index16(NamedTuple):
    """A compact index derived from a CSR (or CSC view) (ptr, idx) for the
    CUDA products (csrc/cuda/spmm.cuh): ``idx`` the same indices as uint16
    (half the index bytes the kernel reads; Sputnik's trick), ``order`` the
    rows longest first (int32; neighbouring subwarps get rows of similar
    length, the long ones start first)."""
    idx: torch.Tensor
    order: torch.Tensor


def index16(ptr: torch.Tensor, idx: torch.Tensor, cols: int) -> Index16 | None:
    """The compact index of a CSR (ptr, idx) with ``cols`` columns (for a CSC
    view: col_ptr, row_idx and the rows of the matrix), on their device; None
    when ``cols`` > 65536, where a column does not fit 16 bits. ``order`` is
    a stable sort by decreasing row length: equal rows keep their order, so
    the result is a function of the pattern alone."""
    if cols > INDEX16_MAX_COLS:
        return None
    order = torch.sort(ptr.diff(), descending=True, stable=True).indices
    # int32 -> uint16 keeps every value < 65536, and cols <= 65536 bounds them.
    return Index16(idx.to(torch.uint16), order.to(INDEX_DTYPE))


SLICE_ROWS = 8  # rows per slice of the sliced-ELLPACK view: one AVX2 register of float32 sums


class SlicedLayout(NamedTuple):
    """Where a CSR's entries go in its sliced-ELLPACK (SELL-8) view.

    The rows are cut into segments of ``segment_rows`` rows (an LSTM's W_hh:
    one gate each) and each segment into slices of 8 consecutive rows (the
    last slice of a segment may hold fewer: its missing lanes are padding).
    A slice of longest row L takes 8 * L entries, lane-interleaved: entry k
    of the slice's lane j (its j-th row) sits at slice_ptr[s] + 8 k + j, so
    that one vector load reads the k-th entry of eight rows. Padding has
    column ``pad_col`` and value 0.
    slice_ptr  int64 (slices + 1,) offsets;
    cols       int32 (slice_ptr[-1],) column of each entry, pad_col at padding;
    dest       int64 (nnz,) where CSR entry i goes (values follow by a scatter).
    """
    slice_ptr: torch.Tensor
    cols: torch.Tensor
    dest: torch.Tensor


def sliced_layout(row_ptr: torch.Tensor, col_idx: torch.Tensor, segment_rows: int, pad_col: int) -> SlicedLayout:
    """The SELL-8 layout (SlicedLayout) of a CSR pattern whose row count is a
    multiple of ``segment_rows``; vectorised torch work, on the pattern's device."""
    rows = row_ptr.numel() - 1
    if segment_rows < 1 or rows % segment_rows:
        raise ValueError(f"segment_rows must divide the row count {rows}, got {segment_rows}")
    device = row_ptr.device
    per_segment = -(-segment_rows // SLICE_ROWS)
    lengths = row_ptr.diff().long()
    row = torch.arange(rows, device=device)
    segment, within = row // segment_rows, row % segment_rows
    slice_of_row = segment * per_segment + within // SLICE_ROWS
    lane_of_row = within % SLICE_ROWS
    slices = per_segment * (rows // segment_rows)
    longest = torch.zeros(slices, dtype=torch.int64, device=device)
    longest.scatter_reduce_(0, slice_of_row, lengths, reduce="amax")
    slice_ptr = torch.zeros(slices + 1, dtype=torch.int64, device=device)
    torch.cumsum(longest * SLICE_ROWS, 0, out=slice_ptr[1:])
    entry_row = row_indices(row_ptr).long()
    position = torch.arange(col_idx.numel(), device=device) - row_ptr.long()[entry_row]
    dest = slice_ptr[slice_of_row[entry_row]] + position * SLICE_ROWS + lane_of_row[entry_row]
    cols = torch.full((int(slice_ptr[-1]),), pad_col, dtype=INDEX_DTYPE, device=device)
    cols[dest] = col_idx
    return SlicedLayout(slice_ptr, cols, dest)


BLOCKED_SLICE_ROWS = 16  # rows per slice of the blocked view: one AVX-512 register of float32 sums
BLOCKED_COLUMNS = 64  # columns of x per block: four AVX-512 registers, picked by two permutes
BLOCKED_PAD = 0x40  # a blocked view's lane byte where the row has no more entries in the block
BLOCKED_DENSE_CELLS = 1 << 22  # blocked_layout counts in a dense (slice, block) array up to this many cells


def blocked_layout(row_ptr: torch.Tensor, col_idx: torch.Tensor, segment_rows: int, in_features: int) -> SlicedLayout:
    """The blocked form of the sliced view (csrc/include/sparse_kernels/cpu_sliced.h),
    for CPUs with AVX-512: the rows cut into segments of ``segment_rows`` and
    those into slices of 16 rows (the last of a segment may hold fewer), each
    slice's entries grouped by 64-column block, one segment per block the slice
    touches, of L slots of 16 lanes (L: the most entries one of its rows has
    there). Entry k of row j (of its slice) in a block goes to lane j of the
    segment's slot k. Vectorised torch work, on the pattern's device.

    slice_ptr  int64: [slices + 1] each slice's first segment (S in all), then
               [S + 1] each segment's first slot, then [S] each segment's block;
    cols       uint8 (16 x slots,) each lane's column offset in its block (0-63),
               BLOCKED_PAD where the row has no more;
    dest       int64 (nnz,) where CSR entry i goes (values follow by a scatter,
               zeros at padding: ``sliced_values``)."""
    rows = row_ptr.numel() - 1
    if segment_rows < 1 or rows % segment_rows:
        raise ValueError(f"segment_rows must divide the row count {rows}, got {segment_rows}")
    device, height = row_ptr.device, BLOCKED_SLICE_ROWS
    per_segment = -(-segment_rows // height)
    slices = per_segment * (rows // segment_rows)
    blocks = max(-(-in_features // BLOCKED_COLUMNS), 1)
    entry_row = row_indices(row_ptr)
    col = col_idx.long()
    within = entry_row % segment_rows
    slice_of_entry = entry_row // segment_rows * per_segment + within // height
    lane = within % height
    block = col // BLOCKED_COLUMNS
    # k: the entry's rank among its row's entries in its block. The columns of
    # a row are sorted, so a (row, block) run is contiguous: rank = position
    # minus the position where the run starts.
    position = torch.arange(col.numel(), device=device)
    run_key = entry_row * blocks + block
    starts = torch.ones_like(run_key, dtype=torch.bool)
    starts[1:] = run_key[1:] != run_key[:-1]
    run_start = torch.cummax(torch.where(starts, position, torch.zeros_like(position)), 0).values
    rank = position - run_start
    # Segments: the distinct (slice, block) pairs in order; each as long as its longest run.
    cell = slice_of_entry * blocks + block
    if slices * blocks <= BLOCKED_DENSE_CELLS:
        # One counter per (slice, block) cell: no sort (2.7x faster at 6000 x 1500).
        longest = torch.zeros(slices * blocks, dtype=torch.int64, device=device)
        longest.scatter_reduce_(0, cell, rank + 1, reduce="amax")
        segment_key = longest.nonzero().squeeze(1)
        length = longest[segment_key]
        segment_of_entry = (torch.cumsum(longest > 0, 0) - 1)[cell]
    else:
        segment_key, segment_of_entry = torch.unique(cell, sorted=True, return_inverse=True)
        length = torch.zeros(segment_key.numel(), dtype=torch.int64, device=device)
        length.scatter_reduce_(0, segment_of_entry, rank + 1, reduce="amax")
    segments = segment_key.numel()
    first_slot = torch.zeros(segments + 1, dtype=torch.int64, device=device)
    torch.cumsum(length, 0, out=first_slot[1:])
    first_segment = torch.zeros(slices + 1, dtype=torch.int64, device=device)
    torch.cumsum(torch.bincount(segment_key // blocks, minlength=slices), 0, out=first_segment[1:])
    slice_ptr = torch.cat([first_segment, first_slot, segment_key % blocks])
    dest = (first_slot[segment_of_entry] + rank) * height + lane
    cols = torch.full((int(first_slot[-1]) * height,), BLOCKED_PAD, dtype=torch.uint8, device=device)
    cols[dest] = (col % BLOCKED_COLUMNS).to(torch.uint8)
    return SlicedLayout(slice_ptr, cols, dest)


def sliced_values(values: torch.Tensor, layout: SlicedLayout) -> torch.Tensor:
    """``values`` (CSR order) in the layout's order, zeros at the padding."""
    out = values.new_zeros(layout.cols.numel())
    out[layout.dest] = values.detach()
    return out


def from_coordinates(rows_of: torch.Tensor, cols_of: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR from unique (row, col) coordinates in any order.
    Returns (row_ptr, col_idx, order) where order sorts the input entries."""
    n_rows, n_cols = shape
    order = torch.argsort(rows_of.long() * n_cols + cols_of.long())
    counts = torch.bincount(rows_of.long(), minlength=n_rows)
    row_ptr = torch.zeros(n_rows + 1, dtype=INDEX_DTYPE, device=rows_of.device)
    row_ptr[1:] = torch.cumsum(counts, 0)
    return row_ptr, cols_of[order].to(INDEX_DTYPE).contiguous(), order


def exact_nnz(shape, density: float) -> int:
    rows, cols = shape
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density!r}")
    return int(round(density * rows * cols))


def erdos_renyi_density(rows: int, cols: int, epsilon: float) -> float:
    """Density of an Erdős–Rényi layer (Mocanu et al.; Liu et al. eq. 2):
    p = epsilon * (rows + cols) / (rows * cols), capped at 1."""
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    return min(1.0, epsilon * (rows + cols) / (rows * cols))


def _random_subsets(n_sets: int, universe: int, k: int, generator, device) -> torch.Tensor:
    """(n_sets, k) int64: each row a uniformly random k-subset of range(universe),
    in random order. Memory stays O(n_sets * k) when k is small against universe."""
    if k == 0 or n_sets == 0:
        return torch.empty(n_sets, k, dtype=torch.long, device=device)
    if k * 4 >= universe or universe <= 4096:
        chunk = max(1, (1 << 22) // universe)
        parts = []
        for start in range(0, n_sets, chunk):
            keys = torch.rand(min(chunk, n_sets - start), universe, generator=generator, device=device)
            parts.append(keys.topk(k, dim=1).indices)
        return torch.cat(parts)
    # Oversample with replacement, drop repeats, keep a random k of the rest:
    # the distinct draws are exchangeable, so the k kept are a uniform subset.
    draws = 2 * k + 16
    cand = torch.randint(universe, (n_sets, draws), generator=generator, device=device).sort(dim=1).values
    repeat = torch.zeros_like(cand, dtype=torch.bool)
    repeat[:, 1:] = cand[:, 1:] == cand[:, :-1]
    keys = torch.rand(n_sets, draws, generator=generator, device=device).masked_fill(repeat, -1.0)
    result = cand.gather(1, keys.topk(k, dim=1).indices)
    short = (~repeat).sum(1) < k  # too few distinct draws: very rare, redo densely
    if bool(short.any()):
        idx = short.nonzero().flatten()
        keys = torch.rand(idx.numel(), universe, generator=generator, device=device)
        result[idx] = keys.topk(k, dim=1).indices
    return result


def block_diagonal_csr(rows: int, cols: int, n_blocks: int, row_groups: int = 1, device=None):
    """(row_ptr, col_idx) of a block-diagonal pattern (Demeester et al.'s
    predefined sparseness): the rows of each of ``row_groups`` equal row
    groups (an LSTM weight's 4 gates) and the columns are cut into
    ``n_blocks`` near-equal bands, row band i meeting column band i, so the
    layer is ``n_blocks`` independent smaller networks side by side. Built
    in O(nnz) memory."""
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be positive, got {n_blocks}")
    if row_groups < 1 or rows % row_groups:
        raise ValueError(f"rows ({rows}) must split into row_groups ({row_groups}) equal groups")
    group_rows = max(rows // row_groups, 1)
    block = (torch.arange(rows, device=device) % group_rows) * n_blocks // group_rows
    # Column band b is [ceil(b * cols / n), ceil((b + 1) * cols / n)).
    band_start = (torch.arange(n_blocks + 1, device=device) * cols + n_blocks - 1) // n_blocks
    starts, lengths = band_start[block], band_start[block + 1] - band_start[block]
    row_ptr = torch.zeros(rows + 1, dtype=torch.long, device=device)
    row_ptr[1:] = torch.cumsum(lengths, 0)
    nnz = int(row_ptr[-1])
    offsets = torch.arange(nnz, device=device) - torch.repeat_interleave(row_ptr[:-1], lengths, output_size=nnz)
    col_idx = torch.repeat_interleave(starts, lengths, output_size=nnz) + offsets
    return row_ptr.to(INDEX_DTYPE), col_idx.to(INDEX_DTYPE)


def random_csr(shape, density: float, *, init: str = "uniform", generator=None, device=None,
               row_groups: int = 1):
    """A CSR structure for a new weight.

    init="uniform": exactly round(density * rows * cols) nonzeros, the same
    number in every row (the remainder spread over randomly chosen rows),
    columns uniform at random.
    init="erdos_renyi": exactly round(density * rows * cols) nonzeros, a
    uniform random subset of all positions (row lengths vary), an
    Erdős–Rényi graph G(n, M).
    init="block_diagonal": the deterministic block-diagonal pattern of
    :func:`block_diagonal_csr` with round(1 / density) blocks per row group
    (so the density is about, not exactly, the one asked; 0 gives no entries).
    Returns (row_ptr, col_idx).
    """
    rows, cols = check_shape(shape)
    nnz = exact_nnz((rows, cols), density)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if init == "block_diagonal":
        if nnz == 0 or rows == 0:
            return torch.zeros(rows + 1, dtype=INDEX_DTYPE, device=device), torch.empty(0, dtype=INDEX_DTYPE, device=device)
        return block_diagonal_csr(rows, cols, max(1, round(1.0 / density)), row_groups, device)
    if init == "uniform":
        base, extra = divmod(nnz, rows) if rows else (0, 0)
        k_max = base + (1 if extra else 0)
        picks = _random_subsets(rows, cols, k_max, generator, device)
        lengths = torch.full((rows,), base, dtype=torch.long, device=device)
        if extra:
            lucky = torch.randperm(rows, generator=generator, device=device)[:extra]
            lengths[lucky] += 1
        keep = torch.arange(k_max, device=device).unsqueeze(0) < lengths.unsqueeze(1)
        # Subsets come in random order, so their first `length` are uniform too.
        cols_sorted = picks.masked_fill(~keep, cols).sort(dim=1).values
        col_idx = cols_sorted[keep.sort(dim=1, descending=True).values]
        row_ptr = torch.zeros(rows + 1, dtype=torch.long, device=device)
        row_ptr[1:] = torch.cumsum(lengths, 0)
        return row_ptr.to(INDEX_DTYPE), col_idx.to(INDEX_DTYPE).contiguous()
    if init == "erdos_renyi":
        flat = _random_subsets(1, rows * cols, nnz, generator, device).flatten().sort().values
        r, c = flat // cols, flat % cols
        row_ptr, col_idx, _ = from_coordinates(r, c, (rows, cols))
        return row_ptr, col_idx
    raise ValueError(f"init must be 'uniform', 'erdos_renyi' or 'block_diagonal', got {init!r}")
