"""SparseLSTM forwards under torch.no_grad() (evaluation, inference at a
batch) with and without the saved activations, and nn.LSTM, side by side in
one process. Prints medians and ratios; no thresholds.

    python benchmarks/lstm_no_grad_ab.py [--hidden 1500] [--layers 2] [--steps 35] [--batches 1 10 20]
                                         [--densities 0.1 0.33] [--repeats 15] [--rounds 3]

Under no_grad `ops.lstm_layer` passes save_activations=False: the CPU's fused
loop then writes no gates and cells ((T, B, 5H) floats a layer that only a
backward reads). "saved" runs the same model with save_activations=True
forced, what every forward did before; "old / new" is the gain, "nn.LSTM /
new" the speed against dense. The three callables alternate call by call
(lstm_ratios.time_side_by_side), so that load shifts on a shared machine hit
all of them.

nn.LSTM's time depends on glibc's allocator: with its default (sliding) mmap
threshold, the large buffers of each call can come back as fresh pages,
faulted in on every call; the header says whether MALLOC_MMAP_THRESHOLD_ was
set (BENCHMARKS.md, session Y: 1.35-1.5x on nn.LSTM's batch-1 forward, 1.28x
on its training step).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from unittest import mock

import torch
from torch import nn

from sparse_kernels import SparseLSTM, ops
from sparse_kernels.nn import lstm as lstm_module

sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # the sibling script, also when loaded by path
from lstm_ratios import time_side_by_side  # noqa: E402


def _forward(model: nn.Module, x: torch.Tensor, save: bool | None):
    """model(x) under no_grad; save=True forces the saved activations."""
    def run():
        with torch.no_grad():
            if save is None:
                model(x)
                return
            forced = functools.partial(ops.lstm_layer, save_activations=save)
            with mock.patch.object(lstm_module.ops, "lstm_layer", forced):
                model(x)
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1500)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 20])
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.33])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    torch.manual_seed(0)
    h = args.hidden
    dense = nn.LSTM(h, h, args.layers)
    sparse = {d: SparseLSTM(h, h, args.layers, density=d) for d in args.densities}
    print(f"LSTM {args.layers} layers, H {h}, T {args.steps}, no_grad; threads {torch.get_num_threads()}, fp32, "
          f"medians of {args.repeats}, {args.rounds} rounds; "
          f"MALLOC_MMAP_THRESHOLD_ {os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}")
    print(f"{'batch':>5} {'density':>8} {'round':>5} {'nn.LSTM ms':>11} {'saved ms':>9} {'new ms':>8} "
          f"{'old / new':>10} {'nn.LSTM / new':>14}")
    for batch in args.batches:
        x = torch.randn(args.steps, batch, h)
        for d, model in sparse.items():
            fns = {"dense": _forward(dense, x, None), "saved": _forward(model, x, True),
                   "new": _forward(model, x, None)}
            for r in range(args.rounds):
                t = time_side_by_side(fns, args.repeats)
                print(f"{batch:>5} {d:>8g} {r + 1:>5} {t['dense'] * 1e3:>11.2f} {t['saved'] * 1e3:>9.2f} "
                      f"{t['new'] * 1e3:>8.2f} {t['saved'] / t['new']:>9.2f}x {t['dense'] / t['new']:>13.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
