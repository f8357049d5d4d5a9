"""benchmarks/build_ab.py times two trees in alternating fresh processes (here
the same tree twice, at a tiny size), prints a row per measurement with the
figures of each round, and refuses a folder that holds no package."""

from pathlib import Path

import pytest

from conftest import load_benchmark_script

ROOT = Path(__file__).resolve().parents[1]


def test_prints_a_row_per_measurement_with_each_rounds_figures(capsys):
    script = load_benchmark_script("build_ab")
    assert script.main(["--old", str(ROOT), "--new", str(ROOT), "--rounds", "2", "--hidden", "16",
                        "--repeats", "2", "--what", "linear"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"old {ROOT} against new {ROOT}: CPU time, one thread")
    rows = lines[2:]
    assert [r.split(",")[0] for r in rows] == ["SparseLinear 16 -> 64"] * 2
    for row, rows_in_batch in zip(rows, ("batch 20", "batch 700")):
        assert rows_in_batch in row
        figures = row.split(rows_in_batch)[1].split()
        assert len(figures) == 5  # two rounds old, two rounds new, the ratio
        assert all(float(f) > 0 for f in figures[:4]) and figures[4].endswith("x")


def test_refuses_a_folder_without_the_package(tmp_path):
    script = load_benchmark_script("build_ab")
    with pytest.raises(SystemExit):
        script.main(["--old", str(tmp_path), "--new", str(ROOT), "--rounds", "1"])


def test_the_batch1_input_gradient_rows(capsys):
    script = load_benchmark_script("build_ab")
    assert script.main(["--old", str(ROOT), "--new", str(ROOT), "--rounds", "1", "--hidden", "16",
                        "--repeats", "1", "--what", "input_grad1"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [r.split(", batch 1")[0] for r in rows] == ["input grad 64x16", "input grad 8192x2048"]
    for row in rows:
        figures = row.split(", batch 1")[1].split()
        assert len(figures) == 3 and all(float(f) > 0 for f in figures[:2]) and figures[2].endswith("x")
