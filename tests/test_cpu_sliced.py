"""W_hh's sliced view in both forms (SELL-8: csr.sliced_layout; blocked:
csr.blocked_layout; CSRWeight.sliced_view picks one) and the fused LSTM's
batch-1 step that reads it (csrc/cpu/lstm_layer_fused_cpu.cpp; SELL-8:
sliced_rows_avx2 in cpu_gathered.cpp, the portable loop where AVX2+FMA is
absent or SPARSE_KERNELS_CPU_SCALAR_GATHER=0; blocked: cpu_blocked.cpp, the
portable loop without AVX-512 or with SPARSE_KERNELS_CPU_BLOCKED=0): the
layouts against the CSR they come from, the layer against the plain-PyTorch reference, the module's use
of it (inference only) and its cache, and the errors for a bad view."""

import pytest
import torch

from csr_helpers import ROW_LENGTHS, run_fresh, sliced_view_of, weight_with_row_lengths
from sparse_kernels import SparseLSTM, build_info, csr, ops, reference
from sparse_kernels.storage import csr_weight

TOL32 = dict(atol=2e-5, rtol=2e-4)
FORMS = ["sell8", "blocked"]


def _lstm_weight(hidden, seed):
    lengths = [min(ROW_LENGTHS[(u + 4 * gate) % len(ROW_LENGTHS)], hidden) for gate in range(4)
               for u in range(hidden)]
    values, row_ptr, col_idx = weight_with_row_lengths(lengths, hidden, seed)
    return values * 0.3, row_ptr, col_idx  # gates off saturation: the products decide the result


def _assert_lanes_hold_the_rows(lanes, want, segment_rows, height):
    """Row r of a view's rows (segments of segment_rows, slices of `height`)
    is lane r % height of its slice and holds want[r]; every other lane is 0."""
    rows, per_segment = want.numel(), -(-segment_rows // height)
    row = torch.arange(rows)
    within = row % segment_rows
    lane_of_row = (row // segment_rows * per_segment + within // height) * height + within % height
    torch.testing.assert_close(lanes[lane_of_row], want)
    padding = torch.ones(lanes.numel(), dtype=torch.bool)
    padding[lane_of_row] = False
    assert bool((lanes[padding] == 0).all())


@pytest.mark.parametrize("segment_rows,in_f", [(1, 7), (5, 40), (8, 1), (13, 100), (64, 100)])
def test_sliced_layout_holds_the_csr(segment_rows, in_f):
    rows = 4 * segment_rows
    lengths = [min(ROW_LENGTHS[r % len(ROW_LENGTHS)], in_f) for r in range(rows)]
    values, row_ptr, col_idx = weight_with_row_lengths(lengths, in_f, seed=segment_rows)
    layout = csr.sliced_layout(row_ptr, col_idx, segment_rows, pad_col=in_f)
    per_segment = -(-segment_rows // 8)
    assert layout.slice_ptr.numel() == 4 * per_segment + 1 and layout.slice_ptr.dtype == torch.int64
    assert bool((layout.slice_ptr.diff() % 8 == 0).all())
    sliced = csr.sliced_values(values, layout)
    x = torch.cat([torch.randn(in_f, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])  # + padding's 0
    lanes = reference.sliced_rows(sliced.double(), layout.cols, layout.slice_ptr, x)
    want = reference.sparse_linear(x[:in_f], values.double(), row_ptr, col_idx, (rows, in_f))
    _assert_lanes_hold_the_rows(lanes, want, segment_rows, height=8)  # padding: zero values at the padding column
    assert int((layout.cols == in_f).sum()) == sliced.numel() - values.numel()


def test_sliced_layout_of_an_empty_pattern():
    row_ptr, col_idx = torch.zeros(33, dtype=torch.int32), torch.zeros(0, dtype=torch.int32)
    layout = csr.sliced_layout(row_ptr, col_idx, 8, pad_col=5)
    assert layout.slice_ptr.tolist() == [0, 0, 0, 0, 0] and layout.cols.numel() == 0
    with pytest.raises(ValueError, match="segment_rows must divide"):
        csr.sliced_layout(row_ptr, col_idx, 5, pad_col=5)


@pytest.mark.parametrize("segment_rows,in_f", [(1, 7), (5, 40), (16, 1), (13, 100), (64, 130), (20, 64),
                                              (17, 200)])
def test_blocked_layout_holds_the_csr(segment_rows, in_f, monkeypatch):
    rows = 4 * segment_rows
    lengths = [min(ROW_LENGTHS[r % len(ROW_LENGTHS)], in_f) for r in range(rows)]
    values, row_ptr, col_idx = weight_with_row_lengths(lengths, in_f, seed=segment_rows)
    layout = csr.blocked_layout(row_ptr, col_idx, segment_rows, in_f)
    with monkeypatch.context() as m:  # the sorting path (for many cells) builds the same layout
        m.setattr(csr, "BLOCKED_DENSE_CELLS", 0)
        for a, b in zip(layout, csr.blocked_layout(row_ptr, col_idx, segment_rows, in_f)):
            assert torch.equal(a, b)
    per_segment = -(-segment_rows // 16)
    slices = 4 * per_segment
    segments = int(layout.slice_ptr[slices])
    assert layout.slice_ptr.dtype == torch.int64 and layout.slice_ptr.numel() == slices + 2 + 2 * segments
    assert layout.cols.dtype == torch.uint8 and layout.cols.numel() == 16 * int(layout.slice_ptr[slices + 1 + segments])
    first_segment, first_slot = layout.slice_ptr[: slices + 1], layout.slice_ptr[slices + 1: slices + 2 + segments]
    block = layout.slice_ptr[slices + 2 + segments:]
    assert bool((first_segment.diff() >= 0).all()) and bool((first_slot.diff() >= 1).all())
    assert bool((block >= 0).all()) and bool((block < -(-in_f // 64)).all())
    for s in range(slices):  # a slice's segments are its distinct blocks, in order
        blocks_of_slice = block[first_segment[s]: first_segment[s + 1]]
        assert bool((blocks_of_slice.diff() > 0).all())
    sliced = csr.sliced_values(values, layout)
    x = torch.zeros(-(-in_f // 64) * 64, dtype=torch.float64)
    x[:in_f] = torch.randn(in_f, dtype=torch.float64)
    lanes = reference.blocked_rows(sliced.double(), layout.cols, layout.slice_ptr, slices, x)
    want = reference.sparse_linear(x[:in_f], values.double(), row_ptr, col_idx, (rows, in_f))
    _assert_lanes_hold_the_rows(lanes, want, segment_rows, height=16)
    # Every entry is placed once; the rest is padding: value 0 and the padding mark.
    assert torch.unique(layout.dest).numel() == values.numel()
    pad = layout.cols == csr.BLOCKED_PAD
    assert int(pad.sum()) == sliced.numel() - values.numel() and bool((sliced[pad] == 0).all())
    assert bool((layout.cols[~pad] < 64).all())


def test_blocked_layout_of_an_empty_pattern():
    row_ptr, col_idx = torch.zeros(33, dtype=torch.int32), torch.zeros(0, dtype=torch.int32)
    layout = csr.blocked_layout(row_ptr, col_idx, 8, in_features=5)
    assert layout.slice_ptr.tolist() == [0, 0, 0, 0, 0, 0] and layout.cols.numel() == 0
    with pytest.raises(ValueError, match="segment_rows must divide"):
        csr.blocked_layout(row_ptr, col_idx, 5, in_features=5)


def test_sliced_view_builds_the_form_this_cpu_runs(monkeypatch):
    # build_info says whether the blocked kernel runs here; the cached view follows it,
    # and SPARSE_KERNELS_CPU_BLOCKED=0 (read at load) gives the SELL-8 form.
    blocked = build_info()["cpu_blocked_view"]
    assert csr_weight.blocked_view_supported() == blocked
    model = SparseLSTM(20, 24, density=0.5)
    view = model.weight_hh_l0.sliced_view(24)
    assert view[1].dtype == (torch.uint8 if blocked else torch.int32)
    if blocked:
        # Where the blocked form would pad too much (1% density: segments of
        # about one slot) or be too large, the view is SELL-8.
        sparse = SparseLSTM(400, 24, density=0.01).weight_ih_l0
        assert sparse.sliced_view(24)[1].dtype == torch.int32
        monkeypatch.setattr(csr_weight, "BLOCKED_MAX_BYTES", 100)
        assert SparseLSTM(20, 24, density=0.5).weight_hh_l0.sliced_view(24)[1].dtype == torch.int32
    code = ("import torch, sparse_kernels as sk\n"
            "assert sk.build_info()['cpu_blocked_view'] is False\n"
            "m = sk.SparseLSTM(20, 24, density=0.5)\n"
            "assert m.weight_hh_l0.sliced_view(24)[1].dtype == torch.int32\n"
            "print('ok')\n")
    run_fresh(code, SPARSE_KERNELS_CPU_BLOCKED="0")


def _layer_pair(hidden, steps, seed, form="sell8"):
    values, row_ptr, col_idx = _lstm_weight(hidden, seed)
    g = torch.Generator().manual_seed(seed + 1)
    gates = torch.randn(steps, 1, 4 * hidden, generator=g)
    h0, c0 = torch.randn(1, hidden, generator=g), torch.randn(1, hidden, generator=g)
    view = sliced_view_of(values, row_ptr, col_idx, hidden, hidden, form)
    csc = csr.csr_transpose(row_ptr, col_idx, hidden)
    got = ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, hh_sliced=view)
    want = reference.lstm_layer(gates.double(), h0.double(), c0.double(), values.double(), row_ptr, col_idx)
    return got, want


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("steps", [1, 6], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("hidden", [1, 13, 64, 200], ids=lambda h: f"H{h}")
def test_batch1_lstm_layer_with_sliced_view_matches_reference(hidden, steps, form, threads):
    got, want = _layer_pair(hidden, steps, seed=hidden, form=form)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, **TOL32)


def test_portable_sliced_loop_matches_reference():
    # The loops that run without AVX2+FMA (SELL-8) and without AVX-512
    # (blocked): forced by the switches, in fresh processes.
    code = ("import torch, test_cpu_sliced as t\n"
            "for form in t.FORMS:\n"
            "    for hidden, steps in ((13, 3), (200, 4)):\n"
            "        got, want = t._layer_pair(hidden, steps, seed=hidden, form=form)\n"
            "        for a, b in zip(got, want):\n"
            "            torch.testing.assert_close(a.double(), b, **t.TOL32)\n"
            "print('ok')\n")
    for switch in ("SPARSE_KERNELS_CPU_SCALAR_GATHER", "SPARSE_KERNELS_CPU_BLOCKED"):
        run_fresh(code, **{switch: "0"})


def test_sparse_lstm_uses_the_view_for_inference_only():
    torch.manual_seed(0)
    model = SparseLSTM(24, 40, num_layers=2, density=0.3, bidirectional=True)
    x = torch.randn(7, 1, 24)
    w_hh = model.weight_hh_l0
    with torch.no_grad():
        out_view, (h_view, c_view) = model(x)
    assert w_hh._sliced is not None  # built and kept by the batch-1 inference call
    assert model.weight_hh_l1_reverse._sliced is not None  # the reverse direction's too
    first = w_hh._sliced[0]
    with torch.no_grad():
        model(x)
    assert w_hh._sliced[0] is first  # cached: same values, same view
    out_csr, (h_csr, c_csr) = model(x)  # grad enabled, values trainable: the CSR path
    torch.testing.assert_close(out_view, out_csr.detach(), **TOL32)
    torch.testing.assert_close(h_view, h_csr.detach(), **TOL32)
    torch.testing.assert_close(c_view, c_csr.detach(), **TOL32)
    out_csr.sum().backward()
    assert w_hh.values.grad is not None and bool(w_hh.values.grad.abs().sum() > 0)


def test_sliced_view_follows_value_and_pattern_changes():
    torch.manual_seed(1)
    model = SparseLSTM(16, 24, density=0.4)
    w_hh = model.weight_hh_l0
    x = torch.randn(5, 1, 16)

    def check():
        with torch.no_grad():
            got = model(x)[0]
        torch.set_grad_enabled(True)
        want = model(x)[0].detach()  # the CSR path
        torch.testing.assert_close(got, want, **TOL32)

    check()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x)[0].square().sum().backward()
    opt.step()  # in place: the values' version moves
    check()
    # A new pattern (same nnz, other columns): the layout is rebuilt.
    values, row_ptr, col_idx = w_hh.values.detach().clone(), w_hh.row_ptr.clone(), w_hh.col_idx.clone()
    g = torch.Generator().manual_seed(5)
    perm_rows = [torch.randperm(24, generator=g)[: int(row_ptr[r + 1] - row_ptr[r])].sort().values
                 for r in range(row_ptr.numel() - 1)]
    w_hh.set_pattern(row_ptr, torch.cat(perm_rows).to(torch.int32), values)
    check()


def test_bad_sliced_view_is_rejected():
    hidden = 13
    values, row_ptr, col_idx = _lstm_weight(hidden, 3)
    gates, h0, c0 = torch.randn(2, 1, 4 * hidden), torch.randn(1, hidden), torch.randn(1, hidden)
    layout = csr.sliced_layout(row_ptr, col_idx, hidden, pad_col=hidden)
    view = (csr.sliced_values(values, layout), layout.cols, layout.slice_ptr)
    csc = csr.csr_transpose(row_ptr, col_idx, hidden)
    call = lambda v, **kw: ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, hh_sliced=v, **kw)
    with pytest.raises(TypeError, match="hh_sliced must be"):
        call(view[:2])
    with pytest.raises(ValueError, match="int64 slice_ptr"):
        call((view[0], view[1], view[2].to(torch.int32)))
    with pytest.raises(ValueError, match="CPU's float32 kernels only"):
        ops.lstm_layer(gates.double(), h0.double(), c0.double(), values.double(), row_ptr, col_idx, csc,
                       hh_sliced=view)
    # The op itself (no Python checks): broken offsets, a column out of range, a partial view.
    op = torch.ops.sparse_kernels.lstm_layer
    sizes = torch.full((2,), 1, dtype=torch.int64)
    args = (gates, h0, c0, values, row_ptr, col_idx, None, None, None, sizes, False)
    bad_ptr = view[2].clone()
    bad_ptr[1] += 1
    with pytest.raises(RuntimeError, match="steps of 8"):
        op(*args, hh_sliced_values=view[0], hh_sliced_cols=view[1], hh_slice_ptr=bad_ptr)
    bad_cols = view[1].clone()
    bad_cols[0] = hidden + 1
    with pytest.raises(RuntimeError, match="hh_sliced_cols.*must hold values in"):
        op(*args, hh_sliced_values=view[0], hh_sliced_cols=bad_cols, hh_slice_ptr=view[2])
    with pytest.raises(RuntimeError, match="all or none"):
        op(*args, hh_sliced_values=view[0], hh_slice_ptr=view[2])


@pytest.mark.parametrize("form", FORMS)
def test_opcheck_lstm_layer_with_sliced_view(form):
    hidden = 13
    values, row_ptr, col_idx = _lstm_weight(hidden, 4)
    g = torch.Generator().manual_seed(9)
    gates = torch.randn(3, 1, 4 * hidden, generator=g, requires_grad=True)
    h0, c0 = torch.randn(1, hidden, generator=g), torch.randn(1, hidden, generator=g)
    view = sliced_view_of(values, row_ptr, col_idx, hidden, hidden, form)
    sizes = torch.full((3,), 1, dtype=torch.int64)
    args = (gates, h0, c0, values.requires_grad_(), row_ptr, col_idx, None, None, None, sizes, False)
    kwargs = dict(hh_sliced_values=view[0], hh_sliced_cols=view[1], hh_slice_ptr=view[2])
    torch.library.opcheck(torch.ops.sparse_kernels.lstm_layer.default, args, kwargs)


def test_torch_compile_batch1_inference_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(2)
    model = SparseLSTM(12, 20, num_layers=2, density=0.3).eval()
    compiled = torch.compile(model)
    x = torch.randn(6, 1, 12)
    with torch.no_grad():
        want = model(x)
        got = compiled(x)
        assert model.weight_hh_l1._sliced is not None  # the view was built and passed
        # After an in-place change of the values, the compiled model reads the new ones.
        model.weight_hh_l1.values.mul_(0.5)
        want2, got2 = model(x), compiled(x)
    for a, b in ((got[0], want[0]), (got[1][0], want[1][0]), (got[1][1], want[1][1]), (got2[0], want2[0])):
        torch.testing.assert_close(a, b, **TOL32)
    assert not torch.allclose(want[0], want2[0])


def test_inference_mode_then_training_then_inference_mode():
    # The view built under torch.inference_mode() serves no_grad calls later,
    # and a training step in between is noticed.
    torch.manual_seed(3)
    model = SparseLSTM(16, 24, num_layers=2, density=0.3)
    x = torch.randn(5, 1, 16)
    with torch.inference_mode():
        first = model(x)[0]
    # Built as ordinary tensors all the same: the op caches its checks of those (not of inference tensors).
    assert not any(t.is_inference() for t in model.weight_hh_l0._sliced)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], first, **TOL32)
    out = model(x)[0]
    torch.testing.assert_close(out.detach(), first, **TOL32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out.square().sum().backward()
    opt.step()
    with torch.inference_mode():
        after = model(x)[0]
    torch.testing.assert_close(after, model(x)[0].detach(), **TOL32)
    assert not torch.allclose(after, first)
