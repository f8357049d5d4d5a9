"""The block-sparse (BSR) CUDA kernels of csrc/cuda/bsr*.cu, compiled for the
CPU through the CUDA emulator (tests/emu/), against the references: the SIMT
kernels for every block shape and value type, the tensor-core (WMMA) kernels
for 16 x 16 fp16/bf16 blocks, under every thread schedule.

On a machine with a GPU the same cases also run through the real CUDA ops
(backend "cuda", which always allows the tensor cores)."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import TOL
from emu import emulated
from sparse_kernels import csr, reference
from test_cuda_emulated import HALF_RTOL, SCHEDULES

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler to build the CUDA emulator")

_ops = torch.ops.sparse_kernels


class CudaBsrOps:
    """The real CUDA ops with the emulated backend's signatures."""

    def bsr_linear(self, x, values, block_row_ptr, block_col_idx, bias=None, tensor_cores=True):
        empty = block_row_ptr.new_empty(0)
        return _ops.bsr_linear(x, values, block_row_ptr, block_col_idx, empty, empty, empty, bias)

    def bsr_linear_input_grad(self, grad_y, values, col_ptr, row_idx, csr2csc, tensor_cores=True):
        return _ops.bsr_linear_input_grad(grad_y, values, col_ptr, row_idx, csr2csc)

    def bsr_linear_value_grad(self, grad_y, x, block_row_ptr, block_col_idx, bh, bw, tensor_cores=True):
        return _ops.bsr_linear_value_grad(grad_y, x, block_row_ptr, block_col_idx, bh, bw)


BACKENDS = ["emulated"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "emulated":
        return "cpu", emulated.load()
    return "cuda", CudaBsrOps()


# (N, grid rows, grid cols, block shape, density): batch tails of the SIMT
# tile (256 / out_dim rows), several launch tiles, empty block rows, no
# blocks, N = 0, N = 1, one block column, odd and non-square blocks.
SHAPES = [
    (37, 6, 5, (1, 8), 0.4),
    (300, 3, 2, (1, 8), 0.5),     # two batch tiles of 256 rows
    (21, 5, 4, (4, 4), 0.5),
    (70, 3, 3, (16, 16), 0.5),    # the SIMT path of a 16 x 16 block
    (5, 2, 2, (32, 32), 0.5),
    (6, 5, 3, (2, 4), 0.6),
    (9, 4, 3, (3, 5), 0.5),
    (9, 20, 3, (4, 4), 0.05),
    (4, 4, 1, (8, 2), 0.7),
    (3, 3, 4, (4, 4), 0.0),
    (0, 3, 4, (2, 2), 0.5),
    (1, 3, 2, (5, 3), 1.0),
]
_ids = [f"N{s[0]}-grid{s[1]}x{s[2]}-block{s[3][0]}x{s[3][1]}-d{s[4]}" for s in SHAPES]


def _problem(n, rows, cols, block_shape, density, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    bh, bw = block_shape
    rp, ci = csr.random_csr((rows, cols), density, init="erdos_renyi", generator=g)
    values = torch.randn(ci.numel(), bh, bw, generator=g, dtype=torch.float64)
    x = torch.randn(n, cols * bw, generator=g, dtype=torch.float64)
    bias = torch.randn(rows * bh, generator=g, dtype=torch.float64)
    grad_y = torch.randn(n, rows * bh, generator=g, dtype=torch.float64)
    on = lambda t: t.to(dtype).to(device)
    return dict(values=on(values), x=on(x), bias=on(bias), grad_y=on(grad_y), rp=rp.to(device), ci=ci.to(device),
                csc=csr.CSCIndex(*(t.to(device) for t in csr.csr_transpose(rp, ci, cols))),
                shape=(rows * bh, cols * bw), block_shape=block_shape)


def _run_all(kernels, p, tensor_cores=True):
    """(y with bias, y without, grad_x, grad_values) from the kernels."""
    bh, bw = p["block_shape"]
    return (kernels.bsr_linear(p["x"], p["values"], p["rp"], p["ci"], p["bias"], tensor_cores=tensor_cores),
            kernels.bsr_linear(p["x"], p["values"], p["rp"], p["ci"], None, tensor_cores=tensor_cores),
            kernels.bsr_linear_input_grad(p["grad_y"], p["values"], *p["csc"], tensor_cores=tensor_cores),
            kernels.bsr_linear_value_grad(p["grad_y"], p["x"], p["rp"], p["ci"], bh, bw, tensor_cores=tensor_cores))


def _references(p):
    """The same four from reference.py, in float64 on the (possibly rounded) inputs."""
    d = {k: p[k].cpu().double() for k in ("values", "x", "bias", "grad_y")}
    rp, ci = p["rp"].cpu(), p["ci"].cpu()
    return (reference.bsr_linear(d["x"], d["values"], rp, ci, p["shape"], d["bias"]),
            reference.bsr_linear(d["x"], d["values"], rp, ci, p["shape"]),
            reference.bsr_linear_input_grad(d["grad_y"], d["values"], rp, ci, p["shape"]),
            reference.bsr_linear_value_grad(d["grad_y"], d["x"], rp, ci, p["block_shape"]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_bsr_kernels_match_reference(backend, shape, dtype):
    device, kernels = backend
    p = _problem(*shape, dtype, device, seed=40)
    for got, want in zip(_run_all(kernels, p), _references(p)):
        torch.testing.assert_close(got.cpu(), want.to(dtype), **TOL[dtype])


def _close16(got, want64, dtype):
    torch.testing.assert_close(got.cpu().double(), want64, rtol=HALF_RTOL[dtype], atol=2e-3)


TENSOR_CORE_SHAPES = [  # 16 x 16 blocks: warp tiles with batch tails, a second launch tile, edge cases
    (37, 3, 4, (16, 16), 0.5),
    (70, 2, 2, (16, 16), 0.75),
    (16, 5, 2, (16, 16), 0.2),   # empty block rows
    (3, 2, 3, (16, 16), 0.0),    # no blocks: the forward is the bias
    (0, 2, 2, (16, 16), 0.5),    # N = 0: the value gradient is zero
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", TENSOR_CORE_SHAPES, ids=lambda s: f"N{s[0]}-grid{s[1]}x{s[2]}-d{s[4]}")
def test_tensor_core_kernels_for_16x16_half_blocks(backend, shape, dtype):
    """fp16/bf16 16 x 16 blocks take the WMMA kernels (fp32 accumulation) and
    match the float64 reference on the same rounded inputs; so does the SIMT
    path of the same problem."""
    device, kernels = backend
    p = _problem(*shape, dtype, device, seed=41)
    wants = _references(p)
    for tensor_cores in (True, False):
        for got, want in zip(_run_all(kernels, p, tensor_cores), wants):
            _close16(got, want, dtype)
    if device == "cpu" and shape[0] > 0 and p["ci"].numel():
        kernels.bsr_linear(p["x"], p["values"], p["rp"], p["ci"], p["bias"])
        assert "bsr_spmm_wmma_kernel" in kernels.last_kernel()
        kernels.bsr_linear_value_grad(p["grad_y"], p["x"], p["rp"], p["ci"], 16, 16)
        assert "bsr_value_grad_wmma_kernel" in kernels.last_kernel()
        kernels.bsr_linear_value_grad(p["grad_y"], p["x"], p["rp"], p["ci"], 16, 16, tensor_cores=False)
        assert "bsr_value_grad_kernel" in kernels.last_kernel()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_simt_kernels_accumulate_in_fp32(backend, dtype):
    """Other block shapes of 16-bit values run the SIMT kernels, fp32 sums."""
    device, kernels = backend
    p = _problem(40, 4, 6, (4, 8), 0.5, dtype, device, seed=42)
    for got, want in zip(_run_all(kernels, p), _references(p)):
        _close16(got, want, dtype)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_bsr_kernels_agree_under_every_thread_schedule(schedule):
    """The WMMA kernels stage tiles in shared memory between __syncwarp()s: a
    missing one would show under the reverse or shuffled schedules."""
    kernels = emulated.load()
    try:
        for seed in range(2):
            kernels.set_schedule(schedule, seed)
            p = _problem(37, 3, 3, (16, 16), 0.6, torch.float16, "cpu", seed=43 + seed)
            for got, want in zip(_run_all(kernels, p), _references(p)):
                _close16(got, want, torch.float16)
            p = _problem(21, 5, 4, (4, 4), 0.5, torch.float64, "cpu", seed=45 + seed)
            for got, want in zip(_run_all(kernels, p), _references(p)):
                torch.testing.assert_close(got, want, **TOL[torch.float64])
    finally:
        kernels.set_schedule("forward")
