"""The GPU report of issues #14 and #15: on a machine with a CUDA GPU and the
extension built, check the CUDA path against the CPU path on fresh random
inputs, then time, in one run, every row of the two issues' tables: ours
(SparseLinear, SparseLSTM), cuBLAS (dense fp32 with TF32 off), cuSPARSE
(torch.sparse_csr_tensor @) and cuDNN (nn.LSTM, torch's defaults). CUDA
events, medians. Prints one Markdown table (ratios, each target met or not,
each product's achieved bandwidth / FLOP rate beside its floor from
benchmarks/h100_floors.py) and writes it to --out.

    python benchmarks/gpu_report.py --out gpu_report.md            # the full run, under 5 minutes on an H200
    python benchmarks/gpu_report.py --quick --out /tmp/smoke.md    # small sizes: does everything run

Without a GPU it stops with a message saying so (exit status 2). A failed
correctness check is reported in the output and gives exit status 1 (the
timings still run: a GPU session is scarce).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# Where everything runs: "cuda"; the tests run the row builders on "cpu" at
# the --quick size to check the code paths (tests/test_cuda_gpu_report.py).
DEVICE = "cuda"


def _floors():
    spec = importlib.util.spec_from_file_location("h100_floors", HERE / "h100_floors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


floors = _floors()


# ----------------------------------------------------------------------------- the table
@dataclass
class Target:
    baseline: str  # "cuBLAS", "cuSPARSE" or "cuDNN"
    ratio: float  # baseline time / ours at least this
    min_baseline_ms: float = 0.0  # only where the baseline takes at least this long


@dataclass
class Row:
    case: str
    ours_ms: float
    baselines: dict[str, float] = field(default_factory=dict)  # name -> ms
    targets: list[Target] = field(default_factory=list)
    floor_us: float | None = None
    rate: tuple[float, str] | None = None  # (achieved amount per second, unit) e.g. (1.2e12, "B/s")
    note: str = ""


BASELINES = ("cuBLAS", "cuSPARSE", "cuDNN")


def _ratio(row: Row, name: str) -> float | None:
    base = row.baselines.get(name)
    return None if base is None or row.ours_ms <= 0 else base / row.ours_ms


def verdict(row: Row) -> str:
    """'met', 'missed (...)' or '' (no target) for a row's targets."""
    missed, applicable = [], 0
    for t in row.targets:
        base, ratio = row.baselines.get(t.baseline), _ratio(row, t.baseline)
        if base is None or ratio is None or base < t.min_baseline_ms:
            continue
        applicable += 1
        if ratio < t.ratio:
            missed.append(f"{ratio:.2f}x < {t.ratio:g}x {t.baseline}")
    if not applicable:
        return ""
    return "met" if not missed else "missed: " + "; ".join(missed)


def _fmt_rate(rate: tuple[float, str] | None) -> str:
    if rate is None:
        return ""
    value, unit = rate
    return f"{value / 1e9:.0f} G{unit}"


def markdown_table(rows: list[Row], header: str = "") -> str:
    """One Markdown table: times in ms, ratios as baseline / ours (above 1:
    ours faster), the targets and whether they are met, the achieved rate and
    the analytical floor (ours / floor: how far from it)."""
    lines = [header, ""] if header else []
    lines += ["| case | ours ms | " + " | ".join(f"{b} ms" for b in BASELINES) + " | "
              + " | ".join(f"vs {b}" for b in BASELINES) + " | targets | verdict | achieved | floor µs | ours / floor |",
              "|---|---:|" + "---:|" * (2 * len(BASELINES)) + "---|---|---:|---:|---:|"]
    for row in rows:
        times = [f"{row.baselines[b]:.3f}" if b in row.baselines else "" for b in BASELINES]
        ratios = [f"{r:.2f}x" if (r := _ratio(row, b)) is not None else "" for b in BASELINES]
        targets = ", ".join(f">= {t.ratio:g}x {t.baseline}" + (f" (where >= {t.min_baseline_ms * 1e3:g} µs)"
                                                                 if t.min_baseline_ms else "") for t in row.targets)
        floor = f"{row.floor_us:.1f}" if row.floor_us is not None else ""
        off = f"{row.ours_ms * 1e3 / row.floor_us:.1f}x" if row.floor_us else ""
        case = row.case + (f" ({row.note})" if row.note else "")
        lines.append(f"| {case} | {row.ours_ms:.3f} | " + " | ".join(times) + " | " + " | ".join(ratios)
                     + f" | {targets} | {verdict(row)} | {_fmt_rate(row.rate)} | {floor} | {off} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- timing
def time_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median of `repeats` calls, each between two CUDA events recorded on the
    current stream, the calls issued back to back (host time between launches
    shows as GPU idle time, as for a user)."""
    for _ in range(warmup):
        fn()
    if DEVICE != "cuda":  # the code-path check on the CPU: wall time
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize()
    events = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def kernel_ms(fn, calls: int = 10) -> float:
    """GPU kernel time per call by torch.profiler (launch and host time not
    counted): what the batch-1 bandwidth target is measured by."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.device_time_total for e in prof.key_averages() if e.device_time_total > 0
                   and "Memcpy" not in e.key and "Memset" not in e.key)
    return total_us / 1e3 / calls


def measure_hbm_bytes_per_s() -> float:
    """Device copy bandwidth (read + write) of a 1 GiB buffer."""
    a = torch.empty(1 << 28, device=DEVICE)
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a), repeats=10)
    return 2 * a.numel() * a.element_size() / (ms / 1e3)


# ----------------------------------------------------------------------------- sizes
@dataclass
class Sizes:
    out_f: int = 8192
    in_f: int = 2048
    product_grid: tuple = ((0.1, 1), (0.1, 16), (0.1, 64), (0.1, 700), (0.5, 700), (0.3, 16),
                           (0.01, 1), (0.01, 16), (0.01, 64), (0.01, 700), (0.001, 700))
    rule_batches: tuple = (8, 16, 32, 64)
    steps: int = 35
    lstm_models: tuple = (  # (layers, hidden, density, batch)
        (2, 1500, 0.1, 20), (2, 1500, 0.1, 1), (2, 1500, 0.33, 20), (1, 4096, 0.01, 20), (1, 4096, 0.01, 1),
        (1, 8192, 0.01, 1), (1, 8192, 0.01, 20))
    forward_model: tuple = (2, 1500, 0.1, 8)
    bsr_batch: int = 700
    repeats: int = 30


QUICK = Sizes(out_f=1024, in_f=256, product_grid=((0.1, 1), (0.1, 64), (0.01, 300)), rule_batches=(16,), steps=5,
              lstm_models=((1, 128, 0.1, 4),), forward_model=(1, 128, 0.1, 4), bsr_batch=64, repeats=3)


def _product_targets(density: float, batch: int) -> tuple[list[Target], list[Target]]:
    """Issue #14's targets for the forward and for forward + backward."""
    cusparse = Target("cuSPARSE", 2.0, min_baseline_ms=0.010)
    forward = {(0.1, 1): 2.0, (0.1, 16): 2.0, (0.1, 64): 1.0, (0.1, 700): 0.8, (0.3, 16): 1.0}.get((density, batch))
    if density == 0.01:
        forward = 3.0
    both = 1.5 if density == 0.1 and batch <= 16 else None
    return ([Target("cuBLAS", forward)] if forward else []) + [cusparse], ([Target("cuBLAS", both)] if both else [])


# ----------------------------------------------------------------------------- correctness
def check_correctness(report: list[str]) -> bool:
    """The CUDA path against the CPU path (float64) on fresh random inputs:
    SparseLinear forward and both gradients across the narrow/wide rule, in
    fp32 and bf16, and a SparseLSTM forward and backward."""
    from sparse_kernels import SparseLinear, SparseLSTM
    ok = True
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        for batch in (1, 15, 16, 64, 300):
            layer = SparseLinear(256, 512, density=0.1).double()
            x = torch.randn(batch, 256, dtype=torch.float64, requires_grad=True)
            grad = torch.randn(batch, 512, dtype=torch.float64)
            layer(x).backward(grad)
            want = (layer(x).detach(), x.grad, layer.weight.values.grad)
            gpu = copy.deepcopy(layer).to(DEVICE).to(dtype)
            xg = x.detach().to(DEVICE).to(dtype).requires_grad_()
            y = gpu(xg)
            y.backward(grad.to(DEVICE).to(dtype))
            got = (y.detach(), xg.grad, gpu.weight.values.grad)
            for name, g, w in zip(("output", "input grad", "value grad"), got, want):
                err = ((g.double().cpu() - w).norm() / w.norm().clamp_min(1e-30)).item()
                if not err <= tol:
                    ok = False
                    report.append(f"FAILED: SparseLinear {dtype} batch {batch} {name}: relative error {err:.2e} > {tol}")
    lstm = SparseLSTM(64, 96, num_layers=2, density=0.2).double()
    x = torch.randn(7, 5, 64, dtype=torch.float64, requires_grad=True)
    out, _ = lstm(x)
    out.sum().backward()
    gpu = copy.deepcopy(lstm).float().to(DEVICE)
    xg = x.detach().float().to(DEVICE).requires_grad_()
    out_g, _ = gpu(xg)
    out_g.sum().backward()
    for name, g, w in (("output", out_g, out), ("input grad", xg.grad, x.grad)):
        err = ((g.detach().double().cpu() - w.detach()).norm() / w.detach().norm()).item()
        if not err <= 1e-4:
            ok = False
            report.append(f"FAILED: SparseLSTM {name}: relative error {err:.2e} > 1e-4")
    report.append("correctness against the CPU path (fresh random inputs): " + ("all passed" if ok else "FAILURES above"))
    return ok


# ----------------------------------------------------------------------------- the rows
def product_rows(sizes: Sizes) -> list[Row]:
    from sparse_kernels import SparseLinear
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    out_f, in_f = sizes.out_f, sizes.in_f
    for density, batch in sizes.product_grid:
        layer = SparseLinear(in_f, out_f, bias=False, density=density).to(DEVICE)
        w = layer.weight
        dense = w.to_dense().detach()
        sp = torch.sparse_csr_tensor(w.row_ptr, w.col_idx, w.values.detach(), (out_f, in_f), check_invariants=False)
        x = torch.randn(batch, in_f, device=DEVICE)
        grad = torch.randn(batch, out_f, device=DEVICE)
        with torch.no_grad():
            ours = time_ms(lambda: layer(x), sizes.repeats)
            cublas = time_ms(lambda: torch.nn.functional.linear(x, dense), sizes.repeats)
            cusparse = time_ms(lambda: sp @ x.t(), sizes.repeats)
        shape = f"W {out_f}x{in_f} density {density}, batch {batch}"
        cases = floors.product_cases(out_f, in_f, w.nnz, batch, "fp32", shape)
        fwd_targets, both_targets = _product_targets(density, batch)
        note = ""
        rate = (cases[0].flops / (ours / 1e3), "FLOP/s")
        if batch == 1 and DEVICE == "cuda":  # the bandwidth target: by kernel time
            with torch.no_grad():
                k_ms = kernel_ms(lambda: layer(x))
            rate = (cases[0].bytes / (k_ms / 1e3), "B/s")
            note = f"kernel time {k_ms * 1e3:.1f} µs"
        rows.append(Row(f"forward, {shape}", ours, {"cuBLAS": cublas, "cuSPARSE": cusparse}, fwd_targets,
                        cases[0].floor_us, rate, note))
        xg = x.clone().requires_grad_()
        dense_g = dense.clone().requires_grad_()

        def ours_step():
            layer(xg).backward(grad)

        def cublas_step():
            torch.nn.functional.linear(xg, dense_g).backward(grad)

        both = time_ms(ours_step, sizes.repeats)
        both_dense = time_ms(cublas_step, sizes.repeats)
        floor_both = sum(c.floor_us for c in cases[:3])
        rows.append(Row(f"forward + backward, {shape}", both, {"cuBLAS": both_dense}, both_targets, floor_both,
                        (sum(c.flops for c in cases[:3]) / (both / 1e3), "FLOP/s")))
        del layer, dense, sp
    return rows


def rule_rows(sizes: Sizes) -> list[Row]:
    """Both sides of the narrow/wide rule (kernels.h kWideBatchMinRows), by
    SPARSE_KERNELS_WIDE_MIN_BATCH: the data to set its threshold."""
    from sparse_kernels import SparseLinear
    rows = []
    layer = SparseLinear(sizes.in_f, sizes.out_f, bias=False, density=0.1).to(DEVICE)
    before = os.environ.get("SPARSE_KERNELS_WIDE_MIN_BATCH")
    try:
        for batch in sizes.rule_batches:
            x = torch.randn(batch, sizes.in_f, device=DEVICE)
            for label, threshold in (("narrow kernels forced", "1000000000"), ("wide kernels forced", "1")):
                os.environ["SPARSE_KERNELS_WIDE_MIN_BATCH"] = threshold
                with torch.no_grad():
                    ms = time_ms(lambda: layer(x), sizes.repeats)
                rows.append(Row(f"forward, W {sizes.out_f}x{sizes.in_f} density 0.1, batch {batch}", ms,
                                note=label))
    finally:
        if before is None:
            os.environ.pop("SPARSE_KERNELS_WIDE_MIN_BATCH", None)
        else:
            os.environ["SPARSE_KERNELS_WIDE_MIN_BATCH"] = before
    return rows


def bsr_row(sizes: Sizes) -> Row:
    from sparse_kernels import SparseLinear
    batch = sizes.bsr_batch
    layer = SparseLinear(sizes.in_f, sizes.out_f, bias=False, density=0.1, block_shape=(16, 16)).to(DEVICE).bfloat16()
    dense = layer.weight.to_dense().detach()
    x = torch.randn(batch, sizes.in_f, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        ours = time_ms(lambda: layer(x), sizes.repeats)
        cublas = time_ms(lambda: torch.nn.functional.linear(x, dense), sizes.repeats)
    return Row(f"BSR 16x16 bf16 forward, W {sizes.out_f}x{sizes.in_f} block density 0.1, batch {batch}", ours,
               {"cuBLAS": cublas}, [Target("cuBLAS", 3.0)], note="cuBLAS: dense bf16 GEMM")


def lstm_rows(sizes: Sizes) -> list[Row]:
    from sparse_kernels import SparseLSTM
    rows = []
    targets = {(2, 1500, 0.1, 20): (2.0, 1.5), (2, 1500, 0.1, 1): (2.0, None), (2, 1500, 0.33, 20): (1.0, 1.0),
               (1, 8192, 0.01, 1): (5.0, 3.0), (1, 8192, 0.01, 20): (5.0, 3.0)}
    for layers, hidden, density, batch in sizes.lstm_models:
        ours_m = SparseLSTM(hidden, hidden, num_layers=layers, density=density).to(DEVICE)
        dense_m = torch.nn.LSTM(hidden, hidden, num_layers=layers, device=DEVICE)
        x = torch.randn(sizes.steps, batch, hidden, device=DEVICE)
        xg = x.clone().requires_grad_()
        model = f"{layers} x {hidden}, density {density}, batch {batch}, T {sizes.steps}"
        infer_t, train_t = targets.get((layers, hidden, density, batch), (None, None))
        with torch.no_grad():
            ours = time_ms(lambda: ours_m(x), sizes.repeats)
            cudnn = time_ms(lambda: dense_m(x), sizes.repeats)
        rows.append(Row(f"SparseLSTM inference, {model}", ours, {"cuDNN": cudnn},
                        [Target("cuDNN", infer_t)] if infer_t else []))
        ours = time_ms(lambda: ours_m(xg)[0].sum().backward(), sizes.repeats)
        cudnn = time_ms(lambda: dense_m(xg)[0].sum().backward(), sizes.repeats)
        rows.append(Row(f"SparseLSTM train step (forward + backward), {model}", ours, {"cuDNN": cudnn},
                        [Target("cuDNN", train_t)] if train_t else []))
        del ours_m, dense_m
    return rows


def lstm_forward_rows(sizes: Sizes) -> list[Row]:
    """Issue #15's forward-only comparison (per-step path, persistent kernel,
    cuDNN) and one recurrent step (product + cell) beside its floor."""
    from sparse_kernels import SparseLSTM
    layers, hidden, density, batch = sizes.forward_model
    model_name = f"{layers} x {hidden}, density {density}, batch {batch}, T {sizes.steps}"
    ours_m = SparseLSTM(hidden, hidden, num_layers=layers, density=density).to(DEVICE)
    dense_m = torch.nn.LSTM(hidden, hidden, num_layers=layers, device=DEVICE)
    x = torch.randn(sizes.steps, batch, hidden, device=DEVICE)
    rows = []
    before = os.environ.get("SPARSE_KERNELS_PERSISTENT_LSTM")
    try:
        with torch.no_grad():
            cudnn = time_ms(lambda: dense_m(x), sizes.repeats)
            for label, flag in (("per-step path", "0"), ("persistent kernel where it fits", "1")):
                os.environ["SPARSE_KERNELS_PERSISTENT_LSTM"] = flag
                rows.append(Row(f"SparseLSTM forward, {model_name}", time_ms(lambda: ours_m(x), sizes.repeats),
                                {"cuDNN": cudnn}, note=label))
    finally:
        if before is None:
            os.environ.pop("SPARSE_KERNELS_PERSISTENT_LSTM", None)
        else:
            os.environ["SPARSE_KERNELS_PERSISTENT_LSTM"] = before
    w_hh = ours_m.weight_hh_l0
    h = torch.randn(batch, hidden, device=DEVICE)
    c = torch.randn(batch, hidden, device=DEVICE)
    raw = torch.ops.sparse_kernels

    def step():
        gates = raw.sparse_linear(h, w_hh.values, w_hh.row_ptr, w_hh.col_idx, None, None, None, None)
        return raw.lstm_cell(gates, c)

    with torch.no_grad():
        ms = time_ms(step, sizes.repeats)
    shape = f"W_hh {4 * hidden}x{hidden} density {density}, batch {batch}"
    floor_us = (floors.product_cases(4 * hidden, hidden, w_hh.nnz, batch, "fp32", shape)[0].floor_us
                + floors.lstm_cell_cases(hidden, batch, "fp32", shape)[0].floor_us)
    rows.append(Row(f"one recurrent step (sparse_linear + lstm_cell), {shape}", ms, floor_us=floor_us,
                    note="target: within 3x of the floor"))
    return rows


# ----------------------------------------------------------------------------- main
NO_GPU = ("gpu_report.py needs a CUDA GPU: torch.cuda.is_available() is False here (torch {torch}, "
          "CUDA build {cuda}). Run it on the GPU machine after building the extension "
          "(benchmarks/gpu_session.sh).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to write the Markdown report")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke test")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU.format(torch=torch.__version__, cuda=torch.version.cuda), file=sys.stderr)
        return 2
    import sparse_kernels
    info = sparse_kernels.build_info()
    if not info.get("cuda"):
        print(f"gpu_report.py: the sparse_kernels extension was built without CUDA kernels ({info}); rebuild it "
              "on this machine (python setup.py build_ext --inplace)", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else Sizes()
    started = datetime.datetime.now(datetime.timezone.utc)
    notes: list[str] = []
    ok = check_correctness(notes)
    hbm = measure_hbm_bytes_per_s()
    rows: list[Row] = []
    # The table is rewritten after each section, so that a run cut short by
    # the session's time limit still leaves what it measured.
    for section in (product_rows, rule_rows, lambda z: [bsr_row(z)], lstm_rows, lstm_forward_rows):
        rows += section(sizes)
        seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        header = (f"GPU report ({'quick' if args.quick else 'full'}): {torch.cuda.get_device_name()}, "
                  f"{started:%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, extension built for "
                  f"{info.get('cuda_archs')}; fp32 unless said, cuBLAS with TF32 off, cuDNN with torch's defaults; "
                  f"CUDA events, median of {sizes.repeats}; measured HBM copy bandwidth {hbm / 1e9:.0f} GB/s; "
                  f"floors: benchmarks/h100_floors.py (H100 figures); {seconds:.0f} s so far.\n\n" + "\n".join(notes))
        table = markdown_table(rows, header)
        args.out.write_text(table + "\n")
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
