"""Batch-1 inference with and without a weight's sliced-ELLPACK view, in one
process: the same call alternating the two forms, so that the machine's
swings between processes cannot enter the ratio. The LSTM layer
(``ops.lstm_layer`` over T steps with W_hh's view) and, with ``--linear``,
the plain product y = x W^T of one input row (``ops.sparse_linear``). Prints
medians, ns per nonzero and CSR / sliced (no thresholds).

    python benchmarks/lstm_sliced_ab.py [--threads 1 2] [--hidden 1024 1500] [--linear 8192x2048] [--repeats 41]
"""

from __future__ import annotations

import argparse
import time

import torch

from sparse_kernels import SparseLinear, SparseLSTM, ops


def alternate(forms: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each form, the forms called in turn (after two warm-ups)."""
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(2):
        for fn in forms.values():
            fn()
    for _ in range(repeats):
        for name, fn in forms.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def linear_ab(shape: str, density: float, repeats: int, threads: int) -> None:
    out_f, in_f = (int(n) for n in shape.split("x"))
    weight = SparseLinear(in_f, out_f, bias=False, density=density).weight
    x = torch.randn(1, in_f)
    with torch.no_grad():
        view = weight.sliced_view(out_f)
        forms = {
            "sliced": lambda: ops.sparse_linear(x, weight.values, weight.row_ptr, weight.col_idx, sliced=view,
                                                validate=False),
            "csr": lambda: ops.sparse_linear(x, weight.values, weight.row_ptr, weight.col_idx, validate=False),
        }
        median = alternate(forms, repeats)
    per_nnz = {name: m / weight.nnz * 1e9 for name, m in median.items()}
    print(f"threads {threads} W {out_f}x{in_f} density {density} batch 1: "
          f"sliced {median['sliced'] * 1e3:.3f} ms ({per_nnz['sliced']:.3f} ns/nnz), "
          f"CSR rows {median['csr'] * 1e3:.3f} ms ({per_nnz['csr']:.3f} ns/nnz), "
          f"CSR / sliced {median['csr'] / median['sliced']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 1500])
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--linear", nargs="*", default=[], metavar="OUTxIN",
                        help="also the plain product of these shapes (e.g. 8192x2048)")
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
                median = alternate(forms, args.repeats)
            per_nnz = {name: m / args.steps / values.numel() * 1e9 for name, m in median.items()}
            print(f"threads {threads} H {hidden} density {args.density} T {args.steps} batch 1: "
                  f"sliced {median['sliced'] * 1e3:.3f} ms ({per_nnz['sliced']:.3f} ns/nnz), "
                  f"CSR rows {median['csr'] * 1e3:.3f} ms ({per_nnz['csr']:.3f} ns/nnz), "
                  f"CSR / sliced {median['csr'] / median['sliced']:.2f}x")
        for shape in args.linear:
            linear_ab(shape, args.density, args.repeats, threads)


if __name__ == "__main__":
    main()
