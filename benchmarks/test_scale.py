"""Scale: one training step (forward, backward, SGD with momentum) of a
SparseLSTM layer with H = 65536 at 99.95% sparsity, T = 35, B = 20, on this
24 GB machine. Its dense W_hh alone would be 4 * 65536^2 * 4 bytes = 64 GiB
(69 GB), W_ih as much again. Run in a fresh process so that its peak
resident memory is its own (no thresholds on time):

    pytest -s benchmarks/test_scale.py --benchmark-only
    SK_SCALE_HIDDEN=16384 pytest -s benchmarks/test_scale.py   # a quicker look
"""

import os
import subprocess
import sys
import textwrap

HIDDEN = int(os.environ.get("SK_SCALE_HIDDEN", "65536"))
DENSITY, STEPS, BATCH = 0.0005, 35, 20

_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time, torch
    from sparse_kernels import SparseLSTM
    hidden, density, steps, batch = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    start = time.perf_counter()
    lstm = SparseLSTM(hidden, hidden, density=density)
    built = time.perf_counter()
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(steps, batch, hidden)
    out, _ = lstm(x)
    out.pow(2).mean().backward()
    optimizer.step()
    done = time.perf_counter()
    grads_finite = all(bool(p.grad.isfinite().all()) for p in lstm.parameters())
    print(json.dumps(dict(nnz=lstm.nnz, build_s=built - start, step_s=done - built, grads_finite=grads_finite,
                          peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
""")


def test_one_training_step_at_h65536(benchmark):
    import json

    def run():
        out = subprocess.run([sys.executable, "-c", _SCRIPT, str(HIDDEN), str(DENSITY), str(STEPS), str(BATCH)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    dense_hh_bytes = 4 * HIDDEN * HIDDEN * 4
    benchmark.extra_info.update(result, hidden=HIDDEN, dense_w_hh_bytes=dense_hh_bytes)
    print(f"\nSparseLSTM H={HIDDEN} density {DENSITY}: nnz {result['nnz']:,}; built in {result['build_s']:.1f} s; "
          f"one training step (T={STEPS}, B={BATCH}) {result['step_s']:.1f} s; peak RSS "
          f"{result['peak_rss_bytes'] / 2**30:.2f} GiB; dense W_hh alone would be {dense_hh_bytes / 2**30:.0f} GiB")
    assert result["grads_finite"]
    assert result["nnz"] == 2 * round(4 * HIDDEN * HIDDEN * DENSITY)  # W_ih and W_hh, exact per matrix
