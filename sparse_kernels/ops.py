"""Python face of the compiled ops (torch.ops.sparse_kernels.*): input checks
that raise clear errors before any kernel runs, autograd formulas, and fake
kernels so that torch.compile can trace through.

The schemas live in csrc/ops.cpp; CPU kernels in csrc/cpu/, CUDA kernels in
csrc/cuda/.
"""

from __future__ import annotations

import math

import torch

from . import bsr as bsr_format
from .csr import (CSCIndex, INDEX16_MAX_COLS, INDEX_DTYPE, Index16, csr_transpose, row_indices,
                  validate_csr)

_ops = torch.ops.sparse_kernels
_FLOAT_DTYPES = (torch.float32, torch.float64)
# Values the CUDA kernels also take (accumulated in fp32, csrc/cuda/accumulate.cuh);
# the CPU kernels have no 16-bit versions.
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------
# Input checks (Python, before the kernel)

def _check_float(name: str, t, *, no_half: str | None = None) -> None:
    """float32 or float64 anywhere; float16 or bfloat16 on a CUDA device,
    unless ``no_half`` names an op whose kernels have no 16-bit version."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype in _FLOAT_DTYPES:
        return
    if t.dtype in _HALF_DTYPES:
        if no_half is not None:
            raise TypeError(f"{name} has dtype {t.dtype}, but {no_half} supports float32 and float64 only "
                            "(its kernels have no 16-bit version)")
        if t.device.type != "cuda":
            raise TypeError(f"{name} has dtype {t.dtype} on {t.device}: 16-bit values need a CUDA device "
                            "(the CPU kernels support float32 and float64)")
        return
    raise TypeError(f"{name} must be float32 or float64 (or float16/bfloat16 on a CUDA device), got {t.dtype}")


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


def _check_values(values, *, no_half: str | None = None) -> None:
    _check_float("values", values, no_half=no_half)
    if values.dim() != 1 or not values.is_contiguous():
        raise ValueError(f"values must be a contiguous 1-D tensor, got shape {tuple(values.shape)}")


def _check_index16(name: str, ix, ptr: torch.Tensor, idx: torch.Tensor, cols: int,
                   validate: bool) -> Index16 | None:
    """A compact index (csr.index16) of (ptr, idx) over ``cols`` columns, or
    None: kinds, lengths and device; with ``validate`` its contents too
    (O(nnz + rows log rows)): the CUDA kernels read it in place of idx."""
    if ix is None:
        return None
    if not isinstance(ix, (tuple, list)) or len(ix) != 2:
        raise TypeError(f"{name} must be an Index16 (idx, order) from sparse_kernels.csr.index16, got "
                        f"{type(ix).__name__}")
    ix = Index16(*ix)
    for field, t, dtype, length in (("idx", ix.idx, torch.uint16, idx.numel()),
                                    ("order", ix.order, INDEX_DTYPE, ptr.numel() - 1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}.{field} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype:
            raise TypeError(f"{name}.{field} must have dtype {dtype}, got {t.dtype}")
        if t.shape != (length,) or not t.is_contiguous():
            raise ValueError(f"{name}.{field} must be contiguous with shape ({length},), got {tuple(t.shape)}")
        if t.device != idx.device:
            raise ValueError(f"{name}.{field} must be on the device of the index ({idx.device}), got {t.device}")
    if cols > INDEX16_MAX_COLS:
        raise ValueError(f"{name} exists only for at most {INDEX16_MAX_COLS} indexed columns, got {cols}")
    if validate:
        if not torch.equal(ix.idx.to(INDEX_DTYPE), idx):
            raise ValueError(f"{name}.idx does not hold the indices it was derived from")
        rows = ptr.numel() - 1
        if not torch.equal(ix.order.sort().values, torch.arange(rows, dtype=INDEX_DTYPE, device=idx.device)):
            raise ValueError(f"{name}.order must be a permutation of the {rows} rows")
    return ix


def _index16_args(ix: Index16 | None):
    """A compact index as the ops' two optional arguments."""
    return (None, None) if ix is None else tuple(ix)


def _check_csc(csc, values: torch.Tensor, in_features: int, name: str = "csc") -> CSCIndex:
    """The transposed index as a CSCIndex, its tensors' kinds and lengths checked."""
    if not isinstance(csc, (tuple, list)) or len(csc) != 3:
        raise TypeError(f"{name} must be a CSCIndex (col_ptr, row_idx, csr2csc), got {type(csc).__name__}"
                        + (f" of length {len(csc)}" if isinstance(csc, (tuple, list)) else ""))
    csc = CSCIndex(*csc)
    label = {field: field if name == "csc" else f"{name}.{field}" for field in CSCIndex._fields}
    for field, t in zip(CSCIndex._fields, csc):
        _check_index_like(label[field], t, values)
    if csc.col_ptr.numel() != in_features + 1:
        raise ValueError(f"{label['col_ptr']} must have in_features + 1 = {in_features + 1} entries, "
                         f"got {csc.col_ptr.numel()}")
    if csc.row_idx.numel() != values.numel() or csc.csr2csc.numel() != values.numel():
        raise ValueError(f"{label['row_idx']} and {label['csr2csc']} must have one entry per stored value "
                         f"({values.numel()}), got {csc.row_idx.numel()} and {csc.csr2csc.numel()}")
    return csc


def _validate_csc(csc: CSCIndex, shape) -> None:
    """A CSC index of a (rows x cols) matrix, checked in full: (col_ptr,
    row_idx) is a valid CSR of the transpose and csr2csc a permutation of the
    stored slots. O(nnz log nnz); for callers that pass their own."""
    rows, cols = shape
    validate_csr(csc.col_ptr, csc.row_idx, (cols, rows), names=("col_ptr", "row_idx"))
    nnz = csc.row_idx.numel()
    if not torch.equal(csc.csr2csc.sort().values, torch.arange(nnz, dtype=INDEX_DTYPE, device=csc.csr2csc.device)):
        raise ValueError(f"csr2csc must be a permutation of range(nnz = {nnz}) (each stored slot once)")


def _validate_weight(label, values, row_ptr, col_idx, csc: CSCIndex, shape) -> None:
    """A layer's CSR matrix of ``shape`` and its transposed index, in full
    (the ``validate=True`` path of the layer ops); label(field) names the
    arguments ("hh_row_ptr", ...)."""
    validate_csr(row_ptr, col_idx, shape, values, names=(label("row_ptr"), label("col_idx")))
    expected = csr_transpose(row_ptr, col_idx, shape[1])
    if not all(torch.equal(a, b) for a, b in zip(csc, expected)):
        raise ValueError(f"{label('csc')} is not the transposed index of ({label('row_ptr')}, {label('col_idx')})")


# --------------------------------------------------------------------------
# Public functions

def sparse_linear(input: torch.Tensor, values: torch.Tensor, row_ptr: torch.Tensor,
                  col_idx: torch.Tensor, bias: torch.Tensor | None = None, *,
                  csc: CSCIndex | None = None, index16: Index16 | None = None,
                  csc_index16: Index16 | None = None, validate: bool = True) -> torch.Tensor:
    """y = input @ W^T + bias for a CSR matrix W of shape (out, in).

    input: (*, in); returns (*, out). ``csc`` is W's transposed index (see
    sparse_kernels.csr), which only the CUDA backward reads: it is computed
    there when not given; the CPU backward scatters from the CSR and needs
    none. ``index16`` and ``csc_index16``: the compact indices
    (csr.index16) of the CSR and of ``csc``, which the CUDA products read
    in place of the int32 ones (in <= 65536, resp. out <= 65536); never
    built here (CSRWeight caches them on CUDA), ignored by the CPU.
    ``validate`` checks the CSR structure (O(nnz)) and the given indices;
    CSRWeight validates once and passes False. Differentiable in input,
    values and bias.
    """
    _check_float("input", input)
    _check_values(values)
    _check_same("values", values, "input", input)
    _check_index_like("row_ptr", row_ptr, values)
    _check_index_like("col_idx", col_idx, values)
    if input.dim() < 1:
        raise ValueError("input must have at least one dimension (*, in_features)")
    if row_ptr.numel() < 1:
        raise ValueError("row_ptr must have out_features + 1 >= 1 entries, got an empty tensor")
    in_features = input.shape[-1]
    out_features = row_ptr.numel() - 1
    if validate:
        validate_csr(row_ptr, col_idx, (out_features, in_features), values)
    if bias is not None:
        _check_float("bias", bias)
        _check_same("bias", bias, "input", input)
        if bias.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {tuple(bias.shape)}")
    if csc_index16 is not None and csc is None and values.device.type == "cpu":
        raise ValueError("csc_index16 indexes the transposed index: pass csc with it")
    if csc is None:
        if values.device.type != "cpu":
            csc = csr_transpose(row_ptr, col_idx, in_features)
    else:
        csc = _check_csc(csc, values, in_features)
        if validate:
            expected = csr_transpose(row_ptr, col_idx, in_features)
            if not all(torch.equal(a, b) for a, b in zip(csc, expected)):
                raise ValueError("csc is not the transposed index of (row_ptr, col_idx)")
    index16 = _check_index16("index16", index16, row_ptr, col_idx, in_features, validate)
    if csc_index16 is not None:
        csc_index16 = _check_index16("csc_index16", csc_index16, csc.col_ptr, csc.row_idx, out_features,
                                     validate)
    # Not reshape(-1, in_features): with in_features = 0 the -1 is ambiguous.
    flat = input.reshape(math.prod(input.shape[:-1]), in_features)
    out = _ops.sparse_linear(flat, values, row_ptr, col_idx, *_csc_args(csc), bias, *_index16_args(index16),
                             *_index16_args(csc_index16))
    return out.reshape(*input.shape[:-1], out_features)


def sparse_linear_input_grad(grad_output: torch.Tensor, values: torch.Tensor, csc: CSCIndex, *,
                             index16: Index16 | None = None, validate: bool = True) -> torch.Tensor:
    """grad_output (N, out) @ W -> (N, in), through W's transposed index
    ``csc`` (out = grad_output's columns, in = len(col_ptr) - 1).
    ``index16``: the compact index of ``csc`` (csr.index16 over out rows),
    read by the CUDA kernel in place of row_idx; ignored by the CPU.
    ``validate`` checks the indices in full (O(nnz log nnz))."""
    _check_float("grad_output", grad_output)
    _check_values(values)
    _check_same("values", values, "grad_output", grad_output)
    if grad_output.dim() != 2:
        raise ValueError(f"grad_output must be 2-D (N, out_features), got shape {tuple(grad_output.shape)}")
    col_ptr = csc[0] if isinstance(csc, (tuple, list)) and len(csc) == 3 else None
    in_features = col_ptr.numel() - 1 if isinstance(col_ptr, torch.Tensor) else 0
    csc = _check_csc(csc, values, in_features)
    if in_features < 0:
        raise ValueError("col_ptr must have in_features + 1 >= 1 entries, got an empty tensor")
    if validate:
        _validate_csc(csc, (grad_output.shape[1], in_features))
    index16 = _check_index16("index16", index16, csc.col_ptr, csc.row_idx, grad_output.shape[1], validate)
    return _ops.sparse_linear_input_grad(grad_output, values, *csc, *_index16_args(index16))


def sparse_linear_input_grad_csr(grad_output: torch.Tensor, values: torch.Tensor, row_ptr: torch.Tensor,
                                 col_idx: torch.Tensor, in_features: int, *,
                                 validate: bool = True) -> torch.Tensor:
    """grad_output (N, out) @ W -> (N, in) from W's CSR (row_ptr, col_idx) of
    shape (out, in_features), by scatter: no transposed index. CPU only (the
    CUDA product gathers through the transposed index, see
    sparse_linear_input_grad). ``validate`` checks the CSR in full (O(nnz))."""
    _check_float("grad_output", grad_output)
    _check_values(values)
    _check_same("values", values, "grad_output", grad_output)
    _check_index_like("row_ptr", row_ptr, values)
    _check_index_like("col_idx", col_idx, values)
    if values.device.type != "cpu":
        raise ValueError(f"sparse_linear_input_grad_csr runs on the CPU; on {values.device} use "
                         "sparse_linear_input_grad with the transposed index")
    if grad_output.dim() != 2:
        raise ValueError(f"grad_output must be 2-D (N, out_features), got shape {tuple(grad_output.shape)}")
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 0:
        raise ValueError(f"in_features must be an int >= 0, got {in_features!r}")
    if row_ptr.numel() != grad_output.shape[1] + 1:
        raise ValueError(f"row_ptr must have out_features + 1 = {grad_output.shape[1] + 1} entries "
                         f"(grad_output's columns + 1), got {row_ptr.numel()}")
    if col_idx.numel() != values.numel():
        raise ValueError(f"col_idx and values must have equal lengths (nnz), got {col_idx.numel()} and "
                         f"{values.numel()}")
    if validate:
        validate_csr(row_ptr, col_idx, (grad_output.shape[1], in_features), values)
    return _ops.sparse_linear_input_grad_csr(grad_output, values, row_ptr, col_idx, in_features)


def sparse_linear_value_grad(grad_output: torch.Tensor, input: torch.Tensor,
                             row_ptr: torch.Tensor, col_idx: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    """SDDMM: (grad_output^T @ input) at the stored nonzeros only -> (nnz,).
    ``validate`` checks the CSR structure (O(nnz))."""
    _check_float("grad_output", grad_output)
    _check_float("input", input)
    _check_same("input", input, "grad_output", grad_output)
    _check_index_like("row_ptr", row_ptr, input, "input")
    _check_index_like("col_idx", col_idx, input, "input")
    if grad_output.dim() != 2 or input.dim() != 2 or grad_output.shape[0] != input.shape[0]:
        raise ValueError(
            f"grad_output (N, out) and input (N, in) must be 2-D with equal N, got "
            f"{tuple(grad_output.shape)} and {tuple(input.shape)}")
    if row_ptr.numel() < 1:
        raise ValueError("row_ptr must have out_features + 1 >= 1 entries, got an empty tensor")
    if grad_output.shape[1] != row_ptr.numel() - 1:
        raise ValueError(f"grad_output must have out_features = {row_ptr.numel() - 1} columns, got {grad_output.shape[1]}")
    if validate:
        validate_csr(row_ptr, col_idx, (grad_output.shape[1], input.shape[1]))
    return _ops.sparse_linear_value_grad(grad_output, input, row_ptr, col_idx)


# --------------------------------------------------------------------------
# Block-sparse (BSR) products: the pattern is a CSR over the grid of blocks
# (see sparse_kernels.bsr), values (nblocks, bh, bw).

def _check_block_values(values) -> None:
    _check_float("values", values)
    if values.dim() != 3 or not values.is_contiguous():
        raise ValueError(f"values must be a contiguous 3-D tensor (nblocks, block_height, block_width), "
                         f"got shape {tuple(values.shape)}")
    if values.shape[1] < 1 or values.shape[2] < 1:
        raise ValueError(f"blocks must be at least 1 x 1, got {tuple(values.shape[1:])}")


def _check_block_csc(block_csc: CSCIndex, values: torch.Tensor, n_block_cols: int) -> None:
    if not isinstance(block_csc, (tuple, list)) or len(block_csc) != 3:
        raise TypeError("block_csc must be a CSCIndex (block_col_ptr, block_row_idx, block_csr2csc)")
    for name, t in zip(("block_col_ptr", "block_row_idx", "block_csr2csc"), block_csc):
        _check_index_like(name, t, values)
    if block_csc[0].numel() != n_block_cols + 1:
        raise ValueError(f"block_col_ptr must have block columns + 1 = {n_block_cols + 1} entries, "
                         f"got {block_csc[0].numel()}")
    if block_csc[1].numel() != values.shape[0] or block_csc[2].numel() != values.shape[0]:
        raise ValueError("block_row_idx and block_csr2csc must have one entry per stored block")


def bsr_linear(input: torch.Tensor, values: torch.Tensor, block_row_ptr: torch.Tensor,
               block_col_idx: torch.Tensor, bias: torch.Tensor | None = None, *,
               block_csc: CSCIndex | None = None, validate: bool = True) -> torch.Tensor:
    """y = input @ W^T + bias for a block-sparse W of shape (out, in):
    out = (len(block_row_ptr) - 1) * bh, blocks ``values`` (nblocks, bh, bw).

    input: (*, in) with bw dividing in; returns (*, out). ``block_csc`` is
    the transposed block index (csr.csr_transpose of the block pattern over
    in / bw block columns), computed when not given. ``validate`` checks the
    block structure (O(nblocks)); BSRWeight validates once and passes False.
    Differentiable in input, values and bias.
    """
    _check_float("input", input)
    _check_block_values(values)
    _check_same("values", values, "input", input)
    _check_index_like("block_row_ptr", block_row_ptr, values)
    _check_index_like("block_col_idx", block_col_idx, values)
    if input.dim() < 1:
        raise ValueError("input must have at least one dimension (*, in_features)")
    bh, bw = values.shape[1:]
    in_features = input.shape[-1]
    if in_features % bw:
        raise ValueError(f"input must have a multiple of the block width {bw} as in_features, got {in_features}")
    if block_row_ptr.numel() < 1:
        raise ValueError("block_row_ptr must have block rows + 1 >= 1 entries")
    out_features = (block_row_ptr.numel() - 1) * bh
    shape = (out_features, in_features)
    if validate:
        bsr_format.validate_bsr(block_row_ptr, block_col_idx, shape, (bh, bw), values)
    elif values.shape[0] != block_col_idx.numel():
        raise ValueError(f"values must hold one block per block_col_idx entry ({block_col_idx.numel()}), "
                         f"got {values.shape[0]}")
    if bias is not None:
        _check_float("bias", bias)
        _check_same("bias", bias, "input", input)
        if bias.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {tuple(bias.shape)}")
    n_block_cols = in_features // bw
    if block_csc is None:
        block_csc = csr_transpose(block_row_ptr, block_col_idx, n_block_cols)
    else:
        _check_block_csc(block_csc, values, n_block_cols)
        if validate:
            expected = csr_transpose(block_row_ptr, block_col_idx, n_block_cols)
            if not all(torch.equal(a, b) for a, b in zip(block_csc, expected)):
                raise ValueError("block_csc is not the transposed index of (block_row_ptr, block_col_idx)")
    flat = input.reshape(-1, in_features)
    out = _ops.bsr_linear(flat, values, block_row_ptr, block_col_idx, *block_csc, bias)
    return out.reshape(*input.shape[:-1], out_features)


def bsr_linear_input_grad(grad_output: torch.Tensor, values: torch.Tensor, block_csc: CSCIndex) -> torch.Tensor:
    """grad_output (N, out) @ W -> (N, in), through W's transposed block index."""
    _check_float("grad_output", grad_output)
    _check_block_values(values)
    _check_same("values", values, "grad_output", grad_output)
    if grad_output.dim() != 2:
        raise ValueError(f"grad_output must be 2-D (N, out_features), got shape {tuple(grad_output.shape)}")
    bh = values.shape[1]
    if grad_output.shape[1] % bh:
        raise ValueError(f"grad_output must have a multiple of the block height {bh} as out_features, "
                         f"got {grad_output.shape[1]}")
    if not isinstance(block_csc, (tuple, list)) or len(block_csc) != 3:
        raise TypeError("block_csc must be a CSCIndex (block_col_ptr, block_row_idx, block_csr2csc)")
    n_block_cols = block_csc[0].numel() - 1 if isinstance(block_csc[0], torch.Tensor) else 0
    _check_block_csc(block_csc, values, n_block_cols)
    return _ops.bsr_linear_input_grad(grad_output, values, *block_csc)


def bsr_linear_value_grad(grad_output: torch.Tensor, input: torch.Tensor, block_row_ptr: torch.Tensor,
                          block_col_idx: torch.Tensor, block_shape) -> torch.Tensor:
    """(grad_output^T @ input) at the stored blocks only -> (nblocks, bh, bw)."""
    bh, bw = bsr_format.check_block_shape(block_shape)
    _check_float("grad_output", grad_output)
    _check_float("input", input)
    _check_same("input", input, "grad_output", grad_output)
    _check_index_like("block_row_ptr", block_row_ptr, input)
    _check_index_like("block_col_idx", block_col_idx, input)
    if grad_output.dim() != 2 or input.dim() != 2 or grad_output.shape[0] != input.shape[0]:
        raise ValueError(
            f"grad_output (N, out) and input (N, in) must be 2-D with equal N, got "
            f"{tuple(grad_output.shape)} and {tuple(input.shape)}")
    if block_row_ptr.numel() < 1:
        raise ValueError("block_row_ptr must have block rows + 1 >= 1 entries")
    out_features = (block_row_ptr.numel() - 1) * bh
    if grad_output.shape[1] != out_features:
        raise ValueError(f"grad_output must have out_features = {out_features} columns, got {grad_output.shape[1]}")
    if input.shape[1] % bw:
        raise ValueError(f"input must have a multiple of the block width {bw} as in_features, got {input.shape[1]}")
    return _ops.bsr_linear_value_grad(grad_output, input, block_row_ptr, block_col_idx, bh, bw)


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
def _(input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, bias, col_idx16=None, row_order=None,
      row_idx16=None, col_order=None):
    return input.new_empty((input.shape[0], row_ptr.shape[0] - 1))


@torch.library.register_fake("sparse_kernels::sparse_linear_input_grad")
def _(grad_output, values, col_ptr, row_idx, csr2csc, row_idx16=None, col_order=None):
    return grad_output.new_empty((grad_output.shape[0], col_ptr.shape[0] - 1))


@torch.library.register_fake("sparse_kernels::sparse_linear_input_grad_csr")
def _(grad_output, values, row_ptr, col_idx, in_features):
    return grad_output.new_empty((grad_output.shape[0], in_features))


@torch.library.register_fake("sparse_kernels::sparse_linear_value_grad")
def _(grad_output, input, row_ptr, col_idx):
    return input.new_empty((col_idx.shape[0],))


@torch.library.register_fake("sparse_kernels::bsr_linear")
def _(input, values, block_row_ptr, block_col_idx, block_col_ptr, block_row_idx, block_csr2csc, bias):
    return input.new_empty((input.shape[0], (block_row_ptr.shape[0] - 1) * values.shape[1]))


@torch.library.register_fake("sparse_kernels::bsr_linear_input_grad")
def _(grad_output, values, block_col_ptr, block_row_idx, block_csr2csc):
    return grad_output.new_empty((grad_output.shape[0], (block_col_ptr.shape[0] - 1) * values.shape[2]))


@torch.library.register_fake("sparse_kernels::bsr_linear_value_grad")
def _(grad_output, input, block_row_ptr, block_col_idx, block_height, block_width):
    return input.new_empty((block_col_idx.shape[0], block_height, block_width))


@torch.library.register_fake("sparse_kernels::lstm_cell")
def _(gates, c_prev):
    return torch.empty_like(c_prev), torch.empty_like(c_prev)


@torch.library.register_fake("sparse_kernels::lstm_cell_backward")
def _(grad_h, grad_c, gates, c_prev, c):
    return torch.empty_like(gates), torch.empty_like(c_prev)


# --------------------------------------------------------------------------
# Autograd

def _csc_args(csc):
    """A transposed index as the ops' three optional arguments."""
    return (None, None, None) if csc is None else tuple(csc)


def _input_grad(grad_output, values, row_ptr, col_idx, in_features, col_ptr, row_idx, csr2csc,
                row_idx16=None, col_order=None):
    """grad_output @ W by the product each device does best: the scatter from
    the CSR on the CPU; elsewhere the gather through the transposed index
    (built here when the caller passed none, and then without the compact
    index, which indexes the caller's)."""
    if values.device.type == "cpu":
        return _ops.sparse_linear_input_grad_csr(grad_output, values, row_ptr, col_idx, in_features)
    if col_ptr is None:
        col_ptr, row_idx, csr2csc = csr_transpose(row_ptr, col_idx, in_features)
        row_idx16 = col_order = None
    return _ops.sparse_linear_input_grad(grad_output, values, col_ptr, row_idx, csr2csc, row_idx16, col_order)


def _sparse_linear_setup_context(ctx, inputs, output):
    input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, bias, _, _, row_idx16, col_order = inputs
    # The forward's compact index (col_idx16, row_order) is not needed: the
    # value gradient (SDDMM) reads the int32 col_idx.
    ctx.save_for_backward(input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, row_idx16, col_order)
    ctx.has_bias = bias is not None


def _sparse_linear_backward(ctx, grad_output):
    input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, row_idx16, col_order = ctx.saved_tensors
    grad_input = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = _input_grad(grad_output, values, row_ptr, col_idx, input.shape[1], col_ptr, row_idx,
                                 csr2csc, row_idx16, col_order)
    if ctx.needs_input_grad[1]:
        grad_values = _ops.sparse_linear_value_grad(grad_output, input, row_ptr, col_idx)
    if ctx.has_bias and ctx.needs_input_grad[7]:
        grad_bias = grad_output.sum(0)
    return grad_input, grad_values, None, None, None, None, None, grad_bias, None, None, None, None


torch.library.register_autograd(
    "sparse_kernels::sparse_linear", _sparse_linear_backward, setup_context=_sparse_linear_setup_context)


def _bsr_linear_setup_context(ctx, inputs, output):
    input, values, block_row_ptr, block_col_idx, block_col_ptr, block_row_idx, block_csr2csc, bias = inputs
    ctx.save_for_backward(input, values, block_row_ptr, block_col_idx, block_col_ptr, block_row_idx,
                          block_csr2csc)
    ctx.has_bias = bias is not None


def _bsr_linear_backward(ctx, grad_output):
    input, values, block_row_ptr, block_col_idx, block_col_ptr, block_row_idx, block_csr2csc = ctx.saved_tensors
    grad_input = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = _ops.bsr_linear_input_grad(grad_output, values, block_col_ptr, block_row_idx, block_csr2csc)
    if ctx.needs_input_grad[1]:
        grad_values = _ops.bsr_linear_value_grad(grad_output, input, block_row_ptr, block_col_idx,
                                                 values.shape[1], values.shape[2])
    if ctx.has_bias and ctx.needs_input_grad[7]:
        grad_bias = grad_output.sum(0)
    return grad_input, grad_values, None, None, None, None, None, grad_bias


torch.library.register_autograd(
    "sparse_kernels::bsr_linear", _bsr_linear_backward, setup_context=_bsr_linear_setup_context)


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
# Shared checks of the whole-sequence layer ops

def _check_batch_sizes(batch_sizes, steps: int, batch: int) -> torch.Tensor:
    """PackedSequence's batch_sizes: int64 on the CPU, one per step,
    non-increasing, within [0, batch]; None = every row at every step."""
    if batch_sizes is None:
        return torch.full((steps,), batch, dtype=torch.int64)
    if not isinstance(batch_sizes, torch.Tensor):
        raise TypeError(f"batch_sizes must be an int64 CPU tensor or None, got {type(batch_sizes).__name__}")
    if batch_sizes.dtype != torch.int64:
        raise TypeError(f"batch_sizes must have dtype torch.int64, got {batch_sizes.dtype}")
    if batch_sizes.device.type != "cpu":
        raise ValueError(f"batch_sizes must be on the CPU (as PackedSequence keeps it), got {batch_sizes.device}")
    if batch_sizes.shape != (steps,):
        raise ValueError(f"batch_sizes must have shape (steps,) = ({steps},), got {tuple(batch_sizes.shape)}")
    if steps and (int(batch_sizes.min()) < 0 or int(batch_sizes.max()) > batch
                  or bool((batch_sizes.diff() > 0).any())):
        raise ValueError(f"batch_sizes must be non-increasing with entries in [0, batch = {batch}], got "
                         f"{batch_sizes.tolist()}")
    return batch_sizes.contiguous()


def _check_recurrent_weight(label, values, row_ptr, col_idx, csc, ref: torch.Tensor, shape,
                            validate: bool) -> CSCIndex | None:
    """One sparse matrix of a layer op, label(field) naming its arguments
    ("hh_values", "hh_row_ptr", ...): kinds, lengths, the transposed index's,
    and with ``validate`` the whole structure. Returns the transposed index
    the op needs: None on the CPU when not given (its backward scatters from
    the CSR), built when not given elsewhere."""
    rows, cols = shape
    _check_float(label("values"), values)
    _check_same(label("values"), values, "input_gates", ref)
    if values.dim() != 1 or not values.is_contiguous():
        raise ValueError(f"{label('values')} must be a contiguous 1-D tensor, got shape {tuple(values.shape)}")
    _check_index_like(label("row_ptr"), row_ptr, values, label("values"))
    _check_index_like(label("col_idx"), col_idx, values, label("values"))
    if row_ptr.numel() != rows + 1:
        raise ValueError(f"{label('row_ptr')} must have rows + 1 = {rows + 1} entries, got {row_ptr.numel()}")
    if col_idx.numel() != values.numel():
        raise ValueError(f"{label('col_idx')} and {label('values')} must have equal lengths (nnz), got "
                         f"{col_idx.numel()} and {values.numel()}")
    if csc is None:
        if validate:
            validate_csr(row_ptr, col_idx, shape, values, names=(label("row_ptr"), label("col_idx")))
        return None if values.device.type == "cpu" else csr_transpose(row_ptr, col_idx, cols)
    csc = _check_csc(csc, values, cols, label("csc"))
    if validate:
        _validate_weight(label, values, row_ptr, col_idx, csc, shape)
    return csc


# --------------------------------------------------------------------------
# Whole-sequence LSTM layer

def lstm_layer(input_gates: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, hh_values: torch.Tensor,
               hh_row_ptr: torch.Tensor, hh_col_idx: torch.Tensor, hh_csc: CSCIndex,
               batch_sizes: torch.Tensor | None = None, reverse: bool = False, projection=None, *,
               validate: bool = True):
    """One LSTM layer over a whole sequence, the time loop in C++.

    input_gates (T, B, 4H): the input projection x W_ih^T + b_ih + b_hh of
    every step, computed beforehand as one sparse product. c0 (B, H); h0 (B, P)
    with P = proj_size or H. W_hh is CSR (4H x P) with its transposed index
    ``hh_csc``. ``projection`` = (values, row_ptr, col_idx, csc) of W_hr
    (P x H) for proj_size > 0, else None. batch_sizes (T,) int64
    (PackedSequence's; None = all B) marks which rows are active at each step.
    Returns (output (T, B, P), h_n, c_n); differentiable in input_gates, h0,
    c0, hh_values and the projection's values. ``validate`` checks the CSR
    structures and transposed indices in full (O(nnz log nnz)); the modules
    pass False, their CSRWeights having been validated once.
    """
    _check_float("input_gates", input_gates)
    for name, t in (("h0", h0), ("c0", c0)):
        _check_float(name, t)
        _check_same(name, t, "input_gates", input_gates)
    if input_gates.dim() != 3 or h0.dim() != 2 or c0.dim() != 2:
        raise ValueError(f"input_gates must be (T, B, 4H) and h0, c0 (B, *), got {tuple(input_gates.shape)}, "
                         f"{tuple(h0.shape)} and {tuple(c0.shape)}")
    steps, batch, width = input_gates.shape
    hidden = width // 4
    if width != 4 * hidden or c0.shape != (batch, hidden):
        raise ValueError(f"expected input_gates (T, B, 4*hidden) and c0 (B, hidden), got "
                         f"{tuple(input_gates.shape)} and {tuple(c0.shape)}")
    state = hidden
    hr_args = ()
    if projection is not None:
        if not isinstance(projection, (tuple, list)) or len(projection) != 4:
            raise TypeError("projection must be (values, row_ptr, col_idx, csc) of W_hr, or None")
        hr_values, hr_row_ptr, hr_col_idx, hr_csc = projection
        _check_index_like("projection row_ptr", hr_row_ptr, input_gates, "input_gates")
        if hr_row_ptr.numel() < 1:
            raise ValueError("projection row_ptr must have proj_size + 1 entries, got an empty tensor")
        state = hr_row_ptr.numel() - 1
        hr_csc = _check_recurrent_weight(lambda f: f"projection {f}", hr_values, hr_row_ptr, hr_col_idx,
                                         hr_csc, input_gates, (state, hidden), validate)
        hr_args = (hr_values, hr_row_ptr, hr_col_idx, *_csc_args(hr_csc))
    if h0.shape != (batch, state):
        what = "proj_size (the rows of W_hr)" if projection is not None else "hidden"
        raise ValueError(f"expected h0 of shape (B, {what}) = ({batch}, {state}) for input_gates of shape "
                         f"{tuple(input_gates.shape)}, got {tuple(h0.shape)}")
    hh_csc = _check_recurrent_weight(lambda f: f"hh_{f}", hh_values, hh_row_ptr, hh_col_idx, hh_csc,
                                     input_gates, (4 * hidden, state), validate)
    batch_sizes = _check_batch_sizes(batch_sizes, steps, batch)
    output, h_n, c_n, *_ = _ops.lstm_layer(input_gates, h0, c0, hh_values, hh_row_ptr, hh_col_idx,
                                           *_csc_args(hh_csc),
                                           batch_sizes, bool(reverse), *hr_args)
    return output, h_n, c_n


@torch.library.register_fake("sparse_kernels::lstm_layer")
def _(input_gates, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse,
      hr_values=None, hr_row_ptr=None, hr_col_idx=None, hr_col_ptr=None, hr_row_idx=None, hr_csr2csc=None):
    steps, batch, _ = input_gates.shape
    hidden, state = c0.shape[1], h0.shape[1]
    hidden_full = (input_gates.new_empty((steps, batch, hidden)) if hr_values is not None
                   else input_gates.new_empty((0,)))
    return (input_gates.new_empty((steps, batch, state)), torch.empty_like(h0), torch.empty_like(c0),
            torch.empty_like(input_gates), input_gates.new_empty((steps, batch, hidden)), hidden_full)


@torch.library.register_fake("sparse_kernels::lstm_layer_backward")
def _(grad_output, grad_h_n, grad_c_n, gates, output, cells, hidden_full, h0, c0, values, row_ptr, col_idx,
      col_ptr, row_idx, csr2csc, batch_sizes, reverse, hr_values=None, hr_row_ptr=None, hr_col_idx=None,
      hr_col_ptr=None, hr_row_idx=None, hr_csr2csc=None):
    grad_hr = torch.empty_like(hr_values) if hr_values is not None else values.new_empty((0,))
    return (torch.empty_like(gates), torch.empty_like(h0), torch.empty_like(c0), torch.empty_like(values),
            grad_hr)


def _lstm_layer_setup_context(ctx, inputs, output):
    (_, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, *hr) = inputs
    out, _, _, gates, cells, hidden_full = output
    ctx.mark_non_differentiable(gates, cells, hidden_full)  # saved activations, not results
    ctx.projected = len(hr) > 0 and hr[0] is not None
    hr = tuple(hr) if ctx.projected else ()
    ctx.save_for_backward(gates, out, cells, hidden_full, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx,
                          csr2csc, batch_sizes, *hr)
    ctx.reverse = reverse


def _lstm_layer_backward(ctx, grad_output, grad_h_n, grad_c_n, *_saved_grads):
    gates, out, cells, hidden_full, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, \
        batch_sizes, *hr = ctx.saved_tensors
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
    grad_gates, grad_h0, grad_c0, grad_values, grad_hr = _ops.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, gates, out, cells, hidden_full, h0, c0, values, row_ptr, col_idx,
        col_ptr, row_idx, csr2csc, batch_sizes, ctx.reverse, *hr)
    grad_hr = grad_hr if ctx.projected else None
    return (grad_gates, grad_h0, grad_c0, grad_values, None, None, None, None, None, None, None,
            grad_hr, None, None, None, None, None)


torch.library.register_autograd(
    "sparse_kernels::lstm_layer", _lstm_layer_backward, setup_context=_lstm_layer_setup_context)


# --------------------------------------------------------------------------
# Whole-sequence GRU and Elman RNN layers (same machinery as lstm_layer)

def _check_layer_common(name: str, input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, hh_csc,
                        batch_sizes, gate_count: int, validate: bool):
    # The GRU and Elman cell kernels are float32/float64 only, on CUDA too
    # (SK_DISPATCH_CUDA_F32_F64 in csrc/cuda/ops_cuda.cpp); the other
    # tensors must match input_gates' dtype.
    _check_float("input_gates", input_gates, no_half=name)
    _check_float("h0", h0, no_half=name)
    _check_same("h0", h0, "input_gates", input_gates)
    if input_gates.dim() != 3 or h0.dim() != 2:
        raise ValueError(f"{name}: input_gates must be (T, B, {gate_count}H) and h0 (B, H), got "
                         f"{tuple(input_gates.shape)} and {tuple(h0.shape)}")
    steps, batch, width = input_gates.shape
    hidden = h0.shape[1]
    if width != gate_count * hidden or h0.shape[0] != batch:
        raise ValueError(f"{name}: expected input_gates (T, {batch}, {gate_count * hidden}) and h0 "
                         f"({batch}, {hidden}), got {tuple(input_gates.shape)} and {tuple(h0.shape)}")
    hh_csc = _check_recurrent_weight(lambda f: f"hh_{f}", hh_values, hh_row_ptr, hh_col_idx, hh_csc,
                                     input_gates, (gate_count * hidden, hidden), validate)
    return _check_batch_sizes(batch_sizes, steps, batch), hh_csc


def gru_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, hh_csc: CSCIndex, hh_bias=None,
              batch_sizes=None, reverse: bool = False, *, validate: bool = True):
    """One GRU layer over a whole sequence, the time loop in C++ (see lstm_layer).
    input_gates (T, B, 3H) = x W_ih^T + b_ih; W_hh CSR (3H x H) with optional
    dense b_hh. Returns (output (T, B, H), h_n (B, H))."""
    batch_sizes, hh_csc = _check_layer_common("gru_layer", input_gates, h0, hh_values, hh_row_ptr, hh_col_idx,
                                              hh_csc, batch_sizes, 3, validate)
    if hh_bias is not None:
        _check_float("hh_bias", hh_bias)
        _check_same("hh_bias", hh_bias, "input_gates", input_gates)
        if hh_bias.shape != (input_gates.shape[2],):
            raise ValueError(f"hh_bias must have shape ({input_gates.shape[2]},), got {tuple(hh_bias.shape)}")
    output, h_n, _ = _ops.gru_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, *_csc_args(hh_csc),
                                    hh_bias,
                                    batch_sizes, bool(reverse))
    return output, h_n


def rnn_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, hh_csc: CSCIndex, batch_sizes=None,
              reverse: bool = False, nonlinearity: str = "tanh", *, validate: bool = True):
    """One Elman RNN layer (tanh or relu) over a whole sequence, the time loop
    in C++. input_gates (T, B, H) = x W_ih^T + b_ih + b_hh. Returns (output, h_n)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    batch_sizes, hh_csc = _check_layer_common("rnn_layer", input_gates, h0, hh_values, hh_row_ptr, hh_col_idx,
                                              hh_csc, batch_sizes, 1, validate)
    return _ops.rnn_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, *_csc_args(hh_csc), batch_sizes,
                          bool(reverse), nonlinearity == "relu")


@torch.library.register_fake("sparse_kernels::gru_layer")
def _(input_gates, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, hh_bias, batch_sizes, reverse):
    steps, batch, _ = input_gates.shape
    return (input_gates.new_empty((steps, batch, h0.shape[1])), torch.empty_like(h0),
            torch.empty_like(input_gates))


@torch.library.register_fake("sparse_kernels::gru_layer_backward")
def _(grad_output, grad_h_n, input_gates, hidden_gates, output, h0, values, row_ptr, col_idx, col_ptr,
      row_idx, csr2csc, batch_sizes, reverse):
    return (torch.empty_like(input_gates), torch.empty_like(hidden_gates), torch.empty_like(h0),
            torch.empty_like(values))


def _gru_layer_setup_context(ctx, inputs, output):
    input_gates, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, hh_bias, batch_sizes, reverse = inputs
    out, _, hidden_gates = output
    ctx.mark_non_differentiable(hidden_gates)
    ctx.save_for_backward(input_gates, hidden_gates, out, h0, values, row_ptr, col_idx, col_ptr, row_idx,
                          csr2csc, batch_sizes)
    ctx.reverse, ctx.has_bias = reverse, hh_bias is not None


def _gru_layer_backward(ctx, grad_output, grad_h_n, _grad_hidden_gates):
    (input_gates, hidden_gates, out, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc,
     batch_sizes) = ctx.saved_tensors
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_ig, grad_hg, grad_h0, grad_values = _ops.gru_layer_backward(
        grad_output, grad_h_n, input_gates, hidden_gates, out, h0, values, row_ptr, col_idx, col_ptr,
        row_idx, csr2csc, batch_sizes, ctx.reverse)
    grad_bias = grad_hg.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[8] else None
    return grad_ig, grad_h0, grad_values, None, None, None, None, None, grad_bias, None, None


torch.library.register_autograd("sparse_kernels::gru_layer", _gru_layer_backward,
                                setup_context=_gru_layer_setup_context)


@torch.library.register_fake("sparse_kernels::rnn_layer")
def _(input_gates, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, relu):
    return torch.empty_like(input_gates), torch.empty_like(h0)


@torch.library.register_fake("sparse_kernels::rnn_layer_backward")
def _(grad_output, grad_h_n, output, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc,
      batch_sizes, reverse, relu):
    return torch.empty_like(output), torch.empty_like(h0), torch.empty_like(values)


def _rnn_layer_setup_context(ctx, inputs, output):
    _, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, relu = inputs
    ctx.save_for_backward(output[0], h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes)
    ctx.reverse, ctx.relu = reverse, relu


def _rnn_layer_backward(ctx, grad_output, grad_h_n):
    out, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes = ctx.saved_tensors
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_ig, grad_h0, grad_values = _ops.rnn_layer_backward(
        grad_output, grad_h_n, out, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes,
        ctx.reverse, ctx.relu)
    return grad_ig, grad_h0, grad_values, None, None, None, None, None, None, None, None


torch.library.register_autograd("sparse_kernels::rnn_layer", _rnn_layer_backward,
                                setup_context=_rnn_layer_setup_context)


# --------------------------------------------------------------------------
# Whole-sequence recurrent highway network (RHN) layer

def rhn_layer(input_gates: torch.Tensor, h0: torch.Tensor, r_values, r_row_ptr, r_col_idx, r_csc,
              biases: torch.Tensor, batch_sizes: torch.Tensor | None = None, reverse: bool = False, *,
              validate: bool = True):
    """One recurrent highway network layer (Zilly et al. 2017, coupled carry
    gate) over a whole sequence, the time and depth loops in C++.

    input_gates (T, B, 2H): x W^T of every step, computed beforehand as one
    sparse product; it enters the first micro-layer. h0 (B, H). r_values,
    r_row_ptr, r_col_idx, r_csc: one entry per micro-layer l = 0..L-1, the CSR
    matrix R_l (2H x H) and its transposed index. biases (L, 2H). Per step,
    s_0 = h_{t-1}; pre_l = [input_gates[t] if l == 0] + R_l s_l + b_l, split
    [a | g]; s_{l+1} = tanh(a) * sigmoid(g) + s_l * (1 - sigmoid(g)); h_t = s_L.
    batch_sizes (T,) int64 (PackedSequence's; None = all B) marks the active
    rows of each step. Returns (output (T, B, H), h_n); differentiable in
    input_gates, h0, every r_values[l] and biases. ``validate`` checks the
    CSR structures and transposed indices in full (the modules pass False).
    """
    # The RHN cell kernels are float32/float64 only (rhn_layer_cuda.cpp).
    _check_float("input_gates", input_gates, no_half="rhn_layer")
    for name, t in (("h0", h0), ("biases", biases)):
        _check_float(name, t, no_half="rhn_layer")
        _check_same(name, t, "input_gates", input_gates)
    if input_gates.dim() != 3 or h0.dim() != 2:
        raise ValueError("input_gates must be (T, B, 2H) and h0 (B, H)")
    steps, batch, width = input_gates.shape
    hidden = h0.shape[1]
    if width != 2 * hidden or h0.shape[0] != batch:
        raise ValueError(f"expected input_gates (T, {h0.shape[0]}, {2 * hidden}) for h0 of shape "
                         f"{tuple(h0.shape)}, got {tuple(input_gates.shape)}")
    lists = dict(r_values=r_values, r_row_ptr=r_row_ptr, r_col_idx=r_col_idx, r_csc=r_csc)
    for name, seq in lists.items():
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name} must be a list with one entry per micro-layer, got {type(seq).__name__}")
    depth = len(r_values)
    if depth == 0:
        raise ValueError("r_values must hold at least one micro-layer")
    if any(len(seq) != depth for seq in lists.values()):
        raise ValueError(f"r_values, r_row_ptr, r_col_idx and r_csc must have equal lengths, got "
                         f"{[len(seq) for seq in lists.values()]}")
    r_csc = list(r_csc)
    for l, (values, row_ptr, col_idx, csc) in enumerate(zip(r_values, r_row_ptr, r_col_idx, r_csc)):
        r_csc[l] = _check_recurrent_weight(lambda f, l=l: f"r_{f}[{l}]", values, row_ptr, col_idx, csc,
                                           input_gates, (2 * hidden, hidden), validate)
    if biases.shape != (depth, 2 * hidden):
        raise ValueError(f"biases must have shape (depth, 2*hidden) = ({depth}, {2 * hidden}), "
                         f"got {tuple(biases.shape)}")
    batch_sizes = _check_batch_sizes(batch_sizes, steps, batch)
    # The transposed indices go whole or not at all (CPU, none given: empty lists).
    if all(csc is None for csc in r_csc):
        col_ptr, row_idx, csr2csc = [], [], []
    else:
        r_csc = [csr_transpose(row_ptr, col_idx, hidden) if csc is None else csc
                 for row_ptr, col_idx, csc in zip(r_row_ptr, r_col_idx, r_csc)]
        col_ptr, row_idx, csr2csc = (list(part) for part in zip(*r_csc))
    output, h_n, _, _ = _ops.rhn_layer(input_gates, h0, list(r_values), list(r_row_ptr), list(r_col_idx),
                                       col_ptr, row_idx, csr2csc, biases, batch_sizes, bool(reverse))
    return output, h_n


@torch.library.register_fake("sparse_kernels::rhn_layer")
def _(input_gates, h0, r_values, r_row_ptr, r_col_idx, r_col_ptr, r_row_idx, r_csr2csc, biases,
      batch_sizes, reverse):
    steps, batch, width = input_gates.shape
    depth = len(r_values)
    return (input_gates.new_empty((steps, batch, width // 2)), torch.empty_like(h0),
            input_gates.new_empty((depth, steps, batch, width)),
            input_gates.new_empty((depth, steps, batch, width // 2)))


@torch.library.register_fake("sparse_kernels::rhn_layer_backward")
def _(grad_output, grad_h_n, pre, states, r_values, r_row_ptr, r_col_idx, r_col_ptr, r_row_idx,
      r_csr2csc, batch_sizes, reverse):
    depth, steps, batch, width = pre.shape
    return (pre.new_empty((steps, batch, width)), torch.empty_like(grad_h_n),
            [torch.empty_like(v) for v in r_values], pre.new_empty((depth, width)))


def _rhn_layer_setup_context(ctx, inputs, output):
    (_, _, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, _, batch_sizes, reverse) = inputs
    out, _, pre, states = output
    ctx.mark_non_differentiable(pre, states)  # saved activations, not results
    ctx.depth = len(values)
    ctx.has_csc = len(col_ptr) > 0
    ctx.save_for_backward(pre, states, out, batch_sizes, *values, *row_ptr, *col_idx, *col_ptr, *row_idx,
                          *csr2csc)
    ctx.reverse = reverse


def _rhn_layer_backward(ctx, grad_output, grad_h_n, _grad_pre, _grad_states):
    pre, states, out, batch_sizes, *index = ctx.saved_tensors
    depth = ctx.depth
    values, row_ptr, col_idx, col_ptr, row_idx, csr2csc = (
        index[k * depth:(k + 1) * depth] if k < 3 or ctx.has_csc else [] for k in range(6))
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = states.new_zeros(states.shape[2:]) if grad_h_n is None else grad_h_n
    grad_input_gates, grad_h0, grad_values, grad_biases = _ops.rhn_layer_backward(
        grad_output, grad_h_n, pre, states, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc,
        batch_sizes, ctx.reverse)
    no_grad = [None] * depth  # the index lists: one None per micro-layer
    no_csc_grad = no_grad if ctx.has_csc else []
    return (grad_input_gates, grad_h0, grad_values, no_grad, no_grad, no_csc_grad, no_csc_grad, no_csc_grad,
            grad_biases, None, None)


torch.library.register_autograd(
    "sparse_kernels::rhn_layer", _rhn_layer_backward, setup_context=_rhn_layer_setup_context)
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
