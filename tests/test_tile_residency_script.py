"""benchmarks/tile_residency.py runs at a tiny size, prints one row per width
with the figures it measured, and refuses a width below the row length."""

import pytest

from conftest import load_benchmark_script


def test_prints_a_row_per_width(capsys):
    script = load_benchmark_script("tile_residency")
    assert script.main(["--rows", "40", "--per-row", "6", "--batch", "20", "--in", "30", "12",
                        "--min-time", "0.01"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("W 40 rows x 6 nonzeros, batch 20")
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["30", "12"]
    for r in rows:
        assert len(r) == 6 and float(r[3]) > 0 and float(r[5]) > 0  # the two rates, from measured times


def test_fixed_row_pattern_is_sorted_and_full():
    import torch
    script = load_benchmark_script("tile_residency")
    row_ptr, col_idx = script.fixed_row_csr(5, 9, 4, torch.Generator().manual_seed(1))
    assert row_ptr.tolist() == [0, 4, 8, 12, 16, 20]
    for r in range(5):
        cols = col_idx[4 * r:4 * r + 4]
        assert torch.equal(cols, cols.sort().values) and cols.unique().numel() == 4 and int(cols.max()) < 9


def test_refuses_a_width_below_the_row_length():
    script = load_benchmark_script("tile_residency")
    with pytest.raises(SystemExit, match="below --per-row"):
        script.main(["--rows", "4", "--per-row", "8", "--in", "5", "--min-time", "0.01"])


def test_times_on_the_threads_asked_for(monkeypatch):
    # torch.utils.benchmark.Timer runs its statement on one thread unless told
    # otherwise: --threads 2 once measured one thread.
    import torch
    script = load_benchmark_script("tile_residency")
    seen = []
    real_timer = script.benchmark.Timer

    def recording_timer(*args, **kwargs):
        seen.append(kwargs.get("num_threads", 1))
        return real_timer(*args, **kwargs)

    monkeypatch.setattr(script.benchmark, "Timer", recording_timer)
    before = torch.get_num_threads()
    try:
        assert script.main(["--rows", "8", "--per-row", "2", "--batch", "4", "--in", "6", "--threads", "2",
                            "--min-time", "0.01"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 2]
