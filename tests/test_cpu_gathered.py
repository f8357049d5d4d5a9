"""The batch-1 float32 kernels with scalar-load gathers (csrc/cpu/cpu_gathered.cpp,
AVX2+FMA CPUs; elsewhere the portable loop runs the same cases): the forward
product and the fused LSTM layer's step, against the plain-PyTorch
references; and, beside them, the batch-1 input gradients (the CSR scatter,
and the CSC product, which keeps the portable loop). Row lengths are chosen to
reach every branch of the dot product: empty rows, tails of 1-7, exactly 8
and 16, 16 + 8 + tail, long rows. Also batch 1's value gradient (a gathered
multiply per nonzero)."""

import pytest
import torch

from csr_helpers import ROW_LENGTHS, weight_with_row_lengths
from sparse_kernels import csr, ops, reference

TOL32 = dict(atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("in_f", [1, 100, 2048], ids=lambda n: f"in{n}")
def test_batch1_forward_and_input_grad_match_reference(in_f, bias, threads):
    lengths = [min(n, in_f) for n in ROW_LENGTHS * 3]  # 45 rows: several chunks per thread
    values, row_ptr, col_idx = weight_with_row_lengths(lengths, in_f, seed=in_f)
    out_f = len(lengths)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, in_f, generator=g).requires_grad_()
    b = torch.randn(out_f, generator=g) if bias else None
    csc = csr.csr_transpose(row_ptr, col_idx, in_f)
    y = ops.sparse_linear(x, values, row_ptr, col_idx, b, csc=csc)
    dense = reference.sparse_linear(torch.eye(in_f, dtype=torch.float64), values.double(), row_ptr, col_idx,
                                    (out_f, in_f)).t()  # W as a dense (out, in) matrix
    want = x.detach().double() @ dense.t() + (0 if b is None else b.double())
    torch.testing.assert_close(y.detach().double(), want, **TOL32)
    # The input gradient at batch 1: by autograd (the CPU's scatter over the
    # CSR) and by the op over the CSC index, whose columns read the values
    # through the permutation.
    gy = torch.randn(1, out_f, generator=g)
    (gx,) = torch.autograd.grad(y, x, gy)
    torch.testing.assert_close(gx.double(), gy.double() @ dense, **TOL32)
    torch.testing.assert_close(ops.sparse_linear_input_grad(gy, values, csc).double(), gy.double() @ dense, **TOL32)


@pytest.mark.parametrize("in_f", [1, 100, 2048], ids=lambda n: f"in{n}")
def test_batch1_value_grad_matches_reference(in_f, threads):
    # grad_values[k] = grad_output[0, row(k)] * x[0, col(k)]: the gathered
    # multiply over rows of every length class (empty, tails, 8, 16, long).
    lengths = [min(n, in_f) for n in ROW_LENGTHS * 3]
    _, row_ptr, col_idx = weight_with_row_lengths(lengths, in_f, seed=in_f + 1)
    g = torch.Generator().manual_seed(8)
    x, gy = torch.randn(1, in_f, generator=g), torch.randn(1, len(lengths), generator=g)
    got = ops.sparse_linear_value_grad(gy, x, row_ptr, col_idx)
    want = reference.sparse_linear_value_grad(gy.double(), x.double(), row_ptr, col_idx)
    # One rounding of one product: the float32 result equals the rounded
    # float64 product exactly.
    assert torch.equal(got, want.float())


def test_batch1_long_rows_and_large_indices():
    # W 512 x 65536 at ~3%: indices above 2^16 (both halves of each index
    # pair), rows of ~2,000 nonzeros.
    g = torch.Generator().manual_seed(3)
    row_ptr, col_idx = csr.random_csr((512, 65536), 0.03, generator=g)
    values, x = torch.randn(col_idx.numel(), generator=g), torch.randn(1, 65536, generator=g)
    got = ops.sparse_linear(x, values, row_ptr, col_idx)
    want = reference.sparse_linear(x.double(), values.double(), row_ptr, col_idx, (512, 65536))
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [1, 6], ids=lambda t: f"T{t}")
def test_batch1_fused_lstm_step_matches_reference(steps, threads):
    hidden = 128  # more than one unit block of 64; each gate row's length from the table, rotated per gate
    lengths = [ROW_LENGTHS[(u + 4 * gate) % len(ROW_LENGTHS)] for gate in range(4) for u in range(hidden)]
    values, row_ptr, col_idx = weight_with_row_lengths(lengths, hidden, seed=11)
    values = values * 0.3  # keep the gates off saturation, so that the products decide the result
    g = torch.Generator().manual_seed(12)
    gates = torch.randn(steps, 1, 4 * hidden, generator=g)
    h0, c0 = torch.randn(1, hidden, generator=g), torch.randn(1, hidden, generator=g)
    csc = csr.csr_transpose(row_ptr, col_idx, hidden)
    got = ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc)
    want = reference.lstm_layer(gates.double(), h0.double(), c0.double(), values.double(), row_ptr, col_idx)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, **TOL32)
