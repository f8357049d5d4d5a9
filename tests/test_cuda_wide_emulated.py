"""The wide-batch CUDA products (csrc/cuda/wide_batch.cuh and the wide SDDMM
of sparse_linear_value_grad.cu: the batch on the lanes over transposed
operands), compiled for the CPU through the CUDA emulator and run on fresh
random inputs against sparse_kernels.reference: every value type, batch
tails, each subwarp width, empty rows, nnz = 0, one row, one column, batch 0,
the longest-first row order, uint16 indices, the unaligned fallback, every
thread schedule; and a build without its __syncwarp that must fail.

On a machine with a GPU the same cases also run through the real ops, whose
CUDA binding takes these kernels from kernels.h's kWideBatchMinRows rows on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import TOL, random_problem
from emu import emulated
from sparse_kernels import csr, reference

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler to build the CUDA emulator")

ROOT = Path(__file__).resolve().parents[1]
_ops = torch.ops.sparse_kernels
WIDE_MIN_ROWS = 16  # kWideBatchMinRows in csrc/cuda/kernels.h: every real-op case below is at least this wide

# (N, out, in, density). With fp32 (4 per 16-byte load) a subwarp of 4, 8, 16
# or 32 lanes covers 16, 32, 64 or 128 batch elements; the N below pick each
# width, with and without a partial last vector and tile.
SHAPES = [
    (16, 37, 20, 0.15),    # 4 lanes, exactly one tile; short and empty rows
    (17, 33, 40, 0.2),     # 8 lanes, 17 of 32: a partial vector (lane 4) and idle lanes
    (50, 17, 70, 0.3),     # 16 lanes, partial last vector
    (130, 12, 90, 0.5),    # 32 lanes, two tiles (the second nearly empty), 2 chunks of 32 per row
    (33, 1, 300, 1.0),     # one row, 300 nonzeros: 10 chunks
    (40, 300, 1, 1.0),     # one column, 300 one-entry rows
    (24, 40, 3, 0.05),     # mostly empty rows
    (20, 6, 5, 0.0),       # nnz = 0
    (0, 8, 4, 0.5),        # batch 0
    (300, 5, 7, 0.6),      # three fp32 tiles, five fp64 ones
]
_ids = [f"N{n}-{o}x{i}-d{d}" for n, o, i, d in SHAPES]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HALF_RTOL = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def _problem(shape, seed):
    n, out_f, in_f, density = shape
    return random_problem(n, out_f, in_f, density, dtype=torch.float64, seed=seed, init="erdos_renyi")


def _check(got, want64, dtype):
    """Against the float64 reference on the same (rounded) inputs; 16-bit
    outputs within two half-ulps of it (sums are fp32)."""
    if dtype in HALF_RTOL:
        torch.testing.assert_close(got.cpu().double(), want64, rtol=HALF_RTOL[dtype], atol=1e-4)
    else:
        torch.testing.assert_close(got.cpu(), want64.to(dtype), **TOL[dtype])


class CudaWideOps:
    """The real CUDA ops (their binding picks the wide kernels for these
    batches), with the emulated wrappers' signatures."""

    def sparse_linear_wide(self, x, values, row_ptr, col_idx, bias=None, row_order=None):
        empty = row_ptr.new_empty(0)
        return _ops.sparse_linear(x, values, row_ptr, col_idx, empty, empty, empty, bias)

    def sparse_linear_input_grad_wide(self, grad_y, values, col_ptr, row_idx, csr2csc, col_order=None):
        return _ops.sparse_linear_input_grad(grad_y, values, col_ptr, row_idx, csr2csc)

    def sparse_linear_value_grad_wide(self, grad_y, x, row_ptr, col_idx, row_order=None):
        return _ops.sparse_linear_value_grad(grad_y, x, row_ptr, col_idx)


BACKENDS = ["emulated"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "emulated":
        return "cpu", emulated.load()
    return "cuda", CudaWideOps()


def _inputs(p, dtype, seed):
    """x, values, bias, grad_y in `dtype`, and their float64 copies."""
    g = torch.Generator().manual_seed(seed)
    grad_y = torch.randn(p["x"].shape[0], p["shape"][0], generator=g, dtype=torch.float64)
    low = [t.to(dtype) for t in (p["x"], p["values"], p["bias"], grad_y)]
    return low, [t.double() for t in low]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_wide_products_match_the_references(backend, shape, dtype):
    device, kernels = backend
    if device == "cuda" and shape[0] < WIDE_MIN_ROWS:
        pytest.skip(f"batch {shape[0]} < {WIDE_MIN_ROWS}: the CUDA binding takes the narrow kernels there")
    p = _problem(shape, seed=41)
    (x, values, bias, grad_y), (x64, values64, bias64, grad_y64) = _inputs(p, dtype, seed=42)
    rp, ci = p["row_ptr"], p["col_idx"]
    on = lambda t: t.to(device)
    for b, b64 in ((bias, bias64), (None, None)):
        _check(kernels.sparse_linear_wide(on(x), on(values), on(rp), on(ci), None if b is None else on(b)),
               reference.sparse_linear(x64, values64, rp, ci, p["shape"], b64), dtype)
    csc = csr.csr_transpose(rp, ci, p["shape"][1])
    _check(kernels.sparse_linear_input_grad_wide(on(grad_y), on(values), on(csc.col_ptr), on(csc.row_idx),
                                                 on(csc.csr2csc)),
           reference.sparse_linear_input_grad(grad_y64, values64, rp, ci, p["shape"]), dtype)
    _check(kernels.sparse_linear_value_grad_wide(on(grad_y), on(x), on(rp), on(ci)),
           reference.sparse_linear_value_grad(grad_y64, x64, rp, ci), dtype)


def _by_decreasing_length(ptr):
    return torch.argsort(ptr.diff(), descending=True, stable=True).to(torch.int32)


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[3], SHAPES[6]], ids=lambda s: f"N{s[0]}-{s[1]}x{s[2]}")
def test_rows_taken_longest_first(shape):
    """The compact index's row order (longest first) changes which subwarp
    takes which row, never the result: forward, input gradient and SDDMM."""
    kernels = emulated.load()
    p = _problem(shape, seed=43)
    (x, values, bias, grad_y), _ = _inputs(p, torch.float64, seed=44)
    rp, ci = p["row_ptr"], p["col_idx"]
    order = _by_decreasing_length(rp)
    assert not torch.equal(order, torch.arange(order.numel(), dtype=torch.int32))  # a real permutation
    _check(kernels.sparse_linear_wide(x, values, rp, ci, bias, row_order=order),
           reference.sparse_linear(x, values, rp, ci, p["shape"], bias), torch.float64)
    csc = csr.csr_transpose(rp, ci, p["shape"][1])
    _check(kernels.sparse_linear_input_grad_wide(grad_y, values, csc.col_ptr, csc.row_idx, csc.csr2csc,
                                                 col_order=_by_decreasing_length(csc.col_ptr)),
           reference.sparse_linear_input_grad(grad_y, values, rp, ci, p["shape"]), torch.float64)
    _check(kernels.sparse_linear_value_grad_wide(grad_y, x, rp, ci, row_order=order),
           reference.sparse_linear_value_grad(grad_y, x, rp, ci), torch.float64)


@pytest.mark.parametrize("n,lanes", [(16, 4), (32, 8), (33, 16), (64, 16), (65, 32), (300, 32)])
def test_subwarp_width_follows_the_batch(n, lanes):
    """fp32: the narrowest subwarp whose tile (lanes x 4) covers the batch."""
    kernels = emulated.load()
    p = _problem((n, 9, 30, 0.3), seed=45)
    x, values = p["x"].float(), p["values"].float()
    y = kernels.sparse_linear_wide(x, values, p["row_ptr"], p["col_idx"])
    assert re.search(rf"csr_spmm_wide_kernel<float, int, {lanes}, 4>", kernels.last_kernel()), kernels.last_kernel()
    _check(y, reference.sparse_linear(x.double(), values.double(), p["row_ptr"], p["col_idx"], p["shape"]),
           torch.float32)
    grad_y = torch.randn(n, 9)
    kernels.sparse_linear_value_grad_wide(grad_y, x, p["row_ptr"], p["col_idx"])
    assert re.search(rf"sddmm_wide_kernel<float, {lanes}, 4>", kernels.last_kernel()), kernels.last_kernel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_unpadded_rows_take_the_one_element_kernels(dtype):
    """Rows of N elements with N * size not a multiple of 16 bytes cannot take
    16-byte loads: the launchers fall back to one element per lane, with the
    same results."""
    kernels = emulated.load()
    p = _problem((37, 21, 50, 0.3), seed=46)
    (x, values, bias, grad_y), (x64, values64, bias64, grad_y64) = _inputs(p, dtype, seed=47)
    rp, ci = p["row_ptr"], p["col_idx"]
    want = reference.sparse_linear(x64, values64, rp, ci, p["shape"], bias64)
    for pad, vec in ((True, 16 // x.element_size()), (False, 1)):
        _check(kernels.sparse_linear_wide(x, values, rp, ci, bias, pad=pad), want, dtype)
        assert re.search(rf"csr_spmm_wide_kernel<[^,]+, int, \d+, {vec}>", kernels.last_kernel())
        _check(kernels.sparse_linear_value_grad_wide(grad_y, x, rp, ci, pad=pad),
               reference.sparse_linear_value_grad(grad_y64, x64, rp, ci), dtype)
        assert re.search(rf"sddmm_wide_kernel<[^,]+, \d+, {vec}>", kernels.last_kernel())


def test_16bit_indices():
    """uint16 column (and CSC row) indices above 32767, so that a signed
    reading would show."""
    kernels = emulated.load()
    p = _problem((20, 70, 40000, 0.002), seed=48)
    (x, values, _, _), (x64, values64, _, _) = _inputs(p, torch.float32, seed=49)
    assert int(p["col_idx"].max()) > 32767
    y = kernels.sparse_linear_wide(x, values, p["row_ptr"], p["col_idx"].to(torch.uint16))
    assert "unsigned short" in kernels.last_kernel()
    _check(y, reference.sparse_linear(x64, values64, p["row_ptr"], p["col_idx"], p["shape"]), torch.float32)
    q = _problem((20, 40000, 70, 0.002), seed=50)
    csc = csr.csr_transpose(q["row_ptr"], q["col_idx"], 70)
    grad_y = torch.randn(20, 40000, dtype=torch.float64)
    got = kernels.sparse_linear_input_grad_wide(grad_y, q["values"], csc.col_ptr, csc.row_idx.to(torch.uint16),
                                                csc.csr2csc)
    _check(got, reference.sparse_linear_input_grad(grad_y, q["values"], q["row_ptr"], q["col_idx"], q["shape"]),
           torch.float64)


@pytest.mark.parametrize("schedule", ["forward", "reverse", "shuffled"])
def test_wide_kernels_agree_under_every_thread_schedule(schedule):
    kernels = emulated.load()
    try:
        for seed in range(2):
            kernels.set_schedule(schedule, seed)
            p = _problem((45, 33, 70, 0.4), seed=51 + seed)
            (x, values, bias, grad_y), _ = _inputs(p, torch.float64, seed=53 + seed)
            rp, ci = p["row_ptr"], p["col_idx"]
            _check(kernels.sparse_linear_wide(x, values, rp, ci, bias),
                   reference.sparse_linear(x, values, rp, ci, p["shape"], bias), torch.float64)
            _check(kernels.sparse_linear_value_grad_wide(grad_y, x, rp, ci),
                   reference.sparse_linear_value_grad(grad_y, x, rp, ci), torch.float64)
    finally:
        kernels.set_schedule("forward")


# ----------------------------------------------------------------------------- planted bug
# The staged nonzeros are read by every lane of a subwarp after a __syncwarp;
# without it a lane reads entries the others have not written yet (the
# emulator poisons shared memory with NaN): wrong sums, or column indices out
# of range and an invalid read. The planted build runs in a child process so
# that such a read cannot take the test run down with it.
_PLANTED = textwrap.dedent("""
    import sys, torch
    sys.path[:0] = [{tests!r}, {root!r}]
    from conftest import random_problem
    from emu import emulated
    from sparse_kernels import reference
    p = random_problem(45, 33, 70, 0.4, dtype=torch.float64, seed=60, init="erdos_renyi")
    grad_y = torch.randn(45, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(61))
    kernels = emulated.load(plant_missing_barrier={source!r})
    if {source!r} == "sparse_linear.cu":
        got = kernels.sparse_linear_wide(p["x"], p["values"], p["row_ptr"], p["col_idx"])
        want = reference.sparse_linear(p["x"], p["values"], p["row_ptr"], p["col_idx"], p["shape"])
    else:
        got = kernels.sparse_linear_value_grad_wide(grad_y, p["x"], p["row_ptr"], p["col_idx"])
        want = reference.sparse_linear_value_grad(grad_y, p["x"], p["row_ptr"], p["col_idx"])
    print("MATCH" if torch.allclose(got, want) else "MISMATCH")
""")


@pytest.mark.parametrize("source", ["sparse_linear.cu", "sparse_linear_value_grad.cu"])
def test_planted_missing_syncwarp_is_caught(source):
    script = _PLANTED.format(tests=str(ROOT / "tests"), root=str(ROOT), source=source)
    # The faithful build of the same source, on the same input, is right.
    good = subprocess.run([sys.executable, "-c", script.replace(f"plant_missing_barrier={source!r}", "")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert good.returncode == 0 and good.stdout.strip() == "MATCH", good.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "MATCH" != bad.stdout.strip(), "the missing __syncwarp went unnoticed"
    assert bad.returncode != 0 or bad.stdout.strip() == "MISMATCH", (bad.returncode, bad.stdout, bad.stderr[-2000:])
