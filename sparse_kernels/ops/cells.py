"""The fused LSTM cell (pointwise gates -> h, c): check, fake kernels and
autograd."""

from __future__ import annotations

import torch

from ._checks import _call_op, _check_float, _check_same, _ops


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
    return _call_op(_ops.lstm_cell, (gates, c_prev), (gates, c_prev))


# Fake kernels: output shapes only, for torch.compile / meta tensors.

@torch.library.register_fake("sparse_kernels::lstm_cell")
def _(gates, c_prev):
    return torch.empty_like(c_prev), torch.empty_like(c_prev)


@torch.library.register_fake("sparse_kernels::lstm_cell_backward")
def _(grad_h, grad_c, gates, c_prev, c):
    return torch.empty_like(gates), torch.empty_like(c_prev)


# Autograd

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
