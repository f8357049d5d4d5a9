"""`sparse-rnn` command line (also `python -m sparse_kernels`).

demo: a small end-to-end run of the sparse ops (the language-model demo
replaces it once the training loops land).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

from . import build_info
from .storage import CSRWeight


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _demo_products(hidden: int, density: float, batches, repeats: int, generator) -> list[tuple]:
    """Time y = x W^T for an LSTM-shaped W (4H x H): ours, dense, torch.sparse."""
    weight = CSRWeight.random(4 * hidden, hidden, density, generator=generator)
    dense = weight.to_dense().detach()
    torch_csr = weight.to_torch_sparse()
    rows = []
    for batch in tqdm(batches, desc="timing products", leave=False):
        x = torch.randn(batch, hidden, generator=generator)
        x_t = x.T.contiguous()
        with torch.no_grad():
            ours = _median_seconds(lambda: weight(x), repeats)
            # Dense: the faster of the two layouts (W @ x^T is often faster).
            dense_t = min(_median_seconds(lambda: x @ dense.T, repeats),
                          _median_seconds(lambda: dense @ x_t, repeats))
            sparse_t = _median_seconds(lambda: torch_csr @ x_t, repeats)
        rows.append((batch, ours, dense_t, sparse_t))
    return rows


def _demo_training(generator, steps: int = 200) -> tuple[float, float, CSRWeight]:
    """Fit a 90%-sparse student to a sparse teacher: the loss must fall."""
    teacher = CSRWeight.random(64, 128, 0.1, generator=generator)
    student = CSRWeight.from_dense(torch.randn(64, 128, generator=generator) * 0.01, mask=teacher.mask())
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    first = last = float("nan")
    for step in tqdm(range(steps), desc="training a sparse layer", leave=False):
        x = torch.randn(32, 128, generator=generator)
        with torch.no_grad():
            target = teacher(x)
        loss = torch.nn.functional.mse_loss(student(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    return first, last, student


def cmd_demo(args) -> int:
    torch.set_num_threads(args.threads) if args.threads else None
    g = torch.Generator().manual_seed(0)
    info = build_info()
    print(f"sparse_kernels built for torch {info['torch_version']}; CPU paths {info['cpu_paths']}; "
          f"CUDA: {'archs ' + info['cuda_archs'] if info['cuda'] else 'not compiled'}")
    print(f"threads: {torch.get_num_threads()}")

    print(f"\n1) y = x W^T, W {4 * args.hidden}x{args.hidden} (an LSTM W_hh) at {1 - args.density:.0%} sparsity, "
          f"median of {args.repeats} runs")
    print(f"{'batch':>5} {'ours ms':>9} {'dense ms':>9} {'torch.sparse ms':>16} {'dense/ours':>11} {'torch.sparse/ours':>18}")
    for batch, ours, dense_t, sparse_t in _demo_products(args.hidden, args.density, args.batches, args.repeats, g):
        print(f"{batch:>5} {ours * 1e3:>9.3f} {dense_t * 1e3:>9.3f} {sparse_t * 1e3:>16.3f} "
              f"{dense_t / ours:>10.2f}x {sparse_t / ours:>17.2f}x")

    first, last, student = _demo_training(g)
    dense_bytes = student.out_features * student.in_features * student.values.element_size()
    stored = student.nnz * (student.values.element_size() + student.col_idx.element_size()) \
        + student.row_ptr.numel() * student.row_ptr.element_size()
    print(f"\n2) training a {student.out_features}x{student.in_features} layer at {1 - student.density:.0%} "
          f"sparsity with SGD: loss {first:.4f} -> {last:.4f}")
    print(f"   stored weight: {stored} bytes (values + indices) vs {dense_bytes} bytes dense")
    if not last < first:
        print("error: the loss did not decrease", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sparse-rnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a small end-to-end run of the sparse ops")
    demo.add_argument("--hidden", type=int, default=1024)
    demo.add_argument("--density", type=float, default=0.1)
    demo.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    demo.add_argument("--repeats", type=int, default=20)
    demo.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    if not 0.0 < args.density <= 1.0:
        parser.error(f"--density must be in (0, 1], got {args.density}")
    return args.func(args)
