"""The ops against their plain-PyTorch references, gradcheck, opcheck, edge
cases and bad input."""

import pytest
import torch

from sparse_kernels import csr, ops, reference
from conftest import PROBLEM_SHAPES, TOL, device_params, random_problem

_ops = torch.ops.sparse_kernels


def _csc(p):
    return csr.csr_transpose(p["row_ptr"], p["col_idx"], p["shape"][1])


# ----------------------------------------------------------------------------- sparse_linear
@device_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", PROBLEM_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_matches_reference(device, dtype, shape, bias):
    n, out_f, in_f, density = shape
    p = random_problem(n, out_f, in_f, density, dtype=dtype, device=device, requires_grad=True, bias=bias)
    y = ops.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["bias"])
    leaves = [t for t in (p["x"], p["values"], p["bias"]) if t is not None]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    rx, rv = ref_leaves[0], ref_leaves[1]
    rb = ref_leaves[2] if bias else None
    y_ref = reference.sparse_linear(rx, rv, p["row_ptr"], p["col_idx"], p["shape"], rb)
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, grad_out, allow_unused=True)
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, grad_out, allow_unused=True)
    for got, want in zip(grads, ref_grads):
        if want is None:  # nnz = 0 or N = 0 with nothing reaching a leaf
            want = torch.zeros_like(got)
        torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("shape", PROBLEM_SHAPES)
def test_sparse_linear_gradcheck(shape):
    n, out_f, in_f, density = shape
    p = random_problem(n, out_f, in_f, density, requires_grad=True, seed=1)
    fn = lambda x, v, b: ops.sparse_linear(x, v, p["row_ptr"], p["col_idx"], b)
    assert torch.autograd.gradcheck(fn, (p["x"], p["values"], p["bias"]))


def test_sparse_equals_dense_masked_computation():
    """At 90% sparsity the sparse layer is exactly the dense layer with a mask."""
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(64, 48, generator=g, dtype=torch.float64)
    mask = torch.rand(64, 48, generator=g) < 0.1
    w = torch.masked_fill(dense, ~mask, 0.0)
    rows, cols = mask.nonzero(as_tuple=True)
    row_ptr = torch.zeros(65, dtype=torch.int32)
    row_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=64), 0)
    values = dense[rows, cols].clone().requires_grad_()
    x = torch.randn(10, 48, generator=g, dtype=torch.float64, requires_grad=True)
    y = ops.sparse_linear(x, values, row_ptr, cols.to(torch.int32))
    w_leaf = w.clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y_dense = x2 @ w_leaf.T
    torch.testing.assert_close(y, y_dense, **TOL[torch.float64])
    gy = torch.randn_like(y)
    y.backward(gy)
    y_dense.backward(gy)
    torch.testing.assert_close(x.grad, x2.grad, **TOL[torch.float64])
    # The masked dense weight gradient, read at the mask, is the value gradient.
    torch.testing.assert_close(values.grad, w_leaf.grad[rows, cols], **TOL[torch.float64])


def test_sparse_linear_leading_dims_and_noncontiguous_input():
    p = random_problem(12, 10, 8, 0.3, seed=4)
    x = p["x"].reshape(3, 4, 8)
    y = ops.sparse_linear(x, p["values"], p["row_ptr"], p["col_idx"], p["bias"])
    assert y.shape == (3, 4, 10)
    y_ref = reference.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["shape"], p["bias"])
    torch.testing.assert_close(y.reshape(12, 10), y_ref)
    xt = torch.randn(8, 12, dtype=torch.float64).T  # non-contiguous view
    assert not xt.is_contiguous()
    torch.testing.assert_close(
        ops.sparse_linear(xt, p["values"], p["row_ptr"], p["col_idx"]),
        reference.sparse_linear(xt, p["values"], p["row_ptr"], p["col_idx"], p["shape"]))


# ----------------------------------------------------------------------------- backward ops
@device_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", PROBLEM_SHAPES)
def test_input_grad_and_value_grad_match_reference(device, dtype, shape):
    n, out_f, in_f, density = shape
    p = random_problem(n, out_f, in_f, density, dtype=dtype, device=device, seed=5)
    grad_out = torch.randn(n, out_f, dtype=dtype, device=device)
    got = ops.sparse_linear_input_grad(grad_out, p["values"], _csc(p))
    want = reference.sparse_linear_input_grad(grad_out, p["values"], p["row_ptr"], p["col_idx"], p["shape"])
    torch.testing.assert_close(got, want, **TOL[dtype])
    got = ops.sparse_linear_value_grad(grad_out, p["x"], p["row_ptr"], p["col_idx"])
    want = reference.sparse_linear_value_grad(grad_out, p["x"], p["row_ptr"], p["col_idx"])
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", PROBLEM_SHAPES)
def test_input_grad_csr_matches_reference(dtype, shape):
    """The CPU transposed product by scatter from the CSR (no transposed index)."""
    n, out_f, in_f, density = shape
    p = random_problem(n, out_f, in_f, density, dtype=dtype, seed=6)
    grad_out = torch.randn(n, out_f, dtype=dtype)
    got = ops.sparse_linear_input_grad_csr(grad_out, p["values"], p["row_ptr"], p["col_idx"], in_f)
    want = reference.sparse_linear_input_grad(grad_out, p["values"], p["row_ptr"], p["col_idx"], p["shape"])
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 7, 20, 96, 301])
def test_input_grad_csr_parallel_paths(threads, n):
    """Every path of the scatter: inline (small), per-thread copies over row
    ranges (narrow batches), batch tiles (wide batches), with odd tile tails,
    at several thread counts, on a product large enough to go parallel."""
    p = random_problem(n, 300, 257, 0.3, dtype=torch.float64, seed=n + threads)
    grad_out = torch.randn(n, 300, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = ops.sparse_linear_input_grad_csr(grad_out, p["values"], p["row_ptr"], p["col_idx"], 257)
    finally:
        torch.set_num_threads(before)
    want = reference.sparse_linear_input_grad(grad_out, p["values"], p["row_ptr"], p["col_idx"], p["shape"])
    torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_grad_csr_batch1_loop_adds_as_the_tile_loop(dtype):
    """Batch 1 has a loop of its own (cpu_spmm.h, scatter_rows at n = 1) that
    adds the same products in the same order as the batch-tile loop of wider
    batches: on one thread its result equals each row of a wider batch made of
    copies of that row, bit for bit (empty rows included)."""
    generator = torch.Generator().manual_seed(11)
    dense = torch.randn(300, 257, dtype=dtype, generator=generator)
    dense *= torch.rand(300, 257, generator=generator) < 0.3
    dense[40:60] = 0  # empty rows
    csr = dense.to_sparse_csr()
    values, row_ptr, col_idx = csr.values(), csr.crow_indices().int(), csr.col_indices().int()
    grad_out = torch.randn(1, 300, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = ops.sparse_linear_input_grad_csr(grad_out, values, row_ptr, col_idx, 257)
        wide = ops.sparse_linear_input_grad_csr(grad_out.expand(5, 300), values, row_ptr, col_idx, 257)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(wide, one.expand(5, 257))
    want = reference.sparse_linear_input_grad(grad_out, values, row_ptr, col_idx, (300, 257))
    torch.testing.assert_close(one, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [15, 16, 37, 300])
def test_value_grad_wide_batches_match_reference(dtype, n):
    """The SDDMM's eight-at-a-time path (N >= 16): rows of 22-23 nonzeros
    (whole groups of eight and a remainder), N a multiple of 8 or not."""
    p = random_problem(n, 40, 90, 0.25, dtype=dtype, seed=n)
    grad_out = torch.randn(n, 40, dtype=dtype)
    got = ops.sparse_linear_value_grad(grad_out, p["x"], p["row_ptr"], p["col_idx"])
    want = reference.sparse_linear_value_grad(grad_out, p["x"], p["row_ptr"], p["col_idx"])
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_input_grad_csr_bad_input():
    p = _good()
    args = (p["values"], p["row_ptr"], p["col_idx"])
    with pytest.raises(ValueError, match="grad_output must be 2-D"):
        ops.sparse_linear_input_grad_csr(torch.randn(6), *args, 5)
    with pytest.raises(ValueError, match="row_ptr must have out_features"):
        ops.sparse_linear_input_grad_csr(torch.randn(3, 7), *args, 5)
    with pytest.raises(ValueError, match="in_features must be an int >= 0"):
        ops.sparse_linear_input_grad_csr(torch.randn(3, 6), *args, -1)
    with pytest.raises(ValueError, match="col_idx must be in"):
        ops.sparse_linear_input_grad_csr(torch.randn(3, 6), *args, 2)
    with pytest.raises(TypeError, match="values must have the dtype of grad_output"):
        ops.sparse_linear_input_grad_csr(torch.randn(3, 6, dtype=torch.float64), *args, 5)
    with pytest.raises(RuntimeError, match="col_idx must hold values in"):
        _ops.sparse_linear_input_grad_csr(torch.randn(3, 6), *args, 2)  # the raw op checks too


# ----------------------------------------------------------------------------- lstm_cell
@device_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,hidden", [(4, 3), (1, 1), (0, 5), (7, 17)])
def test_lstm_cell_matches_reference(device, dtype, n, hidden):
    g = torch.Generator().manual_seed(6)
    gates = (2 * torch.randn(n, 4 * hidden, generator=g, dtype=dtype)).to(device).requires_grad_()
    c_prev = torch.randn(n, hidden, generator=g, dtype=dtype).to(device).requires_grad_()
    h, c = ops.lstm_cell(gates, c_prev)
    rg, rc = gates.detach().clone().requires_grad_(), c_prev.detach().clone().requires_grad_()
    h_ref, c_ref = reference.lstm_cell(rg, rc)
    torch.testing.assert_close(h, h_ref, **TOL[dtype])
    torch.testing.assert_close(c, c_ref, **TOL[dtype])
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    got = torch.autograd.grad((h, c), (gates, c_prev), (gh, gc))
    want = torch.autograd.grad((h_ref, c_ref), (rg, rc), (gh, gc))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_lstm_cell_gradcheck_including_unused_outputs():
    g = torch.Generator().manual_seed(7)
    gates = torch.randn(3, 20, generator=g, dtype=torch.float64, requires_grad=True)
    c_prev = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.lstm_cell, (gates, c_prev))
    # Only h reaches the loss (grad_c is None in the backward), then only c.
    assert torch.autograd.gradcheck(lambda a, b: ops.lstm_cell(a, b)[0], (gates, c_prev))
    assert torch.autograd.gradcheck(lambda a, b: ops.lstm_cell(a, b)[1], (gates, c_prev))


# ----------------------------------------------------------------------------- opcheck
def _opcheck_cases():
    for i, (n, out_f, in_f, density) in enumerate(PROBLEM_SHAPES):
        for dtype in (torch.float32, torch.float64):
            p = random_problem(n, out_f, in_f, density, dtype=dtype, seed=10 + i, requires_grad=True)
            csc = _csc(p)
            grad_out = torch.randn(n, out_f, dtype=dtype)
            yield "sparse_linear", (p["x"], p["values"], p["row_ptr"], p["col_idx"], *csc, p["bias"])
            yield "sparse_linear", (p["x"], p["values"], p["row_ptr"], p["col_idx"], *csc, None)
            yield "sparse_linear", (p["x"], p["values"], p["row_ptr"], p["col_idx"], None, None, None, p["bias"])
            yield "sparse_linear_input_grad", (grad_out, p["values"].detach(), *csc)
            yield "sparse_linear_input_grad_csr", (grad_out, p["values"].detach(), p["row_ptr"], p["col_idx"],
                                                   in_f)
            yield "sparse_linear_value_grad", (grad_out, p["x"].detach(), p["row_ptr"], p["col_idx"])
    for n, hidden in [(3, 4), (0, 2), (1, 1)]:
        gates = torch.randn(n, 4 * hidden, dtype=torch.float64, requires_grad=True)
        c_prev = torch.randn(n, hidden, dtype=torch.float64, requires_grad=True)
        yield "lstm_cell", (gates, c_prev)
        c = torch.randn(n, hidden, dtype=torch.float64)
        yield "lstm_cell_backward", (torch.randn_like(c), torch.randn_like(c), gates.detach(), c_prev.detach(), c)


@pytest.mark.parametrize("case", list(_opcheck_cases()), ids=lambda c: c[0])
def test_opcheck(case):
    name, args = case
    torch.library.opcheck(getattr(_ops, name).default, args)


# ----------------------------------------------------------------------------- bad input
def _good():
    return random_problem(3, 6, 5, 0.5, dtype=torch.float32, seed=8)


@pytest.mark.parametrize("mutate,error,match", [
    (lambda p: p.update(x=p["x"].double()), TypeError, "values must have the dtype of input"),
    (lambda p: p.update(x=p["x"].int()), TypeError, "input must be float32 or float64"),
    (lambda p: p.update(x=p["x"][:, :4]), ValueError, "col_idx must be in"),
    (lambda p: p.update(values=p["values"][:-1]), ValueError, "values must be 1-D with nnz"),
    (lambda p: p.update(values=p["values"].reshape(1, -1)), ValueError, "values must be a contiguous 1-D"),
    (lambda p: p.update(row_ptr=p["row_ptr"].long()), TypeError, "row_ptr must have dtype torch.int32"),
    (lambda p: p.update(col_idx=p["col_idx"].long()), TypeError, "col_idx must have dtype torch.int32"),
    (lambda p: p.update(col_idx=p["col_idx"].flip(0).contiguous()), ValueError, "col_idx"),
    (lambda p: p.update(row_ptr=p["row_ptr"][:-1].contiguous()), ValueError, "row_ptr must end at nnz"),
    (lambda p: p.update(col_idx=torch.stack([p["col_idx"], p["col_idx"]], 1)[:, 0]), ValueError, "col_idx must be a contiguous"),
    (lambda p: p.update(bias=p["bias"][:-1]), ValueError, "bias must have shape"),
    (lambda p: p.update(bias=p["bias"].double()), TypeError, "bias must have the dtype"),
    (lambda p: p.update(x=[[1.0]]), TypeError, "input must be a torch.Tensor"),
    (lambda p: p.update(x=p["x"].to("meta")), ValueError, "values must be on the device of input"),
])
def test_sparse_linear_bad_input(mutate, error, match):
    p = _good()
    mutate(p)
    with pytest.raises(error, match=match):
        ops.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["bias"])


def test_sparse_linear_rejects_wrong_transposed_index():
    p = _good()
    bad = csr.CSCIndex(*(t.flip(0).contiguous() for t in _csc(p)))
    with pytest.raises(ValueError, match="csc is not the transposed index"):
        ops.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], csc=bad)


def test_backward_ops_and_cell_bad_input():
    p = _good()
    with pytest.raises(ValueError, match="grad_output must be 2-D"):
        ops.sparse_linear_input_grad(torch.randn(6), p["values"], _csc(p))
    with pytest.raises(TypeError, match="csr2csc must have dtype torch.int32"):
        col_ptr, row_idx, csr2csc = _csc(p)
        ops.sparse_linear_input_grad(torch.randn(3, 6), p["values"], csr.CSCIndex(col_ptr, row_idx, csr2csc.long()))
    with pytest.raises(ValueError, match="must be 2-D with equal N"):
        ops.sparse_linear_value_grad(torch.randn(4, 6), p["x"], p["row_ptr"], p["col_idx"])
    with pytest.raises(ValueError, match="out_features = 6 columns"):
        ops.sparse_linear_value_grad(torch.randn(3, 7), p["x"], p["row_ptr"], p["col_idx"])
    with pytest.raises(ValueError, match=r"gates must have shape \(N, 4\*H\)"):
        ops.lstm_cell(torch.randn(2, 7), torch.randn(2, 2))
    with pytest.raises(TypeError, match="c_prev must have the dtype of gates"):
        ops.lstm_cell(torch.randn(2, 8), torch.randn(2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="gates must be float32 or float64"):
        ops.lstm_cell(torch.ones(2, 8, dtype=torch.int64), torch.randn(2, 2))


def test_raw_op_checks_shapes_in_cpp():
    """Calling torch.ops directly skips the Python checks; the kernels still
    refuse inconsistent shapes instead of reading out of bounds."""
    p = _good()
    csc = _csc(p)
    with pytest.raises(RuntimeError, match="values must be contiguous 1-D"):
        _ops.sparse_linear(p["x"], p["values"][:-1], p["row_ptr"], p["col_idx"], *csc, None)
    with pytest.raises(RuntimeError, match="row_ptr must be a contiguous 1-D int32"):
        _ops.sparse_linear(p["x"], p["values"], p["row_ptr"].long(), p["col_idx"], *csc, None)


# ----------------------------------------------------------------------------- lstm_layer
LAYER_CASES = [  # (T, B, H, density, batch_sizes)
    (5, 4, 3, 0.5, None),
    (5, 4, 3, 0.5, [4, 4, 3, 2, 1]),  # PackedSequence-style variable lengths
    (1, 3, 4, 0.3, None),             # sequence length 1
    (4, 1, 5, 0.2, None),             # batch 1
    (3, 0, 2, 0.5, None),             # batch 0
    (4, 2, 3, 0.0, None),             # nnz = 0
    (6, 3, 1, 1.0, [3, 2, 2, 1, 1, 1]),  # one hidden unit, full W_hh
]


def _layer_problem(steps, batch, hidden, density, sizes, dtype=torch.float64, seed=0, proj=0):
    """Random inputs of lstm_layer; proj > 0 adds a sparse W_hr (proj x hidden).
    Returns (leaves, row_ptr, col_idx, csc, sizes, projection); leaves end with
    W_hr's values when projected."""
    g = torch.Generator().manual_seed(seed)
    state = proj or hidden
    row_ptr, col_idx = csr.random_csr((4 * hidden, state), density, generator=g)
    values = torch.randn(col_idx.numel(), generator=g, dtype=dtype)
    gates = torch.randn(steps, batch, 4 * hidden, generator=g, dtype=dtype)
    h0 = torch.randn(batch, state, generator=g, dtype=dtype)
    c0 = torch.randn(batch, hidden, generator=g, dtype=dtype)
    csc = csr.csr_transpose(row_ptr, col_idx, state)
    sizes = None if sizes is None else torch.tensor(sizes, dtype=torch.int64)
    leaves = [t.requires_grad_() for t in (gates, h0, c0, values)]
    projection = None
    if proj:
        hr_row_ptr, hr_col_idx = csr.random_csr((proj, hidden), 0.7, generator=g)
        hr_values = torch.randn(hr_col_idx.numel(), generator=g, dtype=dtype).requires_grad_()
        leaves.append(hr_values)
        projection = (hr_row_ptr, hr_col_idx, csr.csr_transpose(hr_row_ptr, hr_col_idx, hidden))
    return leaves, row_ptr, col_idx, csc, sizes, projection


def _lstm_layer_call(leaves, row_ptr, col_idx, csc, sizes, projection, reverse, use_ref=False):
    gates, h0, c0, values = leaves[:4]
    if use_ref:
        proj = None if projection is None else (leaves[4], *projection[:2])
        return reference.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, sizes, reverse, proj)
    proj = None if projection is None else (leaves[4], *projection)
    return ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, sizes, reverse, proj)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [0, 2], ids=["no-proj", "proj"])
@pytest.mark.parametrize("case", LAYER_CASES)
def test_lstm_layer_matches_per_step_reference(case, proj, reverse, dtype):
    if proj and case[2] <= proj:
        proj = case[2] - 1
    problem = _layer_problem(*case, dtype=dtype, proj=proj)
    leaves = problem[0]
    got = _lstm_layer_call(*problem, reverse)
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    want = _lstm_layer_call(ref_leaves, *problem[1:], reverse, use_ref=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])
    grads_out = [torch.randn_like(t) for t in got]
    g_got = torch.autograd.grad(got, leaves, grads_out, allow_unused=True)
    g_want = torch.autograd.grad(want, ref_leaves, grads_out, allow_unused=True)
    for a, b, leaf in zip(g_got, g_want, leaves):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [0, 2], ids=["no-proj", "proj"])
@pytest.mark.parametrize("case", [LAYER_CASES[1], LAYER_CASES[2], LAYER_CASES[6]])
def test_lstm_layer_gradcheck(case, proj, reverse):
    proj = min(proj, case[2] - 1)
    problem = _layer_problem(*case, seed=1, proj=proj)
    fn = lambda *ls: _lstm_layer_call(list(ls), *problem[1:], reverse)
    assert torch.autograd.gradcheck(fn, tuple(problem[0]))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [0, 2], ids=["no-proj", "proj"])
@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_lstm_layer_opcheck(case, proj, reverse):
    proj = min(proj, case[2] - 1)
    leaves, row_ptr, col_idx, csc, sizes, projection = _layer_problem(*case, seed=2, proj=proj)
    steps, batch = case[0], case[1]
    sizes = torch.full((steps,), batch, dtype=torch.int64) if sizes is None else sizes
    hr = () if projection is None else (leaves[4], projection[0], projection[1], *projection[2])
    args = (*leaves[:4], row_ptr, col_idx, *csc, sizes, reverse, *hr)
    torch.library.opcheck(_ops.lstm_layer.default, args)
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    out, h_n, c_n, gates, cells, hidden_full = _ops.lstm_layer(*detached)
    hr = tuple(detached[11:])
    back_args = (torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), gates, out, cells,
                 hidden_full, *detached[1:4], row_ptr, col_idx, *csc, sizes, reverse, *hr)
    torch.library.opcheck(_ops.lstm_layer_backward.default, back_args)


def test_lstm_layer_bad_input():
    leaves, row_ptr, col_idx, csc, _, _ = _layer_problem(4, 2, 3, 0.5, None)
    gates, h0, c0, values = leaves
    with pytest.raises(ValueError, match="expected h0 of shape"):
        ops.lstm_layer(gates, h0[:1], c0, values, row_ptr, col_idx, csc)
    with pytest.raises(ValueError, match="expected input_gates .* and c0"):
        ops.lstm_layer(gates, h0, c0[:1], values, row_ptr, col_idx, csc)
    with pytest.raises(ValueError, match=r"batch_sizes must have shape \(steps,\)"):
        ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, torch.tensor([2, 2, 1]))
    with pytest.raises(ValueError, match="batch_sizes must be non-increasing"):
        ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, torch.tensor([1, 2, 2, 1]))
    with pytest.raises(TypeError, match="h0 must have the dtype of input_gates"):
        ops.lstm_layer(gates, h0.float(), c0, values, row_ptr, col_idx, csc)
    with pytest.raises(RuntimeError, match="batch_sizes must be non-increasing"):
        _ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, *csc, torch.tensor([1, 2, 2, 1]), False)


# ----------------------------------------------------------------------------- gru_layer, rnn_layer
def _recurrent_problem(kind, steps, batch, hidden, density, sizes, dtype=torch.float64, seed=0):
    gates = {"gru": 3, "rnn": 1}[kind]
    g = torch.Generator().manual_seed(seed)
    row_ptr, col_idx = csr.random_csr((gates * hidden, hidden), density, generator=g)
    values = torch.randn(col_idx.numel(), generator=g, dtype=dtype)
    ig = torch.randn(steps, batch, gates * hidden, generator=g, dtype=dtype)
    h0 = torch.randn(batch, hidden, generator=g, dtype=dtype)
    bias = torch.randn(gates * hidden, generator=g, dtype=dtype)
    csc = csr.csr_transpose(row_ptr, col_idx, hidden)
    sizes = None if sizes is None else torch.tensor(sizes, dtype=torch.int64)
    return [t.requires_grad_() for t in (ig, h0, values, bias)], row_ptr, col_idx, csc, sizes


def _run_recurrent(kind, leaves, row_ptr, col_idx, csc, sizes, reverse, variant, use_ref=False):
    ig, h0, values, bias = leaves
    if kind == "gru":
        if use_ref:
            return reference.gru_layer(ig, h0, values, row_ptr, col_idx, bias if variant else None, sizes, reverse)
        return ops.gru_layer(ig, h0, values, row_ptr, col_idx, csc, bias if variant else None, sizes, reverse)
    act = "relu" if variant else "tanh"
    if use_ref:
        return reference.rnn_layer(ig, h0, values, row_ptr, col_idx, sizes, reverse, act)
    return ops.rnn_layer(ig, h0, values, row_ptr, col_idx, csc, sizes, reverse, act)


@pytest.mark.parametrize("kind", ["gru", "rnn"])
@pytest.mark.parametrize("variant", [False, True], ids=["plain", "bias-or-relu"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_gru_rnn_layers_match_per_step_reference(kind, variant, reverse, case):
    leaves, row_ptr, col_idx, csc, sizes = _recurrent_problem(kind, *case)
    got = _run_recurrent(kind, leaves, row_ptr, col_idx, csc, sizes, reverse, variant)
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    want = _run_recurrent(kind, ref_leaves, row_ptr, col_idx, csc, sizes, reverse, variant, use_ref=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    cot = [torch.randn_like(t) for t in got]
    g_got = torch.autograd.grad(got, leaves, cot, allow_unused=True)
    g_want = torch.autograd.grad(want, ref_leaves, cot, allow_unused=True)
    for a, b, leaf in zip(g_got, g_want, leaves):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("kind", ["gru", "rnn"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gru_rnn_layers_gradcheck(kind, reverse):
    leaves, row_ptr, col_idx, csc, sizes = _recurrent_problem(kind, 4, 3, 2, 0.6, [3, 2, 2, 1], seed=3)
    fn = lambda *ls: _run_recurrent(kind, ls, row_ptr, col_idx, csc, sizes, reverse, True)
    assert torch.autograd.gradcheck(fn, tuple(leaves))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_gru_rnn_layers_opcheck(case, reverse):
    steps, batch = case[0], case[1]
    for kind in ("gru", "rnn"):
        leaves, row_ptr, col_idx, csc, sizes = _recurrent_problem(kind, *case, seed=4)
        sizes = torch.full((steps,), batch, dtype=torch.int64) if sizes is None else sizes
        ig, h0, values, bias = leaves
        if kind == "gru":
            args = (ig, h0, values, row_ptr, col_idx, *csc, bias, sizes, reverse)
            torch.library.opcheck(_ops.gru_layer.default, args)
            out, h_n, hg = _ops.gru_layer(ig.detach(), h0.detach(), values.detach(), row_ptr, col_idx, *csc,
                                          bias.detach(), sizes, reverse)
            torch.library.opcheck(_ops.gru_layer_backward.default,
                                  (torch.randn_like(out), torch.randn_like(h_n), ig.detach(), hg, out, h0.detach(),
                                   values.detach(), row_ptr, col_idx, *csc, sizes, reverse))
        else:
            for relu in (False, True):
                args = (ig, h0, values, row_ptr, col_idx, *csc, sizes, reverse, relu)
                torch.library.opcheck(_ops.rnn_layer.default, args)
                out, h_n = _ops.rnn_layer(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
                torch.library.opcheck(_ops.rnn_layer_backward.default,
                                      (torch.randn_like(out), torch.randn_like(h_n), out, h0.detach(),
                                       values.detach(), row_ptr, col_idx, *csc, sizes, reverse, relu))


def test_gru_rnn_layers_bad_input():
    leaves, row_ptr, col_idx, csc, _ = _recurrent_problem("gru", 3, 2, 2, 0.5, None)
    ig, h0, values, bias = leaves
    with pytest.raises(ValueError, match="gru_layer: expected input_gates"):
        ops.gru_layer(ig, h0[:1], values, row_ptr, col_idx, csc)
    with pytest.raises(ValueError, match="hh_bias must have shape"):
        ops.gru_layer(ig, h0, values, row_ptr, col_idx, csc, bias[:-1])
    with pytest.raises(ValueError, match="hh_row_ptr must have rows \\+ 1 = 3 entries"):
        ops.rnn_layer(ig[..., :2], h0, values, row_ptr, col_idx, csc)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        ops.rnn_layer(ig, h0, values, row_ptr, col_idx, csc, nonlinearity="gelu")
