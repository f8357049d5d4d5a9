"""The standalone programs of benchmarks/standalone (issue #18's measurements):
batch1_layouts.cpp (column-blocked batch-1 layouts), batch20_tile_pairs.cpp
(one-pass kernels for the batch-20 per-step product), batch1_scatter.cpp
(the batch-1 input gradient's scatter) and batch4_layouts.cpp (tiles and
column-blocked layouts at batch 2-4) compile, every kernel they
time agrees with a float64 sum on small matrices (empty rows, nnz = 0, a single
column, sizes that are not whole slices, blocks or 16-value runs), and their
checks fail when a kernel is wrong."""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from csr_helpers import cpu_flags

STANDALONE = Path(__file__).resolve().parents[1] / "benchmarks" / "standalone"
BLOCKED_FLAGS = {"avx512f", "avx512vl", "avx512bw"}
TILE_PAIR_KERNELS_AVX512 = {"two_passes", "fused16+8", "fused16+4"}
TILE_PAIR_KERNELS_AVX2 = {"two_passes_avx2", "pair_exact_avx2", "pair4_avx2", "pair4_perm_avx2", "passes16+4_avx2"}
needs_avx512_fma = pytest.mark.skipif(not {"avx512f", "avx512vl", "fma"} <= cpu_flags(),
                                      reason="the batch-20 kernels need AVX-512F, VL and FMA")
needs_avx2_fma = pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(),
                                    reason="the batch-20 kernels need AVX2 and FMA")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None or platform.machine() != "x86_64",
                                reason="the standalone benchmark is x86-64 code built with g++")


def _build(tmp_path: Path, *defines: str, program: str = "batch1_layouts") -> Path:
    binary = tmp_path / program
    subprocess.run(["g++", "-O2", "-std=c++17", "-Wno-psabi", *defines, "-o", str(binary),
                    str(STANDALONE / f"{program}.cpp")], check=True, capture_output=True)
    return binary


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("batch1_layouts"))


@pytest.fixture(scope="module")
def scatter(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("batch1_scatter"), program="batch1_scatter")


@pytest.fixture(scope="module")
def tile_pairs(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("batch20_tile_pairs"), program="batch20_tile_pairs")


@pytest.fixture(scope="module")
def batch4(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("batch4_layouts"), program="batch4_layouts")


def _run(binary: Path, rows: int, cols: int, density: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), str(rows), str(cols), str(density), "3"], capture_output=True, text=True)


def _errors_with_planted_bug(tmp_path: Path, define: str, program: str) -> dict[str, float]:
    """Each kernel's max error from `program` built with the planted bug `define`; the program must fail."""
    result = _run(_build(tmp_path, define, program=program), 64, 200, 0.2)
    assert result.returncode == 1, result.stdout
    assert "FAILED" in result.stdout
    return _kernel_rows(result.stdout)


def _checked_errors(binary: Path, rows: int, cols: int, density: float) -> dict[str, float]:
    """Each kernel's max error from a run that must pass its own float64 check."""
    result = _run(binary, rows, cols, density)
    assert result.returncode == 0, result.stdout + result.stderr
    errors = _kernel_rows(result.stdout)
    assert all(error <= 1e-4 for error in errors.values()), result.stdout
    return errors


def _kernel_rows(stdout: str) -> dict[str, float]:
    """kernel name -> its max error (the table's last column), from the table the program prints."""
    rows = {}
    for line in stdout.splitlines()[2:]:
        fields = line.split()
        if len(fields) >= 5 and not line.startswith(("FAILED", "no ")):
            rows[fields[0]] = float(fields[-1])
    return rows


@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="the library's loops need AVX2 and FMA")
@pytest.mark.parametrize("rows,cols,density", [(37, 70, 0.3), (200, 1, 0.5), (20, 100, 0.0), (64, 200, 0.2),
                                               (130, 257, 0.05)])
def test_every_kernel_matches_the_float64_sum(binary, rows, cols, density):
    kernels = _checked_errors(binary, rows, cols, density)
    expected = {"csr", "sell8"} | ({"blk32x16", "blk64x16", "blk64x8"} if BLOCKED_FLAGS <= cpu_flags() else set())
    assert expected <= set(kernels), kernels


@pytest.mark.skipif(not BLOCKED_FLAGS <= cpu_flags(), reason="the blocked kernels need AVX-512F, VL and BW")
def test_a_wrong_half_of_the_column_block_is_caught(tmp_path):
    errors = _errors_with_planted_bug(tmp_path, "-DPLANT_WRONG_HALF", "batch1_layouts")
    assert errors["blk64x16"] > 1e-4, errors


@needs_avx2_fma
@pytest.mark.parametrize("rows,cols,density", [(37, 70, 0.3), (50, 1, 0.5), (20, 100, 0.0), (64, 200, 0.2),
                                               (30, 257, 0.9)])
def test_every_batch20_kernel_matches_the_float64_sum(tile_pairs, rows, cols, density):
    # (and pair_exact_avx2 gives two_passes_avx2's bits: the program fails otherwise)
    flags = cpu_flags()
    expected = TILE_PAIR_KERNELS_AVX2 | (TILE_PAIR_KERNELS_AVX512 if {"avx512f", "avx512vl"} <= flags else set())
    assert set(_checked_errors(tile_pairs, rows, cols, density)) == expected


@needs_avx2_fma
def test_a_pair_summed_in_another_order_is_caught(tmp_path):
    # Within rounding of the float64 sum, but not the two passes' bits.
    binary = _build(tmp_path, "-DPLANT_PAIR_CHAIN", program="batch20_tile_pairs")
    result = _run(binary, 64, 200, 0.2)
    assert result.returncode == 1 and "pair_exact_avx2 differs from two_passes_avx2" in result.stdout, result.stdout
    assert all(error <= 1e-4 for error in _kernel_rows(result.stdout).values()), result.stdout


@needs_avx512_fma
def test_a_wrong_row_of_the_4_lane_tile_is_caught(tmp_path):
    errors = _errors_with_planted_bug(tmp_path, "-DPLANT_WRONG_TAIL_COLUMN", "batch20_tile_pairs")
    assert errors["fused16+4"] > 1e-4 and errors["two_passes"] <= 1e-4, errors


@pytest.mark.parametrize("rows,cols,density", [(37, 70, 0.3), (200, 1, 0.5), (20, 100, 0.0), (64, 200, 0.2),
                                               (130, 257, 0.05), (30, 40, 1.0)])
def test_every_batch1_scatter_matches_the_float64_sum(scatter, rows, cols, density):
    expected = {"one_by_one", "loads8"} | ({"avx512"} if "avx512f" in cpu_flags() else set())
    assert set(_checked_errors(scatter, rows, cols, density)) == expected


@pytest.mark.skipif("avx512f" not in cpu_flags(), reason="the scatter's avx512 kernel needs AVX-512F")
def test_a_short_masked_tail_of_the_avx512_scatter_is_caught(tmp_path):
    errors = _errors_with_planted_bug(tmp_path, "-DPLANT_SHORT_TAIL", "batch1_scatter")
    assert errors["avx512"] > 1e-4 and errors["library"] <= 1e-4, errors


@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="the tile loops need AVX2 and FMA")
@pytest.mark.parametrize("rows,cols,density", [(37, 70, 0.3), (200, 1, 0.5), (20, 100, 0.0), (64, 200, 0.2),
                                               (130, 257, 0.05), (30, 40, 1.0)])
def test_every_batch4_kernel_matches_the_float64_sum(batch4, rows, cols, density):
    layouts = {"tile8", "tile4"} | ({"blk64", "blk32", "blk16"} if BLOCKED_FLAGS <= cpu_flags() else set())
    expected = {f"{layout}.b{batch}" for layout in layouts for batch in (2, 3, 4)}
    assert set(_checked_errors(batch4, rows, cols, density)) == expected


@pytest.mark.skipif(not BLOCKED_FLAGS | {"fma"} <= cpu_flags(), reason="the blocked kernels need AVX-512F, VL and BW")
def test_a_wrong_row_of_x_in_the_batch4_blocked_kernels_is_caught(tmp_path):
    errors = _errors_with_planted_bug(tmp_path, "-DPLANT_WRONG_ROW", "batch4_layouts")
    assert all(errors[f"blk{block}.b{batch}"] > 1e-4 for block in (64, 32, 16) for batch in (2, 3, 4)), errors
    assert all(errors[f"tile{lanes}.b{batch}"] <= 1e-4 for lanes in (8, 4) for batch in (2, 3, 4)), errors
