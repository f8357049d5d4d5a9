"""Plain-PyTorch oracles for every op: dense, obviously correct, slow. The
tests compare the kernels against these; nothing else should call them."""

from __future__ import annotations

import math

import torch

from .bsr import block_norms, bsr_to_dense
from .csr import BLOCKED_COLUMNS, BLOCKED_PAD, BLOCKED_SLICE_ROWS, row_indices


def csr_to_dense(values: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor, shape) -> torch.Tensor:
    dense = values.new_zeros(tuple(shape))
    return dense.index_put((row_indices(row_ptr), col_idx.long()), values)


def sparse_linear(input, values, row_ptr, col_idx, shape, bias=None):
    weight = csr_to_dense(values, row_ptr, col_idx, shape)
    out = input @ weight.T
    return out if bias is None else out + bias


def sliced_rows(values, cols, slice_ptr, x):
    """The lanes of a sliced-ELLPACK view (csr.sliced_layout) dotted with the
    vector x (which has an entry at the padding column): (slices * 8,), lane j
    of slice s at 8 s + j."""
    slices = slice_ptr.numel() - 1
    slice_of_entry = torch.repeat_interleave(torch.arange(slices), slice_ptr.diff(), output_size=values.numel())
    lane = (torch.arange(values.numel()) - slice_ptr[slice_of_entry]) % 8
    out = values.new_zeros(slices * 8)
    return out.index_add(0, slice_of_entry * 8 + lane, values * x[cols.long()])


def blocked_rows(values, cols, slice_ptr, slices, x):
    """The lanes of a blocked view (csr.blocked_layout) of ``slices`` slices
    dotted with the vector x (zero-padded to whole 64-column blocks):
    (slices * 16,), lane j of slice s at 16 s + j; padding lanes add nothing."""
    segments = int(slice_ptr[slices])
    first_slot = slice_ptr[slices + 1: slices + 2 + segments]
    block = slice_ptr[slices + 2 + segments:]
    slice_of_segment = torch.repeat_interleave(torch.arange(slices), slice_ptr[: slices + 1].diff(),
                                               output_size=segments)
    segment_of_slot = torch.repeat_interleave(torch.arange(segments), first_slot.diff(),
                                              output_size=int(first_slot[-1]))
    height = BLOCKED_SLICE_ROWS
    segment_of_entry = segment_of_slot.repeat_interleave(height)
    lane = torch.arange(values.numel()) % height
    live = cols != BLOCKED_PAD
    column = block[segment_of_entry] * BLOCKED_COLUMNS + cols.long()
    products = torch.where(live, values * x[torch.where(live, column, 0)], 0)
    out = values.new_zeros(slices * height)
    return out.index_add(0, slice_of_segment[segment_of_entry] * height + lane, products)


def sparse_linear_input_grad(grad_output, values, row_ptr, col_idx, shape):
    return grad_output @ csr_to_dense(values, row_ptr, col_idx, shape)


def sparse_linear_value_grad(grad_output, input, row_ptr, col_idx):
    dense_grad = grad_output.T @ input
    return dense_grad[row_indices(row_ptr), col_idx.long()]


def bsr_linear(input, values, block_row_ptr, block_col_idx, shape, bias=None):
    weight = bsr_to_dense(values, block_row_ptr, block_col_idx, shape)
    out = input @ weight.T
    return out if bias is None else out + bias


def bsr_linear_input_grad(grad_output, values, block_row_ptr, block_col_idx, shape):
    return grad_output @ bsr_to_dense(values, block_row_ptr, block_col_idx, shape)


def bsr_linear_value_grad(grad_output, input, block_row_ptr, block_col_idx, block_shape):
    bh, bw = block_shape
    dense_grad = grad_output.T @ input
    blocks = dense_grad.reshape(dense_grad.shape[0] // bh, bh, dense_grad.shape[1] // bw, bw).transpose(1, 2)
    return blocks[row_indices(block_row_ptr), block_col_idx.long()]


def lstm_cell(gates, c_prev):
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def lstm_layer(input_gates, h0, c0, hh_values, hh_row_ptr, hh_col_idx, batch_sizes=None, reverse=False,
               projection=None):
    """Per-step Python loop over dense ops: the oracle for ops.lstm_layer.
    projection: (values, row_ptr, col_idx) of W_hr, or None."""
    steps, batch, _ = input_gates.shape
    hidden, state = c0.shape[1], h0.shape[1]
    w_hh = csr_to_dense(hh_values, hh_row_ptr, hh_col_idx, (4 * hidden, state))
    w_hr = None if projection is None else csr_to_dense(*projection, (state, hidden))
    sizes = [batch] * steps if batch_sizes is None else [int(b) for b in batch_sizes]
    h, c = h0, c0
    outputs = [None] * steps
    for t in (reversed(range(steps)) if reverse else range(steps)):
        b = sizes[t]
        h_new, c_new = lstm_cell(input_gates[t, :b] + h[:b] @ w_hh.T, c[:b])
        if w_hr is not None:
            h_new = h_new @ w_hr.T
        h = torch.cat([h_new, h[b:]])
        c = torch.cat([c_new, c[b:]])
        outputs[t] = torch.cat([h_new, h_new.new_zeros(batch - b, state)])
    return torch.stack(outputs) if steps else input_gates.new_zeros(0, batch, state), h, c


def _recurrent_reference(input_gates, h0, batch_sizes, reverse, step):
    """Shared per-step loop of the GRU/RNN oracles: step(t, b, h_active) -> h_new."""
    steps, batch, _ = input_gates.shape
    hidden = h0.shape[1]
    sizes = [batch] * steps if batch_sizes is None else [int(b) for b in batch_sizes]
    h = h0
    outputs = [None] * steps
    for t in (reversed(range(steps)) if reverse else range(steps)):
        b = sizes[t]
        h_new = step(t, b, h[:b])
        h = torch.cat([h_new, h[b:]])
        outputs[t] = torch.cat([h_new, h_new.new_zeros(batch - b, hidden)])
    return torch.stack(outputs) if steps else input_gates.new_zeros(0, batch, hidden), h


def gru_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, hh_bias=None, batch_sizes=None,
              reverse=False):
    hidden = h0.shape[1]
    w_hh = csr_to_dense(hh_values, hh_row_ptr, hh_col_idx, (3 * hidden, hidden))

    def step(t, b, h):
        return gru_cell(input_gates[t, :b], h @ w_hh.T + (0 if hh_bias is None else hh_bias), h)

    return _recurrent_reference(input_gates, h0, batch_sizes, reverse, step)


def rnn_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, batch_sizes=None, reverse=False,
              nonlinearity="tanh"):
    hidden = h0.shape[1]
    w_hh = csr_to_dense(hh_values, hh_row_ptr, hh_col_idx, (hidden, hidden))
    return _recurrent_reference(input_gates, h0, batch_sizes, reverse,
                                lambda t, b, h: rnn_cell(input_gates[t, :b] + h @ w_hh.T, nonlinearity))


def gru_cell(ig, hg, h_prev):
    """One GRU step from its gate pre-activations: ig = x W_ih^T + b_ih and
    hg = h W_hh^T + b_hh, both (B, 3H) in r|z|n order."""
    ig_r, ig_z, ig_n = ig.chunk(3, dim=1)
    hg_r, hg_z, hg_n = hg.chunk(3, dim=1)
    r, z = torch.sigmoid(ig_r + hg_r), torch.sigmoid(ig_z + hg_z)
    return (1 - z) * torch.tanh(ig_n + r * hg_n) + z * h_prev


def rnn_cell(pre, nonlinearity="tanh"):
    """One Elman step from its pre-activation."""
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def rhn_cell(pre, s_prev):
    """One recurrent-highway micro-layer, coupled carry gate: pre = [a | g]."""
    a, g = pre.chunk(2, dim=1)
    t = torch.sigmoid(g)
    return torch.tanh(a) * t + s_prev * (1 - t)


def rhn_layer(input_gates, h0, r_values, r_row_ptr, r_col_idx, biases, batch_sizes=None, reverse=False):
    """Per-step, per-micro-layer Python loop over dense ops: the oracle for
    ops.rhn_layer."""
    steps, batch, _ = input_gates.shape
    hidden = h0.shape[1]
    recurrent = [csr_to_dense(v, rp, ci, (2 * hidden, hidden)) for v, rp, ci in zip(r_values, r_row_ptr, r_col_idx)]
    sizes = [batch] * steps if batch_sizes is None else [int(b) for b in batch_sizes]
    h = h0
    outputs = [None] * steps
    for t in (reversed(range(steps)) if reverse else range(steps)):
        b = sizes[t]
        s = h[:b]
        for depth, r in enumerate(recurrent):
            pre = s @ r.T + biases[depth]
            if depth == 0:
                pre = pre + input_gates[t, :b]
            s = rhn_cell(pre, s)
        h = torch.cat([s, h[b:]])
        outputs[t] = torch.cat([s, s.new_zeros(batch - b, hidden)])
    return torch.stack(outputs) if steps else input_gates.new_zeros(0, batch, hidden), h
# ----------------------------------------------------------------------------- topology updates
def magnitude_prune(values, drop_counts, group_ptr):
    """Keep mask: in each slot group drop the k smallest |w| (ties: lower slot first)."""
    keep = torch.ones(values.numel(), dtype=torch.bool)
    for g, k in enumerate(drop_counts.tolist()):
        lo, hi = int(group_ptr[g]), int(group_ptr[g + 1])
        slots = list(range(lo, hi))
        slots.sort(key=lambda s: (abs(float(values[s])), s))
        keep[slots[:k]] = False
    return keep


def signed_magnitude_prune(values, fraction, group_ptr):
    keep = torch.ones(values.numel(), dtype=torch.bool)
    for g in range(group_ptr.numel() - 1):
        lo, hi = int(group_ptr[g]), int(group_ptr[g + 1])
        for side in ([s for s in range(lo, hi) if values[s] >= 0], [s for s in range(lo, hi) if values[s] < 0]):
            side.sort(key=lambda s: (abs(float(values[s])), s))
            keep[side[:math.floor(fraction * len(side) + 0.5)]] = False  # half away from zero, like llround
    return keep


def free_positions(row_ptr, col_idx, occupied, shape):
    """Dense bool mask of the positions a regrow may pick."""
    free = torch.ones(tuple(shape), dtype=torch.bool)
    rows = row_indices(row_ptr)
    free[rows[occupied], col_idx.long()[occupied]] = False
    return free


def gradient_regrow_scores(grad_output, input, row_ptr, col_idx, occupied, shape):
    """|dense gradient| at the free positions, -1 elsewhere (the oracle of gradient_regrow)."""
    scores = (grad_output.T @ input).abs()
    return scores.masked_fill(~free_positions(row_ptr, col_idx, occupied, shape), -1.0)


def rebuild_csr(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx, shape):
    """(row_ptr, col_idx, perm) via a dense slot map."""
    slot_of = torch.full(tuple(shape), -2, dtype=torch.int64)
    rows = row_indices(row_ptr)
    kept = keep.nonzero().flatten()
    slot_of[rows[kept], col_idx.long()[kept]] = kept
    grow_rows = row_indices(grow_row_ptr)
    assert bool((slot_of[grow_rows, grow_col_idx.long()] == -2).all()), "grown position already stored"
    slot_of[grow_rows, grow_col_idx.long()] = -1
    present = slot_of != -2
    new_rows, new_cols = present.nonzero(as_tuple=True)
    new_row_ptr = torch.zeros(shape[0] + 1, dtype=torch.int32)
    new_row_ptr[1:] = torch.cumsum(present.sum(1), 0)
    return new_row_ptr, new_cols.to(torch.int32), slot_of[new_rows, new_cols]


def block_gradient_regrow_scores(grad_output, input, block_row_ptr, block_col_idx, occupied, block_shape):
    """Frobenius norm of every dense gradient block at the free blocks, -1 at
    the occupied ones (the oracle of block_gradient_regrow)."""
    scores = block_norms(grad_output.T @ input, block_shape)
    rows = row_indices(block_row_ptr)
    scores[rows[occupied], block_col_idx.long()[occupied]] = -1.0
    return scores
