"""SparseGRU: a drop-in nn.GRU whose W_ih and W_hh keep only their nonzeros."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .recurrent import SparseRNNBase

__all__ = ["SparseGRU"]


class SparseGRU(SparseRNNBase):
    """nn.GRU with sparse (CSR) input and recurrent weights.

    Same constructor, forward and state_dict names as nn.GRU, gate order
    r|z|n; sparse options keyword-only (see SparseRNNBase). Each layer runs as
    the input projection of all timesteps (one sparse product) followed by
    ``ops.gru_layer``, whose time loop and BPTT run in C++.
    """

    mode = "GRU"
    dense_class = nn.GRU

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, density: float | None = None, sparsity: float | None = None,
                 init: str = "uniform", generator: torch.Generator | None = None, block_shape=None,
                 init_scale: str = "dense"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype, density=density, sparsity=sparsity, init=init, generator=generator,
                         block_shape=block_shape, init_scale=init_scale)

    def _run_direction(self, layer: int, sfx: str, x, states, batch_sizes, reverse: bool):
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, sfx)
        # b_hh stays inside the step: r multiplies (W_hn h + b_hn).
        input_gates = w_ih(x, b_ih)
        hh_values, hh_row_ptr, hh_col_idx, hh_csc = w_hh.csr_operands()
        return ops.gru_layer(input_gates, states[0], hh_values, hh_row_ptr, hh_col_idx, hh_csc, b_hh, batch_sizes,
                             reverse, validate=False)
