"""Block-sparse (BSR) products: the pattern is a CSR over the grid of blocks
(see sparse_kernels.bsr), values (nblocks, bh, bw). Checks, fake kernels and
autograd."""

from __future__ import annotations

import torch

from .. import bsr as bsr_format
from ..csr import CSCIndex, csr_transpose
from ._checks import _call_op, _check_float, _check_index_like, _check_product_operands, _check_same, _ops


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
    _check_product_operands("input", input, values, _check_block_values, block_row_ptr=block_row_ptr,
                            block_col_idx=block_col_idx)
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
    out = _call_op(_ops.bsr_linear, (flat, values, block_row_ptr, block_col_idx, *block_csc, bias),
                   (flat, values, bias))
    return out.reshape(*input.shape[:-1], out_features)


def bsr_linear_input_grad(grad_output: torch.Tensor, values: torch.Tensor, block_csc: CSCIndex) -> torch.Tensor:
    """grad_output (N, out) @ W -> (N, in), through W's transposed block index."""
    _check_product_operands("grad_output", grad_output, values, _check_block_values)
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


# Fake kernels: output shapes only, for torch.compile / meta tensors.

@torch.library.register_fake("sparse_kernels::bsr_linear")
def _(input, values, block_row_ptr, block_col_idx, block_col_ptr, block_row_idx, block_csr2csc, bias):
    return input.new_empty((input.shape[0], (block_row_ptr.shape[0] - 1) * values.shape[1]))


@torch.library.register_fake("sparse_kernels::bsr_linear_input_grad")
def _(grad_output, values, block_col_ptr, block_row_idx, block_csr2csc):
    return grad_output.new_empty((grad_output.shape[0], (block_col_ptr.shape[0] - 1) * values.shape[2]))


@torch.library.register_fake("sparse_kernels::bsr_linear_value_grad")
def _(grad_output, input, block_row_ptr, block_col_idx, block_height, block_width):
    return input.new_empty((block_col_idx.shape[0], block_height, block_width))


# Autograd

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
