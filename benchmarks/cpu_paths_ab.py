"""The CPU's tiled product and fused LSTM loops against the paths they
replaced, in one run: each measurement runs twice, in two fresh processes,
with the switches below unset and set to 0 (read once per process; --switches
picks which ones "old" sets). Prints medians and the ratio old / new; no
thresholds.

    python benchmarks/cpu_paths_ab.py [--repeats 31] [--rounds 5] [--what products lstm] [--switches ...]

- products: sparse_linear forward, W (4H x H) at H 256/1024/2048, batch
  2/4/16/64, sparsity 50-99.9% (the study's forward rows);
- input_grad: sparse_linear_input_grad_csr, W 8192 x 2048 at 90%, batch
  16/32/64/256/700 (from batch 128 the new path transposes W per call and
  runs the tiled product);
- value_grad: sparse_linear_value_grad (the SDDMM at the stored nonzeros), W
  6000 x 1500 at 67% and 90%, batch 4/20/64/700 (from batch 2 the new path
  runs on tiles of both operands);
- lstm: one SparseLSTM layer H 1500 at 90%, T 35: inference at batch 1 and a
  training step (forward + backward) at batch 20;
- batch1: the batch-1 products (SPARSE_KERNELS_CPU_SCALAR_GATHER's kernels):
  W 8192 x 2048 at 90%, forward, transposed product through the CSC index and
  value gradient (a gathered multiply per nonzero),
  and SparseLSTM inference at batch 1, T 35, H 1024 (the demo's layer) and
  H 1500, at 90% (SPARSE_KERNELS_CPU_SLICED=0 alone: the CSR rows instead of
  W_hh's sliced view in that step);
- tiles16: the 16-lane tile products (SPARSE_KERNELS_CPU_AVX512's kernels,
  on a CPU with AVX-512F): sparse_linear forward, W 8192 x 2048 at 90%, batch
  16/20/32, and one SparseLSTM layer's training forward + backward at batch
  20 (H 1500, 90%), whose recurrent row lists run on a 16- and an 8-lane tile;
- blocked: the batch-1 products through the sliced view, whose blocked form
  (SPARSE_KERNELS_CPU_BLOCKED=0: the SELL-8 form instead) runs on CPUs with
  AVX-512F/VL/BW: SparseLinear 1500 -> 6000 at 90% (the module's view), W
  8192 x 2048 at 90% with its view passed to ops.sparse_linear (the module
  keeps the CSR above storage.csr_weight.SLICED_MAX_NNZ), and SparseLSTM inference at
  batch 1, T 35: 2 x 1500 at 90% (lstm_ratios.py's model) and 1 x 1500 at 67%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SWITCHES = ("SPARSE_KERNELS_CPU_TILED", "SPARSE_KERNELS_CPU_FUSED_LSTM", "SPARSE_KERNELS_CPU_SCALAR_GATHER",
            "SPARSE_KERNELS_CPU_SLICED", "SPARSE_KERNELS_CPU_AVX512", "SPARSE_KERNELS_CPU_BLOCKED")


def _median_ms(fn, repeats: int) -> float:
    from kernel_ratios import median_seconds  # this folder (run as a script)

    for _ in range(2):  # warm-ups, besides median_seconds' own
        fn()
    return median_seconds(fn, repeats) * 1e3


def measure(what: list[str], repeats: int) -> dict[str, float]:
    import torch

    from sparse_kernels import SparseLSTM, csr, ops

    torch.manual_seed(0)
    out: dict[str, float] = {}
    if "products" in what:
        for hidden in (256, 1024, 2048):
            for batch in (2, 4, 16, 64):
                for sparsity in (0.5, 0.9, 0.99, 0.999):
                    row_ptr, col_idx = csr.random_csr((4 * hidden, hidden), 1 - sparsity)
                    values, x = torch.randn(col_idx.numel()), torch.randn(batch, hidden)
                    op = torch.ops.sparse_kernels.sparse_linear
                    args = (x, values, row_ptr, col_idx) + (None,) * 8
                    out[f"forward H {hidden} B {batch} sparsity {sparsity}"] = _median_ms(lambda: op(*args), repeats)
    if "input_grad" in what:
        row_ptr, col_idx = csr.random_csr((8192, 2048), 0.1)
        values = torch.randn(col_idx.numel())
        for batch in (16, 32, 64, 256, 700):
            gy = torch.randn(batch, 8192)
            op = torch.ops.sparse_kernels.sparse_linear_input_grad_csr
            out[f"input grad 8192x2048 90% B {batch}"] = _median_ms(
                lambda: op(gy, values, row_ptr, col_idx, 2048), max(5, repeats // (1 + batch // 64)))
    if "value_grad" in what:
        for sparsity in (0.67, 0.9):
            row_ptr, col_idx = csr.random_csr((6000, 1500), 1 - sparsity)
            for batch in (4, 20, 64, 700):
                gy, x = torch.randn(batch, 6000), torch.randn(batch, 1500)
                op = torch.ops.sparse_kernels.sparse_linear_value_grad
                out[f"value grad 6000x1500 {sparsity:.0%} B {batch}"] = _median_ms(
                    lambda: op(gy, x, row_ptr, col_idx), max(5, repeats // (1 + batch // 64)))
    if "lstm" in what:
        layer = SparseLSTM(1500, 1500, density=0.1)
        x1 = torch.randn(35, 1, 1500)

        def infer():
            with torch.no_grad():
                layer(x1)

        x20 = torch.randn(35, 20, 1500)

        def train():
            out_, _ = layer(x20)
            out_.pow(2).mean().backward()

        out["SparseLSTM H 1500 90% inference batch 1"] = _median_ms(infer, max(5, repeats // 3))
        out["SparseLSTM H 1500 90% forward+backward batch 20"] = _median_ms(train, max(5, repeats // 6))
    if "tiles16" in what:
        row_ptr, col_idx = csr.random_csr((8192, 2048), 0.1)
        values = torch.randn(col_idx.numel())
        forward = torch.ops.sparse_kernels.sparse_linear
        for batch in (16, 20, 32):
            x = torch.randn(batch, 2048)
            out[f"forward 8192x2048 90% B {batch}"] = _median_ms(
                lambda: forward(x, values, row_ptr, col_idx, *(None,) * 8), repeats)
        layer = SparseLSTM(1500, 1500, density=0.1)
        x20 = torch.randn(35, 20, 1500)

        def train():
            out_, _ = layer(x20)
            out_.pow(2).mean().backward()

        out["SparseLSTM H 1500 90% forward+backward batch 20"] = _median_ms(train, max(5, repeats // 6))
    if "blocked" in what:
        from sparse_kernels import CSRWeight, SparseLinear

        lin = SparseLinear(1500, 6000, density=0.1)
        x = torch.randn(1, 1500)

        def linear():
            with torch.no_grad():
                lin(x)

        out["SparseLinear 1500 -> 6000 90% B 1 (view)"] = _median_ms(linear, repeats)
        weight = CSRWeight.random(8192, 2048, density=0.1)
        view, x2 = weight.sliced_view(8192), torch.randn(1, 2048)
        out["forward 8192x2048 90% B 1 (view)"] = _median_ms(
            lambda: ops.sparse_linear(x2, weight.values.detach(), weight.row_ptr, weight.col_idx, sliced=view,
                                      validate=False), repeats)
        for layers, density in ((2, 0.1), (1, 0.33)):
            model = SparseLSTM(1500, 1500, layers, density=density)
            x1 = torch.randn(35, 1, 1500)

            def infer():
                with torch.no_grad():
                    model(x1)

            out[f"SparseLSTM {layers} x 1500 {1 - density:.0%} inference batch 1"] = _median_ms(
                infer, max(5, repeats // 3))
    if "batch1" in what:
        row_ptr, col_idx = csr.random_csr((8192, 2048), 0.1)
        values = torch.randn(col_idx.numel())
        csc = csr.csr_transpose(row_ptr, col_idx, 2048)
        x, gy = torch.randn(1, 2048), torch.randn(1, 8192)
        forward = torch.ops.sparse_kernels.sparse_linear
        out["forward 8192x2048 90% B 1"] = _median_ms(lambda: forward(x, values, row_ptr, col_idx, *(None,) * 8),
                                                      repeats)
        out["input grad (CSC) 8192x2048 90% B 1"] = _median_ms(
            lambda: ops.sparse_linear_input_grad(gy, values, csc, validate=False), repeats)
        out["value grad 8192x2048 90% B 1"] = _median_ms(
            lambda: ops.sparse_linear_value_grad(gy, x, row_ptr, col_idx, validate=False), repeats)
        for hidden in (1024, 1500):
            layer = SparseLSTM(hidden, hidden, density=0.1)
            x1 = torch.randn(35, 1, hidden)

            def infer():
                with torch.no_grad():
                    layer(x1)

            out[f"SparseLSTM H {hidden} 90% inference batch 1"] = _median_ms(infer, max(5, repeats // 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--what", nargs="+", default=["products", "input_grad", "value_grad", "lstm"],
                        choices=["products", "input_grad", "value_grad", "lstm", "batch1", "tiles16", "blocked"])
    parser.add_argument("--switches", nargs="+", default=list(SWITCHES), choices=list(SWITCHES),
                        help="the switches the old run sets to 0 (default: all)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="new/old process pairs, alternating; figures are medians over rounds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.what, args.repeats)))
        return
    # Rounds alternate new and old processes, and each figure is the median
    # over rounds of the per-process medians: on this shared machine the
    # speed of a whole process can move 2x between runs minutes apart.
    rounds: dict[str, list[dict[str, float]]] = {"new": [], "old": []}
    for _ in range(args.rounds):
        for label, value in (("new", None), ("old", "0")):
            env = dict(os.environ)
            for name in SWITCHES:
                env.pop(name, None)
                if value is not None and name in args.switches:
                    env[name] = value
            cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats), "--what", *args.what]
            rounds[label].append(json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                                           text=True).stdout))
    runs = {label: {name: statistics.median(r[name] for r in per_round) for name in per_round[0]}
            for label, per_round in rounds.items()}
    import torch

    print(f"threads {torch.get_num_threads()}; medians in ms over {args.rounds} alternating round(s); "
          f"old = {'=0, '.join(args.switches)}=0")
    print(f"{'measurement':52s} {'new ms':>9s} {'old ms':>9s} {'old/new':>8s}")
    for name, new in runs["new"].items():
        old = runs["old"][name]
        print(f"{name:52s} {new:9.4f} {old:9.4f} {old / new:7.2f}x")


if __name__ == "__main__":
    main()
