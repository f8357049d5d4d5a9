"""Fixed structured patterns (Demeester et al.: predefined sparseness), as
CSR index tensors."""

from __future__ import annotations

import torch

from ..csr import block_diagonal_csr  # noqa: F401  (re-exported)


def block_diagonal_mask(rows: int, cols: int, n_blocks: int, row_groups: int = 1) -> torch.Tensor:
    """Dense bool mask of a block-diagonal pattern: the rows of each of
    ``row_groups`` equal row groups (an LSTM weight's 4 gates) and the columns
    are cut into ``n_blocks`` near-equal bands, band i of rows meeting band i
    of columns: ``n_blocks`` independent smaller networks side by side."""
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be positive, got {n_blocks}")
    if row_groups < 1 or rows % row_groups:
        raise ValueError(f"rows ({rows}) must split into row_groups ({row_groups}) equal groups")
    group_rows = rows // row_groups
    row_block = (torch.arange(rows) % max(group_rows, 1)) * n_blocks // max(group_rows, 1)
    col_block = torch.arange(cols) * n_blocks // max(cols, 1)
    return row_block.unsqueeze(1) == col_block.unsqueeze(0)
