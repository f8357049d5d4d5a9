"""Text classification: variable-length token sequences padded and packed
(PackedSequence) through a recurrent stack, cross-entropy on the last
hidden state, accuracy; the same checkpoints, metrics and sparse-training
schedulers as the language-model loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from . import distributed
from .data import ClassificationData
from .loop import FitResult, RunConfig, fit
from .models import Classifier


@dataclass
class ClsConfig(RunConfig):
    num_layers: int = 1
    embedding_size: int = 256
    hidden_size: int = 256
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 0.001
    # Adam moves every weight by about lr per step whatever its gradient's
    # size, so a unit with a tenth of the inputs moves its pre-activation about
    # a tenth as far: the sparse weights' lr is divided by their density.
    # Measured on the synthetic task (docs/quality.md, ST-LSTM, 3 epochs, test
    # accuracy, chance 0.33): 90% sparse 0.33 with one lr, 1.00 with fan_in;
    # 95.7%: 0.33, sqrt_fan_in 0.71, fan_in 1.00; 67%: 1.00 with either.
    sparse_lr_scale: str = "fan_in"
    clip: float = 5.0
    batch_size: int = 64
    max_vocab: int = 20_000
    max_length: int = 100
    valid_fraction: float = 0.1   # of train, held out when the data has no valid split

    model_keys = RunConfig.model_keys + ("max_vocab", "max_length")

    def _validate(self) -> None:
        super()._validate()
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")


@dataclass
class ClsResult(FitResult):
    test_accuracy: float = math.nan
    test_loss: float = math.nan

    @property
    def best_valid_accuracy(self) -> float:
        return -self.best_score


def collate(examples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(tokens, label)] -> tokens (T, B) padded with 0, lengths (B,), labels (B,)."""
    tokens = pad_sequence([t for t, _ in examples])
    lengths = torch.tensor([t.numel() for t, _ in examples])
    labels = torch.tensor([label for _, label in examples])
    return tokens, lengths, labels


def split_off_valid(train: list, fraction: float, seed: int) -> tuple[list, list]:
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    n_valid = max(1, int(round(len(train) * fraction)))
    if len(train) - n_valid < 1:
        raise ValueError(f"{len(train)} training examples are too few to hold out a validation split")
    return [train[i] for i in order[n_valid:]], [train[i] for i in order[:n_valid]]


@torch.no_grad()
def evaluate_cls(model: Classifier, examples: list, batch_size: int, device) -> tuple[float, float]:
    """(mean loss, accuracy). In a torch.distributed job every rank
    evaluates a contiguous share of ``examples`` and the sums are reduced:
    every rank returns the same numbers."""
    model.eval()
    n = len(examples)
    examples = examples[distributed.shard(n, distributed.current())]
    loss, correct = 0.0, 0
    for start in range(0, len(examples), batch_size):
        tokens, lengths, labels = collate(examples[start:start + batch_size])
        logits = model(tokens.to(device), lengths)
        labels = labels.to(device)
        loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
    loss, correct = distributed.all_reduce([loss, correct])
    return loss / max(n, 1), correct / max(n, 1)


def train_cls(data: ClassificationData, config: ClsConfig, out_dir, *, resume=None, progress: bool = True,
              on_step=None, tensorboard: bool = True, check_topology: bool = False) -> ClsResult:
    """Train a classifier (see :func:`~.loop.fit` for the files written and
    for ``resume``/``on_step``); the best model is the one of highest
    validation accuracy, evaluated on test at the end. Batches are reshuffled
    every epoch from (seed, epoch), so a resumed run sees the same order.

    Under torchrun every rank calls this with the same arguments:
    ``batch_size`` is the global batch; each rank trains on a contiguous
    share of every global batch (the same order on every rank), weighted by
    its size (see :func:`~.loop.fit`); ``check_topology`` compares the
    ranks' sparse patterns after every topology update."""
    config.validate()
    ranks = distributed.current()
    device = torch.device(config.device)
    train, valid = data.train, data.valid
    if not valid:
        train, valid = split_off_valid(train, config.valid_fraction, config.seed)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)

    def batches(epoch):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        for start in range(0, len(train), config.batch_size):
            chosen = order[start:start + config.batch_size].tolist()
            mine = chosen[distributed.shard(len(chosen), ranks)]
            # A rank left without examples (a last batch smaller than the
            # number of ranks) still runs forward and backward, as DDP needs,
            # on one example that counts zero.
            yield (*collate([train[i] for i in mine or chosen[:1]]), len(mine))

    def loss_fn(model, batch, carry):
        tokens, lengths, labels, items = batch
        logits = model(tokens.to(device), lengths)
        # fit weights the mean by items (so by zero for a rank's stand-in example).
        return torch.nn.functional.cross_entropy(logits, labels.to(device)), items

    def validate(model):
        loss, accuracy = evaluate_cls(model, valid, config.batch_size, device)
        return {"valid_loss": loss, "valid_accuracy": accuracy}

    def build_model():
        return Classifier(len(data.vocab), len(data.labels), embedding_size=config.embedding_size,
                          hidden_size=config.hidden_size, num_layers=config.num_layers, model=config.model,
                          dropout=config.dropout, sparse=config.sparse, density=config.density, init=config.init,
                          init_scale=config.init_scale, seed=config.seed, depth=config.depth,
                          block_shape=config.block_shape).to(device)

    fitted = fit("cls", config, out_dir, build_model=build_model, steps_per_epoch=steps_per_epoch,
                 batches=batches, loss_fn=loss_fn, validate=validate, score=lambda m: -m["valid_accuracy"],
                 resume=resume, progress=progress, on_step=on_step, tensorboard=tensorboard,
                 extra={"vocab": data.vocab.itos, "labels": data.labels}, check_topology=check_topology)
    result = ClsResult(**fitted.__dict__)
    if not result.interrupted and result.history:
        result.test_loss, result.test_accuracy = evaluate_cls(result.model, data.test, config.batch_size, device)
    return result
