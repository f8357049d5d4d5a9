"""SparseLSTMCell: a drop-in nn.LSTMCell whose two weight matrices keep only
their nonzeros."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops
from ..storage import SparseWeight
from ._common import (check_block_shape, check_init, check_init_scale, make_weight, resolve_density,
                      weight_from_dense)
from .linear import _check_input_dtype, _check_size, _load_dense_weights

__all__ = ["SparseLSTMCell"]

_WEIGHTS = ("weight_ih", "weight_hh")


class SparseLSTMCell(nn.Module):
    """nn.LSTMCell with CSR weights ``weight_ih`` (4H x input_size) and
    ``weight_hh`` (4H x H), rows in nn.LSTMCell's gate order i|f|g|o.

    The gates are two sparse products, ``weight_ih(x, bias_ih) +
    weight_hh(h, bias_hh)``, and the pointwise part is the fused
    ``ops.lstm_cell``. ``density`` (or ``sparsity``; default density 0.1)
    applies to each matrix separately, exactly round(density * numel) stored
    entries each; all stored values and biases start uniform in
    +-1/sqrt(hidden_size), like nn.LSTMCell (with ``init_scale="fan_in"``
    each row's values also times sqrt(in_features / its stored entries), so
    gates start with the dense cell's variance). ``block_shape=(bh, bw)`` makes
    both matrices :class:`~sparse_kernels.BSRWeight` (bh dividing 4 *
    hidden_size, bw dividing input_size and hidden_size), computed by the BSR
    kernels.

    A dense nn.LSTMCell state_dict can be loaded: the current patterns are
    kept and their values are read from the dense weights (entries outside
    the patterns are dropped). Use :meth:`from_dense` to derive the patterns
    from dense weights instead.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 density: float | None = None, sparsity: float | None = None, init: str = "uniform",
                 generator: torch.Generator | None = None, block_shape=None, init_scale: str = "dense") -> None:
        super().__init__()
        self.init_scale = check_init_scale(init_scale)
        self.input_size = _check_size("SparseLSTMCell", "input_size", input_size)
        self.hidden_size = _check_size("SparseLSTMCell", "hidden_size", hidden_size)
        self.bias = bool(bias)
        density = resolve_density(density, sparsity)
        check_init(init)
        self.block_shape = check_block_shape(block_shape, "SparseLSTMCell")
        bound = self._init_bound()
        gates = 4 * self.hidden_size
        kwargs = dict(init=init, bound=bound, generator=generator, dtype=dtype, device=device,
                      block_shape=self.block_shape, init_scale=init_scale)
        self.weight_ih = make_weight(gates, self.input_size, density, name="SparseLSTMCell: weight_ih", **kwargs)
        self.weight_hh = make_weight(gates, self.hidden_size, density, name="SparseLSTMCell: weight_hh", **kwargs)
        if bias:
            values = self.weight_ih.values
            self.bias_ih = nn.Parameter(torch.empty(gates, dtype=values.dtype, device=values.device))
            self.bias_hh = nn.Parameter(torch.empty(gates, dtype=values.dtype, device=values.device))
            with torch.no_grad():
                self.bias_ih.uniform_(-bound, bound, generator=generator)
                self.bias_hh.uniform_(-bound, bound, generator=generator)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def _init_bound(self) -> float:
        return 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw all stored values and biases as at construction; the
        patterns are kept (they are a choice of architecture)."""
        bound = self._init_bound()
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound, generator=generator)
            if getattr(self, "init_scale", "dense") == "fan_in":
                self.weight_ih.scale_to_fan_in_()
                self.weight_hh.scale_to_fan_in_()

    # ------------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        return self.weight_ih.nnz + self.weight_hh.nnz

    @property
    def density(self) -> float:
        """Stored entries over the entries of both dense matrices."""
        total = 4 * self.hidden_size * (self.input_size + self.hidden_size)
        return self.nnz / total if total else 0.0

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.block_shape:
            s += f", block_shape={self.block_shape}"
        return s + f", density={self.density:.4f}, nnz={self.nnz}"

    # ------------------------------------------------------------------ compute
    def _check_state(self, idx: int, name: str, t, input: torch.Tensor) -> None:
        """nn.LSTMCell's checks, done before any kernel and naming the tensor
        and the shape it should have."""
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"SparseLSTMCell: hx[{idx}] ({name}) must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() not in (1, 2):
            raise ValueError(f"SparseLSTMCell: Expected hx[{idx}] ({name}) to be 1D or 2D, got {t.dim()}D instead")
        expected = (input.shape[0], self.hidden_size) if input.dim() == 2 else (self.hidden_size,)
        if tuple(t.shape) != expected:
            raise ValueError(f"SparseLSTMCell: expected hx[{idx}] ({name}) of shape {expected} for input of "
                             f"shape {tuple(input.shape)}, got {tuple(t.shape)}")
        if t.dtype != input.dtype:
            raise TypeError(f"SparseLSTMCell: hx[{idx}] ({name}) has dtype {t.dtype}, input has {input.dtype}")
        if t.device != input.device:
            raise ValueError(f"SparseLSTMCell: hx[{idx}] ({name}) is on {t.device}, input is on {input.device}")

    def forward(self, input: torch.Tensor,
                hx: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_1, c_1) from input (N, input_size) or (input_size,) and hx =
        (h_0, c_0) of shape (N, H) or (H,), zeros when not given."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"SparseLSTMCell: input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"SparseLSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"SparseLSTMCell: expected input of shape (N, input_size={self.input_size}) or "
                             f"({self.input_size},), got {tuple(input.shape)}")
        _check_input_dtype("SparseLSTMCell", "input", input, self.weight_ih)
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("SparseLSTMCell: hx must be a tuple (h_0, c_0)")
            for idx, (name, t) in enumerate(zip(("h_0", "c_0"), hx)):
                self._check_state(idx, name, t, input)

        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            # Still run weight_hh on the zeros, as nn.LSTMCell does, so its
            # values get a (zero) gradient rather than None; optimizers with
            # momentum or weight decay treat the two differently.
            zeros = input.new_zeros(input.shape[0], self.hidden_size)
            h, c = zeros, zeros
        else:
            h, c = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        gates = self.weight_ih(input, self.bias_ih) + self.weight_hh(h, self.bias_hh)
        h_1, c_1 = ops.lstm_cell(gates, c)
        if not batched:
            h_1, c_1 = h_1.squeeze(0), c_1.squeeze(0)
        return h_1, c_1

    # ------------------------------------------------------------------ dense conversion
    @classmethod
    def from_dense(cls, cell: nn.LSTMCell, density: float | None = None,
                   mask: dict[str, torch.Tensor] | None = None, *, block_shape=None) -> "SparseLSTMCell":
        """A SparseLSTMCell holding ``cell``'s weights. Per matrix: the entries
        where ``mask[name]`` is true if given ({"weight_ih": m1, "weight_hh":
        m2}; a matrix left out of the dict falls back to density), else its
        round(density * numel) largest magnitudes, else (neither) every entry,
        so that the result computes exactly what ``cell`` does. With
        ``block_shape``: whole blocks (see SparseLinear.from_dense)."""
        if not isinstance(cell, nn.LSTMCell):
            raise TypeError(f"from_dense expects an nn.LSTMCell, got {type(cell).__name__}")
        if mask is None:
            mask = {}
        elif not isinstance(mask, dict):
            raise TypeError(f"mask must be a dict {{'weight_ih': ..., 'weight_hh': ...}} or None, "
                            f"got {type(mask).__name__}")
        unknown = set(mask) - set(_WEIGHTS)
        if unknown:
            raise ValueError(f"mask has unknown keys {sorted(unknown)}; expected a subset of {list(_WEIGHTS)}")
        has_bias = cell.bias_ih is not None
        # density=0: build without drawing patterns we are about to replace.
        module = cls(cell.input_size, cell.hidden_size, bias=has_bias, device=cell.weight_ih.device,
                     dtype=cell.weight_ih.dtype, density=0.0, block_shape=block_shape)
        weights = {name: weight_from_dense(getattr(cell, name), density, mask.get(name), module.block_shape)
                   for name in _WEIGHTS}
        for name, weight in weights.items():
            setattr(module, name, weight)
        if has_bias:
            with torch.no_grad():
                module.bias_ih.copy_(cell.bias_ih)
                module.bias_hh.copy_(cell.bias_hh)
        return module

    def to_dense(self) -> nn.LSTMCell:
        """The equivalent nn.LSTMCell (same dtype and device; weights copied,
        the missing entries as zeros)."""
        values = self.weight_ih.values
        cell = nn.LSTMCell(self.input_size, self.hidden_size, bias=self.bias,
                           device=values.device, dtype=values.dtype)
        with torch.no_grad():
            for name in _WEIGHTS:
                weight: SparseWeight = getattr(self, name)
                getattr(cell, name).copy_(weight.to_dense())
            if self.bias:
                cell.bias_ih.copy_(self.bias_ih)
                cell.bias_hh.copy_(self.bias_hh)
        return cell

    # ------------------------------------------------------------------ state dict
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        _load_dense_weights(self, _WEIGHTS, state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
