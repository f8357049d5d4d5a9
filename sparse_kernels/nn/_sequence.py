"""Sequence layouts for the recurrent modules: PackedSequence, batch_first and
unbatched input to and from the time-major (T, B, F) tensor plus batch_sizes
that the whole-sequence layer ops take."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn.utils.rnn import PackedSequence


class Layout(NamedTuple):
    """How the caller's input was laid out, to lay the results out alike."""
    batch_sizes: torch.Tensor | None   # int64 CPU (T,), packed input only
    sorted_indices: torch.Tensor | None
    unsorted_indices: torch.Tensor | None
    active: torch.Tensor | None        # (T, B) bool: the packed rows of each step
    is_batched: bool
    batch_first: bool


def to_time_major(input, batch_first: bool, owner: str) -> tuple[torch.Tensor, Layout]:
    """input: PackedSequence, (T, B, F) / (B, T, F) or unbatched (T, F).
    Returns a contiguous (T, B, F) tensor (padded with zeros where packed
    sequences have ended) and the Layout."""
    if isinstance(input, PackedSequence):
        data, batch_sizes, sorted_indices, unsorted_indices = input
        steps, batch = batch_sizes.numel(), int(batch_sizes[0]) if batch_sizes.numel() else 0
        # PackedSequence data is ordered step by step, active rows first:
        # exactly the order of the True entries of this (T, B) mask.
        active = (torch.arange(batch).unsqueeze(0) < batch_sizes.unsqueeze(1)).to(data.device)
        x = data.new_zeros(steps, batch, data.size(-1))
        x[active] = data
        return x, Layout(batch_sizes.to("cpu", torch.int64), sorted_indices, unsorted_indices, active, True,
                         batch_first)
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{owner}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ValueError(f"{owner}: Expected input to be 2D or 3D, got {input.dim()}D instead")
    is_batched = input.dim() == 3
    x = input if is_batched else input.unsqueeze(0 if batch_first else 1)
    if batch_first:
        x = x.transpose(0, 1)
    return x.contiguous(), Layout(None, None, None, None, is_batched, batch_first)


def from_time_major(output: torch.Tensor, layout: Layout):
    """The (T, B, H) output in the caller's layout."""
    if layout.active is not None:
        return PackedSequence(output[layout.active], layout.batch_sizes, layout.sorted_indices,
                              layout.unsorted_indices)
    if layout.batch_first:
        output = output.transpose(0, 1)
    return output if layout.is_batched else output.squeeze(0 if layout.batch_first else 1)


def state_in(h0: torch.Tensor, layout: Layout, expected: tuple, ref: torch.Tensor, name: str) -> torch.Tensor:
    """A caller's initial state (L, B, H), or (L, H) for unbatched input, as
    (L, B, H) in the packed (sorted) row order; nn.RNN's errors otherwise."""
    if not isinstance(h0, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(h0).__name__}")
    want_dim = 3 if layout.is_batched else 2
    if h0.dim() != want_dim:
        kind = "batched 3-D" if layout.is_batched else "unbatched 2-D"
        raise RuntimeError(f"For {kind} input, {name} should also be {want_dim}-D but got {h0.dim()}-D tensor")
    if not layout.is_batched:
        h0 = h0.unsqueeze(1)
    if tuple(h0.shape) != tuple(expected):
        raise RuntimeError(f"Expected hidden size {tuple(expected)}, got {list(h0.shape)}")
    if h0.dtype != ref.dtype or h0.device != ref.device:
        raise RuntimeError(f"{name} must have dtype {ref.dtype} on {ref.device}, got {h0.dtype} on {h0.device}")
    if layout.sorted_indices is not None:
        h0 = h0.index_select(1, layout.sorted_indices)
    return h0


def state_out(h_n: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A final state (L, B, H) in the caller's row order and batchedness."""
    if layout.unsorted_indices is not None:
        h_n = h_n.index_select(1, layout.unsorted_indices)
    return h_n if layout.is_batched else h_n.squeeze(1)
