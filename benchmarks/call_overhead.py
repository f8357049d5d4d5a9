"""What a sparse_linear call costs besides its kernel: the module, the op's
Python wrapper, the autograd layer and the dispatcher, layer by layer, in one
run (no_grad, batch 1 by default).

    python benchmarks/call_overhead.py [--batch 1] [--repeats 600]

Rows, each a way of computing the same product, outermost first:
  module           CSRWeight(x): what a user's model calls
  ops wrapper      sparse_kernels.ops.sparse_linear (checks, then the op)
  op               torch.ops.sparse_kernels.sparse_linear (dispatcher, autograd layer)
  below autograd   the op inside torch._C._AutoDispatchBelowAutograd
  CPU kernel       the op redispatched to its CPU kernel (the op-level checks stay)
For a tiny weight (8 x 8) the kernel is nothing, so the rows are the fixed
costs; for W 8192 x 2048 at 90% they are the share of a real batch-1 product
(the kernel streams 13 MB, so the Python around it runs from cold caches).
Calls alternate row by row; medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparse_kernels import CSRWeight, ops


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=600)
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    op = torch.ops.sparse_kernels.sparse_linear.default
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, no_grad; medians in us")
    widths = {"module": 9, "ops wrapper": 13, "op": 9, "below autograd": 16, "CPU kernel": 12}
    print(f"{'weight':<26}" + "".join(f"{name:>{width}}" for name, width in widths.items()))
    for rows, cols, density in ((8, 8, 0.5), (8192, 2048, 0.1)):
        w = CSRWeight.random(rows, cols, density, generator=g)
        x = torch.randn(args.batch, cols, generator=g)
        operands = (x, w.values, w.row_ptr, w.col_idx) + (None,) * 11

        def below_autograd():
            with torch._C._AutoDispatchBelowAutograd():
                return op(*operands)

        calls = {
            "module": lambda: w(x),
            "ops wrapper": lambda: ops.sparse_linear(x, w.values, w.row_ptr, w.col_idx, None, validate=False),
            "op": lambda: op(*operands),
            "below autograd": below_autograd,
            "CPU kernel": lambda: op.redispatch(cpu, *operands),
        }
        expected = calls["CPU kernel"]()
        times = {name: [] for name in calls}
        with torch.no_grad():
            for name, fn in calls.items():
                torch.testing.assert_close(fn(), expected)
            repeats = args.repeats if rows > 8 else 10 * args.repeats
            for _ in range(repeats):
                for name, fn in calls.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        label = f"{rows} x {cols}, density {density}"
        print(f"{label:<26}" + "".join(f"{statistics.median(times[name]) * 1e6:>{width}.1f}"
                                         for name, width in widths.items()))


if __name__ == "__main__":
    main()
