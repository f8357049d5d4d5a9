"""The block-sparse (BSR) ops against their plain-PyTorch references:
block shapes 1x8, 4x4, 8x8, 16x16, 32x32 and non-square ones, edge cases
(empty block rows, no blocks, batch 0, one block column), gradcheck, opcheck
and bad input."""

import pytest
import torch

from sparse_kernels import bsr, csr, ops, reference
from conftest import TOL, device_params

_ops = torch.ops.sparse_kernels

# (N, grid rows, grid cols, block shape, density over the grid). Batches
# cover every tile path of the kernel: 16/8/4-wide tiles and remainders.
BSR_SHAPES = [
    (37, 6, 5, (1, 8), 0.4),
    (21, 5, 4, (4, 4), 0.5),
    (1, 4, 6, (8, 8), 0.3),
    (19, 3, 3, (16, 16), 0.5),
    (5, 2, 2, (32, 32), 0.5),
    (6, 5, 3, (2, 4), 0.6),      # non-square
    (33, 4, 3, (3, 5), 0.5),     # odd sizes: every row/column remainder
    (9, 20, 3, (4, 4), 0.05),    # many empty block rows
    (4, 4, 1, (8, 2), 0.7),      # one block column
    (3, 3, 4, (4, 4), 0.0),      # no blocks
    (0, 3, 4, (2, 2), 0.5),      # batch 0
    (2, 3, 2, (5, 3), 1.0),      # every block
    (24, 2, 3, (5, 12), 0.5),    # value gradient by outer products with row and lane remainders
]
SHAPE_IDS = [f"N{s[0]}-grid{s[1]}x{s[2]}-block{s[3][0]}x{s[3][1]}-d{s[4]}" for s in BSR_SHAPES]


def random_bsr_problem(n, grid_rows, grid_cols, block_shape, density, *, dtype=torch.float64, device="cpu",
                       seed=0, requires_grad=False, bias=True):
    """Fresh random inputs (never zeros) for bsr_linear."""
    g = torch.Generator().manual_seed(seed)
    bh, bw = block_shape
    block_row_ptr, block_col_idx = csr.random_csr((grid_rows, grid_cols), density, generator=g)
    values = torch.randn(block_col_idx.numel(), bh, bw, generator=g, dtype=dtype)
    x = torch.randn(n, grid_cols * bw, generator=g, dtype=dtype)
    b = torch.randn(grid_rows * bh, generator=g, dtype=dtype) if bias else None
    move = lambda t: None if t is None else t.to(device).requires_grad_(requires_grad)
    return dict(x=move(x), values=move(values), block_row_ptr=block_row_ptr.to(device),
                block_col_idx=block_col_idx.to(device), bias=move(b), shape=(grid_rows * bh, grid_cols * bw),
                block_shape=(bh, bw))


def _block_csc(p):
    return csr.csr_transpose(p["block_row_ptr"], p["block_col_idx"], p["shape"][1] // p["block_shape"][1])


@device_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", BSR_SHAPES, ids=SHAPE_IDS)
def test_bsr_linear_and_its_gradients_match_reference(device, dtype, case):
    p = random_bsr_problem(*case, dtype=dtype, device=device, requires_grad=True)
    y = ops.bsr_linear(p["x"], p["values"], p["block_row_ptr"], p["block_col_idx"], p["bias"])
    leaves = [p["x"], p["values"], p["bias"]]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    y_ref = reference.bsr_linear(ref_leaves[0], ref_leaves[1], p["block_row_ptr"], p["block_col_idx"], p["shape"],
                                 ref_leaves[2])
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, grad_out, allow_unused=True)
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, grad_out, allow_unused=True)
    for got, want, leaf in zip(grads, ref_grads, leaves):
        got = torch.zeros_like(leaf) if got is None else got
        want = torch.zeros_like(leaf) if want is None else want
        torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", BSR_SHAPES, ids=SHAPE_IDS)
def test_bsr_backward_ops_match_reference(dtype, case):
    p = random_bsr_problem(*case, dtype=dtype, seed=1)
    n, out_f = p["x"].shape[0], p["shape"][0]
    grad_out = torch.randn(n, out_f, dtype=dtype)
    got = ops.bsr_linear_input_grad(grad_out, p["values"], _block_csc(p))
    want = reference.bsr_linear_input_grad(grad_out, p["values"], p["block_row_ptr"], p["block_col_idx"], p["shape"])
    torch.testing.assert_close(got, want, **TOL[dtype])
    got = ops.bsr_linear_value_grad(grad_out, p["x"], p["block_row_ptr"], p["block_col_idx"], p["block_shape"])
    want = reference.bsr_linear_value_grad(grad_out, p["x"], p["block_row_ptr"], p["block_col_idx"],
                                           p["block_shape"])
    assert got.shape == p["values"].shape
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_bsr_equals_csr_of_the_same_matrix():
    """A block-sparse matrix and the CSR of its entries give the same products."""
    p = random_bsr_problem(11, 4, 5, (4, 2), 0.5, seed=2)
    row_ptr, col_idx, gather = bsr.element_csr(p["block_row_ptr"], p["block_col_idx"], p["block_shape"])
    values = p["values"].reshape(-1)[gather]
    torch.testing.assert_close(reference.csr_to_dense(values, row_ptr, col_idx, p["shape"]),
                               bsr.bsr_to_dense(p["values"], p["block_row_ptr"], p["block_col_idx"], p["shape"]))
    y_bsr = ops.bsr_linear(p["x"], p["values"], p["block_row_ptr"], p["block_col_idx"], p["bias"])
    y_csr = ops.sparse_linear(p["x"], values, row_ptr, col_idx, p["bias"])
    torch.testing.assert_close(y_bsr, y_csr)


@pytest.mark.parametrize("case", [BSR_SHAPES[i] for i in (0, 1, 5, 6, 7, 8, 9, 10)],
                         ids=[SHAPE_IDS[i] for i in (0, 1, 5, 6, 7, 8, 9, 10)])
def test_bsr_linear_gradcheck(case):
    n, rows, cols, block_shape, density = case
    p = random_bsr_problem(min(n, 5), rows, cols, block_shape, density, requires_grad=True, seed=3)
    fn = lambda x, v, b: ops.bsr_linear(x, v, p["block_row_ptr"], p["block_col_idx"], b)
    assert torch.autograd.gradcheck(fn, (p["x"], p["values"], p["bias"]))


def test_bsr_linear_leading_dims_and_noncontiguous_input():
    p = random_bsr_problem(12, 3, 2, (2, 4), 0.6, seed=4)
    y = ops.bsr_linear(p["x"].reshape(3, 4, 8), p["values"], p["block_row_ptr"], p["block_col_idx"], p["bias"])
    assert y.shape == (3, 4, 6)
    want = reference.bsr_linear(p["x"], p["values"], p["block_row_ptr"], p["block_col_idx"], p["shape"], p["bias"])
    torch.testing.assert_close(y.reshape(12, 6), want)
    xt = torch.randn(8, 12, dtype=torch.float64).T
    assert not xt.is_contiguous()
    torch.testing.assert_close(
        ops.bsr_linear(xt, p["values"], p["block_row_ptr"], p["block_col_idx"]),
        reference.bsr_linear(xt, p["values"], p["block_row_ptr"], p["block_col_idx"], p["shape"]))


# ----------------------------------------------------------------------------- opcheck
def _opcheck_cases():
    for i, case in enumerate(BSR_SHAPES):
        if case[3][0] * case[3][1] > 64:  # opcheck runs each op many times: keep to small blocks
            continue
        for dtype in (torch.float32, torch.float64) if i == 0 else (torch.float64,):
            p = random_bsr_problem(*case, dtype=dtype, seed=10 + i, requires_grad=True)
            csc = _block_csc(p)
            grad_out = torch.randn(p["x"].shape[0], p["shape"][0], dtype=dtype)
            pattern = (p["block_row_ptr"], p["block_col_idx"])
            yield f"bsr_linear-{i}", "bsr_linear", (p["x"], p["values"], *pattern, *csc, p["bias"])
            yield f"bsr_linear-nobias-{i}", "bsr_linear", (p["x"], p["values"], *pattern, *csc, None)
            yield f"bsr_linear_input_grad-{i}", "bsr_linear_input_grad", (grad_out, p["values"].detach(), *csc)
            yield (f"bsr_linear_value_grad-{i}", "bsr_linear_value_grad",
                   (grad_out, p["x"].detach(), *pattern, *p["block_shape"]))


@pytest.mark.parametrize("case", list(_opcheck_cases()), ids=lambda c: c[0])
def test_bsr_opcheck(case):
    _, name, args = case
    torch.library.opcheck(getattr(_ops, name).default, args)


# ----------------------------------------------------------------------------- bad input
def _good():
    return random_bsr_problem(3, 3, 2, (2, 4), 0.6, dtype=torch.float32, seed=8)


@pytest.mark.parametrize("mutate,error,match", [
    (lambda p: p.update(x=p["x"].double()), TypeError, "values must have the dtype of input"),
    (lambda p: p.update(x=p["x"].int()), TypeError, "input must be float32 or float64"),
    (lambda p: p.update(x=p["x"][:, :6]), ValueError, "multiple of the block width 4"),
    (lambda p: p.update(x=p["x"][:, :4]), ValueError, "block_col_idx must be in"),
    (lambda p: p.update(values=p["values"][:-1]), ValueError, r"values must have shape \(nblocks"),
    (lambda p: p.update(values=p["values"].reshape(-1)), ValueError, "values must be a contiguous 3-D"),
    (lambda p: p.update(values=p["values"].transpose(1, 2)), ValueError, "values must be a contiguous 3-D"),
    (lambda p: p.update(values=p["values"][:, :0]), ValueError, "blocks must be at least 1 x 1"),
    (lambda p: p.update(block_row_ptr=p["block_row_ptr"].long()), TypeError,
     "block_row_ptr must have dtype torch.int32"),
    (lambda p: p.update(block_col_idx=p["block_col_idx"].long()), TypeError,
     "block_col_idx must have dtype torch.int32"),
    (lambda p: p.update(block_col_idx=p["block_col_idx"].flip(0).contiguous()), ValueError, "block_col_idx"),
    (lambda p: p.update(block_row_ptr=p["block_row_ptr"][:-1].contiguous()), ValueError,
     "block_row_ptr must end at nnz"),
    (lambda p: p.update(block_row_ptr=torch.zeros(0, dtype=torch.int32)), ValueError, "block_row_ptr must have"),
    (lambda p: p.update(bias=p["bias"][:-1]), ValueError, r"bias must have shape \(6,\)"),
    (lambda p: p.update(bias=p["bias"].double()), TypeError, "bias must have the dtype"),
    (lambda p: p.update(x=[[1.0]]), TypeError, "input must be a torch.Tensor"),
    (lambda p: p.update(values="abc"), TypeError, "values must be a torch.Tensor"),
    (lambda p: p.update(x=p["x"].to("meta")), ValueError, "values must be on the device of input"),
])
def test_bsr_linear_bad_input(mutate, error, match):
    p = _good()
    mutate(p)
    with pytest.raises(error, match=match):
        ops.bsr_linear(p["x"], p["values"], p["block_row_ptr"], p["block_col_idx"], p["bias"])


def test_bsr_linear_rejects_a_wrong_transposed_index():
    p = _good()
    bad = csr.CSCIndex(*(t.flip(0).contiguous() for t in _block_csc(p)))
    with pytest.raises(ValueError, match="block_csc is not the transposed index"):
        ops.bsr_linear(p["x"], p["values"], p["block_row_ptr"], p["block_col_idx"], block_csc=bad)
    with pytest.raises(ValueError, match="block_col_ptr must have block columns"):
        ops.bsr_linear(p["x"], p["values"], p["block_row_ptr"], p["block_col_idx"],
                       block_csc=csr.CSCIndex(torch.zeros(7, dtype=torch.int32), *_block_csc(p)[1:]))


def test_bsr_backward_ops_bad_input():
    p = _good()
    csc = _block_csc(p)
    pattern = (p["block_row_ptr"], p["block_col_idx"])
    with pytest.raises(ValueError, match="grad_output must be 2-D"):
        ops.bsr_linear_input_grad(torch.randn(6), p["values"], csc)
    with pytest.raises(ValueError, match="multiple of the block height 2"):
        ops.bsr_linear_input_grad(torch.randn(3, 5), p["values"], csc)
    with pytest.raises(TypeError, match="block_csr2csc must have dtype torch.int32"):
        ops.bsr_linear_input_grad(torch.randn(3, 6), p["values"], csr.CSCIndex(*csc[:2], csc[2].long()))
    with pytest.raises(TypeError, match="block_csc must be a CSCIndex"):
        ops.bsr_linear_input_grad(torch.randn(3, 6), p["values"], None)
    with pytest.raises(ValueError, match="must be 2-D with equal N"):
        ops.bsr_linear_value_grad(torch.randn(4, 6), p["x"], *pattern, (2, 4))
    with pytest.raises(ValueError, match="out_features = 6 columns"):
        ops.bsr_linear_value_grad(torch.randn(3, 7), p["x"], *pattern, (2, 4))
    with pytest.raises(ValueError, match="multiple of the block width 3"):
        ops.bsr_linear_value_grad(torch.randn(3, 6), p["x"], *pattern, (2, 3))
    with pytest.raises(ValueError, match="block_shape must be positive"):
        ops.bsr_linear_value_grad(torch.randn(3, 6), p["x"], *pattern, (0, 4))
    with pytest.raises(TypeError, match="block_shape must be a pair"):
        ops.bsr_linear_value_grad(torch.randn(3, 6), p["x"], *pattern, 4)


def test_raw_bsr_ops_check_shapes_in_cpp():
    """Calling torch.ops directly skips the Python checks; the kernels still
    refuse inconsistent shapes instead of reading out of bounds."""
    p = _good()
    csc = _block_csc(p)
    pattern = (p["block_row_ptr"], p["block_col_idx"])
    with pytest.raises(RuntimeError, match="values must hold one block per block index entry"):
        _ops.bsr_linear(p["x"], p["values"][:-1], *pattern, *csc, None)
    with pytest.raises(RuntimeError, match="values must be contiguous 3-D"):
        _ops.bsr_linear(p["x"], p["values"].reshape(-1), *pattern, *csc, None)
    with pytest.raises(RuntimeError, match="multiple of the block width"):
        _ops.bsr_linear(p["x"][:, :6], p["values"], *pattern, *csc, None)
    with pytest.raises(RuntimeError, match="block_row_ptr must be a contiguous 1-D int32"):
        _ops.bsr_linear(p["x"], p["values"], p["block_row_ptr"].long(), p["block_col_idx"], *csc, None)
    with pytest.raises(RuntimeError, match="multiple of the block height"):
        _ops.bsr_linear_input_grad(torch.randn(3, 5), p["values"], *csc)
    with pytest.raises(RuntimeError, match="grad_output must have out_features = 6"):
        _ops.bsr_linear_value_grad(torch.randn(3, 5), p["x"], *pattern, 2, 4)
    with pytest.raises(RuntimeError, match="block shape must be at least 1 x 1"):
        _ops.bsr_linear_value_grad(torch.randn(3, 6), p["x"], *pattern, 2, 0)


# ----------------------------------------------------------------------------- format helpers
@pytest.mark.parametrize("block_shape", [(1, 8), (3, 2), (4, 4)])
def test_element_csr_view_is_the_dense_matrix(block_shape):
    g = torch.Generator().manual_seed(9)
    rp, ci = csr.random_csr((5, 4), 0.4, generator=g)
    values = torch.randn(ci.numel(), *block_shape, generator=g, dtype=torch.float64)
    shape = (5 * block_shape[0], 4 * block_shape[1])
    row_ptr, col_idx, gather = bsr.element_csr(rp, ci, block_shape)
    csr.validate_csr(row_ptr, col_idx, shape, values.reshape(-1)[gather])
    assert row_ptr.dtype == col_idx.dtype == torch.int32 and gather.numel() == values.numel()
    torch.testing.assert_close(reference.csr_to_dense(values.reshape(-1)[gather], row_ptr, col_idx, shape),
                               bsr.bsr_to_dense(values, rp, ci, shape))
    # Every stored value appears exactly once.
    assert torch.equal(gather.sort().values, torch.arange(values.numel()))


def test_validate_bsr_and_block_shape_errors():
    rp, ci = torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([1, 0], dtype=torch.int32)
    bsr.validate_bsr(rp, ci, (4, 8), (2, 4), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match=r"not tiled by block_shape \(2, 3\)"):
        bsr.validate_bsr(rp, ci, (4, 8), (2, 3))
    with pytest.raises(ValueError, match=r"values must have shape \(nblocks, block_height, block_width\)"):
        bsr.validate_bsr(rp, ci, (4, 8), (2, 4), torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="block_col_idx must be in"):
        bsr.validate_bsr(rp, ci, (4, 4), (2, 4))
    with pytest.raises(TypeError, match="block_shape must hold two ints"):
        bsr.check_block_shape((2.5, 4))
    with pytest.raises(TypeError, match="block_shape must be a pair"):
        bsr.check_block_shape((2, 4, 1))
    with pytest.raises(ValueError, match="block_shape must be positive"):
        bsr.check_block_shape((-1, 4))
