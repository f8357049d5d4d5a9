"""Shared test helpers: devices, random CSR problems, tolerances."""

import os
import tempfile

# torch.compile's on-disk cache does not notice a changed custom-op schema and
# can replay a graph compiled against an older build: give every test run a
# fresh cache. (Set before torch is imported.)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="sparse-kernels-inductor-"))

import pytest
import torch

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the GPU machine of issue #14 has pytest but no hypothesis: its CUDA tests need none
    HealthCheck = settings = None

import sparse_kernels  # noqa: F401  (loads the ops)
from sparse_kernels import csr

# Heavy tests (@pytest.mark.slow) are deselected by default; a bounded sample
# of each runs unmarked. The full set: `pytest --run-slow` or
# SPARSE_KERNELS_RUN_SLOW=1 (so also `SPARSE_KERNELS_RUN_SLOW=1 make test`);
# `pytest -m slow` runs the heavy ones alone.
RUN_SLOW_ENV = "SPARSE_KERNELS_RUN_SLOW"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help=f"also run the tests marked slow (or set {RUN_SLOW_ENV}=1)")


def run_slow(config) -> bool:
    return (config.getoption("--run-slow") or os.environ.get(RUN_SLOW_ENV, "") not in ("", "0")
            or "slow" in (config.getoption("-m") or ""))


def pytest_collection_modifyitems(config, items):
    if run_slow(config):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


def pytest_report_header(config):
    if not run_slow(config):
        return f"slow tests deselected (run them with --run-slow or {RUN_SLOW_ENV}=1)"


# Hypothesis profiles. "default": fresh random examples on every run (the
# examples that failed before are replayed first, from .hypothesis/).
# "ci": derandomized (the same examples on every run) and no example
# database, so that a CI result depends on the code only; `make test` uses it
# (pytest --hypothesis-profile=ci). Per-test max_examples stay as written.
if settings is not None:
    settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Parametrise over every device; CUDA cases exist only where a GPU does.
device_params = pytest.mark.parametrize("device", DEVICES)

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}


def load_benchmark_script(name: str):
    """benchmarks/<name>.py as a module (the folder is scripts, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def random_problem(n, out_f, in_f, density, *, dtype=torch.float64, device="cpu", seed=0,
                   init="uniform", requires_grad=False, bias=True):
    """Fresh random inputs (never zeros) for sparse_linear."""
    g = torch.Generator().manual_seed(seed)
    row_ptr, col_idx = csr.random_csr((out_f, in_f), density, init=init, generator=g)
    values = torch.randn(col_idx.numel(), generator=g, dtype=dtype)
    x = torch.randn(n, in_f, generator=g, dtype=dtype)
    b = torch.randn(out_f, generator=g, dtype=dtype) if bias else None
    move = lambda t: None if t is None else t.to(device).requires_grad_(requires_grad and t.is_floating_point())
    return dict(x=move(x), values=move(values), row_ptr=row_ptr.to(device), col_idx=col_idx.to(device),
                bias=move(b), shape=(out_f, in_f))


# (N, out_features, in_features, density): partial shapes, empty rows (low
# density), nnz = 0, one column, N = 0, a full matrix.
PROBLEM_SHAPES = [
    (5, 7, 6, 0.4),
    (1, 16, 33, 0.1),
    (3, 9, 1, 0.5),      # one column
    (4, 6, 5, 0.0),      # nnz = 0
    (0, 8, 4, 0.5),      # N = 0
    (2, 5, 4, 1.0),      # full
    (6, 40, 3, 0.05),    # many empty rows
]


def pytest_terminal_summary(terminalreporter):
    """After the results: the figures tests record with
    record_property("measurement", ...) (e.g. the long run's resident memory
    growth), and the number of bad-input cases the fuzz tests tried
    (tests/fuzz_helpers.py), per test and in all."""
    lines = [f"{report.nodeid}: {value}" for status in ("passed", "failed")
             for report in terminalreporter.getreports(status) if report.when == "call"
             for key, value in report.user_properties if key == "measurement"]
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)
    from fuzz_helpers import CASES, EXAMPLES
    if not CASES:
        return
    terminalreporter.section("fuzz cases tried")
    width = max(len(name) for name in CASES)
    terminalreporter.write_line(f"{'':<{width}}  {'examples':>8}  {'calls':>8}")
    for name in sorted(CASES):
        terminalreporter.write_line(f"{name:<{width}}  {EXAMPLES[name]:>8,}  {CASES[name]:>8,}")
    terminalreporter.write_line(f"{'total':<{width}}  {sum(EXAMPLES.values()):>8,}  {sum(CASES.values()):>8,}")


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Runs a test under one and under two torch threads (the CPU kernels'
    serial and parallel paths), restoring the count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
