"""The classification loop on tiny sizes: PackedSequence batches, it learns
the synthetic task, and resume-after-interrupt is exact."""

import csv

import pytest
import torch

from sparse_kernels import SparseLSTM
from sparse_kernels.train import ClsConfig, synthetic_classification_data, train_cls
from sparse_kernels.train.classify import collate


@pytest.fixture(scope="module")
def data():
    return synthetic_classification_data(160, 40, seed=2, max_length=20)


def tiny(**overrides):
    settings = dict(hidden_size=24, embedding_size=16, batch_size=16, epochs=2, lr=0.01, seed=3)
    settings.update(overrides)
    return ClsConfig(**settings)


def test_collate_pads_and_keeps_lengths():
    tokens, lengths, labels = collate([(torch.tensor([5, 6, 7]), 1), (torch.tensor([8]), 0)])
    assert tokens.tolist() == [[5, 8], [6, 0], [7, 0]]
    assert lengths.tolist() == [3, 1] and labels.tolist() == [1, 0]


@pytest.mark.parametrize("method", ["dense", "static"])
def test_cls_learns(data, tmp_path, method):
    result = train_cls(data, tiny(method=method, sparsity=0.5), tmp_path, progress=False)
    assert len(result.history) == 2 and not result.interrupted
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_valid_accuracy == max(r["valid_accuracy"] for r in result.history)
    assert 0.0 <= result.test_accuracy <= 1.0
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "metrics.csv").is_file()
    assert isinstance(result.model.rnn, SparseLSTM) == (method == "static")


def test_cls_resume_after_interrupt_is_exact(data, tmp_path):
    config = tiny(method="static", sparsity=0.5, epochs=2)
    full = train_cls(data, config, tmp_path / "full", progress=False)

    def interrupt(step):
        if step == 11:  # second epoch (9 batches per epoch)
            raise KeyboardInterrupt

    assert train_cls(data, config, tmp_path / "resumed", progress=False, on_step=interrupt).interrupted
    resumed = train_cls(data, config, tmp_path / "resumed", resume=tmp_path / "resumed", progress=False)
    read = lambda p: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in csv.DictReader(open(p))]
    assert read(tmp_path / "resumed" / "metrics.csv") == read(tmp_path / "full" / "metrics.csv")
    assert resumed.test_accuracy == full.test_accuracy
