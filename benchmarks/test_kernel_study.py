"""A few points of the kernel study (sparse_kernels.bench) as pytest-benchmark
benchmarks: each storage is one benchmark in its point's group, so
pytest-benchmark's table compares them side by side. No thresholds asserted;
`sparse-rnn bench` runs the whole study (interleaved timing, plots, crossover).

    pytest benchmarks/test_kernel_study.py --benchmark-only --benchmark-group-by=group
    SK_BENCH_THREADS=1 SK_BENCH_SCALE=0.25 pytest benchmarks/test_kernel_study.py  # smaller, one thread

Not collected by a plain `pytest` (testpaths = tests).
"""

import os

import pytest
import torch

from sparse_kernels.bench import STORAGES, Problem, Unsupported
from sparse_kernels.bench.storages import BASELINE

THREADS = int(os.environ.get("SK_BENCH_THREADS", "2"))
SCALE = float(os.environ.get("SK_BENCH_SCALE", "1"))  # multiplies the hidden sizes
STEPS = 35

# (op, hidden, batch, sparsity): the recurrent product of a 2048-wide LSTM at 90% sparsity in
# inference (batch 1) and training (batch 16), its gradients, one cell step and a whole layer.
POINTS = [(op, max(16, int(hidden * SCALE) // 16 * 16), batch, sparsity) for op, hidden, batch, sparsity in (
    ("forward", 2048, 1, 0.9), ("forward", 2048, 16, 0.9), ("forward", 2048, 16, 0.99),
    ("transposed", 2048, 16, 0.9), ("value_grad", 2048, 16, 0.9), ("cell", 1024, 16, 0.9),
    ("layer_forward", 256, 16, 0.9), ("layer_forward_backward", 256, 16, 0.9))]


def _point_id(point):
    op, hidden, batch, sparsity = point
    return f"{op}-H{hidden}-B{batch}-s{sparsity:g}"


def _median_seconds(run, repeats=5):
    import time
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("point", POINTS, ids=_point_id)
def test_kernel(benchmark, point, storage):
    op, hidden, batch, sparsity = point
    reason = STORAGES[storage].unavailable()
    if reason:
        pytest.skip(reason)
    problem = Problem(op, hidden, sparsity, batch, STEPS, seed=0)
    try:
        built = STORAGES[storage].build(problem)
    except Unsupported as exc:
        pytest.skip(str(exc))
    # The result must be dense torch's (on the matrices this storage holds) before it is timed.
    target = problem if built.weights is None else problem.with_weights(built.weights)
    reference = next(iter(STORAGES[BASELINE].build(target).kernels.values()))
    expected = reference.canonical(reference.run()).detach()
    for kernel in built.kernels.values():
        got = kernel.canonical(kernel.run()).detach()
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * max(1.0, float(expected.abs().max())))
    # Several layouts (dense: x @ W^T and W @ x^T): benchmark the faster.
    layout = min(built.kernels, key=lambda name: _median_seconds(built.kernels[name].run))
    benchmark.group = f"{op} H={hidden} B={batch} sparsity={sparsity:g}" + \
        (f" T={STEPS}" if op.startswith("layer") else "")
    benchmark.extra_info.update(storage=storage, layout=layout, stored=built.stored, threads=THREADS)
    benchmark(built.kernels[layout].run)
