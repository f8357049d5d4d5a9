"""python/quality_curves.py, docs/quality.md's tables and plots: the
convergence test (no new best validation perplexity in the last three
epochs), the per-epoch table's ratios, and the plot with training curves; on
run folders written here in train-lm's metrics.csv form."""

import csv
import importlib
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent / "python"
FIELDS = ["epoch", "step", "lr", "train_loss", "train_ppl", "valid_loss", "valid_ppl", "stored_params",
          "dense_params", "allreduce_bytes_per_step", "skipped_steps", "epoch_seconds"]


@pytest.fixture
def curves(monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    return importlib.import_module("quality_curves")


def write_run(folder: Path, valid, train, lr=20.0, test=None):
    folder.mkdir(parents=True)
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for epoch, (v, t) in enumerate(zip(valid, train), start=1):
            w.writerow({"epoch": epoch, "step": 100 * epoch, "lr": lr, "train_loss": 0.0, "train_ppl": t,
                        "valid_loss": 0.0, "valid_ppl": v, "stored_params": 10, "dense_params": 30,
                        "allreduce_bytes_per_step": 0, "skipped_steps": 0, "epoch_seconds": 12.0})
    if test is not None:
        folder.with_suffix(".log").write_text(f"epoch 1 ...\nbest valid ppl {min(valid)}; test ppl {test}\n")
    return folder


@pytest.mark.parametrize("valid, expected", [
    ([100, 90, 85, 86, 87, 85.5], True),    # best at epoch 3, three epochs after it without a new best
    ([100, 90, 85, 86, 87], False),         # only two epochs after the best
    ([100, 90, 85, 86, 87, 84], False),     # a new best in the last epoch
    ([100], False),
])
def test_convergence_is_three_epochs_without_a_new_best(curves, valid, expected):
    assert curves.converged(valid) is expected


def test_tables_read_the_runs(curves, tmp_path, capsys):
    dense = write_run(tmp_path / "dense", [120.0, 100.0, 90.0, 91.0, 92.0, 90.5], [200, 110, 95, 90, 85, 80],
                      test=88.25)
    sparse = write_run(tmp_path / "st67", [130.0, 99.0, 95.0, 94.0], [210, 120, 100, 96], lr=15.0)
    assert curves.main([str(dense), str(sparse), "--per-epoch", "--labels", "dense,ST"]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = {line.split(" | ")[0].lstrip("| "): line for line in out if line.startswith("| dense |")
               or line.startswith("| ST |")}
    assert "90.00 (3) | yes" in summary["dense"] and "| 88.2 |" in summary["dense"]
    assert "94.00 (4) | no" in summary["ST"] and "| - |" in summary["ST"]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out if line[:3] in ("| 1", "| 2", "| 5")}
    # epoch 2: ST's valid 99 (lr 15) over dense's 100
    assert rows["2"] == "| 2 | 100.00 (20) | 110.0 | 99.00 (15) | 120.0 | 0.990 |"
    # epoch 5: dense only
    assert rows["5"] == "| 5 | 92.00 (20) | 85.0 |  |  |  |"


def test_a_run_without_epochs_is_refused(curves, tmp_path):
    empty = write_run(tmp_path / "empty", [], [])
    with pytest.raises(SystemExit, match="no epochs"):
        curves.main([str(empty)])


def test_plot_with_training_curves(curves, tmp_path):
    pytest.importorskip("matplotlib")
    dense = write_run(tmp_path / "dense", [120.0, 100.0, 90.0], [200, 110, 95])
    sparse = write_run(tmp_path / "st67", [130.0, 99.0], [210, 120])
    out = tmp_path / "curves.png"
    assert curves.main([str(dense), str(sparse), "--train", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
