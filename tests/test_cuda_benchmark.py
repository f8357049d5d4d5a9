"""On a GPU: pytest-benchmark figures of the CUDA kernels against cuBLAS
(dense torch.matmul) and cuSPARSE (torch.sparse CSR), recorded in
BENCHMARKS.md. Without a GPU those are skipped; the analytical H100 floors
table in BENCHMARKS.md is checked against its script everywhere."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from conftest import random_problem
from sparse_kernels import csr, ops, reference

ROOT = Path(__file__).resolve().parents[1]


def _floors_module():
    spec = importlib.util.spec_from_file_location("h100_floors", ROOT / "benchmarks" / "h100_floors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmarks_md_floor_table_is_current():
    """BENCHMARKS.md shows exactly what benchmarks/h100_floors.py computes."""
    assert _floors_module().table() in (ROOT / "BENCHMARKS.md").read_text()


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
_ops = torch.ops.sparse_kernels

# Recurrent step (batch 32) and whole-sequence input projection (T*B = 1024)
# through an LSTM-shaped 4096 x 1024 weight at 90% sparsity.
BENCH_SHAPES = [(32, 4096, 1024, 0.1), (1024, 4096, 1024, 0.1)]


def _timed(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


@needs_gpu
@pytest.mark.parametrize("shape", BENCH_SHAPES, ids=lambda s: f"N{s[0]}-{s[1]}x{s[2]}-d{s[3]}")
@pytest.mark.parametrize("impl", ["sparse_kernels", "cublas_dense", "cusparse_csr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_linear_speed(benchmark, impl, shape, dtype):
    n, out_f, in_f, density = shape
    p = random_problem(n, out_f, in_f, density, dtype=torch.float32, device="cuda", bias=False, init="erdos_renyi")
    x, values = p["x"].to(dtype), p["values"].to(dtype)
    want = reference.sparse_linear(x.double(), values.double(), p["row_ptr"], p["col_idx"], p["shape"])
    if impl == "sparse_kernels":
        empty = p["row_ptr"].new_empty(0)
        fn = lambda: _ops.sparse_linear(x, values, p["row_ptr"], p["col_idx"], empty, empty, empty, None)
    elif impl == "cublas_dense":
        dense = reference.csr_to_dense(values, p["row_ptr"], p["col_idx"], p["shape"])
        fn = lambda: x @ dense.T
    else:
        if dtype != torch.float32:
            pytest.skip("torch.sparse CSR matmul on CUDA takes float32/float64 here")
        w = torch.sparse_csr_tensor(p["row_ptr"], p["col_idx"], values, p["shape"])
        fn = lambda: (w @ x.T).T
    benchmark.group = f"sparse_linear {shape} {dtype}"
    got = benchmark(_timed(fn))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


@needs_gpu
@pytest.mark.parametrize("impl", ["persistent", "per_step", "cudnn_dense"])
def test_lstm_layer_forward_speed(benchmark, monkeypatch, impl):
    """One LSTM layer's forward over a sequence (H 1024, 90% sparse W_hh, T 35,
    batch 8): the persistent kernel (W_hh in shared memory), the per-step
    path (SPARSE_KERNELS_PERSISTENT_LSTM=0: a product and a cell kernel per
    step) and cuDNN's dense nn.LSTM recurrence on the same input gates."""
    steps, batch, hidden, density = 35, 8, 1024, 0.1
    g = torch.Generator().manual_seed(0)
    row_ptr, col_idx = csr.random_csr((4 * hidden, hidden), density, init="erdos_renyi", generator=g)
    values = (torch.randn(col_idx.numel(), generator=g) * 0.1).cuda()
    row_ptr, col_idx = row_ptr.cuda(), col_idx.cuda()
    gates = torch.randn(steps, batch, 4 * hidden, generator=g).cuda()
    h0, c0 = torch.zeros(batch, hidden, device="cuda"), torch.zeros(batch, hidden, device="cuda")
    csc = csr.csr_transpose(row_ptr, col_idx, hidden)
    if impl == "cudnn_dense":
        lstm = torch.nn.LSTM(hidden, hidden).cuda()
        with torch.no_grad():
            lstm.weight_hh_l0.copy_(reference.csr_to_dense(values, row_ptr, col_idx, (4 * hidden, hidden)))
        x = torch.randn(steps, batch, hidden, device="cuda")
        fn = lambda: lstm(x, (h0[None], c0[None]))[0]
    else:
        monkeypatch.setenv("SPARSE_KERNELS_PERSISTENT_LSTM", "1" if impl == "persistent" else "0")
        fn = lambda: ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, validate=False)[0]
    benchmark.group = "lstm_layer forward H1024 d0.1 T35 B8"
    with torch.no_grad():
        got = benchmark(_timed(fn))
    assert got.shape == (steps, batch, hidden) and torch.isfinite(got).all()
    if impl == "persistent":  # the same result as the per-step path
        monkeypatch.setenv("SPARSE_KERNELS_PERSISTENT_LSTM", "0")
        want = ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, validate=False)[0]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
