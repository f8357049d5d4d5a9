"""Sparse weight storage: only the nonzeros are kept.

A CSRWeight is an nn.Module holding
  values   an ordinary dense 1-D nn.Parameter of length nnz, so every
           torch.optim optimizer, state_dict, .to(), DDP and AMP work as usual;
  row_ptr, col_idx   the pattern, int32 buffers;
  col_ptr, row_idx, csr2csc   the transposed index, non-persistent buffers
           built lazily, only where the backward reads it (CUDA), and
           rebuilt only when the pattern changes. The CPU backward scatters
           from the CSR and keeps no transposed index.
  compact_index()   on CUDA, uint16 copies of col_idx and row_idx and the
           rows/columns longest first (csr.index16), which the CUDA
           products read instead of the int32 indices; cached like the
           transposed index.
A BSRWeight is the same with dense blocks (bh x bw) as the unit: values
(nblocks, bh, bw), block_row_ptr / block_col_idx over the grid of blocks.

Both derive from SparseWeight, the interface the modules (nn/) and sparse
training (dst/) use: a weight is a set of *slots* (single entries for CSR,
blocks for BSR) on a grid, with a CSR pattern over that grid
(``pattern``), per-slot magnitudes, and ``rebuild`` returning the slot
permutation; ``csr_operands`` gives the element-level CSR arguments of the
whole-layer ops (lstm_layer, gru_layer, rnn_layer, rhn_layer).

The package holds one module per container: ``base`` (SparseWeight and the
initial-value scales), ``csr_weight`` (CSRWeight and the thresholds of its
cached batch-1 views), ``bsr_weight`` (BSRWeight).
"""

from ..bsr import validate_bsr
from ..csr import validate_csr
from .base import INIT_SCALES, SparseWeight, check_init_scale
from .bsr_weight import BSRWeight
from .csr_weight import CSRWeight

__all__ = ["BSRWeight", "CSRWeight", "INIT_SCALES", "SparseWeight", "check_init_scale", "validate_bsr",
           "validate_csr"]
