"""sparse_kernels: truly sparse recurrent networks for PyTorch.

Weights are stored as their nonzeros only (CSR, or dense blocks in BSR), and
every op computes with the stored entries only, in training and inference.
"""

from ._extension import build_info, load_extension

load_extension()

from . import ops, reference  # noqa: E402  (ops need the extension loaded)
from .storage import BSRWeight, CSRWeight, SparseWeight, validate_bsr, validate_csr  # noqa: E402
from .nn import (  # noqa: E402
    SparseEmbedding, SparseGRU, SparseLinear, SparseLSTM, SparseLSTMCell, SparseRHN, SparseRNN)

__all__ = ["BSRWeight", "CSRWeight", "SparseEmbedding", "SparseGRU", "SparseLSTM", "SparseLSTMCell", "SparseLinear",
           "SparseRHN", "SparseRNN", "SparseWeight", "build_info", "ops", "reference", "validate_bsr",
           "validate_csr"]
__version__ = "0.1.0"
