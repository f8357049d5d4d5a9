"""A small learnable task and training loop shared by the sparse-training
tests (tests/test_dst.py, tests/test_bsr_dst.py)."""

import torch
from torch import nn


def next_token_task(seed=0, steps=6, batch=8, vocab=12):
    """Next-token prediction on a fixed cyclic sequence: learnable, not trivial."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(vocab, (batch,), generator=g)
    seq = (starts.unsqueeze(0) + torch.arange(steps + 1).unsqueeze(1) * 5) % vocab
    return seq[:-1], seq[1:]


def train_with_dst(model, optimizer, dst, steps, data, on_update=None):
    """``steps`` optimizer steps, each followed by ``dst.step()`` (and
    ``on_update()`` when it changed the topology); returns the losses."""
    x, y = data
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        optimizer.step()
        if dst.step() and on_update is not None:
            on_update()
        losses.append(float(loss.detach()))
    return losses
