"""Dynamic sparse training on truly sparse weights: prune/regrow schedules
(ST-RNN, SET, RigL, sparse momentum, gradual pruning, IHT, predefined
sparseness) over every CSRWeight of a model, and the optimizer-state remap
that follows each topology update, and per-weight learning rates scaled by
each weight's density."""

from .optim_state import remap_optimizer_state
from .growth import replicate_hidden_units, replicate_input_features
from .lr_groups import sparse_lr_groups
from .patterns import block_diagonal_csr, block_diagonal_mask
from .sparsity import METHODS, DynamicSparsity, find_sparse_weights

__all__ = ["METHODS", "DynamicSparsity", "block_diagonal_csr", "block_diagonal_mask", "find_sparse_weights",
           "remap_optimizer_state", "replicate_hidden_units", "replicate_input_features",
           "sparse_lr_groups"]
