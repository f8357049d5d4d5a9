"""sparse_kernels: truly sparse recurrent networks for PyTorch.

Weights are stored as their nonzeros only (CSR), and every op computes with
the nonzeros only, in training and inference.
"""

from ._extension import build_info, load_extension

load_extension()

from . import ops, reference  # noqa: E402  (ops need the extension loaded)
from .storage import CSRWeight, validate_csr  # noqa: E402
from .nn import SparseLinear, SparseLSTM, SparseLSTMCell  # noqa: E402

__all__ = ["CSRWeight", "SparseLSTM", "SparseLSTMCell", "SparseLinear", "build_info", "ops", "reference",
           "validate_csr"]
__version__ = "0.1.0"

# issue 3: the recurrent highway network and predefined-sparse embeddings.
from .nn import SparseEmbedding, SparseRHN  # noqa: E402

__all__ += ["SparseEmbedding", "SparseRHN"]
