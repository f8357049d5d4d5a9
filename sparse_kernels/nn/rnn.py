"""SparseRNN: a drop-in nn.RNN (Elman network, tanh or relu) whose W_ih and
W_hh keep only their nonzeros."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .recurrent import RecurrentHookMixin, SparseRNNBase

__all__ = ["SparseRNN"]


class SparseRNN(RecurrentHookMixin, SparseRNNBase):
    """nn.RNN with sparse (CSR) input and recurrent weights: the Elman network
    of Shao's sparse RNN language models.

    Same constructor (``nonlinearity`` is the 4th positional argument, as in
    nn.RNN), forward and state_dict names; sparse options keyword-only (see
    SparseRNNBase). Each layer runs as the input projection of all timesteps
    (one sparse product) followed by ``ops.rnn_layer`` (C++ time loop).
    """

    dense_class = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *, density: float | None = None,
                 sparsity: float | None = None, init: str = "uniform", generator: torch.Generator | None = None,
                 block_shape=None, init_scale: str = "dense"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype, density=density, sparsity=sparsity, init=init, generator=generator,
                         block_shape=block_shape, init_scale=init_scale)

    def _extra_config_repr(self) -> str:
        return f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else ""

    def _config(self) -> dict:
        return {**super()._config(), "nonlinearity": self.nonlinearity}

    @classmethod
    def _config_of_dense(cls, module: nn.Module) -> dict:
        return {**super()._config_of_dense(module), "nonlinearity": module.nonlinearity}

    def _run_direction(self, layer: int, sfx: str, x, states, batch_sizes, reverse: bool):
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, sfx)
        input_gates = w_ih(x, None if b_ih is None else b_ih + b_hh)
        hh_values, hh_row_ptr, hh_col_idx, hh_csc = w_hh.csr_operands()
        out, h_n = ops.rnn_layer(input_gates, states[0], hh_values, hh_row_ptr, hh_col_idx, hh_csc, batch_sizes,
                                 reverse, self.nonlinearity, validate=False)
        self._call_recurrent_hooks(w_hh, input_gates, out, states[0], batch_sizes, reverse)
        return out, h_n
