"""CSR weights with chosen row lengths, for the batch-1 kernel tests
(test_cpu_gathered.py, test_cpu_sliced.py)."""

import torch

# 0 (empty row), 1-7 (tail only), 8, 9, 15, 16, 17, 24 (16 + 8), 31, 33, 100.
ROW_LENGTHS = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 24, 31, 33, 100]


def weight_with_row_lengths(lengths, in_f, seed):
    """CSR with the given nonzeros per row, random sorted columns, random values."""
    g = torch.Generator().manual_seed(seed)
    row_ptr = torch.tensor([0] + list(lengths), dtype=torch.int64).cumsum(0).to(torch.int32)
    cols = [torch.randperm(in_f, generator=g)[:n].sort().values for n in lengths]
    col_idx = torch.cat(cols).to(torch.int32) if cols else torch.zeros(0, dtype=torch.int32)
    values = torch.randn(col_idx.numel(), generator=g)
    return values, row_ptr, col_idx
