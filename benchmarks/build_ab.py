"""Two builds of the extension against each other, in one run: each round runs
the measurements in a fresh process importing sparse_kernels from the old
tree, then in one importing it from the new tree (--old DIR, --new DIR: a
folder holding a built `sparse_kernels` package, e.g. a checkout after
`make install`, or a copy of the package with an older `_C` library in it).
On one thread (the default) each process times its CPU time
(`time.process_time`), so that the time a process spends descheduled on a
shared machine is not counted; on more threads, wall-clock time. Prints each
round's medians, the median over the rounds and old / new; no thresholds.

    python benchmarks/build_ab.py --old /tmp/old_tree --new . [--rounds 4] [--threads 1]
                                  [--what linear lstm step input_grad1] [--hidden 1500] [--repeats 11]

float32, 90% sparse, T 35, batch 20:
- linear: SparseLinear H -> 4H at batch 20 and 700 (T x B), no gradient;
- lstm: one SparseLSTM layer of H units: forward (no gradient), forward + backward;
- step: a two-layer SparseLSTM's training step (SGD with momentum 0.9);
- input_grad1: the batch-1 input gradient (sparse_linear_input_grad_csr, a
  scatter over W's rows) of W 4H x H and of W 8192 x 2048 (not in the default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WHAT = ("linear", "lstm", "step", "input_grad1")
DEFAULT_WHAT = ("linear", "lstm", "step")


def _median_ms(fn, repeats: int, clock) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1e3


def measure(what: list[str], hidden: int, repeats: int, threads: int) -> dict[str, float]:
    """Medians in ms of the measurements named in `what`, in this process."""
    import torch

    from sparse_kernels import SparseLinear, SparseLSTM

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    steps, batch = 35, 20
    out: dict[str, float] = {}
    if "linear" in what:
        linear = SparseLinear(hidden, 4 * hidden, density=0.1)
        for rows in (batch, steps * batch):
            x = torch.randn(rows, hidden)
            with torch.no_grad():
                out[f"SparseLinear {hidden} -> {4 * hidden}, batch {rows}"] = _median_ms(
                    lambda: linear(x), repeats, clock)
    xs = torch.randn(steps, batch, hidden)
    if "lstm" in what:
        layer = SparseLSTM(hidden, hidden, 1, density=0.1)
        with torch.no_grad():
            out[f"SparseLSTM layer H {hidden}, forward"] = _median_ms(lambda: layer(xs), repeats, clock)

        def forward_backward():
            layer.zero_grad(set_to_none=True)
            layer(xs)[0].sum().backward()
        out[f"SparseLSTM layer H {hidden}, forward + backward"] = _median_ms(forward_backward, repeats, clock)
    if "input_grad1" in what:
        from sparse_kernels import csr

        op = torch.ops.sparse_kernels.sparse_linear_input_grad_csr
        for rows, cols in ((4 * hidden, hidden), (8192, 2048)):
            row_ptr, col_idx = csr.random_csr((rows, cols), 0.1)
            values, gy = torch.randn(col_idx.numel()), torch.randn(1, rows)
            out[f"input grad {rows}x{cols}, batch 1"] = _median_ms(
                lambda: op(gy, values, row_ptr, col_idx, cols), 5 * repeats, clock)
    if "step" in what:
        model = SparseLSTM(hidden, hidden, 2, density=0.1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def training_step():
            optimizer.zero_grad(set_to_none=True)
            model(xs)[0].pow(2).mean().backward()
            optimizer.step()
        out[f"2-layer SparseLSTM H {hidden}, training step"] = _median_ms(training_step, repeats, clock)
    return out


def run_child(tree: str, args) -> dict[str, float]:
    """measure() in a fresh process that imports sparse_kernels from `tree`."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    command = [sys.executable, os.path.abspath(__file__), "--child", "--hidden", str(args.hidden),
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--what", *args.what]
    # Run from the tree itself, so that no other sparse_kernels folder on the
    # working directory shadows it.
    done = subprocess.run(command, env=env, cwd=os.path.abspath(tree), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the measurement with {tree} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if os.path.realpath(result.pop("imported from")) != os.path.realpath(tree):
        raise SystemExit(f"the process meant for {tree} imported sparse_kernels from elsewhere")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", help="folder holding the old build's sparse_kernels package")
    parser.add_argument("--new", help="folder holding the new build's sparse_kernels package")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--what", nargs="+", choices=WHAT, default=list(DEFAULT_WHAT))
    parser.add_argument("--hidden", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import sparse_kernels
        result = measure(args.what, args.hidden, args.repeats, args.threads)
        result["imported from"] = os.path.dirname(os.path.dirname(os.path.abspath(sparse_kernels.__file__)))
        print(json.dumps(result))
        return 0
    if not args.old or not args.new:
        parser.error("--old and --new are required")
    for tree in (args.old, args.new):
        if not os.path.isdir(os.path.join(tree, "sparse_kernels")):
            parser.error(f"{tree} holds no sparse_kernels package")
    clock = "CPU time, one thread" if args.threads == 1 else f"wall clock, {args.threads} threads"
    print(f"old {args.old} against new {args.new}: {clock}; medians of {args.repeats} in ms, "
          f"{args.rounds} alternating round(s)")
    rounds: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        old, new = run_child(args.old, args), run_child(args.new, args)
        for name in old:
            rounds.setdefault(name, []).append((old[name], new[name]))
    print(f"{'measurement':<48}{'old ms (rounds)':>32}{'new ms (rounds)':>32}{'old / new':>11}")
    for name, pairs in rounds.items():
        old_ms = statistics.median(p[0] for p in pairs)
        new_ms = statistics.median(p[1] for p in pairs)
        old_list = " ".join(f"{p[0]:.3g}" for p in pairs)
        new_list = " ".join(f"{p[1]:.3g}" for p in pairs)
        print(f"{name:<48}{old_list:>32}{new_list:>32}{old_ms / new_ms:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
