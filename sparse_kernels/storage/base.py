"""SparseWeight, the interface every sparse matrix container offers the
modules (nn/) and sparse training (dst/), and how new stored values are
scaled (INIT_SCALES)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops


# How a new sparse weight's stored values are scaled (``init_scale``):
#   "dense"   the dense layer's bound on every stored entry, so a row with a
#             fraction d of its entries gives pre-activations sqrt(d) as large;
#   "fan_in"  the bound times sqrt(in_features / stored entries of the row),
#             so each row's pre-activation variance equals the dense layer's
#             (the fan-in correction of the sparse-init literature: Evci et
#             al., "Gradient Flow in Sparse Neural Networks").
INIT_SCALES = ("dense", "fan_in")


def check_init_scale(init_scale: str) -> str:
    if init_scale not in INIT_SCALES:
        raise ValueError(f"init_scale must be one of {INIT_SCALES}, got {init_scale!r}")
    return init_scale


def _replace_values(param: nn.Parameter, values: torch.Tensor) -> None:
    """Give ``param`` new data of possibly another shape, in place (the
    Parameter object stays, so optimizers still hold it)."""
    values = values.detach().to(param.dtype).contiguous()
    if values.shape != param.shape:
        # Autograd caches the leaf's gradient accumulator with the old
        # shape while any earlier graph (e.g. last step's `loss`) is alive,
        # and resets it only on a dtype or device change: pass through
        # another dtype so the next backward accepts the new shape.
        param.data = values.to(torch.float64 if values.dtype != torch.float64 else torch.float32)
    param.data = values


class SparseWeight(nn.Module):
    """What every sparse matrix container offers the modules and sparse
    training: ``shape``, ``values`` (the trainable stored entries), ``nnz``
    (stored entries), ``density``, ``forward(input, bias)`` = input @ W^T +
    bias, ``to_dense``/``mask``, and the slot view below. Subclasses:
    CSRWeight (a slot is one entry) and BSRWeight (a slot is a block)."""

    out_features: int
    in_features: int
    values: nn.Parameter

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.out_features, self.in_features))

    @property
    def density(self) -> float:
        total = self.out_features * self.in_features
        return self.nnz / total if total else 0.0

    # -- the slot view (for sparse training): subclasses define these
    slot_shape: tuple = ()

    @property
    def slot_size(self) -> int:
        """Stored entries per slot."""
        return math.prod(self.slot_shape)

    @property
    def num_slots(self) -> int:
        return self.pattern[1].numel()

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid the slot pattern lives on."""
        raise NotImplementedError

    @property
    def pattern(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row_ptr, col_idx) of the stored slots over ``grid_shape``."""
        raise NotImplementedError

    def slot_magnitudes(self) -> torch.Tensor:
        """One non-negative magnitude per slot (detached), for magnitude pruning."""
        raise NotImplementedError

    def fan_in_factors(self) -> torch.Tensor:
        """Per slot sqrt(in_features / stored entries of its row): the factor
        that gives a row of this pattern the pre-activation variance of a
        dense row with the same value distribution (1 for a full row). A
        BSR block row stores (blocks in it) * bw entries per matrix row."""
        row_ptr, _ = self.pattern
        per_row = row_ptr.long().diff()
        width = self.slot_shape[-1] if self.slot_shape else 1
        entries = (per_row * width).clamp(min=1).double()
        factor = (self.in_features / entries).sqrt().to(self.values.dtype)
        return factor.repeat_interleave(per_row)

    @torch.no_grad()
    def scale_to_fan_in_(self) -> "SparseWeight":
        """Multiply every stored value by its row's :meth:`fan_in_factors`
        (in place; see ``INIT_SCALES``)."""
        factors = self.fan_in_factors().to(self.values.device)
        self.values.mul_(factors.reshape(-1, *([1] * (self.values.dim() - 1))))
        return self

    def set_pattern(self, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                    *, validate: bool = True) -> None:
        """Replace the slot pattern over the grid and the values."""
        raise NotImplementedError

    def rebuild(self, keep: torch.Tensor, grow_row_ptr: torch.Tensor, grow_col_idx: torch.Tensor,
                grow_values: torch.Tensor | None = None) -> torch.Tensor:
        """Keep the stored slots (entries or blocks) where ``keep`` is true,
        add the grid positions of the CSR (grow_row_ptr, grow_col_idx) with
        ``grow_values`` (one slot each, shaped like ``values[0]``; default
        zero), and return the slot permutation: the old slot of every new
        slot, -1 for a grown one (int64, on the weight's device). The values
        Parameter object is kept; see sparse_kernels.dst.remap_optimizer_state
        for the optimizer's per-slot state."""
        row_ptr, col_idx = self.pattern
        device = col_idx.device
        # On the pattern's device (ops.rebuild_csr: CPU or CUDA kernels).
        new_row_ptr, new_col_idx, perm = ops.rebuild_csr(
            row_ptr, col_idx, keep.to(device), grow_row_ptr.to(device), grow_col_idx.to(device))
        grown = perm < 0
        n_grown = int(grown.sum())
        slot_shape = tuple(self.values.shape[1:])
        if grow_values is None:
            grow_values = self.values.new_zeros(n_grown, *slot_shape)
        elif tuple(grow_values.shape) != (n_grown, *slot_shape):
            raise ValueError(f"grow_values must have one slot per grown position: shape "
                             f"{(n_grown, *slot_shape)}, got {tuple(grow_values.shape)}")
        with torch.no_grad():
            values = self.values.detach()[perm.clamp(min=0)]
            values[grown] = grow_values.to(device=device, dtype=values.dtype)
        self.set_pattern(new_row_ptr, new_col_idx, values, validate=False)  # valid by construction
        return perm

    def _check_input(self, input) -> None:
        if isinstance(input, torch.Tensor) and (input.dim() == 0 or input.shape[-1] != self.in_features):
            raise ValueError(f"input must have in_features = {self.in_features} as its last dimension, "
                             f"got shape {tuple(input.shape)}")

    # -- what the modules use besides forward
    def csr_operands(self):
        """(values, row_ptr, col_idx, transposed index) of the element-level
        CSR, for the whole-layer ops; differentiable in ``values``."""
        raise NotImplementedError

    def values_at(self, dense: torch.Tensor) -> torch.Tensor:
        """A dense (out, in) matrix read at this pattern, shaped like ``values``."""
        raise NotImplementedError

    def pattern_state(self) -> dict:
        """The persistent pattern buffers by state_dict name."""
        raise NotImplementedError

