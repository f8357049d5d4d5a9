"""Carry a torch.optim optimizer's per-element state across a topology update."""

from __future__ import annotations

import torch

__all__ = ["remap_optimizer_state"]


def remap_optimizer_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, perm: torch.Tensor,
                          old_numel: int) -> None:
    """After ``param`` (a values Parameter: 1-D for a CSR weight, (nblocks,
    bh, bw) for a BSR weight) was rebuilt with slot permutation ``perm`` (new
    slot -> old slot, -1 for a new slot; a slot is an entry or a block along
    dim 0), gather every state tensor of the old slot layout, (old_numel,
    *param.shape[1:]) with ``old_numel`` the old number of slots, by ``perm``
    and zero the new slots: SGD's momentum buffer, Adam/AdamW's moments (and
    max_exp_avg_sq), ASGD's average, Adagrad's sums, per-element step
    counters... Scalar (0-d) state such as Adam's or ASGD's step, eta and mu
    is left untouched.

    A grown slot therefore starts from zero state: momentum or a moment
    estimate of the weight that was pruned from (or once lived at) that slot
    can never push it, and a pruned weight is gone with its state.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(perm, torch.Tensor) or perm.dtype != torch.int64 or perm.dim() != 1:
        raise ValueError("perm must be a 1-D int64 tensor (new slot -> old slot, or -1)")
    if not isinstance(param, torch.Tensor) or param.dim() < 1:
        raise ValueError("param must be a values tensor with its slots along dim 0")
    if perm.numel() != param.shape[0]:
        raise ValueError(f"perm must have one entry per slot of param ({param.shape[0]}), got {perm.numel()}")
    state = optimizer.state.get(param)
    if not state:
        return
    perm = perm.to(param.device)
    kept = perm >= 0
    source = perm.clamp(min=0)
    old_shape = (old_numel, *param.shape[1:])
    for key, value in list(state.items()):
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and tuple(value.shape) == old_shape:
            remapped = value.new_zeros(param.shape)
            if old_numel:
                remapped[kept] = value.to(perm.device)[source[kept]].to(value.device)
            state[key] = remapped
