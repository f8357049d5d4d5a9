"""What was compiled, and the readable error on a torch mismatch."""

import os
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

import sparse_kernels
from sparse_kernels import _extension

# Every op of the library but build_info (a build description with no tensor
# arguments): each must have a CPU and, in a CUDA build, a CUDA kernel.
OPS = sorted(name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
             if name.startswith("sparse_kernels::") and name != "sparse_kernels::build_info")


def test_the_op_list_is_the_library():
    """OPS is read from the dispatcher: it must hold the library's ops (not an
    empty list that would make the kernel checks below pass vacuously)."""
    assert {"sparse_linear", "lstm_layer", "bsr_linear", "rebuild_csr", "sparse_linear_input_grad_csr"} <= set(OPS)
    assert len(OPS) >= 22


def _nvcc_available() -> bool:
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return Path(cuda_home, "bin", "nvcc").exists() or shutil.which("nvcc") is not None


def test_every_op_has_a_cpu_kernel():
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_kernels::{op}", "CPU"), op


@pytest.mark.skipif(os.environ.get("SPARSE_KERNELS_CPU_ONLY") == "1", reason="CPU-only build requested")
def test_cuda_kernels_compiled_when_torch_and_nvcc_allow():
    """On a CUDA build of torch with nvcc present, the CUDA sources must have
    been compiled (with or without a GPU), for 8.0;9.0 unless overridden."""
    info = sparse_kernels.build_info()
    expected = torch.version.cuda is not None and _nvcc_available()
    assert info["cuda"] is expected
    if expected:
        for op in OPS:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_kernels::{op}", "CUDA"), op
        wanted = os.environ.get("SPARSE_KERNELS_CUDA_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST")
        if not wanted and not torch.cuda.is_available():
            assert info["cuda_archs"] == "8.0;9.0"
        assert info["cuda_version"] == torch.version.cuda


def _fake_meta(monkeypatch, torch_version, cuda_version):
    meta = types.ModuleType("sparse_kernels._build_meta")
    meta.TORCH_VERSION, meta.CUDA_VERSION, meta.CUDA_ARCHS = torch_version, cuda_version, ""
    monkeypatch.setitem(sys.modules, "sparse_kernels._build_meta", meta)


def test_mismatched_torch_gives_readable_error(monkeypatch):
    _fake_meta(monkeypatch, "1.13.0+cu117", torch.version.cuda)
    with pytest.raises(ImportError, match=r"compiled against torch 1\.13\.0\+cu117, but torch .* is installed"):
        _extension.load_extension()


def test_mismatched_cuda_major_gives_readable_error(monkeypatch):
    if torch.version.cuda is None:
        _fake_meta(monkeypatch, torch.__version__, "12.1")
        match = "installed torch is a CPU-only build"
    else:
        _fake_meta(monkeypatch, torch.__version__, "9.2")
        match = "compiled for CUDA 9.2, but torch uses CUDA"
    with pytest.raises(ImportError, match=match):
        _extension.load_extension()


def test_matching_meta_loads(monkeypatch):
    _fake_meta(monkeypatch, torch.__version__, torch.version.cuda)
    _extension.load_extension()  # no error
