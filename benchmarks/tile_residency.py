"""Where the tiled products' x lives, and what it costs: the forward product and
the value gradient (SDDMM) over N rows for weights with the same nonzeros per
row but a narrower input, so that x's tiles move from L2 into L1.

    python benchmarks/tile_residency.py [--rows 6000] [--per-row 150] [--batch 700]
                                        [--in 1500 600 300 200] [--threads 1] [--min-time 0.5]

Prints ms and G multiply-adds/s for each width (no thresholds). A 16-lane
tile of x is in_features * 64 bytes (94 KiB at 1500: L2; 12.5 KiB at 200: L1);
a value-gradient block of 32 lanes twice that. If a product is bound by
fetching x's lines from L2, its rate rises as the width falls; if it is bound
by its own instructions, it does not.
"""

from __future__ import annotations

import argparse
import torch
from torch.utils import benchmark

import sparse_kernels  # noqa: F401  (registers the ops)


def fixed_row_csr(rows: int, in_features: int, per_row: int, generator: torch.Generator):
    """A CSR pattern with exactly per_row sorted random columns in every row."""
    cols = torch.stack([torch.randperm(in_features, generator=generator)[:per_row].sort().values
                        for _ in range(rows)])
    row_ptr = torch.arange(0, rows * per_row + 1, per_row, dtype=torch.int32)
    return row_ptr, cols.reshape(-1).to(torch.int32)


def median_seconds(fn, min_time: float) -> float:
    """torch.utils.benchmark's median over blocks of runs (one warm-up first), on
    torch's current thread count (the Timer's own default is one thread)."""
    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_time).median


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=6000)
    p.add_argument("--per-row", type=int, default=150)
    p.add_argument("--batch", type=int, default=700)
    p.add_argument("--in", dest="widths", type=int, nargs="+", default=[1500, 600, 300, 200])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of runs per measurement")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    sk = torch.ops.sparse_kernels
    print(f"W {args.rows} rows x {args.per_row} nonzeros, batch {args.batch}, threads {args.threads}, "
          f"medians over >= {args.min_time} s each")
    print(f"{'in':>6} {'x tile KB':>9} {'value grad ms':>14} {'G MA/s':>7} {'forward ms':>11} {'G MA/s':>7}")
    for width in args.widths:
        if width < args.per_row:
            raise SystemExit(f"--in {width} is below --per-row {args.per_row}")
        row_ptr, col_idx = fixed_row_csr(args.rows, width, args.per_row, g)
        x = torch.randn(args.batch, width, generator=g)
        gy = torch.randn(args.batch, args.rows, generator=g)
        values = torch.randn(col_idx.numel(), generator=g)
        t_vg = median_seconds(lambda: sk.sparse_linear_value_grad(gy, x, row_ptr, col_idx), args.min_time)
        t_fw = median_seconds(lambda: sk.sparse_linear(x, values, row_ptr, col_idx, None, None, None, None,
                                                       None, None, None, None), args.min_time)
        giga = args.batch * col_idx.numel() / 1e9
        print(f"{width:>6} {width * 64 / 1024:>9.0f} {t_vg * 1e3:>14.1f} {giga / t_vg:>7.1f} "
              f"{t_fw * 1e3:>11.1f} {giga / t_fw:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
