"""Dense vs torch.sparse vs sparse_kernels for the products of RNN training,
measured side by side in one run; prints times and ratios.

    python benchmarks/kernel_ratios.py [--out 8192] [--in 2048] [--density 0.1] [--batches 1 16]

Absolute times on a shared machine are noisy; the ratios within one run are
what to read. Each row's floor is the larger of two measured bounds: the
matrix's bytes (4-byte value + 4-byte index per nonzero) over the copy
bandwidth of the memory level it fits in (L3 when it fits, else DRAM), and
its multiply-adds (nnz * batch) over the FMA rate of a dense SGEMM measured
here. ours/floor is how far each product is from it.
"""

from __future__ import annotations

import argparse
import time

import torch

import sparse_kernels
from sparse_kernels import CSRWeight, ops


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def copy_bandwidth(n_bytes: int = 256 << 20, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write counted)."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    return 2 * n_bytes / median_seconds(lambda: dst.copy_(src), repeats)


def l3_copy_bandwidth(n_bytes: int = 4 << 20, repeats: int = 50) -> float:
    """Bytes per second of a copy whose source and destination fit in L3."""
    return copy_bandwidth(n_bytes, repeats)


def fma_rate(n: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second of a dense fp32 SGEMM (n x n x n)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return n ** 3 / median_seconds(lambda: a @ b, repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=int, default=8192)
    parser.add_argument("--in", dest="in_features", type=int, default=2048)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--l3-mib", type=int, default=32, help="L3 size (lscpu), MiB")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    w = CSRWeight.random(args.out, args.in_features, args.density, generator=g)
    dense = w.to_dense().detach()
    torch_csr = w.to_torch_sparse()
    torch_csr_t = dense.T.to_sparse_csr()  # the transposed matrix, prebuilt as our CSC view is
    dram, l3, fmas = copy_bandwidth(), l3_copy_bandwidth(), fma_rate()
    matrix_bytes = w.nnz * 8
    l3_bytes = args.l3_mib << 20
    bandwidth = l3 if 2 * matrix_bytes <= l3_bytes else dram  # room for the operands too
    info = sparse_kernels.build_info()
    print(f"W {args.out}x{args.in_features}, density {args.density} (nnz {w.nnz}, {matrix_bytes / 1e6:.1f} MB), "
          f"threads {torch.get_num_threads()}, CPU path {info.get('cpu_path_active')}, tiles "
          f"{info.get('cpu_tile_kernels')}; copy bandwidth "
          f"DRAM {dram / 1e9:.1f} GB/s, L3 {l3 / 1e9:.1f} GB/s (the matrix is read from "
          f"{'L3' if bandwidth == l3 else 'DRAM'}); SGEMM {fmas / 1e9:.1f} G multiply-adds/s")
    print(f"{'product':<14}{'batch':>6}{'ours ms':>10}{'dense ms':>10}{'t.sparse ms':>12}"
          f"{'dense/ours':>11}{'t.sparse/ours':>14}{'floor ms':>10}{'ours/floor':>11}")
    for batch in args.batches:
        x = torch.randn(batch, args.in_features, generator=g)
        gy = torch.randn(batch, args.out, generator=g)
        x_t, gy_t = x.T.contiguous(), gy.T.contiguous()
        with torch.no_grad():
            rows = {
                "forward": (lambda: w(x),
                            min(median_seconds(lambda: x @ dense.T, args.repeats),
                                median_seconds(lambda: dense @ x_t, args.repeats)),
                            median_seconds(lambda: torch_csr @ x_t, args.repeats)),
                # The CPU backward's product: the scatter from the CSR.
                "input grad": (lambda: ops.sparse_linear_input_grad_csr(gy, w.values, w.row_ptr, w.col_idx,
                                                                        w.in_features, validate=False),
                               min(median_seconds(lambda: gy @ dense, args.repeats),
                                   median_seconds(lambda: dense.T @ gy_t, args.repeats)),
                               median_seconds(lambda: torch_csr_t @ gy_t, args.repeats)),
                "value grad": (lambda: ops.sparse_linear_value_grad(gy, x, w.row_ptr, w.col_idx, validate=False),
                               median_seconds(lambda: gy_t @ x, args.repeats), float("nan")),
            }
            floor = max(matrix_bytes / bandwidth, w.nnz * batch / fmas)
            for name, (ours_fn, dense_t, sparse_t) in rows.items():
                ours = median_seconds(ours_fn, args.repeats)
                print(f"{name:<14}{batch:>6}{ours * 1e3:>10.3f}{dense_t * 1e3:>10.3f}{sparse_t * 1e3:>12.3f}"
                      f"{dense_t / ours:>10.2f}x{sparse_t / ours:>13.2f}x{floor * 1e3:>10.3f}{ours / floor:>10.2f}x")


if __name__ == "__main__":
    main()
