"""SparseLSTM against nn.LSTM, side by side in one run: issue 6's whole-model
targets. Prints times and ratios (no thresholds).

    python benchmarks/lstm_ratios.py [--hidden 1500] [--layers 2] [--steps 35] [--batch 20]
                                     [--densities 0.1 0.33] [--repeats 5] [--rounds 1]

- training step: forward, backward and SGD (momentum 0.9) of a stacked LSTM
  over (T, B, H) inputs, at each density;
- inference: batch 1, the same model under torch.no_grad();
- memory: the bytes the recurrent weights, their gradients and the optimizer's
  momentum hold after a step, against what the stored nonzeros need (value +
  gradient + momentum + a 4-byte column index each).

Absolute times on a shared machine are noisy; the ratios within one run are
what to read. The runs of the models alternate, so that load shifts hit both.
--rounds N repeats the whole side-by-side measurement N times in this process
and prints each round's ratios and their minimum, median and maximum (the
table then reads the medians of each model's round medians): on the Zen 4
host nn.LSTM's own time moved 0.05-0.18 s between runs minutes apart, so one
round's ratio says little about a target at the edge. nn.LSTM's times also
depend on glibc's allocator: with its default (sliding) mmap threshold the
large buffers of each call may come back as fresh pages, faulted in on
every call; MALLOC_MMAP_THRESHOLD_ (printed in the header) fixes the
threshold (BENCHMARKS.md, session Y, has both).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from sparse_kernels import CSRWeight, SparseLSTM


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


def _training_step(model: nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer):
    def step():
        optimizer.zero_grad(set_to_none=True)
        out, _ = model(x)
        out.pow(2).mean().backward()
        optimizer.step()
    return step


def _inference(model: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            model(x)
    return run


def time_side_by_side(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, their runs interleaved (one warm-up each)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: _median(t) for name, t in times.items()}


def training_memory(model: SparseLSTM, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(bytes held by the recurrent matrices' values, gradients, momentum and
    every index or cached buffer of theirs; the bytes the stored nonzeros
    need: 4 value + 4 gradient + 4 momentum + 4 column index each)."""
    held = needed = 0
    for name, w in model.named_modules():
        if not isinstance(w, CSRWeight) or "weight_hh" not in name:
            continue
        tensors = [w.values, w.values.grad, optimizer.state[w.values].get("momentum_buffer")]
        tensors += list(w.buffers())
        held += sum(t.numel() * t.element_size() for t in tensors if t is not None)
        needed += 16 * w.nnz
    return held, needed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1500)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.33])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="side-by-side measurements, each reported")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    torch.manual_seed(0)
    h, layers = args.hidden, args.layers
    dense = nn.LSTM(h, h, layers)
    sparse = {d: SparseLSTM(h, h, layers, density=d) for d in args.densities}
    x = torch.randn(args.steps, args.batch, h)
    x1 = torch.randn(args.steps, 1, h)
    # nn.LSTM's times move 1.3-1.5x with glibc's mmap threshold (BENCHMARKS.md, session Y): say which one ran.
    print(f"LSTM {layers} layers, H {h}, T {args.steps}; training batch {args.batch}, inference batch 1; "
          f"threads {torch.get_num_threads()}, fp32, "
          f"MALLOC_MMAP_THRESHOLD_ {os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}, medians of {args.repeats}"
          + (f", {args.rounds} rounds" if args.rounds > 1 else ""))

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    optimizers = {"dense": sgd(dense), **{d: sgd(m) for d, m in sparse.items()}}
    train_fns = {"dense": _training_step(dense, x, optimizers["dense"]),
                 **{d: _training_step(m, x, optimizers[d]) for d, m in sparse.items()}}
    infer_fns = {"dense": _inference(dense, x1), **{d: _inference(m, x1) for d, m in sparse.items()}}
    rounds = []
    for r in range(args.rounds):
        rounds.append((time_side_by_side(train_fns, args.repeats), time_side_by_side(infer_fns, args.repeats)))
        if args.rounds > 1:
            train_r, infer_r = rounds[-1]
            print(f"round {r + 1}: nn.LSTM train {train_r['dense']:.3f} s, infer {infer_r['dense']:.4f} s; "
                  + "; ".join(f"density {d:g}: train {train_r['dense'] / train_r[d]:.2f}x, "
                              f"infer {infer_r['dense'] / infer_r[d]:.2f}x" for d in sparse))
    if args.rounds > 1:
        for kind, index in (("train", 0), ("infer", 1)):
            for d in sparse:
                ratios = sorted(rnd[index]["dense"] / rnd[index][d] for rnd in rounds)
                print(f"over {args.rounds} rounds, {kind} at density {d:g}: nn.LSTM / ours min {ratios[0]:.2f}x, "
                      f"median {_median(ratios):.2f}x, max {ratios[-1]:.2f}x")
    train = {name: _median([rnd[0][name] for rnd in rounds]) for name in train_fns}
    infer = {name: _median([rnd[1][name] for rnd in rounds]) for name in infer_fns}
    print(f"{'model':<22}{'train step s':>13}{'nn.LSTM/ours':>13}{'infer b1 s':>12}{'nn.LSTM/ours':>13}"
          f"{'W_hh memory / needed':>22}")
    print(f"{'nn.LSTM':<22}{train['dense']:>13.3f}{'':>13}{infer['dense']:>12.4f}")
    for d, model in sparse.items():
        held, needed = training_memory(model, optimizers[d])
        print(f"{f'SparseLSTM density {d:g}':<22}{train[d]:>13.3f}{train['dense'] / train[d]:>12.2f}x"
              f"{infer[d]:>12.4f}{infer['dense'] / infer[d]:>12.2f}x{held / needed:>21.3f}x")


if __name__ == "__main__":
    main()
