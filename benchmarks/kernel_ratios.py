"""Dense vs torch.sparse vs sparse_kernels for the products of RNN training,
measured side by side in one run; prints times and ratios.

    python benchmarks/kernel_ratios.py [--out 8192] [--in 2048] [--density 0.1] [--batches 1 16]

Absolute times on a shared machine are noisy; the ratios within one run are
what to read. The floor column is the bandwidth floor of our CSR product:
(4-byte value + 4-byte index) per nonzero over the measured copy bandwidth.
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=int, default=8192)
    parser.add_argument("--in", dest="in_features", type=int, default=2048)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    w = CSRWeight.random(args.out, args.in_features, args.density, generator=g)
    dense = w.to_dense().detach()
    torch_csr = w.to_torch_sparse()
    torch_csr_t = dense.T.to_sparse_csr()  # the transposed matrix, prebuilt as our CSC view is
    bandwidth = copy_bandwidth()
    floor = w.nnz * 8 / bandwidth
    info = sparse_kernels.build_info()
    print(f"W {args.out}x{args.in_features}, density {args.density} (nnz {w.nnz}), threads "
          f"{torch.get_num_threads()}, CPU path {info.get('cpu_path_active')}, copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s, DRAM floor of our CSR product {floor * 1e3:.3f} ms")
    print(f"{'product':<14}{'batch':>6}{'ours ms':>10}{'dense ms':>10}{'t.sparse ms':>12}"
          f"{'dense/ours':>11}{'t.sparse/ours':>14}")
    csc = w.transposed_index()
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
                "input grad": (lambda: ops.sparse_linear_input_grad(gy, w.values, csc),
                               min(median_seconds(lambda: gy @ dense, args.repeats),
                                   median_seconds(lambda: dense.T @ gy_t, args.repeats)),
                               median_seconds(lambda: torch_csr_t @ gy_t, args.repeats)),
                "value grad": (lambda: ops.sparse_linear_value_grad(gy, x, w.row_ptr, w.col_idx),
                               median_seconds(lambda: gy_t @ x, args.repeats), float("nan")),
            }
            for name, (ours_fn, dense_t, sparse_t) in rows.items():
                ours = median_seconds(ours_fn, args.repeats)
                print(f"{name:<14}{batch:>6}{ours * 1e3:>10.3f}{dense_t * 1e3:>10.3f}{sparse_t * 1e3:>12.3f}"
                      f"{dense_t / ours:>10.2f}x{sparse_t / ours:>13.2f}x")


if __name__ == "__main__":
    main()
