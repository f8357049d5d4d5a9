"""The persistent whole-sequence LSTM forward (csrc/cuda/lstm_persistent.cu):
W_hh split over the blocks of one cooperative launch, held in shared memory,
one grid.sync() per step. Run through the CUDA emulator (all blocks of a
cooperative launch as concurrent fibers, a real grid barrier) and compared
with the Python oracle reference.lstm_layer; on a GPU, the lstm_layer op
(which takes this path when W_hh fits) against the CPU op."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import TOL
from emu import emulated
from sparse_kernels import csr, ops, reference

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler to build the CUDA emulator")


def _lstm_problem(steps, batch, hidden, density, dtype, seed, batch_sizes=None):
    g = torch.Generator().manual_seed(seed)
    row_ptr, col_idx = csr.random_csr((4 * hidden, hidden), density, init="erdos_renyi", generator=g)
    values = torch.randn(col_idx.numel(), generator=g, dtype=torch.float64) * 0.5
    input_gates = torch.randn(steps, batch, 4 * hidden, generator=g, dtype=torch.float64)
    h0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64)
    c0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64)
    sizes = torch.full((steps,), batch, dtype=torch.int64) if batch_sizes is None else torch.tensor(batch_sizes)
    cast = lambda t: t.to(dtype)
    return dict(input_gates=cast(input_gates), h0=cast(h0), c0=cast(c0), values=cast(values), row_ptr=row_ptr,
                col_idx=col_idx, batch_sizes=sizes)


def _reference(p, reverse):
    """The oracle on the same (possibly rounded) inputs, in float64, plus the
    pre-activations and cells it implies (the tensors saved for backward)."""
    d = {k: (v.double() if v.is_floating_point() else v) for k, v in p.items()}
    output, h_n, c_n = reference.lstm_layer(d["input_gates"], d["h0"], d["c0"], d["values"], d["row_ptr"],
                                            d["col_idx"], d["batch_sizes"], reverse)
    return output, h_n, c_n


def _check(got, want, dtype):
    if dtype in (torch.float16, torch.bfloat16):
        # 16-bit storage of h and c between steps (fp32 inside a step).
        torch.testing.assert_close(got.double(), want, rtol=0.05, atol=0.02)
    else:
        torch.testing.assert_close(got.double(), want, **{k: v * 10 for k, v in TOL[dtype].items()})


# (steps, batch, hidden, density, batch_sizes, max_blocks): several blocks,
# batch tiles with a tail (batch 5 over tiles of 4), sequence length 1, one
# unit, empty rows (low density), nnz = 0, packed sequences with decreasing
# batch sizes and a step with none, more blocks asked for than units.
CASES = [
    (4, 5, 24, 0.3, None, 3),
    (1, 3, 17, 0.5, None, 4),          # sequence length 1
    (3, 2, 1, 1.0, None, 2),           # one unit (blocks capped at hidden)
    (3, 4, 20, 0.05, None, 5),         # mostly empty rows
    (3, 2, 9, 0.0, None, 3),           # nnz = 0: h = cell(input gates)
    (5, 6, 16, 0.4, [6, 5, 3, 3, 0], 4),  # packed, a step with no rows
    (2, 1, 40, 0.9, None, 8),          # batch 1, long rows
]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"T{c[0]}-B{c[1]}-H{c[2]}-d{c[3]}-bs{c[4]}-g{c[5]}")
def test_persistent_forward_matches_reference(case, reverse):
    steps, batch, hidden, density, batch_sizes, max_blocks = case
    p = _lstm_problem(steps, batch, hidden, density, torch.float64, seed=100 * steps + hidden, batch_sizes=batch_sizes)
    kernels = emulated.load()
    output, h_n, c_n, gates, cells, (blocks, smem) = kernels.lstm_persistent_forward(
        p["input_gates"], p["h0"], p["c0"], p["values"], p["row_ptr"], p["col_idx"], p["batch_sizes"], reverse,
        max_blocks)
    assert blocks == min(max_blocks, hidden)
    want_output, want_h, want_c = _reference(p, reverse)
    _check(output, want_output, torch.float64)
    _check(h_n, want_h, torch.float64)
    _check(c_n, want_c, torch.float64)
    # The saved tensors: cells are the c of each active step; the gates the
    # pre-activations input + W_hh h_prev (checked through the cell).
    active = torch.arange(batch)[None, :] < p["batch_sizes"][:, None]
    assert torch.equal(cells[~active], torch.zeros_like(cells[~active]))
    assert torch.equal(gates[~active], torch.zeros_like(gates[~active]))
    for t in range(steps):
        b = int(p["batch_sizes"][t])
        prev = t + 1 if reverse else t - 1
        # Rows active at the previous step carry its cell; the others c0.
        carried = int(p["batch_sizes"][prev]) if 0 <= prev < steps else 0
        c_prev = p["c0"][:b] if carried == 0 else torch.cat([cells[prev, :min(b, carried)], p["c0"][min(b, carried):b]])
        h_t, c_t = reference.lstm_cell(gates[t, :b], c_prev)
        _check(c_t, cells[t, :b].double(), torch.float64)
        _check(h_t, output[t, :b].double(), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_persistent_forward_value_types(dtype):
    p = _lstm_problem(3, 5, 21, 0.4, dtype, seed=7)
    output, h_n, c_n, *_ = emulated.load().lstm_persistent_forward(
        p["input_gates"], p["h0"], p["c0"], p["values"], p["row_ptr"], p["col_idx"], p["batch_sizes"], False, 4)
    want_output, want_h, want_c = _reference(p, False)
    _check(output, want_output, dtype)
    _check(h_n, want_h, dtype)
    _check(c_n, want_c, dtype)


@pytest.mark.parametrize("schedule", ["reverse", "shuffled"])
def test_persistent_forward_under_other_schedules(schedule):
    """Blocks and threads interleave differently between barriers: a race on
    h (one buffer instead of two) or on shared memory would show here."""
    kernels = emulated.load()
    p = _lstm_problem(4, 3, 18, 0.4, torch.float64, seed=11)
    want_output, want_h, want_c = _reference(p, False)
    try:
        for seed in range(2):
            kernels.set_schedule(schedule, seed)
            output, h_n, c_n, *_ = kernels.lstm_persistent_forward(
                p["input_gates"], p["h0"], p["c0"], p["values"], p["row_ptr"], p["col_idx"], p["batch_sizes"],
                False, 3)
            _check(output, want_output, torch.float64)
            _check(c_n, want_c, torch.float64)
    finally:
        kernels.set_schedule("forward")


def test_plan_balances_nonzeros_and_sizes_shared_memory():
    """The split of W_hh: contiguous unit ranges, at least one unit each, about
    equal nonzeros (the long rows of a skewed matrix do not all land in one
    block), and shared memory for the largest block's rows."""
    hidden, blocks = 64, 4
    g = torch.Generator().manual_seed(3)
    dense = torch.rand(4 * hidden, hidden, generator=g) < 0.1
    dense[:, :] |= (torch.arange(hidden) < 16)[None, :].expand(4 * hidden, hidden) & (
        torch.arange(4 * hidden) % hidden < 16)[:, None]  # units 0..15 have long rows
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), dense.sum(1).cumsum(0)]).to(torch.int32)
    col_idx = dense.nonzero()[:, 1].to(torch.int32)
    p = dict(input_gates=torch.randn(2, 1, 4 * hidden, dtype=torch.float64), h0=torch.randn(1, hidden, dtype=torch.float64),
             c0=torch.randn(1, hidden, dtype=torch.float64), values=torch.randn(col_idx.numel(), dtype=torch.float64),
             row_ptr=row_ptr, col_idx=col_idx, batch_sizes=torch.tensor([1, 1]))
    *_, (got_blocks, smem) = emulated.load().lstm_persistent_forward(
        p["input_gates"], p["h0"], p["c0"], p["values"], p["row_ptr"], p["col_idx"], p["batch_sizes"], False, blocks)
    assert got_blocks == blocks
    unit_nnz = (dense.view(4, hidden, hidden).sum(dim=(0, 2)) + 1).tolist()
    # The largest block holds at most its fair share plus one unit's worth.
    fair = sum(unit_nnz) / blocks + max(unit_nnz)
    per_value = 8 + 2  # float64 value + uint16 column
    assert smem <= fair * per_value + 4 * (4 * hidden + 1) + 32
    assert smem >= sum(unit_nnz) / blocks * per_value - hidden  # at least an even share of the rows


def test_cooperative_launch_too_large_is_reported():
    """More blocks than the (emulated) device can hold at once: the launch
    fails with cudaErrorCooperativeLaunchTooLarge (720), which the op turns
    into the per-step path, instead of hanging at the first grid.sync()."""
    p = _lstm_problem(2, 1, 100, 0.2, torch.float64, seed=5)
    with pytest.raises(emulated.EmulatorError, match="error 720.*cooperative"):
        emulated.load().lstm_persistent_forward(p["input_gates"], p["h0"], p["c0"], p["values"], p["row_ptr"],
                                                p["col_idx"], p["batch_sizes"], False, 100)


def test_planted_missing_grid_barrier_is_caught():
    """lstm_persistent.cu built with its barriers removed (grid.sync() and
    __syncthreads): blocks then read h before the other blocks wrote it, and
    the result must differ from the faithful build's."""
    p = _lstm_problem(4, 2, 24, 0.5, torch.float64, seed=9)
    args = (p["input_gates"], p["h0"], p["c0"], p["values"], p["row_ptr"], p["col_idx"], p["batch_sizes"], False, 4)
    want_output, *_ = _reference(p, False)
    good, *_ = emulated.load().lstm_persistent_forward(*args)
    _check(good, want_output, torch.float64)
    bad, *_ = emulated.load(plant_missing_barrier="lstm_persistent.cu").lstm_persistent_forward(*args)
    assert not torch.allclose(bad, want_output, equal_nan=False), "the missing grid barrier went unnoticed"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("hidden,density", [(64, 0.3), (512, 0.1), (1024, 0.05)])
def test_cuda_lstm_layer_matches_cpu(hidden, density):
    """On a GPU: the lstm_layer op (persistent path where W_hh fits on chip)
    against the CPU op, forward and backward."""
    p = _lstm_problem(6, 3, hidden, density, torch.float32, seed=hidden)
    names = ("input_gates", "h0", "c0", "values")
    results = {}
    for device in ("cpu", "cuda"):
        leaves = [p[k].to(device).requires_grad_() for k in names]
        row_ptr, col_idx = p["row_ptr"].to(device), p["col_idx"].to(device)
        csc = csr.csr_transpose(row_ptr, col_idx, hidden)
        output, h_n, c_n = ops.lstm_layer(*leaves[:3], leaves[3], row_ptr, col_idx, csc)
        (output.square().sum() + h_n.sum() + c_n.sum()).backward()
        results[device] = [output, h_n, c_n] + [leaf.grad for leaf in leaves]
    for got, want in zip(results["cuda"], results["cpu"]):
        torch.testing.assert_close(got.detach().cpu(), want.detach(), atol=1e-4, rtol=1e-3)
