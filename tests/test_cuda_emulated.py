"""Every CUDA kernel of csrc/cuda/, compiled for the CPU through the CUDA
emulator (tests/emu/) and run on fresh random inputs against the references;
the emulator's own semantics; a planted missing barrier that must be caught.

On a machine with a GPU the same cases also run through the real CUDA ops
(backend "cuda"); without one only the emulated backend exists, so nothing
is skipped for lack of a GPU here."""

from __future__ import annotations

import ctypes
import re
import shutil

import pytest
import torch

from conftest import TOL, random_problem
from emu import emulated
from sparse_kernels import csr, reference

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler to build the CUDA emulator")

_ops = torch.ops.sparse_kernels


class CudaOps:
    """The real CUDA ops, with the emulated backend's call signatures."""

    def sparse_linear(self, x, values, row_ptr, col_idx, bias=None):
        empty = row_ptr.new_empty(0)
        return _ops.sparse_linear(x, values, row_ptr, col_idx, empty, empty, empty, bias)

    def __getattr__(self, name):
        return getattr(_ops, name)


BACKENDS = ["emulated"] + (["cuda"] if torch.cuda.is_available() else [])
SCHEDULES = ["forward", "reverse", "shuffled"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "emulated":
        return "cpu", emulated.load()
    return "cuda", CudaOps()


# (N, out, in, density): partial warps and subwarps (odd sizes), batch tails
# (N not a multiple of the batch tile), empty rows, nnz = 0, N = 0, one row,
# one column, long rows (several 32-wide chunks), and mean row lengths that
# select each subwarp width (4, 8, 16, 32 lanes).
SHAPES = [
    (5, 37, 20, 0.15),    # ~3 per row: 4 lanes, some empty rows
    (7, 33, 40, 0.2),     # ~8 per row: 8 lanes
    (3, 17, 50, 0.3),     # ~15 per row: 16 lanes
    (9, 12, 90, 0.5),     # ~45 per row: 32 lanes, N split over the SDDMM warps
    (2, 1, 300, 1.0),     # one row, long: 300 nonzeros
    (1, 300, 1, 1.0),     # one column, 300 one-entry rows
    (6, 40, 3, 0.05),     # mostly empty rows
    (4, 6, 5, 0.0),       # nnz = 0
    (0, 8, 4, 0.5),       # N = 0
    (1, 5, 7, 0.6),       # N = 1
]
_ids = [f"N{n}-{o}x{i}-d{d}" for n, o, i, d in SHAPES]


def _problem(shape, dtype, device, seed):
    """Erdős–Rényi patterns: row lengths vary, some rows are empty."""
    n, out_f, in_f, density = shape
    return random_problem(n, out_f, in_f, density, dtype=dtype, device=device, seed=seed, init="erdos_renyi")


def _close(got, want, dtype):
    torch.testing.assert_close(got.cpu(), want.cpu(), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_sparse_linear(backend, shape, dtype):
    device, kernels = backend
    p = _problem(shape, dtype, device, seed=11)
    for bias in (p["bias"], None):
        y = kernels.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], bias)
        want = reference.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["shape"], bias)
        _close(y, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("op", ["sparse_linear_input_grad", "sparse_linear_value_grad"])
def test_sparse_linear_gradients(backend, op, shape, dtype):
    device, kernels = backend
    p = _problem(shape, dtype, device, seed=12)
    grad_y = torch.randn(p["x"].shape[0], p["shape"][0], dtype=dtype, device=device)
    if op == "sparse_linear_input_grad":
        csc = csr.csr_transpose(p["row_ptr"], p["col_idx"], p["shape"][1])
        got = kernels.sparse_linear_input_grad(grad_y, p["values"], csc.col_ptr, csc.row_idx, csc.csr2csc)
        want = reference.sparse_linear_input_grad(grad_y, p["values"], p["row_ptr"], p["col_idx"], p["shape"])
    else:
        got = kernels.sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"])
        want = reference.sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"])
    _close(got, want, dtype)


def _by_decreasing_length(ptr):
    return torch.argsort(ptr.diff(), descending=True, stable=True).to(torch.int32)


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[3], SHAPES[6]], ids=lambda s: f"N{s[0]}-{s[1]}x{s[2]}")
def test_rows_taken_in_length_order(shape):
    """Sputnik's row ordering (longest rows first) changes which subwarp takes
    which row, never the result (emulated launchers; the op does not pass an
    order yet)."""
    kernels = emulated.load()
    p = _problem(shape, torch.float64, "cpu", seed=17)
    order = _by_decreasing_length(p["row_ptr"])
    assert not torch.equal(order, torch.arange(order.numel(), dtype=torch.int32))  # a real permutation
    y = kernels.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["bias"], row_order=order)
    _close(y, reference.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["shape"], p["bias"]),
           torch.float64)
    csc = csr.csr_transpose(p["row_ptr"], p["col_idx"], p["shape"][1])
    grad_y = torch.randn(p["x"].shape[0], p["shape"][0], dtype=torch.float64)
    gx = kernels.sparse_linear_input_grad(grad_y, p["values"], csc.col_ptr, csc.row_idx, csc.csr2csc,
                                          col_order=_by_decreasing_length(csc.col_ptr))
    _close(gx, reference.sparse_linear_input_grad(grad_y, p["values"], p["row_ptr"], p["col_idx"], p["shape"]),
           torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_vector_loads_and_their_unaligned_fallback(dtype):
    """Aligned index and value arrays take the 4-wide vector-load kernel, a
    view at an odd offset the scalar one; both give the reference result."""
    kernels = emulated.load()
    p = _problem((5, 20, 200, 0.3), torch.float64, "cpu", seed=18)
    x, values = p["x"].to(dtype), p["values"].to(dtype)
    want = reference.sparse_linear(x.double(), values.double(), p["row_ptr"], p["col_idx"], p["shape"])
    check = _close16 if dtype == torch.bfloat16 else (lambda got, w, d: _close(got, w.to(d), d))
    y = kernels.sparse_linear(x, values, p["row_ptr"], p["col_idx"])
    assert re.search(r"csr_spmm_kernel<[^,]+, int, 16, 4, 4>", kernels.last_kernel())  # 60 per row: 16 lanes x 4
    check(y, want, dtype)
    shifted_values = torch.cat([values.new_zeros(1), values])[1:]
    shifted_cols = torch.cat([p["col_idx"].new_zeros(1), p["col_idx"]])[1:]
    y = kernels.sparse_linear(x, shifted_values, p["row_ptr"], shifted_cols)
    assert re.search(r"csr_spmm_kernel<[^,]+, int, 32, 4, 1>", kernels.last_kernel())
    check(y, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_16bit_indices(dtype):
    """uint16 column (and CSC row) indices, with indices above 32767 so that a
    signed reading would show, through the vector and the scalar paths."""
    kernels = emulated.load()
    p = _problem((3, 70, 40000, 0.002), torch.float64, "cpu", seed=19)
    x, values = p["x"].to(dtype), p["values"].to(dtype)
    assert int(p["col_idx"].max()) > 32767
    want = reference.sparse_linear(x.double(), values.double(), p["row_ptr"], p["col_idx"], p["shape"])
    check = _close16 if dtype == torch.bfloat16 else (lambda got, w, d: _close(got, w.to(d), d))
    aligned = p["col_idx"].to(torch.uint16)
    shifted = torch.cat([aligned.new_zeros(1), aligned])[1:]
    for cols, vec in ((aligned, 4), (shifted, 1)):
        check(kernels.sparse_linear(x, values, p["row_ptr"], cols), want, dtype)
        assert re.search(rf"csr_spmm_kernel<[^,]+, unsigned short, \d+, 4, {vec}>", kernels.last_kernel())
    # Input gradient of a 40000 x 70 weight: its CSC rows index the 40000 outputs.
    q = _problem((3, 40000, 70, 0.002), torch.float64, "cpu", seed=20)
    csc = csr.csr_transpose(q["row_ptr"], q["col_idx"], 70)
    grad_y = torch.randn(3, 40000, dtype=torch.float64).to(dtype)
    values = q["values"].to(dtype)
    got = kernels.sparse_linear_input_grad(grad_y, values, csc.col_ptr, csc.row_idx.to(torch.uint16), csc.csr2csc)
    check(got, reference.sparse_linear_input_grad(grad_y.double(), values.double(), q["row_ptr"], q["col_idx"],
                                                   q["shape"]), dtype)


CELL_SHAPES = [(1, 1), (3, 7), (5, 33), (2, 300), (0, 4)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,hidden", CELL_SHAPES)
def test_lstm_cell_forward_and_backward(backend, n, hidden, dtype):
    device, kernels = backend
    g = torch.Generator().manual_seed(14)
    gates = torch.randn(n, 4 * hidden, generator=g, dtype=dtype).to(device).requires_grad_()
    c_prev = torch.randn(n, hidden, generator=g, dtype=dtype).to(device).requires_grad_()
    h, c = kernels.lstm_cell(gates, c_prev)
    h_ref, c_ref = reference.lstm_cell(gates, c_prev)
    _close(h, h_ref, dtype)
    _close(c, c_ref, dtype)
    grad_h = torch.randn(n, hidden, generator=g, dtype=dtype).to(device)
    grad_c = torch.randn(n, hidden, generator=g, dtype=dtype).to(device)
    grad_gates, grad_c_prev = kernels.lstm_cell_backward(grad_h, grad_c, gates, c_prev, c_ref.detach())
    want_gates, want_c_prev = torch.autograd.grad((h_ref, c_ref), (gates, c_prev), (grad_h, grad_c))
    _close(grad_gates, want_gates, dtype)
    _close(grad_c_prev, want_c_prev, dtype)


# The GRU, Elman and highway cells are not ops of their own (their layer ops
# call them inside the time loop; on a GPU those run in the layer tests), so
# their kernels are checked here through the emulator against autograd on the
# references.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,hidden", CELL_SHAPES)
def test_gru_cell_forward_and_backward(n, hidden, dtype):
    kernels = emulated.load()
    g = torch.Generator().manual_seed(15)
    ig, hg = (torch.randn(n, 3 * hidden, generator=g, dtype=dtype).requires_grad_() for _ in range(2))
    h_prev = torch.randn(n, hidden, generator=g, dtype=dtype).requires_grad_()
    h_ref = reference.gru_cell(ig, hg, h_prev)
    _close(kernels.gru_cell(ig, hg, h_prev), h_ref, dtype)
    grad_h = torch.randn(n, hidden, generator=g, dtype=dtype)
    got = kernels.gru_cell_backward(grad_h, ig, hg, h_prev)
    # dh_prev: the direct path z * grad_h (the path through hg is W_hh's product, outside the cell).
    for got_grad, want in zip(got, torch.autograd.grad(h_ref, (ig, hg, h_prev), grad_h)):
        _close(got_grad, want, dtype)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,hidden", CELL_SHAPES)
def test_rnn_cell_forward_and_backward(n, hidden, dtype, nonlinearity):
    kernels = emulated.load()
    g = torch.Generator().manual_seed(16)
    pre = torch.randn(n, hidden, generator=g, dtype=dtype).requires_grad_()
    h_ref = reference.rnn_cell(pre, nonlinearity)
    relu = nonlinearity == "relu"
    h = kernels.rnn_cell(pre, relu)
    _close(h, h_ref, dtype)
    grad_h = torch.randn(n, hidden, generator=g, dtype=dtype)
    (want,) = torch.autograd.grad(h_ref, pre, grad_h)
    _close(kernels.rnn_cell_backward(grad_h, h_ref.detach(), relu), want, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,hidden", CELL_SHAPES)
def test_rhn_cell_forward_and_backward(n, hidden, dtype):
    kernels = emulated.load()
    g = torch.Generator().manual_seed(17)
    pre = torch.randn(n, 2 * hidden, generator=g, dtype=dtype).requires_grad_()
    s_prev = torch.randn(n, hidden, generator=g, dtype=dtype).requires_grad_()
    s_ref = reference.rhn_cell(pre, s_prev)
    _close(kernels.rhn_cell(pre, s_prev), s_ref, dtype)
    grad_s = torch.randn(n, hidden, generator=g, dtype=dtype)
    got_pre, got_s_prev = kernels.rhn_cell_backward(grad_s, pre, s_prev)
    want_pre, want_s_prev = torch.autograd.grad(s_ref, (pre, s_prev), grad_s)
    _close(got_pre, want_pre, dtype)
    _close(got_s_prev, want_s_prev, dtype)  # the carry path (1 - t) grad_s


# ----------------------------------------------------------------------------- 16-bit values
# Output rounding to the 16-bit type (2 half-ulps) on top of an fp32-accumulated
# result; accumulating in the 16-bit type would miss this on the long rows.
HALF_RTOL = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def _close16(got, want64, dtype):
    torch.testing.assert_close(got.cpu().double(), want64.cpu(), rtol=HALF_RTOL[dtype], atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[3], SHAPES[4], SHAPES[5]], ids=lambda s: f"N{s[0]}-{s[1]}x{s[2]}")
def test_16bit_values_with_fp32_accumulation(backend, shape, dtype):
    """fp16/bf16 inputs, compared with the float64 reference on the same
    (rounded) inputs."""
    device, kernels = backend
    p = _problem(shape, torch.float64, "cpu", seed=15)
    x, values, bias = (p[k].to(dtype) for k in ("x", "values", "bias"))
    x64, values64, bias64 = (t.double() for t in (x, values, bias))
    grad_y = torch.randn(x.shape[0], p["shape"][0], dtype=torch.float64).to(dtype)
    rp, ci = p["row_ptr"].to(device), p["col_idx"].to(device)
    on = lambda t: t.to(device)
    _close16(kernels.sparse_linear(on(x), on(values), rp, ci, on(bias)),
             reference.sparse_linear(x64, values64, p["row_ptr"], p["col_idx"], p["shape"], bias64), dtype)
    csc = csr.csr_transpose(p["row_ptr"], p["col_idx"], p["shape"][1])
    _close16(kernels.sparse_linear_input_grad(on(grad_y), on(values), on(csc.col_ptr), on(csc.row_idx), on(csc.csr2csc)),
             reference.sparse_linear_input_grad(grad_y.double(), values64, p["row_ptr"], p["col_idx"], p["shape"]), dtype)
    _close16(kernels.sparse_linear_value_grad(on(grad_y), on(x), rp, ci),
             reference.sparse_linear_value_grad(grad_y.double(), x64, p["row_ptr"], p["col_idx"]), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_lstm_cell(backend, dtype):
    device, kernels = backend
    g = torch.Generator().manual_seed(16)
    gates = torch.randn(3, 4 * 37, generator=g).to(dtype)
    c_prev = torch.randn(3, 37, generator=g).to(dtype)
    gates64, c_prev64 = gates.double().requires_grad_(), c_prev.double().requires_grad_()
    h, c = kernels.lstm_cell(gates.to(device), c_prev.to(device))
    h_ref, c_ref = reference.lstm_cell(gates64, c_prev64)
    _close16(h, h_ref.detach(), dtype)
    _close16(c, c_ref.detach(), dtype)
    grad_h = torch.randn(3, 37, generator=g).to(dtype)
    grad_c = torch.randn(3, 37, generator=g).to(dtype)
    # The backward reads c as stored (rounded to the 16-bit type): so does the reference.
    c_stored = c_ref.detach().to(dtype)
    got_gates, got_c_prev = kernels.lstm_cell_backward(*(t.to(device) for t in (grad_h, grad_c, gates, c_prev, c_stored)))
    i, f, gg, o = (t for t in gates64.detach().chunk(4, dim=1))
    si, sf, tg, so = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(gg), torch.sigmoid(o)
    tc = torch.tanh(c_stored.double())
    dc = grad_c.double() + grad_h.double() * so * (1 - tc * tc)
    want_gates = torch.cat([dc * tg * si * (1 - si), dc * c_prev64.detach() * sf * (1 - sf),
                            dc * si * (1 - tg * tg), grad_h.double() * tc * so * (1 - so)], dim=1)
    _close16(got_gates, want_gates, dtype)
    _close16(got_c_prev, dc * sf, dtype)


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_kernels_agree_under_every_thread_schedule(schedule):
    """The fibers of a block run in forward, reverse or shuffled order between
    synchronisation points: a correct kernel gives the same result under all."""
    kernels = emulated.load()
    try:
        for seed in range(3):
            kernels.set_schedule(schedule, seed)
            p = _problem((9, 33, 70, 0.4), torch.float64, "cpu", seed=20 + seed)
            grad_y = torch.randn(9, 33, dtype=torch.float64)
            y = kernels.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["bias"])
            _close(y, reference.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["shape"], p["bias"]),
                   torch.float64)
            gv = kernels.sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"])
            _close(gv, reference.sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"]), torch.float64)
    finally:
        kernels.set_schedule("forward")


# ----------------------------------------------------------------------------- planted bug
def test_planted_missing_barrier_is_caught():
    """sparse_linear_value_grad.cu compiled with its __syncthreads removed (a
    variant built only for this test) must give wrong results in the emulator,
    while the faithful build of the same source is right on the same input."""
    p = _problem((9, 12, 90, 0.5), torch.float64, "cpu", seed=30)
    grad_y = torch.randn(9, 12, dtype=torch.float64)
    want = reference.sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"])
    good = emulated.load().sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"])
    _close(good, want, torch.float64)
    planted = emulated.load(plant_missing_barrier="sparse_linear_value_grad.cu")
    bad = planted.sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"])
    assert not torch.allclose(bad, want, equal_nan=False), "the missing barrier went unnoticed"


# ----------------------------------------------------------------------------- the emulator itself
def _lib():
    return emulated.load()._lib


def _int_buffer(n):
    return (ctypes.c_int * n)()


def _expected_shuffle(op, param, width, lane):
    base = lane - lane % width
    if op == "shfl":
        src = base + param % width
    elif op == "up":
        src = lane - param if lane - base >= param else lane
    elif op == "down":
        src = lane + param if lane - base + param < width else lane
    else:
        src = lane ^ param
        src = src if src < base + width else lane
    return 1000 + src


@pytest.mark.parametrize("op", ["shfl", "up", "down", "xor"])
@pytest.mark.parametrize("param,width", [(0, 32), (1, 32), (5, 32), (3, 8), (1, 4), (7, 16), (16, 32)])
def test_emulated_shuffles_follow_cuda_semantics(op, param, width):
    """Per the CUDA programming guide: results for 64 threads (two warps)."""
    out = _int_buffer(64)
    code = {"shfl": 0, "up": 1, "down": 2, "xor": 3}[op]
    assert _lib().sk_emu_selftest_shuffle(code, param, width, 64, out) == 0
    for t in range(64):
        lane = t % 32
        assert out[t] == _expected_shuffle(op, param, width, lane) + (t - lane), (t, op, param, width)


def test_emulated_votes():
    pred = (ctypes.c_int * 32)(*[(i * 7) % 3 == 0 for i in range(32)])
    ballot, any_, all_ = (ctypes.c_uint * 32)(), _int_buffer(32), _int_buffer(32)
    assert _lib().sk_emu_selftest_vote(pred, ballot, any_, all_) == 0
    want = sum(1 << i for i in range(32) if pred[i])
    assert list(ballot) == [want] * 32 and list(any_) == [1] * 32 and list(all_) == [0] * 32
    ones = (ctypes.c_int * 32)(*([1] * 32))
    assert _lib().sk_emu_selftest_vote(ones, ballot, any_, all_) == 0
    assert list(all_) == [1] * 32 and list(ballot) == [0xFFFFFFFF] * 32


def test_emulated_atomics_and_block_barrier_reduction():
    counter, total = ctypes.c_int(0), ctypes.c_float(0.0)
    assert _lib().sk_emu_selftest_atomic(3, 96, ctypes.byref(counter), ctypes.byref(total)) == 0
    assert counter.value == 3 * 96 and total.value == pytest.approx(0.5 * 3 * 96)
    data = torch.randn(4 * 128)
    out = torch.full((4,), float("nan"))
    for schedule in SCHEDULES:
        emulated.load().set_schedule(schedule, 1)
        assert _lib().sk_emu_selftest_block_sum(4, ctypes.c_void_p(data.data_ptr()), ctypes.c_void_p(out.data_ptr())) == 0
        torch.testing.assert_close(out, data.view(4, 128).sum(1))
    emulated.load().set_schedule("forward")


def test_unwritten_shared_memory_reads_as_nan():
    out = torch.zeros(64)
    assert _lib().sk_emu_selftest_shared_unwritten(ctypes.c_void_p(out.data_ptr())) == 0
    assert torch.isnan(out).all()


@pytest.mark.parametrize("which,threads,message", [
    (0, 32, "which has exited"),
    (1, 48, "does not exist in this block"),
    (2, 64, "waits at __syncthreads"),
    (3, 32, "cannot make progress"),
])
def test_emulator_reports_device_faults(which, threads, message):
    lib = _lib()
    out = _int_buffer(64)
    assert lib.sk_emu_selftest_fault(which, threads, out) != 0
    assert message in lib.sk_emu_last_error_message().decode()


def test_emulator_grid_barrier_of_a_cooperative_launch():
    """All blocks of a cooperative launch are resident at once: a value one
    block publishes before grid.sync() is seen by its neighbour after it, and
    each block keeps its own dynamic shared memory across the barrier."""
    lib, blocks = _lib(), 5
    published, seen, kept = _int_buffer(blocks), _int_buffer(blocks), _int_buffer(blocks)
    assert lib.sk_emu_selftest_grid_exchange(0, 1, blocks, published, seen, kept) == 0
    assert list(seen) == [100 + (b + 1) % blocks for b in range(blocks)]
    assert list(kept) == [100 + b for b in range(blocks)]


@pytest.mark.parametrize("which,cooperative,message", [
    (0, 0, "not cooperative"),
    (1, 1, "exited while"),
])
def test_emulator_reports_grid_barrier_faults(which, cooperative, message):
    lib = _lib()
    assert lib.sk_emu_selftest_grid_exchange(which, cooperative, 3, _int_buffer(3), _int_buffer(3), _int_buffer(3)) != 0
    assert message in lib.sk_emu_last_error_message().decode()


def test_emulator_rejects_invalid_launch_configuration():
    lib = _lib()
    assert lib.sk_emu_selftest_fault(4, 2048, _int_buffer(1)) == 9  # cudaErrorInvalidConfiguration
    assert "invalid launch configuration" in lib.sk_emu_last_error_message().decode()
