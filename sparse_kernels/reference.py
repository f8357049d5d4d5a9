"""Plain-PyTorch oracles for every op: dense, obviously correct, slow. The
tests compare the kernels against these; nothing else should call them."""

from __future__ import annotations

import torch

from .csr import row_indices


def csr_to_dense(values: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, shape) -> torch.Tensor:
    dense = values.new_zeros(tuple(shape))
    return dense.index_put((row_indices(row_ptr), col_idx.long()), values)


def sparse_linear(input, values, row_ptr, col_idx, shape, bias=None):
    weight = csr_to_dense(values, row_ptr, col_idx, shape)
    out = input @ weight.T
    return out if bias is None else out + bias


def sparse_linear_input_grad(grad_output, values, row_ptr, col_idx, shape):
    return grad_output @ csr_to_dense(values, row_ptr, col_idx, shape)


def sparse_linear_value_grad(grad_output, input, row_ptr, col_idx):
    dense_grad = grad_output.T @ input
    return dense_grad[row_indices(row_ptr), col_idx.long()]


def lstm_cell(gates, c_prev):
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c
