"""The batch-1 forward of sparse_linear through W's sliced view, in both
forms (csrc/cpu/sparse_linear_cpu.cpp; SELL-8: sliced_lanes in
cpu_sliced.cpp, the AVX2 kernel or the portable loop; blocked: cpu_blocked.cpp,
the AVX-512 kernel or the portable loop): the product against the plain-PyTorch
reference, CSRWeight's use of it (one input row, no gradient to the values)
and its cache, the gradients (which read the CSR), and the errors for a bad
view, in Python and from the raw op."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from csr_helpers import ROW_LENGTHS, run_fresh, sliced_view_of, weight_with_row_lengths
from sparse_kernels import SparseLinear, csr, ops, reference
from sparse_kernels.storage import csr_weight

TOL32 = dict(atol=2e-5, rtol=2e-4)


def _weight(out_f, in_f, seed):
    lengths = [min(ROW_LENGTHS[(r * 7 + seed) % len(ROW_LENGTHS)], in_f) for r in range(out_f)]
    return weight_with_row_lengths(lengths, in_f, seed)


FORMS = ["sell8", "blocked"]


def _view(values, row_ptr, col_idx, in_f, form="sell8"):
    return sliced_view_of(values, row_ptr, col_idx, row_ptr.numel() - 1, in_f, form)


def _product_pair(out_f, in_f, seed, with_bias, form="sell8"):
    values, row_ptr, col_idx = _weight(out_f, in_f, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, in_f, generator=g)
    bias = torch.randn(out_f, generator=g) if with_bias else None
    got = ops.sparse_linear(x, values, row_ptr, col_idx, bias, sliced=_view(values, row_ptr, col_idx, in_f, form))
    want = reference.sparse_linear(x.double(), values.double(), row_ptr, col_idx, (out_f, in_f),
                                   None if bias is None else bias.double())
    return got, want


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("out_f,in_f", [(1, 1), (5, 7), (8, 1), (13, 40), (64, 100), (203, 150), (33, 129),
                                        (4000, 300)])
def test_batch1_forward_with_sliced_view_matches_reference(out_f, in_f, with_bias, form, threads):
    # Row lengths 0-100 (empty rows, sub-8 tails, odd and even multiples of
    # 8), output counts that leave a partial last slice, inputs of one, part
    # of one and more than two 64-column blocks; 4000 x 300 is over the
    # threshold where the slices are split over threads.
    got, want = _product_pair(out_f, in_f, seed=out_f + in_f, with_bias=with_bias, form=form)
    assert got.shape == (1, out_f)
    torch.testing.assert_close(got.double(), want, **TOL32)


@pytest.mark.parametrize("form", FORMS)
def test_sliced_view_of_no_entries(form):
    row_ptr, col_idx, values = torch.zeros(10, dtype=torch.int32), torch.zeros(0, dtype=torch.int32), torch.zeros(0)
    bias = torch.randn(9)
    got = ops.sparse_linear(torch.randn(1, 4), values, row_ptr, col_idx, bias,
                            sliced=_view(values, row_ptr, col_idx, 4, form))
    torch.testing.assert_close(got, bias.unsqueeze(0))


@pytest.mark.parametrize("form", FORMS)
def test_padding_reads_the_zero_slot_not_a_column(form):
    # Row lengths 1 and 9 in one slice: the short row's padding entries must
    # add 0 even where x holds inf or NaN in columns that row does not use
    # (the blocked form masks them: its padding lanes have no column).
    values, row_ptr, col_idx = weight_with_row_lengths([1, 9], 12, seed=3)
    x = torch.randn(1, 12)
    unused = sorted(set(range(12)) - set(col_idx[:1].tolist()))
    x[0, unused[0]], x[0, unused[1]] = float("inf"), float("nan")
    got = ops.sparse_linear(x, values, row_ptr, col_idx, sliced=_view(values, row_ptr, col_idx, 12, form))
    assert got[0, 0] == values[0] * x[0, int(col_idx[0])]


def test_portable_sliced_linear_loop_matches_reference():
    # The loops that run without AVX2+FMA (SELL-8) and without AVX-512 (the
    # blocked form), forced by the switches in a fresh process; and
    # SPARSE_KERNELS_CPU_SLICED=0, which reads the CSR instead.
    code = ("import torch, test_cpu_sliced_linear as t\n"
            "for form in t.FORMS:\n"
            "    for out_f, in_f in ((13, 40), (4000, 300)):\n"
            "        got, want = t._product_pair(out_f, in_f, seed=out_f, with_bias=True, form=form)\n"
            "        torch.testing.assert_close(got.double(), want, **t.TOL32)\n"
            "print('ok')\n")
    for switch in ("SPARSE_KERNELS_CPU_SCALAR_GATHER", "SPARSE_KERNELS_CPU_BLOCKED", "SPARSE_KERNELS_CPU_SLICED"):
        run_fresh(code, **{switch: "0"})


@pytest.fixture
def any_size(monkeypatch):
    """CSRWeight reads the view for small weights too (as it does from SLICED_MIN_NNZ on)."""
    monkeypatch.setattr(csr_weight, "SLICED_MIN_NNZ", 1)


def test_large_weights_keep_the_csr(monkeypatch):
    monkeypatch.setattr(csr_weight, "SLICED_MAX_NNZ", 1000)
    monkeypatch.setattr(csr_weight, "BLOCKED_MAX_NNZ", 1000)
    lin = SparseLinear(100, 200, density=0.1)
    assert lin.weight.nnz > csr_weight.SLICED_MAX_NNZ
    monkeypatch.setattr(csr_weight, "SLICED_MIN_NNZ", 1)
    with torch.no_grad():
        y = lin(torch.ones(1, 100))
    assert lin.weight._sliced_key is None
    torch.testing.assert_close(y, torch.ones(1, 100) @ lin.weight.to_dense().T + lin.bias, **TOL32)


def test_small_weights_keep_the_csr():
    lin = SparseLinear(30, 50, density=0.3)
    assert lin.weight.nnz < csr_weight.SLICED_MIN_NNZ
    with torch.no_grad():
        lin(torch.randn(1, 30))
    assert lin.weight._sliced_key is None
    big = SparseLinear(1000, 700, density=0.1)
    assert big.weight.nnz >= csr_weight.SLICED_MIN_NNZ
    x = torch.randn(1, 1000)
    with torch.no_grad():
        y = big(x)
    assert big.weight._sliced is not None
    torch.testing.assert_close(y, x @ big.weight.to_dense().T + big.bias, **TOL32)


def test_sparse_linear_module_uses_the_view_for_one_row_without_gradients(any_size):
    torch.manual_seed(0)
    lin = SparseLinear(30, 50, density=0.3)
    w = lin.weight
    x = torch.randn(1, 30)
    want = x @ w.to_dense().T + lin.bias
    y_grad = lin(x)  # values trainable, grad enabled: the CSR, no view built
    assert w._sliced_key is None
    with torch.no_grad():
        y_view = lin(x)
        first = w._sliced[0]
        lin(x.reshape(30))  # a 1-D input is one row too
        assert w._sliced[0] is first  # cached: same values, same view
        lin(torch.randn(3, 30))  # three rows: the CSR (the view is kept, unread)
    for y in (y_grad.detach(), y_view):
        torch.testing.assert_close(y, want.detach(), **TOL32)
    # Frozen values: the view serves a call with gradients to the input, and
    # the input's gradient (through the CSR) is W^T g.
    w.values.requires_grad_(False)
    xg = x.clone().requires_grad_()
    out = lin(xg)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(xg.grad, g @ w.to_dense(), **TOL32)


def test_gradients_with_a_view_equal_those_without():
    # The backward reads the CSR whether or not the forward read a view.
    values, row_ptr, col_idx = _weight(21, 17, seed=4)
    view = _view(values, row_ptr, col_idx, 17)
    x, b = torch.randn(1, 17), torch.randn(21)
    grads = []
    for sliced in (view, None):
        leaves = [t.clone().requires_grad_() for t in (x, values, b)]
        out = ops.sparse_linear(leaves[0], leaves[1], row_ptr, col_idx, leaves[2], sliced=sliced)
        (out * torch.arange(21.0)).sum().backward()
        grads.append([t.grad for t in leaves])
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c, **TOL32)


def test_view_follows_value_and_pattern_changes(any_size):
    torch.manual_seed(1)
    lin = SparseLinear(24, 40, density=0.4)
    w = lin.weight
    x = torch.randn(1, 24)

    def check():
        with torch.no_grad():
            got = lin(x)
        torch.testing.assert_close(got, x @ w.to_dense().T + lin.bias, **TOL32)

    check()
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    lin(x).square().sum().backward()
    opt.step()  # in place: the values' version moves
    check()
    values, row_ptr = w.values.detach().clone(), w.row_ptr.clone()
    g = torch.Generator().manual_seed(5)
    cols = [torch.randperm(24, generator=g)[: int(row_ptr[r + 1] - row_ptr[r])].sort().values for r in range(40)]
    w.set_pattern(row_ptr, torch.cat(cols).to(torch.int32), values)  # same nnz, other columns
    check()


def test_bad_sliced_view_is_rejected():
    values, row_ptr, col_idx = _weight(13, 9, seed=2)
    view = _view(values, row_ptr, col_idx, 9)
    x = torch.randn(1, 9)
    with pytest.raises(TypeError, match="sliced must be"):
        ops.sparse_linear(x, values, row_ptr, col_idx, sliced=view[:2])
    with pytest.raises(ValueError, match="int64 slice_ptr of 3 entries"):
        ops.sparse_linear(x, values, row_ptr, col_idx, sliced=(view[0], view[1], view[2][:2]))
    with pytest.raises(ValueError, match="CPU's float32 kernels only"):
        ops.sparse_linear(x.double(), values.double(), row_ptr, col_idx, sliced=view)
    # The op itself (no Python checks): broken offsets, a column out of range, a partial view.
    op = torch.ops.sparse_kernels.sparse_linear
    args = (x, values, row_ptr, col_idx, None, None, None, None)
    bad_ptr = view[2].clone()
    bad_ptr[1] += 1
    with pytest.raises(RuntimeError, match="steps of 8"):
        op(*args, sliced_values=view[0], sliced_cols=view[1], slice_ptr=bad_ptr)
    bad_cols = view[1].clone()
    bad_cols[0] = 10
    with pytest.raises(RuntimeError, match="sliced_cols.*must hold values in"):
        op(*args, sliced_values=view[0], sliced_cols=bad_cols, slice_ptr=view[2])
    with pytest.raises(RuntimeError, match="all or none"):
        op(*args, sliced_values=view[0], slice_ptr=view[2])
    with pytest.raises(RuntimeError, match=r"float32 values, int32 \(SELL-8\) or uint8 \(blocked\) cols"):
        op(*args, sliced_values=view[0].double(), sliced_cols=view[1], slice_ptr=view[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_refuses_a_sliced_view():
    values, row_ptr, col_idx = (t.cuda() for t in _weight(13, 9, seed=2))
    view = tuple(t.cuda() for t in _view(values, row_ptr, col_idx, 9))
    with pytest.raises(RuntimeError, match="CPU kernel only"):
        torch.ops.sparse_kernels.sparse_linear(torch.randn(1, 9, device="cuda"), values, row_ptr, col_idx, None,
                                               None, None, None, sliced_values=view[0], sliced_cols=view[1],
                                               slice_ptr=view[2])


@pytest.mark.parametrize("form", FORMS)
def test_opcheck_sparse_linear_with_sliced_view(form):
    values, row_ptr, col_idx = _weight(19, 11, seed=6)
    view = _view(values, row_ptr, col_idx, 11, form)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 11, generator=g, requires_grad=True)
    bias = torch.randn(19, generator=g, requires_grad=True)
    args = (x, values.clone().requires_grad_(), row_ptr, col_idx, None, None, None, bias)
    torch.library.opcheck(torch.ops.sparse_kernels.sparse_linear.default, args,
                          dict(sliced_values=view[0], sliced_cols=view[1], slice_ptr=view[2]))


def test_torch_compile_batch1_linear_matches_eager(any_size):
    torch._dynamo.reset()
    torch.manual_seed(2)
    lin = SparseLinear(12, 20, density=0.3).eval()
    compiled = torch.compile(lin)
    x = torch.randn(1, 12)
    with torch.no_grad():
        want, got = lin(x), compiled(x)
        assert lin.weight._sliced is not None
        lin.weight.values.mul_(0.5)  # the compiled module reads the new values
        want2, got2 = lin(x), compiled(x)
    torch.testing.assert_close(got, want, **TOL32)
    torch.testing.assert_close(got2, want2, **TOL32)
    assert not torch.allclose(want, want2)


def test_bad_blocked_view_is_rejected():
    # 70 columns: two 64-column blocks, the second holding 6 columns.
    values, row_ptr, col_idx = _weight(13, 70, seed=2)
    lanes, cols, slice_ptr = _view(values, row_ptr, col_idx, 70, "blocked")
    x = torch.randn(1, 70)
    with pytest.raises(ValueError, match="blocked form"):
        ops.sparse_linear(x, values, row_ptr, col_idx, sliced=(lanes[:-1], cols[:-1], slice_ptr))
    op = torch.ops.sparse_kernels.sparse_linear
    args = (x, values, row_ptr, col_idx, None, None, None, None)

    def call(v=lanes, c=cols, p=slice_ptr):
        return op(*args, sliced_values=v, sliced_cols=c, slice_ptr=p)

    want = reference.sparse_linear(x.double(), values.double(), row_ptr, col_idx, (13, 70))
    torch.testing.assert_close(call().double(), want, **TOL32)  # the valid view passes (and is cached)
    segments = int(slice_ptr[1])  # one slice of 16 rows
    first_slot, block = slice_ptr[2:3 + segments], slice_ptr[3 + segments:]
    last = int((block == 1).nonzero()[0])  # a segment of the 6-column block
    live = cols[16 * int(first_slot[last]): 16 * int(first_slot[last + 1])] != csr.BLOCKED_PAD
    bad_cols = cols.clone()
    bad_cols[16 * int(first_slot[last]) + int(live.nonzero()[0])] = 6
    with pytest.raises(RuntimeError, match=r"column offset in \[0, 6\)"):
        call(c=bad_cols)
    bad_cols = cols.clone()
    assert int(block[0]) == 0
    bad_cols[0] = csr.BLOCKED_PAD + 1  # past the mark, in the first segment (block 0, whole)
    with pytest.raises(RuntimeError, match=r"column offset in \[0, 64\) or the padding mark 64, got 65"):
        call(c=bad_cols)
    bad_ptr = slice_ptr.clone()
    bad_ptr[3 + segments + last] = 2
    with pytest.raises(RuntimeError, match=r"block of segment .* must be in \[0, 2\)"):
        call(p=bad_ptr)
    bad_ptr = slice_ptr.clone()
    bad_ptr[2 + segments] -= 1
    with pytest.raises(RuntimeError, match="slot offsets must run from 0 to the slot count"):
        call(p=bad_ptr)
    with pytest.raises(RuntimeError, match="segments \\+ 1 slot offsets"):
        call(p=slice_ptr[:-1])
    with pytest.raises(RuntimeError, match="multiple of 16"):
        call(v=lanes[:-1], c=cols[:-1])
    # A view checked once is checked again after an in-place change (the cache keys on the version).
    changed = cols.clone()
    call(c=changed)
    changed[16 * int(first_slot[last]) + int(live.nonzero()[0])] = 63
    with pytest.raises(RuntimeError, match=r"column offset in \[0, 6\)"):
        call(c=changed)


@settings(max_examples=60, deadline=None)
@given(out_f=st.integers(1, 70), in_f=st.integers(1, 200), density=st.floats(0.0, 0.7), seed=st.integers(0, 999),
       form=st.sampled_from(FORMS))
def test_any_pattern_through_either_view_matches_reference(out_f, in_f, density, seed, form):
    # Random row lengths (empty rows, full rows), partial slices and blocks.
    g = torch.Generator().manual_seed(seed)
    lengths = torch.binomial(torch.full((out_f,), float(in_f)), torch.full((out_f,), density), generator=g)
    values, row_ptr, col_idx = weight_with_row_lengths([int(n) for n in lengths], in_f, seed)
    x = torch.randn(1, in_f, generator=g)
    got = ops.sparse_linear(x, values, row_ptr, col_idx, sliced=_view(values, row_ptr, col_idx, in_f, form))
    want = reference.sparse_linear(x.double(), values.double(), row_ptr, col_idx, (out_f, in_f))
    torch.testing.assert_close(got.double(), want, **TOL32)
