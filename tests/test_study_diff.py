"""benchmarks/study_diff.py: the speed-ups it reads from a study's markdown
and the moves it reports between two runs."""

from __future__ import annotations

from conftest import load_benchmark_script


def _module():
    return load_benchmark_script("study_diff")


def _study(forward_ours: str, value_ours: str) -> str:
    return f"""# sparse_kernels kernel study

## forward: forward product W_hh h: (B, H) -> (B, 4H)

| H | batch | sparsity | nnz | dense ms (layout) | torch.sparse CSR | ours CSR | ours CSR vs torch.sparse |
|---:|---:|---:|---:|---:|---:|---:|---:|
| 256 | 1 | 90% | 26214 | 0.02467 (W@x^T) | 0.04762 (0.518x) | {forward_ours} | 1.07x |
| 256 | 16 | 90% | 26214 | 0.06 (W@x^T) | 0.05 (1.2x) | 0.07 (0.857x) 1x | 0.7x |

## value_grad: value gradient at the stored entries

| H | batch | sparsity | nnz | dense ms (layout) | torch.sparse CSR | ours CSR | ours CSR vs torch.sparse |
|---:|---:|---:|---:|---:|---:|---:|---:|
| 256 | 1 | 90% | 26214 | 0.1 (x) | n/a | {value_ours} | n/a |

## Crossover: the sparsity above which each storage beats dense

| op | H | batch | torch.sparse CSR | ours CSR |
|---|---|---|---|---|
| forward | 256 | 1 | 99% (2x) | none |
"""


def test_reads_every_speedup_cell_and_skips_the_rest():
    got = _module().speedups(_study("0.04445 (0.555x)", "0.05 (2x)"))
    assert got == {
        ("forward", "torch.sparse CSR", 256, 1, "90%"): 0.518,
        ("forward", "ours CSR", 256, 1, "90%"): 0.555,
        ("forward", "torch.sparse CSR", 256, 16, "90%"): 1.2,
        ("forward", "ours CSR", 256, 16, "90%"): 0.857,
        ("value_grad", "ours CSR", 256, 1, "90%"): 2.0,
    }


def test_reports_the_rows_that_moved_past_the_flag():
    module = _module()
    old = module.speedups(_study("0.04445 (0.5x)", "0.05 (2x)"))
    new = module.speedups(_study("0.02 (1.5x)", "0.05 (1.9x)"))
    summary, moved = module.compare(old, new, flag=1.5)
    by_key = {(row[0], row[1]): row for row in summary}
    assert by_key["forward", "ours CSR"][2:] == ["2", "2.00", "1.00", "3.00"]
    assert by_key["value_grad", "ours CSR"][3] == "0.95"
    assert moved == [["forward", "ours CSR", "256", "1", "90%", "0.5x", "1.5x", "3.00"]]
