"""BSRWeight: a block-sparse matrix, dense blocks on a CSR pattern over the
grid of blocks."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .. import bsr as bsr_format
from .. import csr as csr_format
from .. import ops
from ..bsr import validate_bsr
from ..csr import CSCIndex
from .base import SparseWeight, _replace_values, check_init_scale

class BSRWeight(SparseWeight):
    """A block-sparse (out_features x in_features) matrix: dense blocks of
    ``block_shape`` = (bh, bw) on a CSR pattern over the (out / bh) x (in / bw)
    grid of blocks (bh must divide out_features, bw in_features).

    ``values`` is a dense (nblocks, bh, bw) nn.Parameter (each block
    row-major), ``block_row_ptr`` / ``block_col_idx`` int32 buffers. The
    transposed block index (``transposed_index()``) and the element-level
    CSR view that the whole-layer ops take (``csr_operands()``) are cached
    in non-persistent buffers and rebuilt only when the pattern changes.
    Build one with :meth:`random` or :meth:`from_dense`; the structure is
    validated once here, never in the kernels. Calling it computes
    ``input @ W^T`` (+ bias) with the BSR kernels.
    """

    _ELEMENT_FIELDS = ("element_row_ptr", "element_col_idx", "element_col_ptr", "element_row_idx",
                       "element_csr2csc", "element_gather")

    def __init__(self, values: torch.Tensor, block_row_ptr: torch.Tensor, block_col_idx: torch.Tensor,
                 shape, *, validate: bool = True):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise ValueError(f"shape must be (out_features, in_features), got {shape}")
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
        if values.dim() != 3:
            raise ValueError(f"values must be 3-D (nblocks, block_height, block_width), got shape "
                             f"{tuple(values.shape)}")
        block_shape = bsr_format.check_block_shape(tuple(values.shape[1:]), "the block shape of values")
        if validate:
            validate_bsr(block_row_ptr, block_col_idx, shape, block_shape, values)
        self.out_features, self.in_features = shape
        self.block_shape = block_shape
        self.values = nn.Parameter(values.detach().contiguous())
        self.register_buffer("block_row_ptr", block_row_ptr.contiguous())
        self.register_buffer("block_col_idx", block_col_idx.contiguous())
        for name in ("block_col_ptr", "block_row_idx", "block_csr2csc", *self._ELEMENT_FIELDS):
            self.register_buffer(name, None, persistent=False)
        self._csc_key = None
        self._element_key = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(cls, out_features: int, in_features: int, density: float, *, block_shape,
               init: str = "uniform", generator: torch.Generator | None = None, dtype=None, device=None,
               bound: float | None = None, row_groups: int = 1, init_scale: str = "dense") -> "BSRWeight":
        """A random block topology with exactly round(density * number of
        grid blocks) stored blocks (``init`` as CSRWeight.random, over the
        grid of blocks; "block_diagonal" cuts ``row_groups`` groups of block
        rows), values uniform in +-bound (default 1/sqrt(in_features), like
        nn.Linear), times sqrt(in_features / the row's stored entries) with
        ``init_scale="fan_in"``."""
        check_init_scale(init_scale)
        grid = bsr_format.grid_shape((out_features, in_features), block_shape)
        bh, bw = bsr_format.check_block_shape(block_shape)
        block_row_ptr, block_col_idx = csr_format.random_csr(grid, density, init=init, generator=generator,
                                                             device=device, row_groups=row_groups)
        if bound is None:
            bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        values = torch.empty(block_col_idx.numel(), bh, bw, dtype=dtype, device=device)
        values.uniform_(-bound, bound, generator=generator)
        weight = cls(values, block_row_ptr, block_col_idx, (out_features, in_features), validate=False)
        return weight.scale_to_fan_in_() if init_scale == "fan_in" else weight

    @classmethod
    def from_dense(cls, dense: torch.Tensor, mask: torch.Tensor | None = None, *, block_shape,
                   density: float | None = None) -> "BSRWeight":
        """Blocks of ``dense`` chosen by ``mask`` (a bool tensor of the grid's
        shape, one entry per block, or of ``dense``'s shape: a block is kept
        when any of its entries is), else the round(density * grid blocks)
        blocks of largest Frobenius norm (ties: the lower position), else
        (neither) every block holding a nonzero."""
        if not isinstance(dense, torch.Tensor) or dense.dim() != 2:
            raise ValueError("dense must be a 2-D tensor (out_features, in_features)")
        if not dense.is_floating_point():
            raise TypeError(f"dense must be a floating-point tensor, got {dense.dtype}")
        grid = bsr_format.grid_shape(dense.shape, block_shape, "dense")
        bh, bw = bsr_format.check_block_shape(block_shape)
        dense = dense.detach()
        if mask is not None:
            if mask is not None and density is not None:
                raise ValueError("give either mask= or density=, not both")
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) not in (grid, tuple(dense.shape)):
                raise ValueError(f"mask must be a tensor of the block grid's shape {grid} or of dense's "
                                 f"shape {tuple(dense.shape)}")
            mask = mask.to(device=dense.device, dtype=torch.bool)
            block_mask = mask if tuple(mask.shape) == grid else bsr_format.blocks_of(mask, (bh, bw)).any((2, 3))
        elif density is not None:
            count = csr_format.exact_nnz(grid, float(density))
            flat = torch.zeros(grid[0] * grid[1], dtype=torch.bool, device=dense.device)
            if count:
                norms = bsr_format.block_norms(dense, (bh, bw)).reshape(-1)
                order = torch.sort(norms, descending=True, stable=True).indices
                flat[order[:count]] = True
            block_mask = flat.reshape(grid)
        else:
            block_mask = bsr_format.blocks_of(dense != 0, (bh, bw)).any((2, 3))
        block_row_ptr, block_col_idx, rows, cols = bsr_format.block_mask_to_pattern(block_mask)
        values = bsr_format.blocks_of(dense, (bh, bw))[rows, cols].clone()
        return cls(values, block_row_ptr, block_col_idx, dense.shape, validate=False)

    # ------------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        """Stored entries: nblocks * bh * bw (zeros inside a block included)."""
        return self.values.numel()

    @property
    def nblocks(self) -> int:
        return self.block_col_idx.numel()

    def extra_repr(self) -> str:
        return (f"shape=({self.out_features}, {self.in_features}), block_shape={self.block_shape}, "
                f"nblocks={self.nblocks}, density={self.density:.4f}, dtype={self.values.dtype}")

    # ------------------------------------------------------------------ slot view
    @property
    def slot_shape(self) -> tuple[int, int]:
        return self.block_shape

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.out_features // self.block_shape[0], self.in_features // self.block_shape[1])

    @property
    def pattern(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.block_row_ptr, self.block_col_idx

    def slot_magnitudes(self) -> torch.Tensor:
        """The Frobenius norm of every stored block."""
        return self.values.detach().pow(2).sum((1, 2)).sqrt()

    def values_at(self, dense: torch.Tensor) -> torch.Tensor:
        """The blocks of a dense (out, in) matrix at this pattern: (nblocks, bh, bw)."""
        rows = csr_format.row_indices(self.block_row_ptr)
        return bsr_format.blocks_of(dense.detach().to(rows.device), self.block_shape)[
            rows, self.block_col_idx.long()].clone()

    def pattern_state(self) -> dict:
        return {"block_row_ptr": self.block_row_ptr, "block_col_idx": self.block_col_idx}

    # ------------------------------------------------------------------ cached indices
    def _pattern_key(self):
        return (self.block_row_ptr.data_ptr(), self.block_row_ptr._version,
                self.block_col_idx.data_ptr(), self.block_col_idx._version, self.block_col_idx.device)

    def transposed_index(self) -> CSCIndex:
        """The cached transposed block index (block_col_ptr, block_row_idx,
        block_csr2csc) over the grid, rebuilt only when the pattern changed."""
        key = self._pattern_key()
        if self._csc_key != key or self.block_col_ptr is None:
            self.block_col_ptr, self.block_row_idx, self.block_csr2csc = csr_format.csr_transpose(
                self.block_row_ptr, self.block_col_idx, self.grid_shape[1])
            self._csc_key = self._pattern_key()
        return CSCIndex(self.block_col_ptr, self.block_row_idx, self.block_csr2csc)

    def element_index(self):
        """The cached element-level CSR view of the pattern: (row_ptr,
        col_idx, CSCIndex or None, gather), every entry of every block, with
        ``values.reshape(-1)[gather]`` its values. O(nnz) int32/int64 memory,
        built on first use and after a pattern change only; the transposed
        index only off the CPU (see CSRWeight.backward_index)."""
        key = self._pattern_key()
        if self._element_key != key or self.element_row_ptr is None:
            row_ptr, col_idx, gather = bsr_format.element_csr(self.block_row_ptr, self.block_col_idx,
                                                              self.block_shape)
            csc = ((None, None, None) if row_ptr.device.type == "cpu"
                   else csr_format.csr_transpose(row_ptr, col_idx, self.in_features))
            for name, t in zip(self._ELEMENT_FIELDS, (row_ptr, col_idx, *csc, gather)):
                setattr(self, name, t)
            self._element_key = self._pattern_key()
        csc = (None if self.element_col_ptr is None
               else CSCIndex(self.element_col_ptr, self.element_row_idx, self.element_csr2csc))
        return self.element_row_ptr, self.element_col_idx, csc, self.element_gather

    def csr_operands(self):
        """(values, row_ptr, col_idx, transposed index) of the element-level
        CSR view, for the whole-layer ops that take CSR weights: the values
        are a differentiable gather of the blocks, so gradients reach
        ``values`` in its (nblocks, bh, bw) shape."""
        row_ptr, col_idx, csc, gather = self.element_index()
        return self.values.reshape(-1).index_select(0, gather), row_ptr, col_idx, csc

    # ------------------------------------------------------------------ topology
    def set_pattern(self, block_row_ptr: torch.Tensor, block_col_idx: torch.Tensor, values: torch.Tensor,
                    *, validate: bool = True) -> None:
        """Replace the block topology and values (nblocks, bh, bw). The values
        Parameter object is kept, so optimizers still hold it; their
        per-block state must be remapped by the caller."""
        if validate:
            validate_bsr(block_row_ptr, block_col_idx, self.shape, self.block_shape, values)
        self.block_row_ptr = block_row_ptr.contiguous()
        self.block_col_idx = block_col_idx.contiguous()
        _replace_values(self.values, values)
        self._csc_key = None
        self._element_key = None

    # ------------------------------------------------------------------ compute
    def forward(self, input: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(input)
        return ops.bsr_linear(input, self.values, self.block_row_ptr, self.block_col_idx, bias,
                              block_csc=self.transposed_index(), validate=False)

    def to_dense(self) -> torch.Tensor:
        return bsr_format.bsr_to_dense(self.values, self.block_row_ptr, self.block_col_idx, self.shape)

    def mask(self) -> torch.Tensor:
        """The boolean dense pattern, whole blocks (for inspection and tests; dense-sized)."""
        grid = torch.zeros(self.grid_shape, dtype=torch.bool, device=self.block_col_idx.device)
        grid[csr_format.row_indices(self.block_row_ptr), self.block_col_idx.long()] = True
        bh, bw = self.block_shape
        return grid.repeat_interleave(bh, 0).repeat_interleave(bw, 1)

    def to_torch_sparse(self) -> torch.Tensor:
        """A ``torch.sparse_bsr_tensor`` sharing nothing with this weight."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta")
            return torch.sparse_bsr_tensor(self.block_row_ptr.clone(), self.block_col_idx.clone(),
                                           self.values.detach().clone(), self.shape, check_invariants=False)

    # ------------------------------------------------------------------ state dict
    def get_extra_state(self):
        return {"format": "bsr", "shape": [self.out_features, self.in_features],
                "block_shape": list(self.block_shape)}

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or state.get("format") != "bsr":
            raise ValueError(f"not a BSRWeight state: {state!r}")
        if self._state_mismatch(state):
            raise ValueError(self._state_mismatch(state))

    def _state_mismatch(self, state) -> str | None:
        if list(state.get("shape", [])) != list(self.shape):
            return (f"state_dict holds a BSR weight of shape {state.get('shape')}, "
                    f"this one has shape {[self.out_features, self.in_features]}")
        if list(state.get("block_shape", [])) != list(self.block_shape):
            return (f"state_dict holds a BSR weight with block_shape {state.get('block_shape')}, "
                    f"this one has block_shape {list(self.block_shape)}")
        return None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A saved weight may hold a different number of blocks: validate the
        # incoming pattern, then resize our tensors so the in-place copy fits.
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict):
            if extra.get("format") != "bsr":
                error_msgs.append(f"{prefix}: state_dict holds a {extra.get('format')!r} weight, "
                                  f"this one is block-sparse ('bsr')")
                return
            mismatch = self._state_mismatch(extra)
            if mismatch:
                error_msgs.append(f"{prefix}: {mismatch}")
                return
        keys = {name: prefix + name for name in ("values", "block_row_ptr", "block_col_idx")}
        if all(k in state_dict for k in keys.values()):
            values, row_ptr, col_idx = (state_dict[keys[n]] for n in ("values", "block_row_ptr", "block_col_idx"))
            try:
                validate_bsr(row_ptr, col_idx, self.shape, self.block_shape, values)
            except (TypeError, ValueError) as exc:
                error_msgs.append(f"{prefix}: invalid BSR pattern in state_dict: {exc}")
                return
            if values.shape != self.values.shape:
                self.values.data = self.values.data.new_empty(values.shape)
                self.block_col_idx = self.block_col_idx.new_empty(col_idx.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
