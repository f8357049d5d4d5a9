"""Python face of the compiled ops (torch.ops.sparse_kernels.*): input checks
that raise clear errors before any kernel runs, autograd formulas, and fake
kernels so that torch.compile can trace through.

One module per op family, the checks they share in ``_checks``:

- ``products``: the CSR products (forward, input gradient, value gradient);
- ``block_products``: the block-sparse (BSR) products;
- ``cells``: the fused LSTM cell;
- ``layers``: the whole-sequence LSTM, GRU, Elman and RHN layers;
- ``topology``: prune, regrow and rebuild for dynamic sparse training.

The schemas live in csrc/ops.cpp; CPU kernels in csrc/cpu/, CUDA kernels in
csrc/cuda/.
"""

from .block_products import bsr_linear, bsr_linear_input_grad, bsr_linear_value_grad
from .cells import lstm_cell
from .layers import gru_layer, lstm_layer, rhn_layer, rnn_layer
from .products import (sparse_linear, sparse_linear_input_grad, sparse_linear_input_grad_csr,
                       sparse_linear_value_grad)
from .topology import (block_gradient_regrow, gradient_regrow, magnitude_prune, random_regrow, rebuild_csr,
                       signed_magnitude_prune)

__all__ = [
    "sparse_linear", "sparse_linear_input_grad", "sparse_linear_input_grad_csr", "sparse_linear_value_grad",
    "bsr_linear", "bsr_linear_input_grad", "bsr_linear_value_grad",
    "lstm_cell",
    "lstm_layer", "gru_layer", "rnn_layer", "rhn_layer",
    "magnitude_prune", "signed_magnitude_prune", "random_regrow", "gradient_regrow", "block_gradient_regrow",
    "rebuild_csr",
]
