"""Per-weight learning rates for sparse weights: one parameter group per
CSR/BSR weight whose lr is divided by (a power of) its density."""

from __future__ import annotations

import torch

from .sparsity import find_sparse_weights


def sparse_lr_groups(model: torch.nn.Module, lr: float, power: float = 1.0) -> list[dict]:
    """Parameter groups that give each sparse weight (CSR/BSR, as
    DynamicSparsity finds them) the learning rate ``lr / density``.

    Why: a gradient step moves a row's output by about lr * gradient *
    (sum of the squares of its stored inputs), and the loss by lr * (sum of
    the stored entries' squared gradients): a layer at density d learns
    about d times as fast as the dense layer the learning rate was chosen
    for. Dividing its lr by d restores the dense layer's rate (the
    learning-rate counterpart of init_scale="fan_in"; docs/quality.md has
    what it did). The factor is fixed at construction (the density a
    method starts from: 1 for dense-to-sparse methods). ``power`` 0.5 gives
    lr / sqrt(density) ("sqrt_fan_in"): at 90% sparsity the full factor (10x)
    made a 2 x 650 ST-RNN model diverge under momentum SGD (lr 1, clip 10);
    under plain SGD lr 20 with a gradient clip of 0.25 it is train-lm's
    default (docs/quality.md).

    Use: ``torch.optim.SGD(sparse_lr_groups(model, lr=20.0), lr=20.0)``; a
    learning-rate scheduler then scales every group alike."""
    params = list({id(p): p for p in model.parameters()}.values())
    sparse = [w for w in find_sparse_weights(model).values() if w.density > 0]
    scaled = {id(w.values) for w in sparse}
    groups = [{"params": [p for p in params if id(p) not in scaled]}]
    groups += [{"params": [w.values], "lr": lr / w.density ** power} for w in sparse]
    return groups
