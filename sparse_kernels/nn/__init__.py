"""Drop-in sparse modules: same constructors, forward and state_dict names
as their torch.nn counterparts, weights stored as CSR nonzeros only."""

from .embedding import SparseEmbedding
from .gru import SparseGRU
from .linear import SparseLinear
from .lstm import SparseLSTM
from .lstm_cell import SparseLSTMCell
from .rhn import SparseRHN
from .rnn import SparseRNN

__all__ = ["SparseEmbedding", "SparseGRU", "SparseLSTM", "SparseLSTMCell", "SparseLinear", "SparseRHN",
           "SparseRNN"]
