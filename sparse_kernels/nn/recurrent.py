"""The machinery shared by SparseLSTM, SparseGRU and SparseRNN: nn.RNNBase's
constructor contract and checks, weight naming, input handling (batched,
unbatched, batch_first, PackedSequence), the loop over layers and directions,
from_dense / to_dense and dense state_dict loading.

Each layer and direction runs as one whole-sequence computation: the input
projection of all timesteps as one sparse product over T*B rows, then a
layer op whose time loop and BPTT run in C++ (ops.lstm_layer, ops.gru_layer,
ops.rnn_layer).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle

from ._common import (SparseWeightsMixin, check_block_shape, check_init, check_init_scale, make_weight,
                      resolve_density, weight_from_dense)
from .linear import _load_dense_weights

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _validate_config(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size):
    """nn.RNNBase's argument checks, with its exception types and messages."""
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                         "element being zeroed")
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                      f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                      stacklevel=4)
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


class RecurrentHookMixin:
    """For layers whose recurrent product's output gradient is the gradient
    of the input gates (LSTM: gates = W_ih x + W_hh h; Elman: the same with
    one gate): tools such as RigL's gradient regrow see W_hh's inputs and
    output gradient without a dense gradient. (A GRU's W_hn h is multiplied
    by the reset gate, so it has no such hook.)"""

    def register_recurrent_hook(self, hook) -> RemovableHandle:
        """``hook(w_hh, input_gates, output, h0, batch_sizes, reverse)`` runs
        after each layer direction computed in C++, so tools (e.g. RigL's
        gradient regrow) can see W_hh's inputs (the previous hidden states)
        and, via a tensor hook on ``input_gates``, the gates' gradient.
        Returns a handle whose ``remove()`` unregisters it."""
        if not hasattr(self, "_recurrent_hooks"):
            self._recurrent_hooks = OrderedDict()  # RemovableHandle needs a weakref-able dict
        handle = RemovableHandle(self._recurrent_hooks)
        self._recurrent_hooks[handle.id] = hook
        return handle

    def _call_recurrent_hooks(self, w_hh, input_gates, output, h0, batch_sizes, reverse) -> None:
        for hook in list(getattr(self, "_recurrent_hooks", {}).values()):
            hook(w_hh, input_gates, output, h0, batch_sizes, reverse)


class SparseRNNBase(SparseWeightsMixin, nn.Module):
    """Base of the sparse recurrent layers (see SparseLSTM, SparseGRU, SparseRNN).

    Sparse options, keyword-only: ``density`` (or ``sparsity`` = 1 - density,
    default density 0.1) for every weight matrix, ``init`` ("uniform": equal
    nonzeros per row; "erdos_renyi": uniform over the matrix; "block_diagonal":
    round(1/density) independent blocks per gate, Demeester et al.'s predefined
    sparseness), ``init_scale`` ("dense": stored values uniform in
    +-1/sqrt(hidden_size) like torch.nn; "fan_in": each row's values also
    times sqrt(in_features / the row's stored entries), so pre-activations
    start with the dense layer's variance), ``generator``, ``block_shape``.
    ``weight_ih_l{k}{_reverse}`` and ``weight_hh_l{k}{_reverse}`` are
    :class:`~sparse_kernels.CSRWeight` submodules (state_dict keys
    ``weight_hh_l0.values``, ``.row_ptr``, ``.col_idx``); biases are dense
    Parameters named as in torch.nn.

    ``block_shape=(bh, bw)`` makes every matrix a
    :class:`~sparse_kernels.BSRWeight` of dense bh x bw blocks (bh must
    divide the rows of every matrix, bw its columns; density counts blocks).
    The input projection then runs on the BSR kernels; the recurrent (and
    projection) matrices enter the C++ layer loop through their cached
    element-level CSR view (``BSRWeight.csr_operands``), whose values are a
    differentiable gather of the blocks.
    """

    mode: str = ""  # "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"
    dense_class: type = nn.Module

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, density: float | None = None,
                 sparsity: float | None = None, init: str = "uniform", generator: torch.Generator | None = None,
                 block_shape=None, init_scale: str = "dense"):
        super().__init__()
        _validate_config(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.init_scale = check_init_scale(init_scale)
        self.block_shape = check_block_shape(block_shape, f"Sparse{self._name}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.init = check_init(init)
        self.target_density = resolve_density(density, sparsity)
        factory = dict(dtype=dtype or torch.get_default_dtype(), device=device)
        bound = 1.0 / math.sqrt(hidden_size)  # torch.nn's initialisation of every parameter
        gate_size, real_hidden = GATES[self.mode] * hidden_size, proj_size or hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * self.num_directions
            for sfx in self._suffixes():
                shapes = {f"weight_ih_l{layer}{sfx}": (gate_size, layer_input),
                          f"weight_hh_l{layer}{sfx}": (gate_size, real_hidden)}
                if proj_size:
                    shapes[f"weight_hr_l{layer}{sfx}"] = (proj_size, hidden_size)
                for name, (rows, cols) in shapes.items():
                    # Block-diagonal patterns are cut per gate (Demeester et al.).
                    groups = 1 if name.startswith("weight_hr") else GATES[self.mode]
                    self.add_module(name, make_weight(rows, cols, self.target_density, init=init, bound=bound,
                                                      generator=generator, row_groups=groups,
                                                      block_shape=self.block_shape, init_scale=init_scale,
                                                      name=f"Sparse{self._name}: {name}", **factory))
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

    def flatten_parameters(self) -> None:
        """torch.nn compacts cuDNN's weight buffer here; sparse weights have none."""

    def _extra_config_repr(self) -> str:
        return ""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        s += self._extra_config_repr()
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.block_shape:
            s += f", block_shape={self.block_shape}"
        return s + f", density={self.density:.4f}, nnz={self.nnz}"

    # ------------------------------------------------------------------ forward
    @property
    def _has_cell_state(self) -> bool:
        return self.mode == "LSTM"

    @property
    def _name(self) -> str:
        return "RNN" if self.mode.startswith("RNN") else self.mode

    def _check_input(self, data: torch.Tensor) -> None:
        dtype = self.weight_ih_l0.values.dtype
        if data.dtype != dtype and not torch.is_autocast_enabled():
            raise ValueError(f"RNN input dtype ({data.dtype}) does not match weight dtype ({dtype}). "
                             f"Convert input: input.to({dtype}), or convert model: model.to({data.dtype})")
        if data.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {data.size(-1)}")

    def _state_shapes(self, batch: int):
        layers = self.num_layers * self.num_directions
        shapes = [(layers, batch, self.proj_size or self.hidden_size)]
        if self._has_cell_state:
            shapes.append((layers, batch, self.hidden_size))
        return shapes

    def _check_hidden(self, states, batch: int, ref: torch.Tensor) -> None:
        for i, (t, expected) in enumerate(zip(states, self._state_shapes(batch))):
            label = f"hidden[{i}]" if self._has_cell_state else "hidden"
            if tuple(t.shape) != expected:
                raise RuntimeError(f"Expected {label} size {expected}, got {list(t.shape)}")
            if t.dtype != ref.dtype or t.device != ref.device:
                raise RuntimeError(f"{label} must have dtype {ref.dtype} on {ref.device}, got {t.dtype} on {t.device}")

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            self._check_input(data)
            steps, batch = batch_sizes.numel(), int(batch_sizes[0]) if batch_sizes.numel() else 0
            # PackedSequence data is ordered step by step, active rows first:
            # exactly the order of the True entries of this (T, B) mask.
            active = (torch.arange(batch).unsqueeze(0) < batch_sizes.unsqueeze(1)).to(data.device)
            x = data.new_zeros(steps, batch, data.size(-1))
            x[active] = data
            is_batched = True
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input must be a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(f"{self._name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            self._check_input(input)
            is_batched = input.dim() == 3
            x = input if is_batched else input.unsqueeze(0 if self.batch_first else 1)
            if self.batch_first:
                x = x.transpose(0, 1)
            steps, batch = x.shape[0], x.shape[1]
            batch_sizes, sorted_indices, unsorted_indices = None, None, None

        states = self._initial_states(hx, is_batched, batch, x, sorted_indices)
        output, final = self._run_layers(x.contiguous(), states, batch_sizes)

        if packed:
            if unsorted_indices is not None:
                final = [s.index_select(1, unsorted_indices) for s in final]
            output = PackedSequence(output[active], batch_sizes, sorted_indices, unsorted_indices)
        else:
            if self.batch_first:
                output = output.transpose(0, 1)
            if not is_batched:
                output = output.squeeze(0 if self.batch_first else 1)
                final = [s.squeeze(1) for s in final]
        return output, (tuple(final) if self._has_cell_state else final[0])

    def _initial_states(self, hx, is_batched: bool, batch: int, x: torch.Tensor, sorted_indices):
        if hx is None:
            return [x.new_zeros(shape) for shape in self._state_shapes(batch)]
        if self._has_cell_state and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            # list(hx) of a lone Tensor would split it along its first dimension.
            got = f"a {type(hx).__name__} of length {len(hx)}" if isinstance(hx, (tuple, list)) else type(hx).__name__
            raise TypeError(f"{self._name}: hx must be a tuple (h_0, c_0) of two Tensors, got {got}")
        states = list(hx) if self._has_cell_state else [hx]
        if not all(isinstance(s, torch.Tensor) for s in states):
            raise TypeError(f"{self._name}: hx must be {'a tuple of two Tensors' if self._has_cell_state else 'a Tensor'}"
                            f", got {type(hx).__name__}")
        want = 3 if is_batched else 2
        if any(s.dim() != want for s in states):
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            names = "hx and cx" if self._has_cell_state else "hx"
            dims = ", ".join(f"{s.dim()}-D" for s in states)
            raise RuntimeError(f"For {kind} input, {names} should also be {want}-D but got ({dims}) tensors")
        if not is_batched:
            states = [s.unsqueeze(1) for s in states]
        self._check_hidden(states, batch, x)
        if sorted_indices is not None:  # the caller's order -> the packed (sorted) order
            states = [s.index_select(1, sorted_indices) for s in states]
        return states

    def _run_layers(self, x: torch.Tensor, states, batch_sizes):
        """x (T, B, F) time-major; states: (L*D, B, *) tensors. -> output, final states."""
        cpu_sizes = None if batch_sizes is None else batch_sizes.to("cpu", torch.int64)
        finals = [[] for _ in states]
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for d, sfx in enumerate(self._suffixes()):
                idx = layer * self.num_directions + d
                out, *final = self._run_direction(layer, sfx, layer_input, [s[idx].contiguous() for s in states],
                                                  cpu_sizes, reverse=d == 1)
                outputs.append(out)
                for collected, f in zip(finals, final):
                    collected.append(f)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        return layer_input, [torch.stack(f) for f in finals]

    def _weights(self, layer: int, sfx: str):
        """(W_ih, W_hh, b_ih, b_hh) of one layer and direction."""
        b_ih = getattr(self, f"bias_ih_l{layer}{sfx}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{layer}{sfx}") if self.bias else None
        return getattr(self, f"weight_ih_l{layer}{sfx}"), getattr(self, f"weight_hh_l{layer}{sfx}"), b_ih, b_hh

    def _run_direction(self, layer: int, sfx: str, x, states, batch_sizes, reverse: bool):
        """One layer in one direction over the whole sequence -> (output, *final states)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ conversion
    def _config(self) -> dict:
        config = dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                      bias=self.bias, batch_first=self.batch_first, dropout=self.dropout,
                      bidirectional=self.bidirectional)
        if self.proj_size:
            config["proj_size"] = self.proj_size
        return config

    @classmethod
    def _config_of_dense(cls, module: nn.Module) -> dict:
        config = dict(input_size=module.input_size, hidden_size=module.hidden_size,
                      num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                      dropout=float(module.dropout), bidirectional=module.bidirectional)
        if getattr(module, "proj_size", 0):
            config["proj_size"] = module.proj_size
        return config

    @classmethod
    def from_dense(cls, module: nn.Module, density: float | None = None, mask: dict | None = None, *,
                   block_shape=None):
        """Sparsify a trained torch.nn layer. ``mask`` (dict name -> bool tensor)
        wins for the matrices it names; the others keep their ``density``
        largest magnitudes (all entries when density is None). With
        ``block_shape``: whole blocks (masks per block or per entry, largest
        block norms)."""
        if not isinstance(module, cls.dense_class):
            raise TypeError(f"module must be an {cls.dense_class.__name__}, got {type(module).__name__}")
        mask = dict(mask or {})
        param = module.weight_ih_l0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dense module already warned about its own dropout
            sparse = cls(**cls._config_of_dense(module), density=0.0, dtype=param.dtype, device=param.device,
                         block_shape=block_shape)
        unknown = set(mask) - set(sparse.sparse_weight_names())
        if unknown:
            raise ValueError(f"mask names unknown weights: {sorted(unknown)}")
        for name in sparse.sparse_weight_names():
            setattr(sparse, name, weight_from_dense(getattr(module, name), density, mask.get(name),
                                                    sparse.block_shape))
        if sparse.bias:
            with torch.no_grad():
                for name, p in sparse.named_parameters(recurse=False):
                    p.copy_(getattr(module, name))
        sparse.target_density = sparse.density
        return sparse.train(module.training)

    def to_dense(self) -> nn.Module:
        """The equivalent torch.nn layer (dense weights, zeros where not stored)."""
        param = self.weight_ih_l0.values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dense = self.dense_class(**self._config(), dtype=param.dtype, device=param.device)
        with torch.no_grad():
            for name in self.sparse_weight_names():
                getattr(dense, name).copy_(getattr(self, name).to_dense())
            for name, p in self.named_parameters(recurse=False):
                getattr(dense, name).copy_(p)
        return dense.train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A dense torch.nn checkpoint: read its values at this module's pattern.
        _load_dense_weights(self, self.sparse_weight_names(), state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
