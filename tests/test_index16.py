"""16-bit values and the compact index on the CUDA path (issue #7).

The CUDA products read, in place of a weight's int32 indices, a uint16 copy
and the rows longest first (sparse_kernels.csr.index16), which CSRWeight
caches on CUDA only (compact_index); and the CUDA ops take float16/bfloat16
values. Here, without a GPU: the builder and its cache (device-generic torch
code, on CPU tensors), the checks of the new optional op arguments (Python and
the CPU registrations), opcheck with them, the dtype refusals on the CPU and
for the ops that have no 16-bit kernels, and the fake kernels on fake CUDA
tensors. With a GPU (skipped otherwise): the 16-bit ops and modules and the
compact-index path against the float32 CPU results.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from sparse_kernels import SparseGRU, SparseLinear, SparseLSTM, SparseLSTMCell, csr, ops, reference
from sparse_kernels.storage import BSRWeight, CSRWeight
from conftest import random_problem

_ops = torch.ops.sparse_kernels
HALF = [torch.float16, torch.bfloat16]
NO_GPU = "no GPU visible: the CUDA ops run only with one"
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)


def _lengths_order(row_ptr):
    """The rows by decreasing length, ties in row order (Python's sort is stable)."""
    lengths = row_ptr.diff().tolist()
    return sorted(range(len(lengths)), key=lambda r: -lengths[r])


def _problem(seed=0, n=5, out_f=12, in_f=9, density=0.4, dtype=torch.float64):
    p = random_problem(n, out_f, in_f, density, dtype=dtype, seed=seed, requires_grad=True)
    csc = csr.csr_transpose(p["row_ptr"], p["col_idx"], in_f)
    return p, csc


# ----------------------------------------------------------------------------- the builder
def test_index16_matches_the_index_and_orders_rows_longest_first_stably():
    # Rows of lengths 2, 0, 3, 2, 3: the longest first, equal ones in row order.
    row_ptr = torch.tensor([0, 2, 2, 5, 7, 10], dtype=torch.int32)
    col_idx = torch.tensor([0, 65535, 1, 2, 3, 4, 5, 6, 7, 65534], dtype=torch.int32)
    ix = csr.index16(row_ptr, col_idx, 65536)
    assert ix.idx.dtype == torch.uint16 and ix.order.dtype == torch.int32
    assert torch.equal(ix.idx.to(torch.int32), col_idx)  # 65535 survives: unsigned
    assert ix.order.tolist() == [2, 4, 0, 3, 1]


def test_index16_absent_past_65536_columns():
    row_ptr = torch.tensor([0, 1], dtype=torch.int32)
    assert csr.index16(row_ptr, torch.tensor([65536], dtype=torch.int32), 65537) is None
    assert csr.index16(row_ptr, torch.tensor([65535], dtype=torch.int32), 65536) is not None


@pytest.mark.parametrize("seed", range(4))
def test_index16_of_random_patterns(seed):
    p, csc = _problem(seed, out_f=40, in_f=30, density=0.2)
    fwd = csr.index16(p["row_ptr"], p["col_idx"], 30)
    bwd = csr.index16(csc.col_ptr, csc.row_idx, 40)
    assert torch.equal(fwd.idx.to(torch.int32), p["col_idx"])
    assert torch.equal(bwd.idx.to(torch.int32), csc.row_idx)
    assert fwd.order.tolist() == _lengths_order(p["row_ptr"])
    assert bwd.order.tolist() == _lengths_order(csc.col_ptr)


# ----------------------------------------------------------------------------- the cache in CSRWeight
def test_compact_index_only_on_cuda():
    w = CSRWeight.random(8, 6, 0.5, generator=torch.Generator().manual_seed(0))
    w._cached_index16()  # as if built on a GPU before a move to the CPU
    assert w.compact_index() == (None, None)
    assert w._index16 == (None, None)  # nothing kept alive where no kernel reads it
    w._cached_index16()  # built on a GPU, then the pattern replaced (its key reset), then moved
    w.set_pattern(w.row_ptr.clone(), w.col_idx.clone(), w.values.detach().clone())
    assert w.compact_index() == (None, None)
    assert w._index16 == (None, None)


def test_cached_index16_built_once_and_rebuilt_on_a_topology_change():
    g = torch.Generator().manual_seed(1)
    w = CSRWeight.random(16, 10, 0.3, generator=g)
    fwd, bwd = w._cached_index16()  # the device-generic cache, here on CPU tensors
    assert w._cached_index16()[0] is fwd  # cached: the same tensors
    csc = w.transposed_index()
    assert torch.equal(fwd.idx.to(torch.int32), w.col_idx)
    assert torch.equal(bwd.idx.to(torch.int32), csc.row_idx)
    assert fwd.order.tolist() == _lengths_order(w.row_ptr)
    assert bwd.order.tolist() == _lengths_order(csc.col_ptr)

    # rebuild (sparse training): drop the first half of the slots, grow elsewhere.
    keep = torch.arange(w.nnz) >= w.nnz // 2
    dense_mask = w.mask()
    free = (~dense_mask).nonzero()[:3]
    grow_row_ptr, grow_col_idx, _ = csr.from_coordinates(free[:, 0], free[:, 1], w.shape)
    w.rebuild(keep, grow_row_ptr, grow_col_idx)
    fwd2, bwd2 = w._cached_index16()
    assert fwd2 is not fwd
    assert torch.equal(fwd2.idx.to(torch.int32), w.col_idx)
    assert fwd2.order.tolist() == _lengths_order(w.row_ptr)
    assert torch.equal(bwd2.idx.to(torch.int32), w.transposed_index().row_idx)

    # An in-place write to the pattern (as load_state_dict does) bumps its
    # version counter: rebuilt even with the same contents.
    w.col_idx.copy_(w.col_idx.clone())
    fwd3 = w._cached_index16()[0]
    assert fwd3 is not fwd2 and torch.equal(fwd3.idx, fwd2.idx)


@pytest.mark.parametrize("shape,present", [((3, 70000), (False, True)), ((70000, 3), (True, False))])
def test_cached_index16_absent_where_an_index_exceeds_16_bits(shape, present):
    w = CSRWeight.random(*shape, 1e-5, generator=torch.Generator().manual_seed(2))
    assert tuple(ix is not None for ix in w._cached_index16()) == present


# ----------------------------------------------------------------------------- the ops' new arguments
def test_schema_defaults_keep_old_calls():
    p, csc = _problem(3)
    for name, defaults in (("sparse_linear", ["col_idx16", "row_order", "row_idx16", "col_order", "sliced_values",
                                              "sliced_cols", "slice_ptr"]),
                           ("sparse_linear_input_grad", ["row_idx16", "col_order"])):
        args = getattr(_ops, name).default._schema.arguments
        assert [a.name for a in args[-len(defaults):]] == defaults
        assert all(a.has_default_value() for a in args[-len(defaults):])
    x, v = p["x"].detach(), p["values"].detach()
    want = reference.sparse_linear(x, v, p["row_ptr"], p["col_idx"], p["shape"])
    torch.testing.assert_close(_ops.sparse_linear(x, v, p["row_ptr"], p["col_idx"], None, None, None, None), want)
    grad_out = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(_ops.sparse_linear_input_grad(grad_out, v, *csc),
                               reference.sparse_linear_input_grad(grad_out, v, p["row_ptr"], p["col_idx"],
                                                                  p["shape"]))


def test_cpu_results_and_gradients_with_the_compact_index_given():
    """The CPU reads no compact index, but accepts a consistent one, through
    autograd too (the backward returns a gradient slot per argument)."""
    p, csc = _problem(4)
    fwd = csr.index16(p["row_ptr"], p["col_idx"], 9)
    bwd = csr.index16(csc.col_ptr, csc.row_idx, 12)
    y = ops.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["bias"], csc=csc, index16=fwd,
                          csc_index16=bwd)
    y_ref = reference.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["shape"], p["bias"])
    torch.testing.assert_close(y, y_ref)
    grad_out = torch.randn_like(y)
    leaves = (p["x"], p["values"], p["bias"])
    for got, want in zip(torch.autograd.grad(y, leaves, grad_out), torch.autograd.grad(y_ref, leaves, grad_out)):
        torch.testing.assert_close(got, want)
    gi = ops.sparse_linear_input_grad(grad_out, p["values"].detach(), csc, index16=bwd)
    torch.testing.assert_close(gi, reference.sparse_linear_input_grad(grad_out, p["values"].detach(),
                                                                      p["row_ptr"], p["col_idx"], p["shape"]))


def _bad_index16_cases():
    p, csc = _problem(5)
    fwd = csr.index16(p["row_ptr"], p["col_idx"], 9)
    # Through int32 (here and below): torch 2.11 has no CPU flip for uint16.
    flipped = fwd.idx.int().flip(0).to(torch.uint16)
    yield "dtype", fwd._replace(idx=fwd.idx.view(torch.int16)), TypeError, r"index16.idx must have dtype torch.uint16"
    yield "length", fwd._replace(idx=fwd.idx[:-1]), ValueError, r"index16.idx must be contiguous with shape"
    yield "order dtype", fwd._replace(order=fwd.order.long()), TypeError, r"index16.order must have dtype torch.int32"
    yield "contents", fwd._replace(idx=flipped), ValueError, "index16.idx does not hold the indices"
    yield "not a permutation", fwd._replace(order=torch.zeros_like(fwd.order)), ValueError, \
        "index16.order must be a permutation"
    yield "not a pair", (fwd.idx,), TypeError, "index16 must be an Index16"


@pytest.mark.parametrize("case", list(_bad_index16_cases()), ids=lambda c: c[0] if isinstance(c, tuple) else "")
def test_python_refuses_a_bad_compact_index(case):
    _, bad, error, match = case
    p, _ = _problem(5)
    with pytest.raises(error, match=match):
        ops.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], index16=bad)


def test_python_refuses_csc_index16_without_csc_on_cpu():
    p, csc = _problem(6)
    bwd = csr.index16(csc.col_ptr, csc.row_idx, 12)
    with pytest.raises(ValueError, match="csc_index16 indexes the transposed index: pass csc"):
        ops.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], csc_index16=bwd)


def test_python_refuses_index16_past_65536_columns():
    x = torch.randn(2, 70000, dtype=torch.float64)
    row_ptr = torch.tensor([0, 1], dtype=torch.int32)
    col_idx = torch.tensor([69999], dtype=torch.int32)
    fake = csr.Index16(col_idx.to(torch.uint16), torch.zeros(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="index16 exists only for at most 65536 indexed columns"):
        ops.sparse_linear(x, torch.ones(1, dtype=torch.float64), row_ptr, col_idx, index16=fake, validate=False)


def test_cpu_registration_refuses_an_inconsistent_compact_index():
    """Straight to torch.ops (no Python checks): the CPU kernel reads no
    compact index but refuses a wrong one."""
    p, csc = _problem(7)
    x, v = p["x"].detach(), p["values"].detach()
    fwd = csr.index16(p["row_ptr"], p["col_idx"], 9)
    bwd = csr.index16(csc.col_ptr, csc.row_idx, 12)
    base = (x, v, p["row_ptr"], p["col_idx"], *csc, None)
    with pytest.raises(RuntimeError, match="col_idx16 must be a contiguous 1-D uint16 tensor"):
        _ops.sparse_linear(*base, fwd.idx.view(torch.int16), fwd.order)
    with pytest.raises(RuntimeError, match="col_idx16 must hold the indices of col_idx"):
        _ops.sparse_linear(*base, fwd.idx.int().flip(0).to(torch.uint16), fwd.order)
    with pytest.raises(RuntimeError, match="row_order must be a permutation"):
        _ops.sparse_linear(*base, fwd.idx, torch.zeros_like(fwd.order))
    with pytest.raises(RuntimeError, match="row_order must have one entry per row"):
        _ops.sparse_linear(*base, fwd.idx, fwd.order[:-1])
    with pytest.raises(RuntimeError, match="row_idx16 and col_order index the transposed index"):
        _ops.sparse_linear(x, v, p["row_ptr"], p["col_idx"], None, None, None, None, None, None, *bwd)
    with pytest.raises(RuntimeError, match="row_idx16 must hold the indices of row_idx"):
        _ops.sparse_linear(*base, None, None, bwd.idx.int().flip(0).to(torch.uint16), bwd.order)
    grad_out = torch.randn(5, 12, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="col_order must be a permutation"):
        _ops.sparse_linear_input_grad(grad_out, v, *csc, bwd.idx, torch.zeros_like(bwd.order))


def _opcheck_cases():
    for seed, (n, out_f, in_f, density) in enumerate([(5, 12, 9, 0.4), (1, 7, 3, 0.0), (0, 4, 6, 0.5)]):
        for dtype in (torch.float32, torch.float64):
            p, csc = _problem(20 + seed, n, out_f, in_f, density, dtype)
            fwd = csr.index16(p["row_ptr"], p["col_idx"], in_f)
            bwd = csr.index16(csc.col_ptr, csc.row_idx, out_f)
            yield "sparse_linear", (p["x"], p["values"], p["row_ptr"], p["col_idx"], *csc, p["bias"], *fwd, *bwd)
            yield "sparse_linear", (p["x"], p["values"], p["row_ptr"], p["col_idx"], *csc, None, *fwd, None, None)
            yield "sparse_linear_input_grad", (torch.randn(n, out_f, dtype=dtype), p["values"].detach(), *csc,
                                               *bwd)


@pytest.mark.parametrize("case", list(_opcheck_cases()), ids=lambda c: c[0])
def test_opcheck_with_the_compact_index(case):
    name, args = case
    torch.library.opcheck(getattr(_ops, name).default, args)


# ----------------------------------------------------------------------------- 16-bit values: refusals
@pytest.mark.parametrize("dtype", HALF)
def test_cpu_refuses_16_bit_values_naming_argument_and_device(dtype):
    p, csc = _problem(8, dtype=torch.float32)
    x, v = p["x"].detach(), p["values"].detach()
    need = rf"has dtype {dtype} on cpu: 16-bit values need a CUDA device"
    with pytest.raises(TypeError, match="input " + need):
        ops.sparse_linear(x.to(dtype), v.to(dtype), p["row_ptr"], p["col_idx"])
    with pytest.raises(TypeError, match="values " + need):
        ops.sparse_linear(x, v.to(dtype), p["row_ptr"], p["col_idx"])
    with pytest.raises(TypeError, match="grad_output " + need):
        ops.sparse_linear_input_grad(torch.randn(5, 12, dtype=dtype), v.to(dtype), csc)
    with pytest.raises(TypeError, match="grad_output " + need):
        ops.sparse_linear_value_grad(torch.randn(5, 12, dtype=dtype), x.to(dtype), p["row_ptr"], p["col_idx"])
    with pytest.raises(TypeError, match="gates " + need):
        ops.lstm_cell(torch.randn(2, 8, dtype=dtype), torch.randn(2, 2, dtype=dtype))
    w = BSRWeight.random(8, 8, 0.5, block_shape=(4, 4), dtype=dtype, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="input " + need):
        ops.bsr_linear(torch.randn(3, 8, dtype=dtype), w.values.detach(), w.block_row_ptr, w.block_col_idx)
    hh = CSRWeight.random(8, 2, 0.5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="input_gates " + need):
        ops.lstm_layer(torch.randn(3, 1, 8, dtype=dtype), torch.zeros(1, 2, dtype=dtype),
                       torch.zeros(1, 2, dtype=dtype), hh.values.detach(), hh.row_ptr, hh.col_idx, None)


@pytest.mark.parametrize("dtype", HALF)
def test_ops_without_16_bit_kernels_refuse_on_any_device(dtype):
    g = torch.Generator().manual_seed(9)
    hh = CSRWeight.random(6, 2, 0.5, dtype=dtype, generator=g)
    only = "supports float32 and float64 only"
    with pytest.raises(TypeError, match=f"input_gates has dtype {dtype}, but gru_layer {only}"):
        ops.gru_layer(torch.randn(3, 1, 6, dtype=dtype), torch.zeros(1, 2, dtype=dtype), hh.values.detach(),
                      hh.row_ptr, hh.col_idx, None)
    rnn = CSRWeight.random(2, 2, 0.5, dtype=dtype, generator=g)
    with pytest.raises(TypeError, match=f"but rnn_layer {only}"):
        ops.rnn_layer(torch.randn(3, 1, 2, dtype=dtype), torch.zeros(1, 2, dtype=dtype), rnn.values.detach(),
                      rnn.row_ptr, rnn.col_idx, None)
    r = CSRWeight.random(4, 2, 0.5, dtype=dtype, generator=g)
    with pytest.raises(TypeError, match=f"but rhn_layer {only}"):
        ops.rhn_layer(torch.randn(3, 1, 4, dtype=dtype), torch.zeros(1, 2, dtype=dtype), [r.values.detach()],
                      [r.row_ptr], [r.col_idx], [None], torch.zeros(1, 4, dtype=dtype))
    with pytest.raises(TypeError, match=f"but magnitude_prune {only}"):
        ops.magnitude_prune(r.values.detach(), 1)


@pytest.mark.parametrize("dtype", HALF)
def test_modules_convert_but_the_cpu_forward_says_why_it_refuses(dtype):
    g = torch.Generator().manual_seed(10)
    lin = SparseLinear(6, 4, density=0.5, generator=g).to(dtype)
    assert lin.weight.values.dtype == dtype and lin.bias.dtype == dtype
    with pytest.raises(TypeError, match="16-bit values need a CUDA device"):
        lin(torch.randn(2, 6, dtype=dtype))
    lstm = SparseLSTM(3, 4, density=0.5, generator=g).to(dtype)
    with pytest.raises(TypeError, match="16-bit values need a CUDA device"):
        lstm(torch.randn(5, 2, 3, dtype=dtype))


# ----------------------------------------------------------------------------- fake (meta) kernels
@pytest.mark.parametrize("dtype", HALF)
def test_fake_cuda_tensors_pass_the_checks_and_keep_the_dtype(dtype):
    """The Python checks and the fake kernels for 16-bit CUDA tensors, traced
    without a GPU: FakeTensorMode makes fake CUDA tensors."""
    p, csc = _problem(11)
    fwd = csr.index16(p["row_ptr"], p["col_idx"], 9)
    bwd = csr.index16(csc.col_ptr, csc.row_idx, 12)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        dev = lambda t: mode.from_tensor(t).to("cuda")
        x, v = dev(p["x"].detach().to(dtype)), dev(p["values"].detach().to(dtype))
        rp, ci = dev(p["row_ptr"]), dev(p["col_idx"])
        cs = csr.CSCIndex(*(dev(t) for t in csc))
        f16 = csr.Index16(*(dev(t) for t in fwd))
        b16 = csr.Index16(*(dev(t) for t in bwd))
        y = ops.sparse_linear(x, v, rp, ci, csc=cs, index16=f16, csc_index16=b16, validate=False)
        assert y.dtype == dtype and y.device.type == "cuda" and tuple(y.shape) == (5, 12)
        gi = ops.sparse_linear_input_grad(dev(torch.randn(5, 12).to(dtype)), v, cs, index16=b16, validate=False)
        assert gi.dtype == dtype and tuple(gi.shape) == (5, 9)
        h, c = ops.lstm_cell(dev(torch.randn(2, 8).to(dtype)), dev(torch.randn(2, 2).to(dtype)))
        assert h.dtype == dtype and c.dtype == dtype


# ----------------------------------------------------------------------------- on a GPU
TOL16 = {torch.float16: dict(atol=2e-2, rtol=2e-2), torch.bfloat16: dict(atol=1e-1, rtol=5e-2)}


def _close16(got, want, dtype):
    torch.testing.assert_close(got.float().cpu(), want.float().cpu(), **TOL16[dtype])


@needs_gpu
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", [(33, 96, 80, 0.1), (7, 300, 200, 0.05), (4, 17, 70000, 0.001)])
def test_gpu_sparse_linear_16_bit_with_the_compact_index(dtype, shape):
    """CSRWeight on CUDA passes its compact index (absent for 70000 columns);
    forward and backward in 16 bits against float32 on the CPU from the same
    rounded values."""
    n, out_f, in_f, density = shape
    g = torch.Generator().manual_seed(12)
    w16 = CSRWeight.random(out_f, in_f, density, generator=g, dtype=dtype).to("cuda")
    fwd, bwd = w16.compact_index()
    assert (fwd is not None) == (in_f <= 65536) and bwd is not None
    assert fwd is None or fwd.idx.device.type == "cuda"
    ref = copy.deepcopy(w16).float().cpu()
    x = torch.randn(n, in_f, generator=g).to(dtype)
    x16 = x.cuda().requires_grad_()
    x32 = x.float().requires_grad_()
    y16, y32 = w16(x16), ref(x32)
    _close16(y16, y32, dtype)
    grad = torch.randn(n, out_f, generator=g)
    y16.backward(grad.to(dtype).cuda())
    y32.backward(grad.to(dtype).float())
    _close16(x16.grad, x32.grad, dtype)
    _close16(w16.values.grad, ref.values.grad, dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_compact_index_gives_the_int32_results(dtype):
    p, csc = _problem(13, n=9, out_f=150, in_f=120, density=0.1, dtype=dtype)
    cuda = lambda t: t.detach().cuda()
    x, v, rp, ci = cuda(p["x"]), cuda(p["values"]), cuda(p["row_ptr"]), cuda(p["col_idx"])
    cs = csr.CSCIndex(*(cuda(t) for t in csc))
    fwd = csr.index16(rp, ci, 120)
    bwd = csr.index16(cs.col_ptr, cs.row_idx, 150)
    plain = ops.sparse_linear(x, v, rp, ci, csc=cs)
    compact = ops.sparse_linear(x, v, rp, ci, csc=cs, index16=fwd, csc_index16=bwd)
    torch.testing.assert_close(compact, plain)
    torch.testing.assert_close(compact.cpu(), reference.sparse_linear(p["x"].detach(), p["values"].detach(),
                                                                      p["row_ptr"], p["col_idx"], p["shape"]))
    grad_out = torch.randn(9, 150, dtype=dtype, device="cuda")
    torch.testing.assert_close(ops.sparse_linear_input_grad(grad_out, v, cs, index16=bwd),
                               ops.sparse_linear_input_grad(grad_out, v, cs))


@needs_gpu
@pytest.mark.parametrize("dtype", HALF)
def test_gpu_16_bit_modules(dtype):
    g = torch.Generator().manual_seed(14)
    for module, x in ((SparseLinear(40, 24, density=0.2, generator=g), torch.randn(6, 40, generator=g)),
                      (SparseLSTMCell(20, 16, density=0.3, generator=g), torch.randn(4, 20, generator=g)),
                      (SparseLSTM(12, 16, num_layers=2, density=0.3, generator=g), torch.randn(7, 3, 12, generator=g)),
                      (SparseLinear(32, 32, density=0.5, block_shape=(16, 16), generator=g),
                       torch.randn(5, 32, generator=g))):
        m16 = module.to(device="cuda", dtype=dtype)
        ref = copy.deepcopy(m16).float().cpu()
        out16, out32 = m16(x.to(dtype).cuda()), ref(x.to(dtype).float())
        first = lambda out: out[0] if isinstance(out, tuple) else out
        _close16(first(out16), first(out32), dtype)
        first(out16).float().sum().backward()
        first(out32).sum().backward()
        for (name, p16), p32 in zip(m16.named_parameters(), ref.parameters()):
            assert p16.grad is not None, name
            _close16(p16.grad, p32.grad, dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", HALF)
def test_gpu_16_bit_gru_refused_with_the_reason(dtype):
    gru = SparseGRU(4, 4, density=0.5).to(device="cuda", dtype=dtype)
    with pytest.raises(TypeError, match="gru_layer supports float32 and float64 only"):
        gru(torch.randn(3, 2, 4, device="cuda", dtype=dtype))
