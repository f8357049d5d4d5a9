"""Issue #15: no device-to-host copy or synchronisation inside a forward or a
backward. The persistent CUDA LSTM forward's split of W_hh over the blocks
(lstm_persistent_plan, csrc/cuda/lstm_persistent.h) is made once per
topology and cached with the weight (CSRWeight.persistent_lstm_plan), then
passed to lstm_layer (hh_plan, hh_plan_smem).

Here: the op's plan is the emulated kernel's, the cache is rebuilt exactly
when the topology or the value type changes, lstm_layer takes the plan
(opcheck, bad plans refused), and on a GPU a training step runs under
torch.cuda.set_sync_debug_mode("error")."""

from __future__ import annotations

import shutil

import pytest
import torch

from emu import emulated
from sparse_kernels import CSRWeight, SparseLinear, SparseLSTM, csr, ops

_ops = torch.ops.sparse_kernels


def _w_hh(hidden, density, seed):
    g = torch.Generator().manual_seed(seed)
    row_ptr, col_idx = csr.random_csr((4 * hidden, hidden), density, init="erdos_renyi", generator=g)
    return CSRWeight(torch.randn(col_idx.numel(), generator=g, dtype=torch.float64), row_ptr, col_idx,
                     (4 * hidden, hidden))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler for the emulator")
@pytest.mark.parametrize("hidden,max_blocks", [(37, 5), (9, 16), (64, 3)])
def test_plan_op_is_the_emulated_kernels_plan(hidden, max_blocks):
    """The op runs the planner the emulated persistent forward runs: the same
    block count and shared memory; the units split in contiguous non-empty
    ranges covering [0, hidden)."""
    w = _w_hh(hidden, 0.3, seed=1)
    plan = _ops.lstm_persistent_plan(w.row_ptr, max_blocks, 8)
    assert plan.dtype == torch.int64 and plan.device.type == "cpu"
    smem, unit_start = int(plan[0]), plan[1:]
    assert unit_start[0] == 0 and unit_start[-1] == hidden and bool((unit_start.diff() >= 1).all())
    assert unit_start.numel() - 1 == min(max_blocks, hidden)
    batch, steps = 3, 4
    g = torch.Generator().manual_seed(2)
    gates = torch.randn(steps, batch, 4 * hidden, generator=g, dtype=torch.float64)
    h0, c0 = (torch.randn(batch, hidden, generator=g, dtype=torch.float64) for _ in range(2))
    *_, (blocks, emu_smem) = emulated.load().lstm_persistent_forward(
        gates, h0, c0, w.values.detach(), w.row_ptr, w.col_idx, [batch] * steps, False, max_blocks)
    assert (blocks, emu_smem) == (unit_start.numel() - 1, smem)


@pytest.mark.parametrize("args,message", [
    ((torch.zeros(6, dtype=torch.int32), 4, 4), "4 \\* hidden \\+ 1 entries"),
    ((torch.zeros(5, dtype=torch.int32), 0, 4), "max_blocks"),
    ((torch.zeros(5, dtype=torch.int32), 4, 3), "value_bytes"),
    ((torch.zeros(5, dtype=torch.int64), 4, 4), "int32"),
])
def test_plan_op_refuses_bad_arguments(args, message):
    with pytest.raises(RuntimeError, match=message):
        _ops.lstm_persistent_plan(*args)


def test_plan_cached_per_topology_and_value_type():
    w = _w_hh(20, 0.2, seed=3)
    first = w._cached_lstm_plan(6)
    assert w._cached_lstm_plan(6) is first  # no new plan per call
    unit_start, smem = first
    assert unit_start.dtype == torch.int32 and smem > 0
    assert w._cached_lstm_plan(4) is not first  # another device's SM count
    # A new topology (what DynamicSparsity's rebuild does): a new plan.
    g = torch.Generator().manual_seed(4)
    row_ptr, col_idx = csr.random_csr((80, 20), 0.5, init="erdos_renyi", generator=g)
    w.set_pattern(row_ptr, col_idx, torch.randn(col_idx.numel(), dtype=torch.float64, generator=g))
    second = w._cached_lstm_plan(6)
    assert second is not first
    torch.testing.assert_close(second[0].long(), _ops.lstm_persistent_plan(row_ptr, 6, 8)[1:])
    # An in-place edit of the index bumps its version: a new plan.
    w.row_ptr.add_(0)
    assert w._cached_lstm_plan(6) is not second
    # Values in 4 bytes instead of 8: less shared memory per block.
    w.values.data = w.values.data.float()
    assert w._cached_lstm_plan(6)[1] < second[1]


def test_no_plan_off_cuda():
    assert _w_hh(8, 0.3, seed=5).persistent_lstm_plan() is None


def _layer_args(hidden=6, batch=3, steps=4, seed=6):
    w = _w_hh(hidden, 0.4, seed)
    g = torch.Generator().manual_seed(seed + 1)
    gates = torch.randn(steps, batch, 4 * hidden, generator=g, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(batch, hidden, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    return w, gates, h0, c0


def test_lstm_layer_takes_a_plan_and_checks_it():
    """On the CPU the plan is not read: the same results with and without it;
    a malformed plan is refused before any kernel, naming hh_plan."""
    w, gates, h0, c0 = _layer_args()
    csc = w.transposed_index()
    plan = w._cached_lstm_plan(2)
    with_plan = ops.lstm_layer(gates, h0, c0, w.values, w.row_ptr, w.col_idx, csc, hh_plan=plan)
    without = ops.lstm_layer(gates, h0, c0, w.values, w.row_ptr, w.col_idx, csc)
    for a, b in zip(with_plan, without):
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(with_plan[0].sum(), (gates, h0, c0, w.values))
    want = torch.autograd.grad(without[0].sum(), (gates, h0, c0, w.values))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b)
    for bad, error in (((plan[0],), TypeError), ((plan[0].long(), plan[1]), ValueError),
                       ((plan[0][:1], plan[1]), ValueError), ((plan[0], 0), ValueError), ("plan", TypeError)):
        with pytest.raises(error, match="hh_plan"):
            ops.lstm_layer(gates, h0, c0, w.values, w.row_ptr, w.col_idx, csc, hh_plan=bad)


def test_lstm_layer_opcheck_with_a_plan():
    w, gates, h0, c0 = _layer_args(seed=8)
    csc = w.transposed_index()
    unit_start, smem = w._cached_lstm_plan(2)
    sizes = torch.full((gates.shape[0],), gates.shape[1], dtype=torch.int64)
    args = (gates, h0, c0, w.values, w.row_ptr, w.col_idx, csc.col_ptr, csc.row_idx, csc.csr2csc, sizes, False,
            None, None, None, None, None, None, unit_start, smem)
    torch.library.opcheck(_ops.lstm_layer.default, args)


# ----------------------------------------------------------------------------- GPU only
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="torch.cuda.set_sync_debug_mode needs a CUDA GPU; none on this machine")
@pytest.mark.parametrize("persistent", ["1", "0"], ids=["persistent", "per-step"])
def test_training_step_makes_no_synchronising_call(monkeypatch, persistent):
    """After a first step (which makes the cached indices and the plan: one
    host copy each, once per topology), a training step of a 2-layer
    SparseLSTM with a SparseLinear decoder (T*B = 35 rows: the wide-batch
    products) raises under set_sync_debug_mode("error") if anything in its
    forward, backward or optimizer step synchronises."""
    monkeypatch.setenv("SPARSE_KERNELS_PERSISTENT_LSTM", persistent)
    torch.manual_seed(0)
    lstm = SparseLSTM(32, 64, num_layers=2, density=0.2).cuda()
    decoder = SparseLinear(64, 50, density=0.3).cuda()
    params = list(lstm.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1)
    x = torch.randn(7, 5, 32, device="cuda")
    target = torch.randint(0, 50, (35,), device="cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        out, _ = lstm(x)
        loss = torch.nn.functional.cross_entropy(decoder(out.reshape(35, 64)), target)
        loss.backward()
        optimizer.step()
        return loss

    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            loss = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
