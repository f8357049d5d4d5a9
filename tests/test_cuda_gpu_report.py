"""benchmarks/gpu_report.py without a GPU: it refuses clearly, and its
table-building code (ratios, targets, floors) is right on made-up timings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import load_benchmark_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_report.py"


def _report_module():
    return load_benchmark_script("gpu_report")


def test_without_a_gpu_it_stops_with_a_clear_message(tmp_path):
    out = tmp_path / "report.md"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "needs a CUDA GPU" in done.stderr and "torch.cuda.is_available() is False" in done.stderr
    assert not out.exists()


def test_table_from_made_up_timings():
    r = _report_module()
    rows = [
        # 2.5x cuBLAS (target 2x: met), 4x cuSPARSE (target 2x: met)
        r.Row("forward, a", 0.02, {"cuBLAS": 0.05, "cuSPARSE": 0.08},
              [r.Target("cuBLAS", 2.0), r.Target("cuSPARSE", 2.0, min_baseline_ms=0.010)], floor_us=5.0,
              rate=(1.5e12, "B/s")),
        # 0.5x cuBLAS: missed; cuSPARSE at 8 µs: its target does not apply
        r.Row("forward, b", 0.1, {"cuBLAS": 0.05, "cuSPARSE": 0.008},
              [r.Target("cuBLAS", 1.0), r.Target("cuSPARSE", 2.0, min_baseline_ms=0.010)]),
        r.Row("train, c", 4.0, {"cuDNN": 2.0}, [r.Target("cuDNN", 1.5)], note="per-step path"),
        r.Row("step, d", 0.03, floor_us=10.0),
    ]
    table = r.markdown_table(rows, header="made up")
    lines = table.splitlines()
    assert lines[0] == "made up"
    body = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    a, b, c, d = (body[k] for k in ("forward, a", "forward, b", "train, c (per-step path)", "step, d"))
    assert "| 2.50x |" in a and "| 4.00x |" in a and "| met |" in a
    assert "| 1500 GB/s |" in a and "| 5.0 | 4.0x |" in a  # 20 µs against a 5 µs floor
    assert "missed: 0.50x < 1x cuBLAS |" in b and "cuSPARSE <" not in b
    assert "| 0.50x |" in c and "missed: 0.50x < 1.5x cuDNN" in c
    assert d.endswith("| 10.0 | 3.0x |") and "met" not in d
    # One column per header cell in every row.
    widths = {line.count("|") for line in lines[2:]}
    assert len(widths) == 1, widths


def test_issue_targets_per_grid_point():
    r = _report_module()
    forward, both = r._product_targets(0.1, 16)
    assert [(t.baseline, t.ratio) for t in forward] == [("cuBLAS", 2.0), ("cuSPARSE", 2.0)]
    assert [(t.baseline, t.ratio) for t in both] == [("cuBLAS", 1.5)]
    forward, both = r._product_targets(0.01, 700)
    assert forward[0].ratio == 3.0 and both == []
    forward, _ = r._product_targets(0.5, 700)
    assert [t.baseline for t in forward] == ["cuSPARSE"]


def test_row_builders_run_at_the_quick_size_on_the_cpu(monkeypatch):
    """The code paths of every row builder but the bf16 BSR one (its kernels
    are CUDA's), on CPU tensors at the --quick size: each gives finite
    positive times and its baselines, so that a GPU session does not find an
    error in them. The figures themselves mean nothing here."""
    r = _report_module()
    monkeypatch.setattr(r, "DEVICE", "cpu")
    monkeypatch.setenv("SPARSE_KERNELS_WIDE_MIN_BATCH", "16")
    rows = r.product_rows(r.QUICK) + r.rule_rows(r.QUICK) + r.lstm_rows(r.QUICK) + r.lstm_forward_rows(r.QUICK)
    assert os.environ["SPARSE_KERNELS_WIDE_MIN_BATCH"] == "16"  # restored after rule_rows
    assert len(rows) == 2 * len(r.QUICK.product_grid) + 2 * len(r.QUICK.rule_batches) + 2 * len(r.QUICK.lstm_models) + 3
    for row in rows:
        assert row.ours_ms > 0 and all(v > 0 for v in row.baselines.values()), row
    assert {"cuBLAS", "cuSPARSE"} <= set(rows[0].baselines) and "cuDNN" in rows[-2].baselines
    assert rows[-1].floor_us > 0
    r.markdown_table(rows)
