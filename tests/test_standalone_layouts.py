"""benchmarks/standalone/batch1_layouts.cpp (issue #18's measurement of
column-blocked batch-1 layouts) compiles, every kernel it times agrees with a
float64 sum on small matrices (empty rows, nnz = 0, a single column, sizes that
are not whole slices or blocks), and its check fails when a kernel is wrong."""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from csr_helpers import cpu_flags

SOURCE = Path(__file__).resolve().parents[1] / "benchmarks" / "standalone" / "batch1_layouts.cpp"
BLOCKED_FLAGS = {"avx512f", "avx512vl", "avx512bw"}

pytestmark = pytest.mark.skipif(shutil.which("g++") is None or platform.machine() != "x86_64",
                                reason="the standalone benchmark is x86-64 code built with g++")


def _build(tmp_path: Path, *defines: str) -> Path:
    binary = tmp_path / "batch1_layouts"
    subprocess.run(["g++", "-O2", "-std=c++17", "-Wno-psabi", *defines, "-o", str(binary), str(SOURCE)],
                   check=True, capture_output=True)
    return binary


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("batch1_layouts"))


def _run(binary: Path, rows: int, cols: int, density: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), str(rows), str(cols), str(density), "3"], capture_output=True, text=True)


def _kernel_rows(stdout: str) -> dict[str, float]:
    """kernel name -> its max error, from the table the program prints."""
    rows = {}
    for line in stdout.splitlines()[2:]:
        fields = line.split()
        if len(fields) == 6:
            rows[fields[0]] = float(fields[5])
    return rows


@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="the library's loops need AVX2 and FMA")
@pytest.mark.parametrize("rows,cols,density", [(37, 70, 0.3), (200, 1, 0.5), (20, 100, 0.0), (64, 200, 0.2),
                                               (130, 257, 0.05)])
def test_every_kernel_matches_the_float64_sum(binary, rows, cols, density):
    result = _run(binary, rows, cols, density)
    assert result.returncode == 0, result.stdout + result.stderr
    kernels = _kernel_rows(result.stdout)
    expected = {"csr", "sell8"} | ({"blk32x16", "blk64x16", "blk64x8"} if BLOCKED_FLAGS <= cpu_flags() else set())
    assert expected <= set(kernels), result.stdout
    assert all(error <= 1e-4 for error in kernels.values()), result.stdout


@pytest.mark.skipif(not BLOCKED_FLAGS <= cpu_flags(), reason="the blocked kernels need AVX-512F, VL and BW")
def test_a_wrong_half_of_the_column_block_is_caught(tmp_path):
    result = _run(_build(tmp_path, "-DPLANT_WRONG_HALF"), 64, 200, 0.2)
    assert result.returncode == 1, result.stdout
    assert "FAILED" in result.stdout
    assert _kernel_rows(result.stdout)["blk64x16"] > 1e-4
