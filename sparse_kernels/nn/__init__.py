"""Drop-in sparse modules: same constructors, forward and state_dict names
as their torch.nn counterparts, weights stored as CSR nonzeros only."""

from .linear import SparseLinear
from .lstm import SparseLSTM
from .lstm_cell import SparseLSTMCell

__all__ = ["SparseLSTM", "SparseLSTMCell", "SparseLinear"]

# issue 3: the recurrent highway network and predefined-sparse embeddings.
from .embedding import SparseEmbedding  # noqa: E402
from .rhn import SparseRHN  # noqa: E402

__all__ += ["SparseEmbedding", "SparseRHN"]
