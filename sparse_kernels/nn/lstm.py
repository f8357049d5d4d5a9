"""SparseLSTM: a drop-in nn.LSTM whose W_ih and W_hh keep only their nonzeros."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..storage import CSRWeight
from .recurrent import SparseRNNBase

__all__ = ["SparseLSTM"]


class SparseLSTM(SparseRNNBase):
    """nn.LSTM with sparse (CSR) input and recurrent weights.

    Same constructor, forward and state_dict names as nn.LSTM, gate order
    i|f|g|o; sparse options keyword-only (see SparseRNNBase). With
    proj_size > 0, ``weight_hr_l{k}`` is sparse too. Each layer runs as the
    input projection of all timesteps (one sparse product) followed by
    ``ops.lstm_layer``, whose time loop and BPTT run in C++.
    """

    mode = "LSTM"
    dense_class = nn.LSTM

    def _run_direction(self, layer: int, sfx: str, x, states, batch_sizes, reverse: bool):
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, sfx)
        h0, c0 = states
        # The input projection of every timestep: one sparse product over T*B rows.
        input_gates = w_ih(x, None if b_ih is None else b_ih + b_hh)
        if not self.proj_size:
            return ops.lstm_layer(input_gates, h0, c0, w_hh.values, w_hh.row_ptr, w_hh.col_idx,
                                  w_hh.transposed_index(), batch_sizes, reverse)
        return self._run_projected(input_gates, h0, c0, w_hh, getattr(self, f"weight_hr_l{layer}{sfx}"),
                                   batch_sizes, reverse)

    @staticmethod
    def _run_projected(input_gates, h0, c0, w_hh: CSRWeight, w_hr: CSRWeight, batch_sizes, reverse):
        """proj_size > 0: h = W_hr (o * tanh(c)) each step. This path loops over
        time in Python over the sparse ops (the C++ layer loop does not yet
        take a projection)."""
        steps, batch = input_gates.shape[:2]
        sizes = [batch] * steps if batch_sizes is None else batch_sizes.tolist()
        h, c = h0, c0
        outputs = [None] * steps
        for t in (reversed(range(steps)) if reverse else range(steps)):
            b = sizes[t]
            h_full, c_new = ops.lstm_cell(input_gates[t, :b] + w_hh(h[:b]), c[:b])
            h_new = w_hr(h_full)
            h, c = torch.cat([h_new, h[b:]]), torch.cat([c_new, c[b:]])
            outputs[t] = torch.cat([h_new, h_new.new_zeros(batch - b, h_new.shape[1])])
        out = torch.stack(outputs) if steps else input_gates.new_zeros(0, batch, h0.shape[1])
        return out, h, c
