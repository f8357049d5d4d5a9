"""Sparse weight storage: only the nonzeros are kept.

A CSRWeight is an nn.Module holding
  values   an ordinary dense 1-D nn.Parameter of length nnz, so every
           torch.optim optimizer, state_dict, .to(), DDP and AMP work as usual;
  row_ptr, col_idx   the pattern, int32 buffers;
  col_ptr, row_idx, csr2csc   the transposed index, non-persistent buffers
           rebuilt lazily only when the pattern changes.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from . import csr as csr_format
from . import ops
from .csr import CSCIndex, INDEX_DTYPE, validate_csr

__all__ = ["CSRWeight", "validate_csr"]


class CSRWeight(nn.Module):
    """A sparse (out_features x in_features) matrix in CSR form.

    Build one with :meth:`from_dense`, :meth:`from_torch_sparse` or
    :meth:`random`; the structure is validated once here, never in the kernels.
    Calling it computes ``input @ W^T`` (+ bias), like ``F.linear``.
    """

    def __init__(self, values: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor,
                 shape, *, validate: bool = True):
        super().__init__()
        shape = csr_format.check_shape(shape)
        if validate:
            validate_csr(row_ptr, col_idx, shape, values)
        self.out_features, self.in_features = shape
        self.values = nn.Parameter(values.detach().contiguous())
        self.register_buffer("row_ptr", row_ptr.contiguous())
        self.register_buffer("col_idx", col_idx.contiguous())
        for name in CSCIndex._fields:
            self.register_buffer(name, None, persistent=False)
        self._csc_key = None
        # False for a predefined pattern that sparse training must leave alone
        # (SparseEmbedding's frequency prefixes); see dst.find_sparse_weights.
        self.dynamic = True

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dense(cls, dense: torch.Tensor, mask: torch.Tensor | None = None) -> "CSRWeight":
        """Keep the entries where ``mask`` is true (default: the nonzeros of ``dense``)."""
        if not isinstance(dense, torch.Tensor) or dense.dim() != 2:
            raise ValueError("dense must be a 2-D tensor (out_features, in_features)")
        if not dense.is_floating_point():
            raise TypeError(f"dense must be a floating-point tensor, got {dense.dtype}")
        if mask is None:
            mask = dense != 0
        elif not isinstance(mask, torch.Tensor) or mask.shape != dense.shape:
            raise ValueError(f"mask must be a tensor of shape {tuple(dense.shape)}")
        mask = mask.to(device=dense.device, dtype=torch.bool)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major order: already CSR order
        counts = torch.bincount(rows, minlength=dense.shape[0])
        row_ptr = torch.zeros(dense.shape[0] + 1, dtype=INDEX_DTYPE, device=dense.device)
        row_ptr[1:] = torch.cumsum(counts, 0)
        return cls(dense.detach()[rows, cols].clone(), row_ptr, cols.to(INDEX_DTYPE), dense.shape)

    @classmethod
    def from_torch_sparse(cls, sparse: torch.Tensor) -> "CSRWeight":
        """From a ``torch.sparse_csr_tensor`` (or a COO tensor, converted)."""
        if not isinstance(sparse, torch.Tensor) or sparse.layout not in (torch.sparse_csr, torch.sparse_coo):
            raise TypeError("sparse must be a torch.sparse_csr or torch.sparse_coo tensor")
        if sparse.dim() != 2:
            raise ValueError(f"sparse must be 2-D, got {sparse.dim()}-D")
        if sparse.layout == torch.sparse_coo:
            sparse = sparse.coalesce().to_sparse_csr()
        crow, col = sparse.crow_indices(), sparse.col_indices()
        if col.numel() > 2**31 - 1:
            raise ValueError("too many nonzeros for int32 indices")
        # torch allows unsorted columns within a row: sort them, keep values paired.
        n_rows, n_cols = sparse.shape
        rows = csr_format.row_indices(crow)
        row_ptr, col_idx, order = csr_format.from_coordinates(rows, col, (n_rows, n_cols))
        return cls(sparse.values().detach()[order].clone(), row_ptr, col_idx, sparse.shape)

    @classmethod
    def random(cls, out_features: int, in_features: int, density: float, *, init: str = "uniform",
               generator: torch.Generator | None = None, dtype=None, device=None,
               bound: float | None = None, row_groups: int = 1) -> "CSRWeight":
        """A random topology with exactly round(density * out * in) nonzeros
        (``init``: "uniform" per row, "erdos_renyi" or "block_diagonal" with
        ``row_groups`` gate groups; see sparse_kernels.csr.random_csr),
        values uniform in +-bound (default 1/sqrt(in_features), like nn.Linear)."""
        row_ptr, col_idx = csr_format.random_csr((out_features, in_features), density, init=init,
                                                 generator=generator, device=device, row_groups=row_groups)
        if bound is None:
            bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        values = torch.empty(col_idx.numel(), dtype=dtype, device=device)
        values.uniform_(-bound, bound, generator=generator)
        return cls(values, row_ptr, col_idx, (out_features, in_features), validate=False)

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.out_features, self.in_features))

    @property
    def nnz(self) -> int:
        return self.col_idx.numel()

    @property
    def density(self) -> float:
        total = self.out_features * self.in_features
        return self.nnz / total if total else 0.0

    def extra_repr(self) -> str:
        return (f"shape=({self.out_features}, {self.in_features}), nnz={self.nnz}, "
                f"density={self.density:.4f}, dtype={self.values.dtype}")

    # ------------------------------------------------------------------ transposed index
    def _pattern_key(self):
        # In-place edits bump a tensor's version counter, so this also notices a
        # pattern changed by copy_ or load_state_dict.
        return (self.row_ptr.data_ptr(), self.row_ptr._version,
                self.col_idx.data_ptr(), self.col_idx._version, self.col_idx.device)

    def transposed_index(self) -> CSCIndex:
        """The cached CSC view (col_ptr, row_idx, csr2csc), rebuilt only when the
        pattern changed since it was built."""
        key = self._pattern_key()
        if self._csc_key != key or self.col_ptr is None:
            col_ptr, row_idx, csr2csc = csr_format.csr_transpose(self.row_ptr, self.col_idx, self.in_features)
            self.col_ptr, self.row_idx, self.csr2csc = col_ptr, row_idx, csr2csc
            self._csc_key = self._pattern_key()
        return CSCIndex(self.col_ptr, self.row_idx, self.csr2csc)

    def set_pattern(self, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                    *, validate: bool = True) -> None:
        """Replace the topology (and values). The values Parameter object is
        kept, so optimizers still hold it; their per-element state must be
        remapped by the caller when nnz or the slot order changes."""
        if validate:
            validate_csr(row_ptr, col_idx, self.shape, values)
        self.row_ptr = row_ptr.contiguous()
        self.col_idx = col_idx.contiguous()
        values = values.detach().to(self.values.dtype).contiguous()
        if values.shape != self.values.shape:
            # Autograd caches the leaf's gradient accumulator with the old
            # shape while any earlier graph (e.g. last step's `loss`) is alive,
            # and resets it only on a dtype or device change: pass through
            # another dtype so the next backward accepts the new nnz.
            self.values.data = values.to(torch.float64 if values.dtype != torch.float64 else torch.float32)
        self.values.data = values
        self._csc_key = None

    def rebuild(self, keep: torch.Tensor, grow_row_ptr: torch.Tensor, grow_col_idx: torch.Tensor,
                grow_values: torch.Tensor | None = None) -> torch.Tensor:
        """Keep the stored slots where ``keep`` is true, add the positions of
        the CSR (grow_row_ptr, grow_col_idx) with ``grow_values`` (default
        zero), and return the slot permutation: the old slot of every new slot,
        -1 for a grown one (int64, on the weight's device). The values
        Parameter object is kept; see sparse_kernels.dst.remap_optimizer_state
        for the optimizer's per-element state."""
        device = self.col_idx.device
        # The topology kernels run on the CPU; a pattern is O(nnz) to move.
        new_row_ptr, new_col_idx, perm = (t.to(device) for t in ops.rebuild_csr(
            self.row_ptr.cpu(), self.col_idx.cpu(), keep.cpu(), grow_row_ptr.cpu(), grow_col_idx.cpu()))
        grown = perm < 0
        n_grown = int(grown.sum())
        if grow_values is None:
            grow_values = self.values.new_zeros(n_grown)
        elif grow_values.shape != (n_grown,):
            raise ValueError(f"grow_values must have one entry per grown position ({n_grown}), "
                             f"got shape {tuple(grow_values.shape)}")
        with torch.no_grad():
            values = self.values.detach()[perm.clamp(min=0)]
            values[grown] = grow_values.to(device=device, dtype=values.dtype)
        self.set_pattern(new_row_ptr, new_col_idx, values, validate=False)  # valid by construction
        return perm

    # ------------------------------------------------------------------ compute
    def forward(self, input: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and (input.dim() == 0 or input.shape[-1] != self.in_features):
            raise ValueError(f"input must have in_features = {self.in_features} as its last dimension, "
                             f"got shape {tuple(input.shape)}")
        return ops.sparse_linear(input, self.values, self.row_ptr, self.col_idx, bias,
                                 csc=self.transposed_index(), validate=False)

    def to_dense(self) -> torch.Tensor:
        dense = self.values.new_zeros(self.shape)
        rows = csr_format.row_indices(self.row_ptr)
        return dense.index_put((rows, self.col_idx.long()), self.values)

    def mask(self) -> torch.Tensor:
        """The boolean dense pattern (for inspection and tests; dense-sized)."""
        m = torch.zeros(self.shape, dtype=torch.bool, device=self.col_idx.device)
        m[csr_format.row_indices(self.row_ptr), self.col_idx.long()] = True
        return m

    def to_torch_sparse(self) -> torch.Tensor:
        # The pattern was validated when it was set; torch's "beta" notice is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(self.row_ptr, self.col_idx, self.values.detach(), self.shape,
                                           check_invariants=False)

    # ------------------------------------------------------------------ state dict
    def get_extra_state(self):
        return {"format": "csr", "shape": [self.out_features, self.in_features]}

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or state.get("format") != "csr":
            raise ValueError(f"not a CSRWeight state: {state!r}")
        if list(state.get("shape", [])) != [self.out_features, self.in_features]:
            raise ValueError(self._shape_mismatch(state))

    def _shape_mismatch(self, state) -> str:
        return (f"state_dict holds a CSR weight of shape {state.get('shape')}, "
                f"this one has shape {[self.out_features, self.in_features]}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A saved weight may hold a different number of nonzeros: validate the
        # incoming pattern, then resize our tensors so the in-place copy fits.
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and list(extra.get("shape", [])) != list(self.shape):
            error_msgs.append(f"{prefix}: {self._shape_mismatch(extra)}")
            return
        keys = {name: prefix + name for name in ("values", "row_ptr", "col_idx")}
        if all(k in state_dict for k in keys.values()):
            values, row_ptr, col_idx = (state_dict[keys[n]] for n in ("values", "row_ptr", "col_idx"))
            try:
                validate_csr(row_ptr, col_idx, self.shape, values)
            except (TypeError, ValueError) as exc:
                error_msgs.append(f"{prefix}: invalid CSR pattern in state_dict: {exc}")
                return
            if values.numel() != self.nnz:
                self.values.data = self.values.data.new_empty(values.shape)
                self.col_idx = self.col_idx.new_empty(col_idx.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
