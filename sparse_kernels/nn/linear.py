"""SparseLinear: a drop-in nn.Linear whose weight keeps only its nonzeros."""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

from ..storage import SparseWeight
from ._common import (check_block_shape, check_init, check_init_scale, make_weight, resolve_density,
                      weight_from_dense)

__all__ = ["SparseLinear"]


def _check_size(owner: str, name: str, value) -> int:
    """nn.Linear fails on a negative size only deep inside torch.empty; say
    which argument is wrong instead."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}") from None
    if value < 0:
        raise ValueError(f"{owner}: {name} must be non-negative, got {value}")
    return value


def _check_input_dtype(owner: str, name: str, input: torch.Tensor, weight: SparseWeight) -> None:
    """The op would also refuse a dtype mismatch, but in terms of its own
    arguments ("values"); a module user should hear about the module."""
    if input.dtype != weight.values.dtype:
        raise TypeError(f"{owner}: {name} has dtype {input.dtype} but the weights are "
                        f"{weight.values.dtype}; convert the input or the module (.to(dtype))")


def _load_dense_weights(module: nn.Module, names, state_dict, prefix: str, error_msgs) -> None:
    """Rewrite dense 2-D entries ``prefix + name`` of a state_dict (a dense
    nn.Linear / nn.LSTMCell checkpoint) into the sparse entries of the
    CSRWeight or BSRWeight ``module.<name>``, in place, so that the weight
    child then loads them as usual.

    The module's current pattern is kept and only the values at its stored
    positions are read from the dense tensor: the pattern is part of the
    model's configuration (its density), and a dense checkpoint would
    otherwise silently turn a sparse model dense. To choose a new pattern
    from dense weights, use ``from_dense`` instead.

    load_state_dict hands this dict on to the children after the parent's
    ``_load_from_state_dict`` returns (and works on a copy of the caller's
    dict), which is what makes the rewrite visible to the sparse weight.
    """
    for name in names:
        key = prefix + name
        dense = state_dict.get(key)
        if not (isinstance(dense, torch.Tensor) and dense.dim() == 2):
            continue
        del state_dict[key]
        weight: SparseWeight = getattr(module, name)
        if tuple(dense.shape) != tuple(weight.shape):
            error_msgs.append(f"size mismatch for {key}: copying a dense weight of shape "
                              f"{tuple(dense.shape)}, the sparse weight has shape {tuple(weight.shape)}.")
            continue
        if not dense.is_floating_point():
            error_msgs.append(f"{key}: a dense weight must be floating-point, got {dense.dtype}")
            continue
        state_dict[key + ".values"] = weight.values_at(dense)
        for buffer, t in weight.pattern_state().items():
            state_dict[f"{key}.{buffer}"] = t.clone()
        state_dict[key + "._extra_state"] = weight.get_extra_state()


class SparseLinear(nn.Module):
    """nn.Linear with a CSR weight: ``y = x @ W^T + b`` computed from the
    nonzeros only, in the forward and in both backward products.

    ``block_shape=(bh, bw)`` makes the weight a
    :class:`~sparse_kernels.BSRWeight` instead: dense bh x bw blocks (bh
    dividing out_features, bw in_features), ``density`` counted in blocks,
    computed by the BSR kernels (state dict ``weight.values`` of shape
    (nblocks, bh, bw), ``weight.block_row_ptr``, ``weight.block_col_idx``).

    ``weight`` is a :class:`~sparse_kernels.CSRWeight` submodule, so the state
    dict holds ``weight.values`` (the trainable nonzeros), ``weight.row_ptr``,
    ``weight.col_idx`` and ``weight._extra_state``. ``density`` (or
    ``sparsity`` = 1 - density; default density 0.1) sets exactly
    round(density * out * in) stored entries in a random pattern (``init``:
    "uniform" rows or "erdos_renyi"), initialised like nn.Linear's weight,
    uniform in +-1/sqrt(in_features), as is the bias; with
    ``init_scale="fan_in"`` each row's values are also multiplied by
    sqrt(in_features / the row's stored entries), i.e. uniform in
    +-1/sqrt(stored entries), so outputs start with the dense layer's variance.

    A dense nn.Linear state_dict (a 2-D ``weight``) can be loaded too: the
    current pattern is kept and its values are read from the dense weight
    (entries outside the pattern are dropped). Use :meth:`from_dense` to
    derive the pattern from the dense weight instead.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 density: float | None = None, sparsity: float | None = None, init: str = "uniform",
                 generator: torch.Generator | None = None, block_shape=None, init_scale: str = "dense") -> None:
        super().__init__()
        self.init_scale = check_init_scale(init_scale)
        self.in_features = _check_size("SparseLinear", "in_features", in_features)
        self.out_features = _check_size("SparseLinear", "out_features", out_features)
        density = resolve_density(density, sparsity)
        check_init(init)
        self.block_shape = check_block_shape(block_shape, "SparseLinear")
        # The same bound nn.Linear gets from kaiming_uniform_(a=sqrt(5)).
        bound = self._init_bound()
        self.weight = make_weight(self.out_features, self.in_features, density, init=init, bound=bound,
                                  generator=generator, dtype=dtype, device=device, block_shape=self.block_shape,
                                  name="SparseLinear: the weight", init_scale=init_scale)
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, dtype=self.weight.values.dtype,
                                                 device=self.weight.values.device))
            with torch.no_grad():
                self.bias.uniform_(-bound, bound, generator=generator)
        else:
            self.register_parameter("bias", None)

    def _init_bound(self) -> float:
        return 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the stored values and the bias as at construction; the
        pattern is kept (it is a choice of architecture, not a parameter)."""
        bound = self._init_bound()
        with torch.no_grad():
            self.weight.values.uniform_(-bound, bound, generator=generator)
            if getattr(self, "init_scale", "dense") == "fan_in":
                self.weight.scale_to_fan_in_()
            if self.bias is not None:
                self.bias.uniform_(-bound, bound, generator=generator)

    # ------------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        return self.weight.nnz

    @property
    def density(self) -> float:
        return self.weight.density

    def extra_repr(self) -> str:
        blocks = f", block_shape={self.block_shape}" if self.block_shape else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}{blocks}, density={self.density:.4f}, nnz={self.nnz}")

    # ------------------------------------------------------------------ compute
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # The op would take a too-short input as a smaller matrix and fail on
        # its column indices; name the real cause here, before any kernel.
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"SparseLinear: input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() == 0 or input.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear: expected input of shape (*, in_features={self.in_features}), "
                             f"got {tuple(input.shape)}")
        _check_input_dtype("SparseLinear", "input", input, self.weight)
        return self.weight(input, self.bias)

    # ------------------------------------------------------------------ dense conversion
    @classmethod
    def from_dense(cls, linear: nn.Linear, density: float | None = None,
                   mask: torch.Tensor | None = None, *, block_shape=None) -> "SparseLinear":
        """A SparseLinear holding ``linear``'s weights: the entries where
        ``mask`` is true if given, else the round(density * numel) largest
        magnitudes, else (neither) every entry, zeros included, so that the
        result computes exactly what ``linear`` does. With ``block_shape``:
        whole blocks (mask per block or per entry; largest block norms)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_dense expects an nn.Linear, got {type(linear).__name__}")
        # density=0: build without drawing a pattern we are about to replace.
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype, density=0.0,
                     block_shape=block_shape)
        weight = weight_from_dense(linear.weight, density, mask, module.block_shape)
        module.weight = weight
        if linear.bias is not None:
            with torch.no_grad():
                module.bias.copy_(linear.bias)
        return module

    def to_dense(self) -> nn.Linear:
        """The equivalent nn.Linear (same dtype and device; weights copied,
        the missing entries as zeros)."""
        values = self.weight.values
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=values.device, dtype=values.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight.to_dense())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    # ------------------------------------------------------------------ state dict
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        _load_dense_weights(self, ("weight",), state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
