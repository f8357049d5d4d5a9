"""SparseRHN: a recurrent highway network (Zilly et al. 2017) whose input
matrix W and recurrent matrices R_l keep only their nonzeros: the RHN of the
Liu et al. seed ("matrices W and R represent the weights matrices of the
transform gate T and the H nonlinear transform"), carry gate coupled to the
transform gate (C = 1 - T).

Each layer runs as one whole-sequence computation: the input projection of
all timesteps as one sparse product over T*B rows, then ``ops.rhn_layer``,
whose time and depth loops (recurrent sparse product + fused highway cell per
micro-layer) and BPTT run in C++.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

from .. import ops
from ..storage import SparseWeight
from ._common import (SparseWeightsMixin, changed_options_repr, check_block_shape, check_init, check_init_scale,
                      make_weight, resolve_density)
from ._sequence import from_time_major, state_in, state_out, to_time_major
from .recurrent import _validate_config

__all__ = ["SparseRHN"]


class SparseRHN(SparseWeightsMixin, nn.Module):
    r"""Recurrent highway network with sparse (CSR) W and R matrices.

    For each layer and timestep, with :math:`s_0 = h_{t-1}` and micro-layers
    :math:`l = 1..L` (``depth`` = L)::

        pre_l = [W x_t if l == 1 else 0] + R_l s_{l-1} + b_l     # 2H: [H-transform | T-gate]
        h_l = tanh(pre_l[:H]);  t_l = sigmoid(pre_l[H:])
        s_l = h_l * t_l + s_{l-1} * (1 - t_l)                   # coupled carry gate
        h_t = s_L

    Constructor and forward follow nn.RNN's conventions (``num_layers``
    stacked RHN layers, ``batch_first``, inter-layer ``dropout`` in training
    only, 2-D unbatched input, ``PackedSequence`` in gives ``PackedSequence``
    out); ``forward(input, h0=None) -> (output, h_n)`` with h_n of shape
    (num_layers, B, hidden_size). Sparse options are keyword-only:
    ``density`` (or ``sparsity``; default density 0.1) for every matrix,
    ``init`` ("uniform" or "erdos_renyi", as Liu et al.), ``generator``,
    ``block_shape=(bh, bw)`` (every matrix a BSRWeight of dense blocks: W's
    input projection on the BSR kernels, each R_l through its element-level
    CSR view in the C++ loop; bh must divide 2 * hidden_size, bw the input
    and hidden sizes).

    Parameters: ``weight_ih_l{k}`` (W, 2H x input), ``weight_hh_l{k}_d{j}``
    (R_{j+1}, 2H x H) are :class:`~sparse_kernels.CSRWeight` submodules;
    ``bias_l{k}_d{j}`` (2H) dense. Rows [0, H) of each matrix and bias feed
    the H transform, rows [H, 2H) the transform gate T. Initialisation:
    stored values and the H-half of the biases uniform in +-1/sqrt(H) (as
    nn.RNN); the T-half of the biases is ``transform_bias`` (default -2.0),
    so that each micro-layer starts out mostly carrying its state through,
    as is usual for highway networks. torch.nn has no RHN, so there is no
    from_dense/to_dense; ``density=1.0`` gives the dense model.
    """

    def __init__(self, input_size: int, hidden_size: int, depth: int = 1, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, device=None, dtype=None,
                 *, density: float | None = None, sparsity: float | None = None, init: str = "uniform",
                 generator: torch.Generator | None = None, transform_bias: float = -2.0, block_shape=None,
                 init_scale: str = "dense"):
        super().__init__()
        self.init_scale = check_init_scale(init_scale)
        _validate_config(input_size, hidden_size, num_layers, bias, batch_first, dropout, 0)
        try:
            depth = operator.index(depth)
        except TypeError:
            raise TypeError(f"depth should be of type int, got: {type(depth).__name__}") from None
        if depth <= 0:
            raise ValueError(f"depth (the recurrence depth) must be greater than zero, got {depth}")
        self.input_size, self.hidden_size, self.depth, self.num_layers = input_size, hidden_size, depth, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.transform_bias = float(transform_bias)
        self.init = check_init(init)
        self.target_density = resolve_density(density, sparsity)
        self.block_shape = check_block_shape(block_shape, "SparseRHN")
        factory = dict(dtype=dtype or torch.get_default_dtype(), device=device)
        bound = 1.0 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            shapes = {f"weight_ih_l{layer}": layer_input}
            shapes.update({f"weight_hh_l{layer}_d{j}": hidden_size for j in range(depth)})
            for name, cols in shapes.items():
                self.add_module(name, make_weight(2 * hidden_size, cols, self.target_density, init=init,
                                                  bound=bound, generator=generator, block_shape=self.block_shape,
                                                  init_scale=init_scale, name=f"SparseRHN: {name}", **factory))
            for j in range(depth):
                if bias:
                    b = torch.empty(2 * hidden_size, **factory)
                    b[:hidden_size].uniform_(-bound, bound, generator=generator)
                    b[hidden_size:].fill_(self.transform_bias)
                    self.register_parameter(f"bias_l{layer}_d{j}", nn.Parameter(b))
                else:
                    self.register_parameter(f"bias_l{layer}_d{j}", None)

    # ------------------------------------------------------------------ structure
    def sparse_weight_names(self) -> list[str]:
        return [name for layer in range(self.num_layers)
                for name in (f"weight_ih_l{layer}", *(f"weight_hh_l{layer}_d{j}" for j in range(self.depth)))]

    def extra_repr(self) -> str:
        options = changed_options_repr(self, dict(num_layers=1, bias=True, batch_first=False, dropout=0.0,
                                                  block_shape=None))
        return (f"{self.input_size}, {self.hidden_size}, depth={self.depth}{options}, "
                f"density={self.density:.4f}, nnz={self.nnz}")

    # ------------------------------------------------------------------ forward
    def forward(self, input, h0: torch.Tensor | None = None):
        x, layout = to_time_major(input, self.batch_first, "SparseRHN")
        dtype = self.weight_ih_l0.values.dtype
        if x.dtype != dtype:
            raise ValueError(f"RNN input dtype ({x.dtype}) does not match weight dtype ({dtype}). "
                             f"Convert input: input.to({dtype}), or convert model: model.to({x.dtype})")
        if x.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {x.size(-1)}")
        batch = x.shape[1]
        expected = (self.num_layers, batch, self.hidden_size)
        h0 = x.new_zeros(expected) if h0 is None else state_in(h0, layout, expected, x, "h0")
        finals = []
        for layer in range(self.num_layers):
            x, h_n = self._run_layer(layer, x, h0[layer].contiguous(), layout.batch_sizes)
            finals.append(h_n)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        return from_time_major(x, layout), state_out(torch.stack(finals), layout)

    def _run_layer(self, layer: int, x: torch.Tensor, h0: torch.Tensor, batch_sizes):
        w: SparseWeight = getattr(self, f"weight_ih_l{layer}")
        recurrent = [getattr(self, f"weight_hh_l{layer}_d{j}") for j in range(self.depth)]
        if self.bias:
            biases = torch.stack([getattr(self, f"bias_l{layer}_d{j}") for j in range(self.depth)])
        else:
            biases = x.new_zeros(self.depth, 2 * self.hidden_size)
        # The input projection of every timestep: one sparse product over T*B rows.
        input_gates = w(x)
        values, row_ptr, col_idx, csc = (list(part) for part in zip(*(r.csr_operands() for r in recurrent)))
        return ops.rhn_layer(input_gates, h0, values, row_ptr, col_idx, csc, biases, batch_sizes, validate=False)
