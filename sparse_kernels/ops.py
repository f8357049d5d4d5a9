"""Python face of the compiled ops (torch.ops.sparse_kernels.*): input checks
that raise clear errors before any kernel runs, autograd formulas, and fake
kernels so that torch.compile can trace through.

The schemas live in csrc/ops.cpp; CPU kernels in csrc/cpu/, CUDA kernels in
csrc/cuda/.
"""

from __future__ import annotations

import torch

from .csr import CSCIndex, INDEX_DTYPE, csr_transpose, validate_csr

_ops = torch.ops.sparse_kernels
_FLOAT_DTYPES = (torch.float32, torch.float64)


# --------------------------------------------------------------------------
# Input checks (Python, before the kernel)

def _check_float(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")


def _check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def _check_index_like(name: str, t, ref: torch.Tensor, ref_name: str = "the values") -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != INDEX_DTYPE:
        raise TypeError(f"{name} must have dtype torch.int32, got {t.dtype}")
    if t.dim() != 1 or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous 1-D tensor, got shape {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def _check_values(values) -> None:
    _check_float("values", values)
    if values.dim() != 1 or not values.is_contiguous():
        raise ValueError(f"values must be a contiguous 1-D tensor, got shape {tuple(values.shape)}")


def _check_csc(csc: CSCIndex, values: torch.Tensor, in_features: int) -> None:
    for name, t in zip(CSCIndex._fields, csc):
        _check_index_like(name, t, values)
    if csc.col_ptr.numel() != in_features + 1:
        raise ValueError(f"col_ptr must have in_features + 1 = {in_features + 1} entries, got {csc.col_ptr.numel()}")
    if csc.row_idx.numel() != values.numel() or csc.csr2csc.numel() != values.numel():
        raise ValueError("row_idx and csr2csc must have one entry per stored value")


# --------------------------------------------------------------------------
# Public functions

def sparse_linear(input: torch.Tensor, values: torch.Tensor, row_ptr: torch.Tensor,
                  col_idx: torch.Tensor, bias: torch.Tensor | None = None, *,
                  csc: CSCIndex | None = None, validate: bool = True) -> torch.Tensor:
    """y = input @ W^T + bias for a CSR matrix W of shape (out, in).

    input: (*, in); returns (*, out). ``csc`` is W's transposed index (see
    sparse_kernels.csr); it is computed when not given. ``validate`` checks the
    CSR structure (O(nnz)); CSRWeight validates once and passes False.
    Differentiable in input, values and bias.
    """
    _check_float("input", input)
    _check_values(values)
    _check_same("values", values, "input", input)
    _check_index_like("row_ptr", row_ptr, values)
    _check_index_like("col_idx", col_idx, values)
    if input.dim() < 1:
        raise ValueError("input must have at least one dimension (*, in_features)")
    in_features = input.shape[-1]
    out_features = row_ptr.numel() - 1
    if validate:
        validate_csr(row_ptr, col_idx, (out_features, in_features), values)
    if bias is not None:
        _check_float("bias", bias)
        _check_same("bias", bias, "input", input)
        if bias.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {tuple(bias.shape)}")
    if csc is None:
        csc = csr_transpose(row_ptr, col_idx, in_features)
    else:
        _check_csc(csc, values, in_features)
        if validate:
            expected = csr_transpose(row_ptr, col_idx, in_features)
            if not all(torch.equal(a, b) for a, b in zip(csc, expected)):
                raise ValueError("csc is not the transposed index of (row_ptr, col_idx)")
    flat = input.reshape(-1, in_features)
    out = _ops.sparse_linear(flat, values, row_ptr, col_idx, *csc, bias)
    return out.reshape(*input.shape[:-1], out_features)


def sparse_linear_input_grad(grad_output: torch.Tensor, values: torch.Tensor, csc: CSCIndex) -> torch.Tensor:
    """grad_output (N, out) @ W -> (N, in), through W's transposed index."""
    _check_float("grad_output", grad_output)
    _check_values(values)
    _check_same("values", values, "grad_output", grad_output)
    if grad_output.dim() != 2:
        raise ValueError(f"grad_output must be 2-D (N, out_features), got shape {tuple(grad_output.shape)}")
    in_features = csc.col_ptr.numel() - 1 if isinstance(csc.col_ptr, torch.Tensor) else 0
    _check_csc(csc, values, in_features)
    return _ops.sparse_linear_input_grad(grad_output, values, *csc)


def sparse_linear_value_grad(grad_output: torch.Tensor, input: torch.Tensor,
                             row_ptr: torch.Tensor, col_idx: torch.Tensor) -> torch.Tensor:
    """SDDMM: (grad_output^T @ input) at the stored nonzeros only -> (nnz,)."""
    _check_float("grad_output", grad_output)
    _check_float("input", input)
    _check_same("input", input, "grad_output", grad_output)
    _check_index_like("row_ptr", row_ptr, input)
    _check_index_like("col_idx", col_idx, input)
    if grad_output.dim() != 2 or input.dim() != 2 or grad_output.shape[0] != input.shape[0]:
        raise ValueError(
            f"grad_output (N, out) and input (N, in) must be 2-D with equal N, got "
            f"{tuple(grad_output.shape)} and {tuple(input.shape)}")
    if grad_output.shape[1] != row_ptr.numel() - 1:
        raise ValueError(f"grad_output must have out_features = {row_ptr.numel() - 1} columns, got {grad_output.shape[1]}")
    return _ops.sparse_linear_value_grad(grad_output, input, row_ptr, col_idx)


def lstm_cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused LSTM pointwise cell: pre-activations gates (N, 4H) in nn.LSTM's
    order [i | f | g | o] and c_prev (N, H) -> (h, c). Differentiable."""
    _check_float("gates", gates)
    _check_float("c_prev", c_prev)
    _check_same("c_prev", c_prev, "gates", gates)
    if gates.dim() != 2 or c_prev.dim() != 2:
        raise ValueError(f"gates and c_prev must be 2-D, got {tuple(gates.shape)} and {tuple(c_prev.shape)}")
    if gates.shape[0] != c_prev.shape[0] or gates.shape[1] != 4 * c_prev.shape[1]:
        raise ValueError(
            f"gates must have shape (N, 4*H) = ({c_prev.shape[0]}, {4 * c_prev.shape[1]}) for c_prev "
            f"of shape {tuple(c_prev.shape)}, got {tuple(gates.shape)}")
    return _ops.lstm_cell(gates, c_prev)


# --------------------------------------------------------------------------
# Fake kernels: output shapes only, for torch.compile / meta tensors.

@torch.library.register_fake("sparse_kernels::sparse_linear")
def _(input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, bias):
    return input.new_empty((input.shape[0], row_ptr.shape[0] - 1))


@torch.library.register_fake("sparse_kernels::sparse_linear_input_grad")
def _(grad_output, values, col_ptr, row_idx, csr2csc):
    return grad_output.new_empty((grad_output.shape[0], col_ptr.shape[0] - 1))


@torch.library.register_fake("sparse_kernels::sparse_linear_value_grad")
def _(grad_output, input, row_ptr, col_idx):
    return input.new_empty((col_idx.shape[0],))


@torch.library.register_fake("sparse_kernels::lstm_cell")
def _(gates, c_prev):
    return torch.empty_like(c_prev), torch.empty_like(c_prev)


@torch.library.register_fake("sparse_kernels::lstm_cell_backward")
def _(grad_h, grad_c, gates, c_prev, c):
    return torch.empty_like(gates), torch.empty_like(c_prev)


# --------------------------------------------------------------------------
# Autograd

def _sparse_linear_setup_context(ctx, inputs, output):
    input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, bias = inputs
    ctx.save_for_backward(input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc)
    ctx.has_bias = bias is not None


def _sparse_linear_backward(ctx, grad_output):
    input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc = ctx.saved_tensors
    grad_input = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = _ops.sparse_linear_input_grad(grad_output, values, col_ptr, row_idx, csr2csc)
    if ctx.needs_input_grad[1]:
        grad_values = _ops.sparse_linear_value_grad(grad_output, input, row_ptr, col_idx)
    if ctx.has_bias and ctx.needs_input_grad[7]:
        grad_bias = grad_output.sum(0)
    return grad_input, grad_values, None, None, None, None, None, grad_bias


torch.library.register_autograd(
    "sparse_kernels::sparse_linear", _sparse_linear_backward, setup_context=_sparse_linear_setup_context)


def _lstm_cell_setup_context(ctx, inputs, output):
    gates, c_prev = inputs
    ctx.save_for_backward(gates, c_prev, output[1])


def _lstm_cell_backward(ctx, grad_h, grad_c):
    gates, c_prev, c = ctx.saved_tensors
    # An output that did not reach the loss has no gradient.
    grad_h = torch.zeros_like(c) if grad_h is None else grad_h
    grad_c = torch.zeros_like(c) if grad_c is None else grad_c
    return _ops.lstm_cell_backward(grad_h, grad_c, gates, c_prev, c)


torch.library.register_autograd(
    "sparse_kernels::lstm_cell", _lstm_cell_backward, setup_context=_lstm_cell_setup_context)


# --------------------------------------------------------------------------
# Whole-sequence LSTM layer

def lstm_layer(input_gates: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, hh_values: torch.Tensor,
               hh_row_ptr: torch.Tensor, hh_col_idx: torch.Tensor, hh_csc: CSCIndex,
               batch_sizes: torch.Tensor | None = None, reverse: bool = False):
    """One LSTM layer over a whole sequence, the time loop in C++.

    input_gates (T, B, 4H): the input projection x W_ih^T + b_ih + b_hh of
    every step, computed beforehand as one sparse product. h0, c0 (B, H).
    W_hh is CSR (4H x H) with its transposed index ``hh_csc``. batch_sizes
    (T,) int64 (PackedSequence's; None = all B) marks which rows are active at
    each step. Returns (output (T, B, H), h_n, c_n); differentiable in
    input_gates, h0, c0 and hh_values. The structure is assumed validated
    (CSRWeight does it once).
    """
    _check_float("input_gates", input_gates)
    for name, t in (("h0", h0), ("c0", c0), ("hh_values", hh_values)):
        _check_float(name, t)
        _check_same(name, t, "input_gates", input_gates)
    if input_gates.dim() != 3 or h0.dim() != 2 or c0.dim() != 2:
        raise ValueError("input_gates must be (T, B, 4H) and h0, c0 (B, H)")
    steps, batch, width = input_gates.shape
    hidden = c0.shape[1]
    if width != 4 * hidden or h0.shape != (batch, hidden) or c0.shape != (batch, hidden):
        raise ValueError(f"expected input_gates (T, {batch}, {4 * hidden}) and h0, c0 ({batch}, {hidden}), got "
                         f"{tuple(input_gates.shape)}, {tuple(h0.shape)}, {tuple(c0.shape)}")
    _check_index_like("hh_row_ptr", hh_row_ptr, hh_values)
    _check_index_like("hh_col_idx", hh_col_idx, hh_values)
    if hh_row_ptr.numel() != 4 * hidden + 1:
        raise ValueError(f"W_hh must have 4*hidden = {4 * hidden} rows, got {hh_row_ptr.numel() - 1}")
    _check_csc(hh_csc, hh_values, hidden)
    if batch_sizes is None:
        batch_sizes = torch.full((steps,), batch, dtype=torch.int64)
    elif batch_sizes.dtype != torch.int64 or batch_sizes.shape != (steps,) or batch_sizes.device.type != "cpu":
        raise ValueError(f"batch_sizes must be an int64 CPU tensor of shape ({steps},)")
    output, h_n, c_n, _, _ = _ops.lstm_layer(input_gates, h0, c0, hh_values, hh_row_ptr, hh_col_idx,
                                             *hh_csc, batch_sizes, bool(reverse))
    return output, h_n, c_n


@torch.library.register_fake("sparse_kernels::lstm_layer")
def _(input_gates, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse):
    steps, batch, _ = input_gates.shape
    hidden = c0.shape[1]
    return (input_gates.new_empty((steps, batch, hidden)), torch.empty_like(h0), torch.empty_like(c0),
            torch.empty_like(input_gates), input_gates.new_empty((steps, batch, hidden)))


@torch.library.register_fake("sparse_kernels::lstm_layer_backward")
def _(grad_output, grad_h_n, grad_c_n, gates, output, cells, h0, c0, values, row_ptr, col_idx,
      col_ptr, row_idx, csr2csc, batch_sizes, reverse):
    return torch.empty_like(gates), torch.empty_like(h0), torch.empty_like(c0), torch.empty_like(values)


def _lstm_layer_setup_context(ctx, inputs, output):
    (_, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse) = inputs
    out, _, _, gates, cells = output
    ctx.mark_non_differentiable(gates, cells)  # saved activations, not results
    ctx.save_for_backward(gates, out, cells, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx,
                          csr2csc, batch_sizes)
    ctx.reverse = reverse


def _lstm_layer_backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_gates, _grad_cells):
    gates, out, cells, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes = ctx.saved_tensors
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
    grad_gates, grad_h0, grad_c0, grad_values = _ops.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, gates, out, cells, h0, c0, values, row_ptr, col_idx,
        col_ptr, row_idx, csr2csc, batch_sizes, ctx.reverse)
    return grad_gates, grad_h0, grad_c0, grad_values, None, None, None, None, None, None, None


torch.library.register_autograd(
    "sparse_kernels::lstm_layer", _lstm_layer_backward, setup_context=_lstm_layer_setup_context)


# --------------------------------------------------------------------------
# Topology updates (dynamic sparse training). Not differentiable: they act
# between optimizer steps. Group descriptors are int64 boundaries of
# contiguous ranges: slots for the prune ops, rows for the regrow ops.

def _check_pattern(row_ptr, col_idx) -> None:
    if not isinstance(row_ptr, torch.Tensor):
        raise TypeError(f"row_ptr must be a torch.Tensor, got {type(row_ptr).__name__}")
    _check_index_like("row_ptr", row_ptr, row_ptr)
    _check_index_like("col_idx", col_idx, row_ptr, "row_ptr")
    if row_ptr.numel() < 1:
        raise ValueError("row_ptr must have rows + 1 >= 1 entries")


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
    counts = torch.as_tensor(counts, dtype=torch.int64, device=bounds.device).reshape(-1).contiguous()
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
    _check_values(values)
    group_ptr = _group_bounds("group_ptr", group_ptr, values.numel(), values.device)
    drop_counts = _group_counts("drop_counts", drop_counts, group_ptr, group_ptr.diff(), "the size of its group")
    return _ops.magnitude_prune(values, group_ptr, drop_counts)


def signed_magnitude_prune(values: torch.Tensor, fraction: float, group_ptr=None) -> torch.Tensor:
    """SET's prune: drop round(fraction * n) of the smallest non-negative and
    round(fraction * n) of the largest negative values in each slot group."""
    _check_values(values)
    if not isinstance(fraction, (int, float)) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    group_ptr = _group_bounds("group_ptr", group_ptr, values.numel(), values.device)
    return _ops.signed_magnitude_prune(values, group_ptr, float(fraction))


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
    ``seed``. Returns the new positions as CSR (grow_row_ptr, grow_col_idx)."""
    _check_pattern(row_ptr, col_idx)
    _check_mask("occupied", occupied, col_idx.numel(), col_idx.device)
    if not isinstance(n_cols, int) or n_cols < 0:
        raise ValueError(f"n_cols must be a non-negative int, got {n_cols!r}")
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    group_rows = _group_bounds("group_rows", group_rows, row_ptr.numel() - 1, row_ptr.device)
    free = _free_per_group(row_ptr, occupied, n_cols, group_rows)
    grow_counts = _group_counts("grow_counts", grow_counts, group_rows, free,
                                "the unoccupied positions of its rows")
    return _ops.random_regrow(row_ptr, col_idx, occupied, n_cols, group_rows, grow_counts, seed)


def gradient_regrow(grad_output: torch.Tensor, input: torch.Tensor, row_ptr: torch.Tensor,
                    col_idx: torch.Tensor, occupied: torch.Tensor, k: int,
                    block_rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """RigL's regrow: the k unoccupied positions of largest |grad_output^T @ input|
    (grad_output (N, out), input (N, in): the dense weight gradient of
    y = input W^T), computed ``block_rows`` rows at a time with a running
    top-k so the dense gradient is never held. Returns CSR (grow_row_ptr,
    grow_col_idx)."""
    _check_float("grad_output", grad_output)
    _check_float("input", input)
    _check_same("input", input, "grad_output", grad_output)
    _check_pattern(row_ptr, col_idx)
    _check_mask("occupied", occupied, col_idx.numel(), col_idx.device)
    if grad_output.dim() != 2 or input.dim() != 2 or grad_output.shape[0] != input.shape[0]:
        raise ValueError(f"grad_output (N, out) and input (N, in) must be 2-D with equal N, got "
                         f"{tuple(grad_output.shape)} and {tuple(input.shape)}")
    if grad_output.shape[1] != row_ptr.numel() - 1:
        raise ValueError(f"grad_output must have out_features = {row_ptr.numel() - 1} columns, "
                         f"got {grad_output.shape[1]}")
    if not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
    free = (row_ptr.numel() - 1) * input.shape[1] - int(occupied.sum())
    if not isinstance(k, int) or not 0 <= k <= free:
        raise ValueError(f"k must be an int in [0, {free}] (the unoccupied positions), got {k!r}")
    return _ops.gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, block_rows)


def rebuild_csr(row_ptr: torch.Tensor, col_idx: torch.Tensor, keep: torch.Tensor, grow_row_ptr: torch.Tensor,
                grow_col_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The new sorted CSR of the kept slots plus the grown positions, and the
    slot permutation ``perm`` (int64, new nnz): the old slot of every new slot,
    -1 for a grown one. A grown position that is also kept raises."""
    _check_pattern(row_ptr, col_idx)
    _check_pattern(grow_row_ptr, grow_col_idx)
    _check_mask("keep", keep, col_idx.numel(), col_idx.device)
    if grow_row_ptr.numel() != row_ptr.numel():
        raise ValueError(f"grow_row_ptr must have {row_ptr.numel()} entries (rows + 1), got {grow_row_ptr.numel()}")
    if grow_row_ptr.device != row_ptr.device:
        raise ValueError(f"grow_row_ptr must be on {row_ptr.device}, got {grow_row_ptr.device}")
    return _ops.rebuild_csr(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx)


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
