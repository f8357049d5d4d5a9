"""CSR products: y = x W^T + b, its input gradient (through the transposed
index or by scatter from the CSR) and the value gradient (SDDMM): checks,
fake kernels and autograd."""

from __future__ import annotations

import math

import torch

from ..csr import CSCIndex, Index16, csr_transpose, validate_csr
from ._checks import (_call_op, _check_csc, _check_float, _check_index16, _check_index_like,
                      _check_product_operands, _check_same, _check_sliced_view, _csc_args, _index16_args, _ops,
                      _validate_csc)


def sparse_linear(input: torch.Tensor, values: torch.Tensor, row_ptr: torch.Tensor,
                  col_idx: torch.Tensor, bias: torch.Tensor | None = None, *,
                  csc: CSCIndex | None = None, index16: Index16 | None = None,
                  csc_index16: Index16 | None = None,
                  sliced: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                  validate: bool = True) -> torch.Tensor:
    """y = input @ W^T + bias for a CSR matrix W of shape (out, in).

    input: (*, in); returns (*, out). ``csc`` is W's transposed index (see
    sparse_kernels.csr), which only the CUDA backward reads: it is computed
    there when not given; the CPU backward scatters from the CSR and needs
    none. ``index16`` and ``csc_index16``: the compact indices
    (csr.index16) of the CSR and of ``csc``, which the CUDA products read
    in place of the int32 ones (in <= 65536, resp. out <= 65536); never
    built here (CSRWeight caches them on CUDA), ignored by the CPU.
    ``sliced``: ``CSRWeight.sliced_view(out_features)`` of W, (values, cols,
    slice_ptr) of its sliced layout (SELL-8, or the blocked form on CPUs with
    AVX-512) holding these very values (CPU, float32), which the kernel reads
    instead of the CSR when the input is one row (batch-1 inference; the
    backward reads the CSR).
    ``validate`` checks the CSR structure (O(nnz)) and the given indices;
    CSRWeight validates once and passes False. Differentiable in input,
    values and bias.
    """
    _check_product_operands("input", input, values, row_ptr=row_ptr, col_idx=col_idx)
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
    sliced_args = _check_sliced_view("sliced", sliced, values, 1, out_features)
    # Not reshape(-1, in_features): with in_features = 0 the -1 is ambiguous.
    # 2-D input as it is (two reshapes are ~2 us of a batch-1 call).
    flat = input if input.dim() == 2 else input.reshape(math.prod(input.shape[:-1]), in_features)
    out = _call_op(_ops.sparse_linear, (flat, values, row_ptr, col_idx, *_csc_args(csc), bias,
                                        *_index16_args(index16), *_index16_args(csc_index16), *sliced_args),
                   (flat, values, bias))
    return out if input.dim() == 2 else out.reshape(*input.shape[:-1], out_features)


def sparse_linear_input_grad(grad_output: torch.Tensor, values: torch.Tensor, csc: CSCIndex, *,
                             index16: Index16 | None = None, validate: bool = True) -> torch.Tensor:
    """grad_output (N, out) @ W -> (N, in), through W's transposed index
    ``csc`` (out = grad_output's columns, in = len(col_ptr) - 1).
    ``index16``: the compact index of ``csc`` (csr.index16 over out rows),
    read by the CUDA kernel in place of row_idx; ignored by the CPU.
    ``validate`` checks the indices in full (O(nnz log nnz))."""
    _check_product_operands("grad_output", grad_output, values)
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
    _check_product_operands("grad_output", grad_output, values, row_ptr=row_ptr, col_idx=col_idx)
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


# Fake kernels: output shapes only, for torch.compile / meta tensors.

@torch.library.register_fake("sparse_kernels::sparse_linear")
def _(input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, bias, col_idx16=None, row_order=None,
      row_idx16=None, col_order=None, sliced_values=None, sliced_cols=None, slice_ptr=None):
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


# Autograd

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
    input, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, bias, _, _, row_idx16, col_order = inputs[:12]
    # The forward's compact index (col_idx16, row_order) and sliced view are
    # not needed: the value gradient (SDDMM) reads the int32 col_idx.
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
    return (grad_input, grad_values, None, None, None, None, None, grad_bias, None, None, None, None, None, None,
            None)


torch.library.register_autograd(
    "sparse_kernels::sparse_linear", _sparse_linear_backward, setup_context=_sparse_linear_setup_context)
