"""Cost of a topology update against training steps of the same layer, as
ratios measured in one run (pytest-benchmark; no thresholds asserted):

    pytest benchmarks/test_dst_benchmarks.py --benchmark-only
    SK_BENCH_HIDDEN=512 pytest benchmarks/...   # a smaller layer for a quick look

Issue targets: a prune/regrow update (magnitude prune + random regrow +
rebuild + optimizer remap) of a 4x2048x2048 LSTM weight at 90% sparsity
costs at most two training steps (T=35, B=20) of that layer; a RigL update
at most ten. The peak-memory check runs RigL's gradient regrow in a fresh
process on a layer whose dense gradient would not fit in this machine's
memory and reports its peak resident memory.
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from sparse_kernels import SparseLSTM, ops
from sparse_kernels.dst import remap_optimizer_state

HIDDEN = int(os.environ.get("SK_BENCH_HIDDEN", "2048"))
STEPS, BATCH, DENSITY = 35, 20, 0.1


def _layer():
    torch.manual_seed(0)
    lstm = SparseLSTM(HIDDEN, HIDDEN, density=DENSITY)
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(STEPS, BATCH, HIDDEN)
    return lstm, optimizer, x


def _train_step(lstm, optimizer, x):
    optimizer.zero_grad()
    lstm(x)[0].pow(2).mean().backward()
    optimizer.step()


def _mean_seconds(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _random_update(w, optimizer, seed):
    keep = ops.magnitude_prune(w.values.detach(), [w.nnz // 4])
    grow = ops.random_regrow(w.row_ptr, w.col_idx, torch.ones_like(keep), w.in_features, [int((~keep).sum())], seed)
    old_nnz = w.nnz
    remap_optimizer_state(optimizer, w.values, w.rebuild(keep, *grow), old_nnz)


def _rigl_update(w, optimizer, grad_gates, h_prev):
    keep = ops.magnitude_prune(w.values.detach(), [w.nnz // 4])
    grow = ops.gradient_regrow(grad_gates, h_prev, w.row_ptr, w.col_idx, torch.ones_like(keep),
                               int((~keep).sum()), 256)
    old_nnz = w.nnz
    remap_optimizer_state(optimizer, w.values, w.rebuild(keep, *grow), old_nnz)


def test_update_cost_in_training_steps(benchmark):
    lstm, optimizer, x = _layer()
    w = lstm.weight_hh_l0  # (4 * HIDDEN, HIDDEN)
    step_s = _mean_seconds(lambda: _train_step(lstm, optimizer, x), 2)
    seeds = iter(range(10**6))
    update_s = _mean_seconds(lambda: _random_update(w, optimizer, next(seeds)), 3)
    grad_gates = torch.randn(STEPS * BATCH, 4 * HIDDEN)
    h_prev = torch.randn(STEPS * BATCH, HIDDEN)
    rigl_s = _mean_seconds(lambda: _rigl_update(w, optimizer, grad_gates, h_prev), 1)
    benchmark.extra_info.update(train_step_s=step_s, random_update_s=update_s, rigl_update_s=rigl_s,
                                random_update_in_steps=update_s / step_s, rigl_update_in_steps=rigl_s / step_s,
                                hidden=HIDDEN, density=DENSITY)
    print(f"\nhidden={HIDDEN}: training step {step_s:.3f} s; prune/regrow update {update_s:.3f} s "
          f"= {update_s / step_s:.2f} steps (target <= 2); RigL update {rigl_s:.3f} s "
          f"= {rigl_s / step_s:.2f} steps (target <= 10)")
    benchmark.pedantic(_random_update, args=(w, optimizer, 7), rounds=1, iterations=1)


_PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    import sparse_kernels
    from sparse_kernels import csr, ops
    rows, cols, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    row_ptr, col_idx = csr.random_csr((rows, cols), 1e-5, init="erdos_renyi", generator=torch.Generator().manual_seed(0))
    grad_out, x = torch.randn(n, rows), torch.randn(n, cols)
    occupied = torch.ones(col_idx.numel(), dtype=torch.bool)
    grow = ops.gradient_regrow(grad_out, x, row_ptr, col_idx, occupied, col_idx.numel(), 64)
    assert grow[1].numel() == col_idx.numel()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")


def test_rigl_peak_memory_without_the_dense_gradient(benchmark):
    rows, cols, n = 4 * 32768, 49152, 2  # dense float32 gradient: 25.8 GB, more than this machine's memory
    dense_bytes = rows * cols * 4

    def run():
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(rows), str(cols), str(n)],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1])

    peak = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(peak_rss_bytes=peak, dense_gradient_bytes=dense_bytes)
    print(f"\nRigL regrow on a {rows}x{cols} layer: peak RSS {peak / 2**30:.2f} GiB; "
          f"its dense gradient would be {dense_bytes / 2**30:.1f} GiB")
    assert peak < dense_bytes  # it ran at all without the dense gradient
