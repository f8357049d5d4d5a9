"""SparseLSTM: a drop-in nn.LSTM whose W_ih and W_hh keep only their nonzeros.

Each layer and direction runs as one whole-sequence computation: the input
projection of all timesteps as one sparse product (SparseLinear-style, over
T*B rows), then ``ops.lstm_layer``, whose time loop (recurrent sparse product
+ fused cell per step) and BPTT run in C++.
"""

from __future__ import annotations

import math
from collections import OrderedDict
import numbers
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle

from .. import ops
from ..storage import CSRWeight
from ._common import check_init, make_weight, resolve_density, weight_from_dense
from .linear import _load_dense_weights

__all__ = ["SparseLSTM"]


def _validate_config(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size):
    """nn.LSTM's argument checks, with its exception types and messages."""
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                         "element being zeroed")
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                      f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                      stacklevel=3)
    for name, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


class SparseLSTM(nn.Module):
    """nn.LSTM with sparse (CSR) input and recurrent weights.

    Same constructor, forward and state_dict names as nn.LSTM; the sparse
    options are keyword-only: ``density`` (or ``sparsity`` = 1 - density,
    default density 0.1) for every weight matrix, ``init`` ("uniform": equal
    nonzeros per row; "erdos_renyi": uniform over the matrix) and
    ``generator`` for a reproducible topology.

    ``weight_ih_l{k}{_reverse}``, ``weight_hh_l{k}{_reverse}`` (and
    ``weight_hr_l{k}{_reverse}`` with proj_size > 0) are
    :class:`~sparse_kernels.CSRWeight` submodules: the state_dict holds
    ``weight_hh_l0.values`` (the trainable nonzeros), ``weight_hh_l0.row_ptr``
    and ``weight_hh_l0.col_idx``. Biases are dense Parameters named as in
    nn.LSTM. Gate order i|f|g|o.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, density: float | None = None,
                 sparsity: float | None = None, init: str = "uniform",
                 generator: torch.Generator | None = None):
        super().__init__()
        _validate_config(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self._recurrent_hooks: OrderedDict = OrderedDict()  # RemovableHandle needs a weakref-able dict
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.init = check_init(init)
        self.target_density = resolve_density(density, sparsity)
        factory = dict(dtype=dtype or torch.get_default_dtype(), device=device)
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's initialisation
        gate_size, real_hidden = 4 * hidden_size, proj_size or hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * self.num_directions
            for sfx in self._suffixes():
                shapes = {f"weight_ih_l{layer}{sfx}": (gate_size, layer_input),
                          f"weight_hh_l{layer}{sfx}": (gate_size, real_hidden)}
                if proj_size:
                    shapes[f"weight_hr_l{layer}{sfx}"] = (proj_size, hidden_size)
                for name, (rows, cols) in shapes.items():
                    self.add_module(name, make_weight(rows, cols, self.target_density, init=init, bound=bound,
                                                      generator=generator, **factory))
                for name in (f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"):
                    if bias:
                        b = torch.empty(gate_size, **factory).uniform_(-bound, bound, generator=generator)
                        self.register_parameter(name, nn.Parameter(b))
                    else:
                        self.register_parameter(name, None)

    # ------------------------------------------------------------------ structure
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def sparse_weight_names(self) -> list[str]:
        kinds = ("ih", "hh", "hr") if self.proj_size else ("ih", "hh")
        return [f"weight_{k}_l{layer}{sfx}" for layer in range(self.num_layers)
                for sfx in self._suffixes() for k in kinds]

    def sparse_weights(self):
        """(name, CSRWeight) of every sparse matrix, for sparse-training tools."""
        return [(name, getattr(self, name)) for name in self.sparse_weight_names()]

    def register_recurrent_hook(self, hook) -> RemovableHandle:
        """``hook(w_hh, input_gates, output, h0, batch_sizes, reverse)`` runs
        after each layer direction computed in C++ (proj_size = 0), so tools
        (e.g. RigL's gradient regrow) can see W_hh's inputs (the previous
        hidden states) and, via a tensor hook on ``input_gates``, the gates'
        gradient. Returns a handle whose ``remove()`` unregisters it."""
        if not hasattr(self, "_recurrent_hooks"):
            self._recurrent_hooks = OrderedDict()
        handle = RemovableHandle(self._recurrent_hooks)
        self._recurrent_hooks[handle.id] = hook
        return handle

    @property
    def nnz(self) -> int:
        return sum(w.nnz for _, w in self.sparse_weights())

    @property
    def density(self) -> float:
        total = sum(w.shape.numel() for _, w in self.sparse_weights())
        return self.nnz / total if total else 0.0

    def flatten_parameters(self) -> None:
        """nn.LSTM compacts cuDNN's weight buffer here; sparse weights have none."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", density={self.density:.4f}, nnz={self.nnz}"

    # ------------------------------------------------------------------ forward
    def _check_input(self, data: torch.Tensor, packed: bool) -> None:
        dtype = self.weight_ih_l0.values.dtype
        if data.dtype != dtype and not torch.is_autocast_enabled():
            raise ValueError(f"RNN input dtype ({data.dtype}) does not match weight dtype ({dtype}). "
                             f"Convert input: input.to({dtype}), or convert model: model.to({data.dtype})")
        if data.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {data.size(-1)}")

    def _check_hidden(self, hx, batch: int, ref: torch.Tensor):
        expected_h = (self.num_layers * self.num_directions, batch, self.proj_size or self.hidden_size)
        expected_c = (self.num_layers * self.num_directions, batch, self.hidden_size)
        for i, (t, expected) in enumerate(zip(hx, (expected_h, expected_c))):
            if tuple(t.shape) != expected:
                raise RuntimeError(f"Expected hidden[{i}] size {expected}, got {list(t.shape)}")
            if t.dtype != ref.dtype or t.device != ref.device:
                raise RuntimeError(f"hidden[{i}] must have dtype {ref.dtype} on {ref.device}, "
                                   f"got {t.dtype} on {t.device}")

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            self._check_input(data, packed)
            steps, batch = batch_sizes.numel(), int(batch_sizes[0]) if batch_sizes.numel() else 0
            # PackedSequence data is ordered step by step, active rows first:
            # exactly the order of True entries in this (T, B) mask.
            active = torch.arange(batch).unsqueeze(0) < batch_sizes.unsqueeze(1)
            active = active.to(data.device)
            x = data.new_zeros(steps, batch, data.size(-1))
            x[active] = data
            is_batched = True
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input must be a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            self._check_input(input, packed)
            is_batched = input.dim() == 3
            x = input if is_batched else input.unsqueeze(0 if self.batch_first else 1)
            if self.batch_first:
                x = x.transpose(0, 1)
            steps, batch = x.shape[0], x.shape[1]
            batch_sizes, sorted_indices, unsorted_indices = None, None, None

        if hx is None:
            layers = self.num_layers * self.num_directions
            zeros = lambda width: x.new_zeros(layers, batch, width)
            hx = (zeros(self.proj_size or self.hidden_size), zeros(self.hidden_size))
        else:
            if not is_batched:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but got "
                                       f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            elif hx[0].dim() != 3 or hx[1].dim() != 3:
                raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            self._check_hidden(hx, batch, x)
            if sorted_indices is not None:  # the caller's order -> the packed (sorted) order
                hx = (hx[0].index_select(1, sorted_indices), hx[1].index_select(1, sorted_indices))

        output, h_n, c_n = self._run_layers(x.contiguous(), hx, batch_sizes)

        if packed:
            out = PackedSequence(output[active], batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
            return out, (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _run_layers(self, x: torch.Tensor, hx, batch_sizes):
        """x (T, B, F) time-major; hx (h0, c0) as (L*D, B, *)."""
        cpu_sizes = None if batch_sizes is None else batch_sizes.to("cpu", torch.int64)
        h_out, c_out = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for d, sfx in enumerate(self._suffixes()):
                idx = layer * self.num_directions + d
                out, h, c = self._run_direction(layer, sfx, layer_input, hx[0][idx], hx[1][idx], cpu_sizes,
                                                reverse=d == 1)
                outputs.append(out)
                h_out.append(h)
                c_out.append(c)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(h_out), torch.stack(c_out)

    def _run_direction(self, layer: int, sfx: str, x, h0, c0, batch_sizes, reverse: bool):
        w_ih: CSRWeight = getattr(self, f"weight_ih_l{layer}{sfx}")
        w_hh: CSRWeight = getattr(self, f"weight_hh_l{layer}{sfx}")
        bias = None
        if self.bias:
            bias = getattr(self, f"bias_ih_l{layer}{sfx}") + getattr(self, f"bias_hh_l{layer}{sfx}")
        # The input projection of every timestep: one sparse product over T*B rows.
        input_gates = w_ih(x, bias)
        if not self.proj_size:
            out, h_n, c_n = ops.lstm_layer(input_gates, h0.contiguous(), c0.contiguous(), w_hh.values,
                                           w_hh.row_ptr, w_hh.col_idx, w_hh.transposed_index(), batch_sizes,
                                           reverse)
            for hook in list(getattr(self, "_recurrent_hooks", {}).values()):
                hook(w_hh, input_gates, out, h0, batch_sizes, reverse)
            return out, h_n, c_n
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

    # ------------------------------------------------------------------ conversion
    def _config(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    bias=self.bias, batch_first=self.batch_first, dropout=self.dropout,
                    bidirectional=self.bidirectional, proj_size=self.proj_size)

    @classmethod
    def from_dense(cls, lstm: nn.LSTM, density: float | None = None, mask: dict | None = None) -> "SparseLSTM":
        """Sparsify a trained nn.LSTM. ``mask`` (dict name -> bool tensor) wins
        for the matrices it names; the others keep their ``density`` largest
        magnitudes (all entries when density is None)."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"lstm must be an nn.LSTM, got {type(lstm).__name__}")
        mask = dict(mask or {})
        param = lstm.weight_ih_l0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nn.LSTM already warned about its own dropout
            sparse = cls(**cls._config(lstm), density=0.0, dtype=param.dtype, device=param.device)
        unknown = set(mask) - set(sparse.sparse_weight_names())
        if unknown:
            raise ValueError(f"mask names unknown weights: {sorted(unknown)}")
        for name in sparse.sparse_weight_names():
            setattr(sparse, name, weight_from_dense(getattr(lstm, name), density, mask.get(name)))
        if sparse.bias:
            with torch.no_grad():
                for name, p in sparse.named_parameters(recurse=False):
                    p.copy_(getattr(lstm, name))
        sparse.target_density = sparse.density
        return sparse.train(lstm.training)

    def to_dense(self) -> nn.LSTM:
        param = self.weight_ih_l0.values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dense = nn.LSTM(**self._config(), dtype=param.dtype, device=param.device)
        with torch.no_grad():
            for name in self.sparse_weight_names():
                getattr(dense, name).copy_(getattr(self, name).to_dense())
            for name, p in self.named_parameters(recurse=False):
                getattr(dense, name).copy_(p)
        return dense.train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A dense nn.LSTM checkpoint: read its values at this module's pattern.
        _load_dense_weights(self, self.sparse_weight_names(), state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
