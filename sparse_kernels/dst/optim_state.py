"""Carry a torch.optim optimizer's per-element state across a topology update."""

from __future__ import annotations

import torch

__all__ = ["remap_optimizer_state"]


def remap_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, perm: torch.Tensor,
                          old_numel: int) -> None:
    """After ``param`` (a 1-D values Parameter) was rebuilt with slot
    permutation ``perm`` (new slot -> old slot, -1 for a new slot), gather
    every state tensor of shape (old_numel,) by ``perm`` and zero the new
    slots: SGD's momentum buffer, Adam/AdamW's moments (and max_exp_avg_sq),
    ASGD's average, Adagrad's sums, per-element step counters... Scalar
    (0-d) state such as Adam's or ASGD's step, eta and mu is left untouched.

    A grown slot therefore starts from zero state: momentum or a moment
    estimate of the weight that was pruned from (or once lived at) that slot
    can never push it, and a pruned weight is gone with its state.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(perm, torch.Tensor) or perm.dtype != torch.int64 or perm.dim() != 1:
        raise ValueError("perm must be a 1-D int64 tensor (new slot -> old slot, or -1)")
    if perm.numel() != param.numel():
        raise ValueError(f"perm must have one entry per element of param ({param.numel()}), got {perm.numel()}")
    state = optimizer.state.get(param)
    if not state:
        return
    perm = perm.to(param.device)
    kept = perm >= 0
    source = perm.clamp(min=0)
    for key, value in list(state.items()):
        if isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() == old_numel:
            remapped = value.new_zeros(perm.shape)
            if old_numel:
                remapped[kept] = value.to(perm.device)[source[kept]].to(value.device)
            state[key] = remapped
