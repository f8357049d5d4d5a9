"""sparse_lr_scale="fan_in": each sparse weight's learning rate divided by
its density, so that one SGD step moves a sparse layer's outputs as far as
it moves a dense layer's (the statistic is checked on fresh random inputs),
and the runs that use it resume with it."""

import pytest
import torch
from torch import nn

from sparse_kernels import SparseLinear
from sparse_kernels.cli import main
from sparse_kernels.dst import find_sparse_weights, sparse_lr_groups
from sparse_kernels.train import LMConfig
from sparse_kernels.train.checkpoint import CheckpointError
from sparse_kernels.train.data import write_ptb
from sparse_kernels.train.lm import build_lm
from sparse_kernels.train.loop import ConfigError, make_optimizer


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _output_change(layer, params_groups, lr, seed=1, batch=4):
    """Variance of the change of ``layer``'s outputs on inputs x after one
    SGD step on the loss sum(layer(x) * g), g random. With a batch much
    smaller than the fan-in, a row with k stored inputs moves by about
    lr * g * (sum of its k squared inputs): proportional to k."""
    n_in = layer.in_features
    x = torch.randn(batch, n_in, generator=_gen(seed), dtype=torch.float64)
    g = torch.randn(batch, layer.out_features, generator=_gen(seed + 1), dtype=torch.float64)
    before = layer(x).detach()
    opt = torch.optim.SGD(params_groups, lr=lr)
    (layer(x) * g).sum().backward()
    opt.step()
    return float((layer(x).detach() - before).var())


@pytest.mark.parametrize("density", [0.33, 0.1])
def test_one_step_moves_sparse_outputs_as_far_as_dense(density):
    n_in, n_out, lr = 2000, 256, 1e-4
    dense = nn.Linear(n_in, n_out, bias=False, dtype=torch.float64)
    moved_dense = _output_change(dense, dense.parameters(), lr)

    def sparse_layer():
        return SparseLinear(n_in, n_out, bias=False, density=density, generator=_gen(0), dtype=torch.float64)

    plain = sparse_layer()
    moved_plain = _output_change(plain, plain.parameters(), lr)
    scaled = sparse_layer()
    groups = sparse_lr_groups(scaled, lr)
    moved_scaled = _output_change(scaled, groups, lr)
    # Without the scale a row with density * n_in inputs moves density times as far (variance: density^2).
    assert moved_plain == pytest.approx(density ** 2 * moved_dense, rel=0.15)
    assert moved_scaled == pytest.approx(moved_dense, rel=0.15)


def test_groups_hold_every_parameter_once_with_lr_over_density():
    config = LMConfig(method="st-rnn", sparsity=0.7, hidden_size=24, embedding_size=16, num_layers=2,
                      sparse_lr_scale="fan_in", lr=3.0)
    model = build_lm(config, vocab_size=50)
    optimizer = make_optimizer(config, model)
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert sorted(map(id, grouped)) == sorted({id(p) for p in model.parameters()})
    rest, *sparse = optimizer.param_groups
    assert rest["lr"] == 3.0 and len(sparse) == 4  # one group per sparse weight: 2 layers x (W_ih, W_hh)
    weights = {id(w.values): w for w in find_sparse_weights(model).values()}
    for group in sparse:
        (values,) = group["params"]
        assert group["lr"] == pytest.approx(3.0 / weights[id(values)].density)
        assert group["lr"] > 3.0 / 0.31  # density 0.3 up to rounding of per-row counts


def test_sqrt_scale_divides_by_the_square_root_of_the_density():
    config = LMConfig(method="static", sparsity=0.9, hidden_size=30, embedding_size=16, num_layers=1,
                      sparse_lr_scale="sqrt_fan_in", lr=2.0)
    model = build_lm(config, vocab_size=40)
    rest, *sparse = make_optimizer(config, model).param_groups
    weights = {id(w.values): w for w in find_sparse_weights(model).values()}
    assert rest["lr"] == 2.0 and len(sparse) == 2
    for group in sparse:
        density = weights[id(group["params"][0])].density
        assert 0.09 < density < 0.12
        assert group["lr"] == pytest.approx(2.0 / density ** 0.5)


def test_dense_model_and_default_keep_one_group():
    dense = build_lm(LMConfig(method="dense", hidden_size=8, embedding_size=8, sparse_lr_scale="fan_in"), 20)
    assert len(make_optimizer(LMConfig(sparse_lr_scale="fan_in"), dense).param_groups) == 1
    sparse_config = LMConfig(method="static", sparsity=0.5, hidden_size=8, embedding_size=8,
                             sparse_lr_scale="none")
    assert len(make_optimizer(sparse_config, build_lm(sparse_config, 20)).param_groups) == 1


def test_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match="sparse_lr_scale must be one of none, fan_in, sqrt_fan_in"):
        LMConfig(sparse_lr_scale="inverse").validate()


@pytest.fixture
def ptb(tmp_path):
    words = [f"w{i}" for i in range(8)]
    sentences = [[words[(i * k) % 8] for k in range(1, 6)] for i in range(60)]
    return write_ptb(tmp_path / "ptb", {"train": sentences[:40], "valid": sentences[40:50], "test": sentences[50:]})


def test_cli_run_resumes_with_its_scale_and_rejects_another(ptb, tmp_path, capsys):
    base = ["train-lm", "--data", str(ptb), "--batch-size", "4", "--bptt", "5", "--hidden", "12", "--layers", "1",
            "--no-progress", "--method", "st-rnn", "--sparsity", "0.5", "--out", str(tmp_path / "a")]
    assert main(base + ["--epochs", "1", "--sparse-lr-scale", "fan_in"]) == 0
    saved = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert saved["config"]["sparse_lr_scale"] == "fan_in"
    assert len(saved["optimizer"]["param_groups"]) == 3  # the rest, W_ih, W_hh
    assert main(base + ["--epochs", "2", "--resume", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "3", "--sparse-lr-scale", "none", "--resume", str(tmp_path / "a")]) == 2
    assert "sparse_lr_scale='fan_in'" in capsys.readouterr().err


def test_checkpoint_without_the_setting_resumes_with_one_lr(ptb, tmp_path):
    """A run saved before the option existed (no sparse_lr_scale in its
    config) trained with one learning rate: it resumes so."""
    base = ["train-lm", "--data", str(ptb), "--batch-size", "4", "--bptt", "5", "--hidden", "12", "--layers", "1",
            "--no-progress", "--method", "st-rnn", "--sparsity", "0.5", "--out", str(tmp_path / "a")]
    assert main(base + ["--epochs", "1", "--sparse-lr-scale", "none"]) == 0
    path = tmp_path / "a" / "checkpoint.pt"
    from sparse_kernels.train.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(path, "lm")
    del ckpt["config"]["sparse_lr_scale"]
    save_checkpoint(ckpt, path, kind="lm")
    assert main(base + ["--epochs", "2", "--resume", str(tmp_path / "a")]) == 0
    assert torch.load(path, weights_only=True)["config"]["sparse_lr_scale"] == "none"


def test_api_resume_with_another_scale_is_refused(ptb, tmp_path):
    from sparse_kernels.train import load_ptb, train_lm
    corpus = load_ptb(ptb)
    config = LMConfig(method="static", sparsity=0.5, hidden_size=8, embedding_size=8, num_layers=1, epochs=1,
                      batch_size=4, bptt=5, sparse_lr_scale="fan_in")
    train_lm(corpus, config, tmp_path / "r", progress=False, tensorboard=False)
    other = LMConfig(**{**config.__dict__, "epochs": 2, "sparse_lr_scale": "none"})
    with pytest.raises(CheckpointError, match="sparse_lr_scale"):
        train_lm(corpus, other, tmp_path / "r", resume=tmp_path / "r", progress=False, tensorboard=False)
