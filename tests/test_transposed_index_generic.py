"""The device-generic transposed index (topology_generic.h's transposed_index,
what sparse_linear_input_grad_csr builds on CUDA before its gather), checked
on CPU tensors against csr.csr_transpose through the extension's test hook;
and on a GPU, the op itself against the CPU op."""

from __future__ import annotations

import pytest
import torch

from conftest import PROBLEM_SHAPES, random_problem
from sparse_kernels import _C, csr


@pytest.mark.parametrize("shape", PROBLEM_SHAPES, ids=lambda s: f"{s[1]}x{s[2]}-d{s[3]}")
def test_generic_transposed_index_is_csr_transpose(shape):
    _, out_f, in_f, density = shape
    p = random_problem(1, out_f, in_f, density, seed=out_f * 100 + in_f, init="erdos_renyi")
    got = _C._generic_transposed_index(p["row_ptr"], p["col_idx"], in_f)
    want = csr.csr_transpose(p["row_ptr"], p["col_idx"], in_f)
    for g, w in zip(got, want):
        assert g.dtype == torch.int32
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("shape", PROBLEM_SHAPES, ids=lambda s: f"{s[1]}x{s[2]}-d{s[3]}")
def test_cuda_input_grad_csr_matches_cpu(shape):
    n, out_f, in_f, density = shape
    p = random_problem(n, out_f, in_f, density, seed=7, init="erdos_renyi")
    grad_y = torch.randn(n, out_f, dtype=p["values"].dtype)
    op = torch.ops.sparse_kernels.sparse_linear_input_grad_csr
    want = op(grad_y, p["values"], p["row_ptr"], p["col_idx"], in_f)
    got = op(grad_y.cuda(), p["values"].cuda(), p["row_ptr"].cuda(), p["col_idx"].cuda(), in_f)
    torch.testing.assert_close(got.cpu(), want)
