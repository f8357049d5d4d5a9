"""benchmarks/lstm_no_grad_ab.py at a tiny size: one row per batch, density
and round, from measured times; its "saved" callable really forces the saved
activations and its "new" one really runs without them."""

import torch

from sparse_kernels import SparseLSTM
from conftest import load_benchmark_script
from test_lstm_layer_saved_activations import _RecordSave

TINY = ["--hidden", "8", "--layers", "1", "--steps", "3", "--batches", "1", "3", "--densities", "0.5",
        "--repeats", "1", "--rounds", "2"]


def test_prints_a_row_per_batch_density_and_round(capsys):
    load_benchmark_script("lstm_no_grad_ab").main(TINY)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("LSTM 1 layers, H 8, T 3, no_grad") and ", 2 rounds; MALLOC_MMAP_THRESHOLD_" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "0.5", "1"), ("1", "0.5", "2"), ("3", "0.5", "1"),
                                                  ("3", "0.5", "2")]
    for r in rows:
        dense, saved, new = (float(v) for v in r[3:6])
        assert dense > 0 and saved > 0 and new > 0
        assert float(r[6].rstrip("x")) > 0 and float(r[7].rstrip("x")) > 0  # ratios of unrounded times


def test_saved_callable_forces_the_activations_and_new_skips_them():
    script = load_benchmark_script("lstm_no_grad_ab")
    model = SparseLSTM(8, 8, 2, density=0.5)
    x = torch.randn(3, 2, 8)
    record = _RecordSave()
    with record:
        script._forward(model, x, True)()
        script._forward(model, x, None)()
    assert record.saves == [True, True, False, False]
