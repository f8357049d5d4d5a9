"""SparseLSTM: a drop-in nn.LSTM whose W_ih and W_hh keep only their nonzeros."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..storage import CSRWeight
from .recurrent import RecurrentHookMixin, SparseRNNBase

__all__ = ["SparseLSTM"]


class SparseLSTM(RecurrentHookMixin, SparseRNNBase):
    """nn.LSTM with sparse (CSR) input and recurrent weights.

    Same constructor, forward and state_dict names as nn.LSTM, gate order
    i|f|g|o; sparse options keyword-only (see SparseRNNBase). With
    proj_size > 0, ``weight_hr_l{k}`` is sparse too. Each layer runs as the
    input projection of all timesteps (one sparse product) followed by
    ``ops.lstm_layer``, whose time loop (recurrent product, fused cell,
    projection) and BPTT run in C++.
    """

    mode = "LSTM"
    dense_class = nn.LSTM

    def _run_direction(self, layer: int, sfx: str, x, states, batch_sizes, reverse: bool):
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, sfx)
        h0, c0 = states
        # The input projection of every timestep: one sparse product over T*B rows.
        input_gates = w_ih(x, None if b_ih is None else b_ih + b_hh)
        projection = None
        if self.proj_size:
            projection = getattr(self, f"weight_hr_l{layer}{sfx}").csr_operands()
        hh_values, hh_row_ptr, hh_col_idx, hh_csc = w_hh.csr_operands()
        # The persistent CUDA forward's split of W_hh, cached per topology (no
        # projection: that forward has none; BSR: its element-level CSR has no plan cache yet).
        plan = w_hh.persistent_lstm_plan() if projection is None and isinstance(w_hh, CSRWeight) else None
        # Batch-1 inference on the CPU: W_hh's sliced view (eight rows' sums in
        # one register), cached while the values stay put; not while they are
        # being trained (each step would re-copy them).
        sliced = None
        if (projection is None and isinstance(w_hh, CSRWeight) and input_gates.device.type == "cpu"
                and input_gates.dtype == torch.float32 and input_gates.shape[1] == 1
                and not (torch.is_grad_enabled() and hh_values.requires_grad)):
            sliced = w_hh.sliced_view(w_hh.out_features // 4)
        out, h_n, c_n = ops.lstm_layer(input_gates, h0, c0, hh_values, hh_row_ptr, hh_col_idx, hh_csc,
                                       batch_sizes, reverse, projection, validate=False, hh_plan=plan,
                                       hh_sliced=sliced)
        self._call_recurrent_hooks(w_hh, input_gates, out, h0, batch_sizes, reverse)
        return out, h_n, c_n
