"""benchmarks/lstm_ratios.py at a tiny size: the table of both models, and
with --rounds each round's ratios and their spread, from measured times."""

import pytest

from conftest import load_benchmark_script

TINY = ["--hidden", "8", "--layers", "1", "--steps", "3", "--batch", "2", "--densities", "0.5", "--repeats", "1"]


def test_one_round_prints_the_table(capsys):
    load_benchmark_script("lstm_ratios").main(TINY)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("LSTM 1 layers, H 8, T 3") and "rounds" not in lines[0]
    assert lines[2].startswith("nn.LSTM") and lines[3].startswith("SparseLSTM density 0.5")
    assert not any(line.startswith(("round", "over")) for line in lines)


def test_rounds_report_each_ratio_and_the_spread(capsys):
    load_benchmark_script("lstm_ratios").main(TINY + ["--rounds", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("3 rounds")
    rounds = [line for line in lines if line.startswith("round ")]
    assert [line.split(":")[0] for line in rounds] == ["round 1", "round 2", "round 3"]
    spread = [line for line in lines if line.startswith("over 3 rounds")]
    assert len(spread) == 2  # training and inference at the one density
    for line in spread:
        low, mid, high = (float(part.split()[-1].rstrip("x")) for part in line.split(",")[-3:])
        assert 0 < low <= mid <= high


def test_refuses_zero_rounds():
    with pytest.raises(SystemExit):
        load_benchmark_script("lstm_ratios").main(TINY + ["--rounds", "0"])
