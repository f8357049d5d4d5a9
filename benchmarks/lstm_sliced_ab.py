"""Batch-1 LSTM inference with and without W_hh's sliced-ELLPACK view, in one
process: the same layer's ``ops.lstm_layer`` call, alternating the two
forms, so that the machine's swings between processes cannot enter the
ratio. Prints medians, ns per nonzero per step and CSR / sliced (no
thresholds).

    python benchmarks/lstm_sliced_ab.py [--threads 1 2] [--hidden 1024 1500] [--repeats 41]
"""

from __future__ import annotations

import argparse
import time

import torch

from sparse_kernels import SparseLSTM, ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 1500])
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    torch.manual_seed(0)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for hidden in args.hidden:
            layer = SparseLSTM(hidden, hidden, density=args.density)
            w_hh = layer.weight_hh_l0
            with torch.no_grad():
                gates = layer.weight_ih_l0(torch.randn(args.steps, 1, hidden), layer.bias_ih_l0 + layer.bias_hh_l0)
                h0, c0 = torch.randn(1, hidden), torch.randn(1, hidden)
                values, row_ptr, col_idx, csc = w_hh.csr_operands()
                view = w_hh.sliced_view(hidden)
                forms = {
                    "sliced": lambda: ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, validate=False,
                                                     hh_sliced=view),
                    "csr": lambda: ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, validate=False),
                }
                times: dict[str, list[float]] = {name: [] for name in forms}
                for _ in range(2):  # warm-ups
                    for fn in forms.values():
                        fn()
                for _ in range(args.repeats):
                    for name, fn in forms.items():
                        start = time.perf_counter()
                        fn()
                        times[name].append(time.perf_counter() - start)
            median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
            per_nnz = {name: m / args.steps / values.numel() * 1e9 for name, m in median.items()}
            print(f"threads {threads} H {hidden} density {args.density} T {args.steps} batch 1: "
                  f"sliced {median['sliced'] * 1e3:.3f} ms ({per_nnz['sliced']:.3f} ns/nnz), "
                  f"CSR rows {median['csr'] * 1e3:.3f} ms ({per_nnz['csr']:.3f} ns/nnz), "
                  f"CSR / sliced {median['csr'] / median['sliced']:.2f}x")


if __name__ == "__main__":
    main()
