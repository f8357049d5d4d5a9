"""The defaults of `sparse-rnn train-lm` / `train-cls` and of DynamicSparsity
(issue #17: settings under which sparse training works), and a resumed run
keeping the settings it was started with."""

import pytest
import torch

from sparse_kernels.cli import build_parser, main
from sparse_kernels.train import LMConfig
from sparse_kernels.train.data import write_ptb

# train-lm's defaults: docs/quality.md shows what they were chosen from.
LM_DEFAULTS = dict(optimizer="sgd", lr=20.0, momentum=0.0, clip=0.25, dropout=0.5, init_scale="fan_in",
                   sparse_lr_scale="fan_in", hidden=650, layers=2, lr_decay=1.33, updates_per_epoch=1,
                   update_every=0)


def test_train_lm_defaults_are_the_studied_ones():
    args = build_parser().parse_args(["train-lm"])
    assert {k: getattr(args, k) for k in LM_DEFAULTS} == LM_DEFAULTS
    config = LMConfig()
    for key in ("optimizer", "lr", "momentum", "clip", "dropout", "init_scale", "sparse_lr_scale", "lr_decay",
                "updates_per_epoch", "update_every"):
        assert getattr(config, key) == LM_DEFAULTS[key], key


def test_train_cls_divides_the_sparse_lr_by_the_density():
    """train-cls uses Adam; with one lr its 90%-sparse models stayed at chance
    (docs/quality.md), so its sparse weights' lr is scaled by fan_in."""
    from sparse_kernels.train import ClsConfig
    args = build_parser().parse_args(["train-cls"])
    assert args.sparse_lr_scale == "fan_in" and args.optimizer == "adam"
    assert ClsConfig().sparse_lr_scale == "fan_in"


@pytest.fixture
def ptb(tmp_path):
    words = [f"w{i}" for i in range(8)]
    sentences = [[words[(i * k) % 8] for k in range(1, 6)] for i in range(60)]
    return write_ptb(tmp_path / "ptb", {"train": sentences[:40], "valid": sentences[40:50], "test": sentences[50:]})


def _saved_config(folder):
    return torch.load(folder / "checkpoint.pt", weights_only=True)["config"]


def test_resume_keeps_the_checkpoint_settings_unless_given(ptb, tmp_path, capsys):
    """A run started with other settings (e.g. this program's earlier
    defaults) continues with them when resumed without those options; an
    option given on the resuming command line wins."""
    base = ["train-lm", "--data", str(ptb), "--batch-size", "4", "--bptt", "5", "--hidden", "12", "--layers", "1",
            "--no-progress", "--method", "st-rnn", "--sparsity", "0.5", "--out", str(tmp_path / "a")]
    old = ["--lr", "1", "--momentum", "0.9", "--clip", "10", "--dropout", "0.2", "--init-scale", "dense",
           "--prune-rate", "0.4"]
    assert main(base + old + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "2", "--resume", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "resuming with the checkpoint's settings" in err and "clip=10.0" in err
    saved = _saved_config(tmp_path / "a")
    assert (saved["clip"], saved["dropout"], saved["prune_rate"], saved["init_scale"]) == (10.0, 0.2, 0.4, "dense")
    assert saved["epochs"] == 2  # given on the command line
    assert main(base + ["--epochs", "3", "--clip", "5", "--resume", str(tmp_path / "a")]) == 0
    saved = _saved_config(tmp_path / "a")
    assert saved["clip"] == 5.0 and saved["dropout"] == 0.2


def test_resume_with_abbreviated_or_equals_options(ptb, tmp_path, capsys):
    """Options given as --opt=value or abbreviated (argparse accepts both)
    count as given."""
    base = ["train-lm", "--data", str(ptb), "--batch-size", "4", "--bptt", "5", "--hidden", "12", "--layers", "1",
            "--no-progress", "--out", str(tmp_path / "a")]
    assert main(base + ["--epochs", "1", "--dropout", "0.3"]) == 0
    assert main(base + ["--epochs=2", "--dropo", "0.1", "--resume", str(tmp_path / "a")]) == 0
    saved = _saved_config(tmp_path / "a")
    assert saved["epochs"] == 2 and saved["dropout"] == 0.1


@pytest.mark.parametrize("update_every,per_epoch,steps_per_epoch,want", [
    (0, 4, 106, 26), (0, 1, 106, 106), (0, 4, 3, 1), (25, 4, 106, 25), (7, 1, 106, 7)])
def test_topology_update_interval(update_every, per_epoch, steps_per_epoch, want):
    """--update-every N steps when given, else --updates-per-epoch evenly
    spaced updates (at least one step apart)."""
    from sparse_kernels import SparseLSTM
    from sparse_kernels.train.loop import make_sparsity_scheduler
    model = SparseLSTM(6, 8, density=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = LMConfig(method="st-rnn", sparsity=0.5, update_every=update_every, updates_per_epoch=per_epoch)
    dst = make_sparsity_scheduler(config, model, optimizer, total_steps=10 * steps_per_epoch,
                                  steps_per_epoch=steps_per_epoch)
    assert dst.update_every == want


def test_updates_per_epoch_must_be_positive():
    from sparse_kernels.train.loop import ConfigError
    with pytest.raises(ConfigError, match="updates_per_epoch must be >= 1"):
        LMConfig(updates_per_epoch=0).validate()
    with pytest.raises(ConfigError, match="update_every must be >= 0"):
        LMConfig(update_every=-1).validate()


def test_resumed_run_saved_before_updates_per_epoch_keeps_one_update_an_epoch(ptb, tmp_path):
    """A checkpoint written before the setting existed has no such key: its
    run updated the topology once per epoch, and continues so (whatever the
    default is now); a run started with another count keeps it."""
    from sparse_kernels.train.checkpoint import save_checkpoint
    base = ["train-lm", "--data", str(ptb), "--batch-size", "4", "--bptt", "5", "--hidden", "12", "--layers", "1",
            "--no-progress", "--method", "st-rnn", "--sparsity", "0.5"]
    a, b = ["--out", str(tmp_path / "a")], ["--out", str(tmp_path / "b")]
    assert main(base + a + ["--epochs", "1", "--updates-per-epoch", "3"]) == 0
    assert main(base + b + ["--epochs", "1", "--updates-per-epoch", "3"]) == 0
    assert _saved_config(tmp_path / "a")["updates_per_epoch"] == 3
    path = tmp_path / "a" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["updates_per_epoch"]
    save_checkpoint(state, path, kind="lm")
    assert main(base + a + ["--epochs", "2", "--resume", str(tmp_path / "a")]) == 0
    assert _saved_config(tmp_path / "a")["updates_per_epoch"] == 1
    assert main(base + b + ["--epochs", "2", "--resume", str(tmp_path / "b")]) == 0
    assert _saved_config(tmp_path / "b")["updates_per_epoch"] == 3


def test_lr_schedule_option_reaches_the_run(ptb, tmp_path):
    """--lr-schedule cosine: saved in the checkpoint's settings, and the lr
    logged at the last epoch's end is 0 (the half cosine's end)."""
    import csv
    base = ["train-lm", "--data", str(ptb), "--batch-size", "4", "--bptt", "5", "--hidden", "12", "--layers", "1",
            "--no-progress", "--method", "st-rnn", "--sparsity", "0.5", "--epochs", "2", "--lr-schedule", "cosine",
            "--out", str(tmp_path / "a")]
    assert main(base) == 0
    assert _saved_config(tmp_path / "a")["lr_schedule"] == "cosine"
    with open(tmp_path / "a" / "metrics.csv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f)]
    assert 0 < lrs[0] < 20.0 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
