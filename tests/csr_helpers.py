"""CSR weights with chosen row lengths, for the batch-1 kernel tests
(test_cpu_gathered.py, test_cpu_sliced.py, test_cpu_sliced_linear.py), and
running a check in a fresh process under a kernel switch."""

import os
import subprocess
import sys

import torch

# 0 (empty row), 1-7 (tail only), 8, 9, 15, 16, 17, 24 (16 + 8), 31, 33, 100.
ROW_LENGTHS = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 24, 31, 33, 100]


def weight_with_row_lengths(lengths, in_f, seed):
    """CSR with the given nonzeros per row, random sorted columns, random values."""
    g = torch.Generator().manual_seed(seed)
    row_ptr = torch.tensor([0] + list(lengths), dtype=torch.int64).cumsum(0).to(torch.int32)
    cols = [torch.randperm(in_f, generator=g)[:n].sort().values for n in lengths]
    col_idx = torch.cat(cols).to(torch.int32) if cols else torch.zeros(0, dtype=torch.int32)
    values = torch.randn(col_idx.numel(), generator=g)
    return values, row_ptr, col_idx


def run_fresh(code: str, **env) -> None:
    """Runs ``code`` (which prints ok) in a new interpreter with the tests
    folder importable and the given environment variables set (the kernels'
    switches are read once per process)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=path, **env),
                         cwd=os.path.dirname(here), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (env, run.stderr[-2000:])


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def sliced_view_of(values, row_ptr, col_idx, segment_rows, in_f, form="sell8"):
    """(values, cols, slice_ptr) of a CSR's sliced view in the given form,
    "sell8" (csr.sliced_layout, padding column in_f) or "blocked"
    (csr.blocked_layout): what CSRWeight.sliced_view returns, built directly."""
    from sparse_kernels import csr

    if form == "blocked":
        layout = csr.blocked_layout(row_ptr, col_idx, segment_rows, in_f)
    else:
        layout = csr.sliced_layout(row_ptr, col_idx, segment_rows, pad_col=in_f)
    return csr.sliced_values(values, layout), layout.cols, layout.slice_ptr
