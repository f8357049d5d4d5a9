"""The CPU's tile-packed product (batches of 2 and more, float32; the input
gradient of batches of 128 and more runs it over a per-call W^T; the value
gradient of batches of 2 and more runs on tiles of both operands) and the fused
LSTM layer loop (csrc/cpu/cpu_tiled.cpp, csrc/cpu/lstm_layer_fused_cpu.cpp)
against the plain-PyTorch references, on the shapes that reach their paths:
16- and 8-lane tiles and their mix (batch 20 = 16 + 8, 35 = 16 + 16 + 8),
variable lengths that leave whole tiles inactive, many chunks per step, one
and two threads."""

import pytest
import torch

from csr_helpers import cpu_flags, run_fresh
from sparse_kernels import csr, ops, reference

TOL32 = dict(atol=2e-5, rtol=2e-4)


def _weight(out_f, in_f, density, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    row_ptr, col_idx = csr.random_csr((out_f, in_f), density, generator=g)
    values = torch.randn(col_idx.numel(), generator=g, dtype=dtype)
    return values, row_ptr, col_idx


# (N, out, in, density): tiles of 16 and 8 lanes, a batch padded from 9 and
# 33, empty rows (low density), one input column, nnz = 0, a wide batch.
PRODUCT_SHAPES = [
    (8, 24, 17, 0.3),
    (9, 40, 33, 0.2),
    (16, 64, 50, 0.1),
    (20, 100, 64, 0.05),   # many empty rows
    (33, 12, 1, 0.5),      # one input column
    (35, 30, 20, 0.0),     # nnz = 0
    (130, 257, 129, 0.1),
]


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("shape", PRODUCT_SHAPES, ids=str)
def test_tiled_forward_matches_reference(shape, bias, threads):
    n, out_f, in_f, density = shape
    values, row_ptr, col_idx = _weight(out_f, in_f, density, seed=n)
    g = torch.Generator().manual_seed(100 + n)
    x = torch.randn(n, in_f, generator=g)
    b = torch.randn(out_f, generator=g) if bias else None
    csc = csr.csr_transpose(row_ptr, col_idx, in_f)
    got = ops.sparse_linear(x, values, row_ptr, col_idx, b, csc=csc)
    want = reference.sparse_linear(x.double(), values.double(), row_ptr, col_idx, (out_f, in_f),
                                   None if b is None else b.double())
    torch.testing.assert_close(got.double(), want, **TOL32)


def test_tiled_forward_gradients_match_reference():
    values, row_ptr, col_idx = _weight(48, 40, 0.25, seed=3)
    values.requires_grad_()
    x = torch.randn(21, 40, requires_grad=True)
    csc = csr.csr_transpose(row_ptr, col_idx, 40)
    y = ops.sparse_linear(x, values, row_ptr, col_idx, csc=csc)
    gy = torch.randn_like(y)
    gx, gv = torch.autograd.grad(y, (x, values), gy)
    xd, vd = x.detach().double().requires_grad_(), values.detach().double().requires_grad_()
    yd = reference.sparse_linear(xd, vd, row_ptr, col_idx, (48, 40))
    gxd, gvd = torch.autograd.grad(yd, (xd, vd), gy.double())
    torch.testing.assert_close(y.double(), yd, **TOL32)
    torch.testing.assert_close(gx.double(), gxd, **TOL32)
    torch.testing.assert_close(gv.double(), gvd, **TOL32)


# (N, out, in, density) for the input gradient: below, at and past the batch
# from which it transposes W and runs the tiled product (128), columns of W
# with no entry (rows of W^T empty), one input feature, nnz = 0.
INPUT_GRAD_SHAPES = [
    (127, 40, 33, 0.2),
    (128, 64, 50, 0.1),
    (145, 100, 300, 0.01),  # most columns empty
    (130, 12, 1, 0.5),      # one input feature
    (140, 30, 20, 0.0),     # nnz = 0
    (700, 96, 80, 0.1),
    # Past 2048 rows of W, W^T is built and multiplied in column panels of
    # at most 2048 of them: two panels of 1025 and 1024, three of 1500 (a batch
    # of 8-lane and 16-lane tiles), rows of W^T empty in some panels only,
    # one input feature.
    (128, 2049, 7, 0.3),
    (136, 4500, 30, 0.05),
    (130, 4500, 300, 0.002),
    (129, 5000, 1, 0.5),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", INPUT_GRAD_SHAPES, ids=str)
def test_input_grad_matches_reference(shape, dtype, threads):
    n, out_f, in_f, density = shape
    values, row_ptr, col_idx = _weight(out_f, in_f, density, seed=n, dtype=dtype)
    gy = torch.randn(n, out_f, generator=torch.Generator().manual_seed(200 + n), dtype=dtype)
    got = torch.ops.sparse_kernels.sparse_linear_input_grad_csr(gy, values, row_ptr, col_idx, in_f)
    want = reference.sparse_linear_input_grad(gy.double(), values.double(), row_ptr, col_idx, (out_f, in_f))
    assert got.dtype == dtype and got.shape == (n, in_f)
    torch.testing.assert_close(got.double(), want, **(TOL32 if dtype == torch.float32 else {}))


def test_input_grad_of_a_non_contiguous_gradient():
    values, row_ptr, col_idx = _weight(48, 40, 0.25, seed=5)
    gy = torch.randn(48, 64).t()  # (64, 48), a transposed view
    got = torch.ops.sparse_kernels.sparse_linear_input_grad_csr(gy, values, row_ptr, col_idx, 40)
    want = reference.sparse_linear_input_grad(gy.double(), values.double(), row_ptr, col_idx, (48, 40))
    torch.testing.assert_close(got.double(), want, **TOL32)


def _same_bits_on_one_and_two_threads(fn):
    before = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(fn())
    finally:
        torch.set_num_threads(before)
    return results


# W (out, in, density, seed): 96k nonzeros over 400 columns, one panel; 80k
# in W 5000 x 40, whose W^T is built in three column panels.
@pytest.mark.parametrize("shape", [(800, 400, 0.3, 11), (5000, 40, 0.4, 13)], ids=str)
def test_input_grad_through_the_parallel_transpose(shape):
    # W^T is built by the counting sort's parallel path (a chunk of rows per
    # thread). It must give the serial sort's W^T exactly (rows ascending in
    # each column), so the products, in the same order, agree bit for bit;
    # and both match the reference.
    out_f, in_f, density, seed = shape
    values, row_ptr, col_idx = _weight(out_f, in_f, density, seed=seed)
    assert col_idx.numel() >= 1 << 16
    gy = torch.randn(130, out_f, generator=torch.Generator().manual_seed(seed + 1))
    one, two = _same_bits_on_one_and_two_threads(
        lambda: torch.ops.sparse_kernels.sparse_linear_input_grad_csr(gy, values, row_ptr, col_idx, in_f))
    assert torch.equal(one, two)
    want = reference.sparse_linear_input_grad(gy.double(), values.double(), row_ptr, col_idx, (out_f, in_f))
    torch.testing.assert_close(two.double(), want, **TOL32)


@pytest.mark.parametrize("filled", ["first", "last"])
def test_input_grad_in_panels_with_panels_of_no_entries(filled):
    # W 4500 x 64 (three panels of 1500 rows) whose nonzeros all lie in 300
    # rows of the first panel, or of the last: every row of W^T is empty in
    # the other panels. Those after the first must add nothing to what it
    # wrote; an empty first panel must still write each row (zeros).
    values, row_ptr, col_idx = _weight(300, 64, 0.2, seed=15)
    empty = torch.zeros(4200, dtype=row_ptr.dtype)
    if filled == "first":
        row_ptr = torch.cat([row_ptr, empty + row_ptr[-1]])
    else:
        row_ptr = torch.cat([empty, row_ptr])
    gy = torch.randn(140, 4500, generator=torch.Generator().manual_seed(16))
    got = torch.ops.sparse_kernels.sparse_linear_input_grad_csr(gy, values, row_ptr, col_idx, 64)
    want = reference.sparse_linear_input_grad(gy.double(), values.double(), row_ptr, col_idx, (4500, 64))
    assert want.abs().sum() > 0
    torch.testing.assert_close(got.double(), want, **TOL32)


# (N, out, in, density) for the value gradient (an SDDMM): batch 1 (the
# row-outer kernel), then the lane blocks of the tiled one: one 8-lane tile
# (2, 8), a padded 16 (9), 16 + 8 (20), 16 + 16 (32), 16 + 16 + 8 (33: a block
# of four registers, then one of one), 16 x 3 (48: four, then two), a wide
# batch; rows of 0-7 nonzeros (the one-at-a-time tail) and of 8 and more,
# empty rows, one input feature, nnz = 0.
VALUE_GRAD_SHAPES = [
    (1, 40, 33, 0.3),
    (1, 100, 64, 0.05),    # batch 1 (the gather-and-multiply loop), many empty rows
    (2, 24, 17, 0.3),
    (8, 40, 60, 0.2),
    (9, 40, 33, 0.2),
    (20, 100, 64, 0.05),   # many empty rows, short rows
    (32, 64, 50, 0.3),
    (33, 12, 1, 0.5),      # one input feature
    (40, 30, 20, 0.0),     # nnz = 0
    (48, 50, 40, 0.4),
    (700, 96, 80, 0.1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", VALUE_GRAD_SHAPES, ids=str)
def test_value_grad_matches_reference(shape, dtype, threads):
    n, out_f, in_f, density = shape
    _, row_ptr, col_idx = _weight(out_f, in_f, density, seed=n, dtype=dtype)
    g = torch.Generator().manual_seed(300 + n)
    gy = torch.randn(n, out_f, generator=g, dtype=dtype)
    x = torch.randn(n, in_f, generator=g, dtype=dtype)
    got = torch.ops.sparse_kernels.sparse_linear_value_grad(gy, x, row_ptr, col_idx)
    want = reference.sparse_linear_value_grad(gy.double(), x.double(), row_ptr, col_idx)
    assert got.dtype == dtype and got.shape == col_idx.shape
    torch.testing.assert_close(got.double(), want, **(TOL32 if dtype == torch.float32 else {}))


def test_value_grad_of_non_contiguous_operands():
    _, row_ptr, col_idx = _weight(48, 40, 0.25, seed=6)
    gy = torch.randn(48, 37).t()  # (37, 48), a transposed view
    x = torch.randn(40, 37).t()
    got = torch.ops.sparse_kernels.sparse_linear_value_grad(gy, x, row_ptr, col_idx)
    want = reference.sparse_linear_value_grad(gy.double(), x.double(), row_ptr, col_idx)
    torch.testing.assert_close(got.double(), want, **TOL32)


# (T, B, H, density, batch_sizes): batch 1 over several chunks, tiles of 8,
# 16, 16 + 8, 16 + 16 and 16 + 16 + 8 lanes, variable lengths that switch off the
# second tile, then most of the first.
FUSED_CASES = [
    (6, 1, 200, 0.2, None),
    (5, 2, 9, 0.5, None),
    (4, 8, 16, 0.3, None),
    (3, 16, 64, 0.3, None),
    (5, 20, 64, 0.3, [20, 17, 16, 9, 3]),
    (4, 32, 50, 0.25, [32, 30, 17, 16]),
    (3, 35, 40, 0.1, [35, 35, 1]),
    (4, 20, 7, 0.0, None),  # nnz = 0
]


def _fused_problem(steps, batch, hidden, density, sizes, dtype, seed=0):
    values, row_ptr, col_idx = _weight(4 * hidden, hidden, density, seed, dtype)
    g = torch.Generator().manual_seed(seed + 1)
    gates = torch.randn(steps, batch, 4 * hidden, generator=g, dtype=dtype)
    h0 = torch.randn(batch, hidden, generator=g, dtype=dtype)
    c0 = torch.randn(batch, hidden, generator=g, dtype=dtype)
    sizes = None if sizes is None else torch.tensor(sizes, dtype=torch.int64)
    leaves = [t.requires_grad_() for t in (gates, h0, c0, values)]
    return leaves, row_ptr, col_idx, csr.csr_transpose(row_ptr, col_idx, hidden), sizes


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", FUSED_CASES, ids=str)
def test_fused_lstm_layer_matches_reference(case, dtype, reverse, threads):
    leaves, row_ptr, col_idx, csc, sizes = _fused_problem(*case, dtype=dtype)
    got = ops.lstm_layer(*leaves[:4], row_ptr, col_idx, csc, sizes, reverse)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    want = reference.lstm_layer(*ref_leaves, row_ptr, col_idx, sizes, reverse)
    tol = TOL32 if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-9)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, **tol)
    # The backward reads what the fused forward saved (gates, cells, output).
    grads_out = [torch.randn_like(t) for t in got]
    g_got = torch.autograd.grad(got, leaves, grads_out)
    g_want = torch.autograd.grad(want, ref_leaves, [g.double() for g in grads_out])
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a.double(), b, **(dict(atol=1e-4, rtol=1e-3) if dtype == torch.float32 else tol))


def test_fused_lstm_layer_same_bits_on_one_and_two_threads():
    # A unit's products and cell run in the same order whichever thread
    # claims its chunk: the result must not depend on the thread count (a
    # race between steps would show here).
    leaves, row_ptr, col_idx, csc, sizes = _fused_problem(7, 20, 96, 0.2, None, torch.float32, seed=5)
    leaves = [t.detach() for t in leaves]
    results = _same_bits_on_one_and_two_threads(lambda: ops.lstm_layer(*leaves, row_ptr, col_idx, csc))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_fused_lstm_backward_through_the_parallel_transpose(threads):
    # W_hh 1200 x 300 at 25%: 90k nonzeros, so the backward's W^T comes from
    # the counting sort's parallel path on two threads.
    leaves, row_ptr, col_idx, csc, sizes = _fused_problem(3, 4, 300, 0.25, [4, 3, 1], torch.float32, seed=9)
    assert col_idx.numel() >= 1 << 16
    got = ops.lstm_layer(*leaves[:4], row_ptr, col_idx, csc, sizes)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    want = reference.lstm_layer(*ref_leaves, row_ptr, col_idx, sizes)
    grads_out = [torch.randn_like(t) for t in got]
    g_got = torch.autograd.grad(got, leaves, grads_out)
    g_want = torch.autograd.grad(want, ref_leaves, [g.double() for g in grads_out])
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a.double(), b, atol=1e-4, rtol=1e-3)


def test_fused_lstm_layer_gradcheck():
    leaves, row_ptr, col_idx, csc, sizes = _fused_problem(3, 9, 4, 0.5, [9, 5, 2], torch.float64, seed=7)
    fn = lambda *ls: ops.lstm_layer(*ls, row_ptr, col_idx, csc, sizes)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(leaves))


def test_fused_lstm_layer_opcheck():
    leaves, row_ptr, col_idx, csc, sizes = _fused_problem(3, 20, 8, 0.4, [20, 12, 4], torch.float32, seed=9)
    args = (*leaves, row_ptr, col_idx, *csc, sizes, False)
    torch.library.opcheck(torch.ops.sparse_kernels.lstm_layer.default, args)


def _tile_products_for_the_avx512_comparison():
    """Products over 16- and 8-lane tiles (batches 20 and 35, bias and none)
    and a fused LSTM layer's forward and backward (batch 20), float32. Rows
    of about 20 nonzeros (products) and 26 (the layer's W_hh): each kernel's
    runs of 16 or 8 nonzeros, its runs of 4 and its tail all run. And an
    input gradient over W^T in two column panels (batch 136: 16- and 8-lane
    tiles), whose second panel adds to what the first wrote."""
    results = []
    for n, bias in ((20, False), (35, True)):
        values, row_ptr, col_idx = _weight(300, 200, 0.1, seed=n)
        g = torch.Generator().manual_seed(n + 1)
        x = torch.randn(n, 200, generator=g)
        b = torch.randn(300, generator=g) if bias else None
        results.append(ops.sparse_linear(x, values, row_ptr, col_idx, b))
    leaves, row_ptr, col_idx, csc, sizes = _fused_problem(5, 20, 64, 0.4, [20, 20, 17, 9, 3], torch.float32, seed=4)
    out = ops.lstm_layer(*leaves[:4], row_ptr, col_idx, csc, sizes)
    grads = torch.autograd.grad(out, leaves, [torch.ones_like(t) for t in out])
    values, row_ptr, col_idx = _weight(2100, 30, 0.3, seed=6)
    gy = torch.randn(136, 2100, generator=torch.Generator().manual_seed(7))
    results.append(torch.ops.sparse_kernels.sparse_linear_input_grad_csr(gy, values, row_ptr, col_idx, 30))
    return results + [t.detach() for t in out] + list(grads)


@pytest.mark.skipif(not {"avx512f", "avx512vl"} <= cpu_flags(), reason="the CPU has no AVX-512F and VL: only the AVX2 tile kernels run")
def test_avx512_tile_kernels_give_the_avx2_bits(tmp_path):
    # The AVX-512 16- and 8-lane kernels sum in the AVX2 kernels' order (each
    # nonzero into the same accumulator, whether its value is broadcast from
    # memory or from a register): the same bits. The AVX2 path runs in a fresh process (the switch is read once).
    out = tmp_path / "avx2.pt"
    code = ("import torch, test_cpu_tiled as t\n"
            f"torch.save(t._tile_products_for_the_avx512_comparison(), {str(out)!r})\n"
            "print('ok')\n")
    run_fresh(code, SPARSE_KERNELS_CPU_AVX512="0")
    avx2 = torch.load(out)
    here_results = _tile_products_for_the_avx512_comparison()
    assert len(avx2) == len(here_results) == 10  # 2 products, an input gradient, 3 layer outputs, 4 gradients
    for a, b in zip(here_results, avx2):
        assert torch.equal(a, b)
