"""Growing a trained network by replicating hidden units (Shao 2014): a
small SparseLSTM / SparseGRU / SparseRNN becomes a larger one computing the same function, then
sparse training continues on it.

Every new unit copies an existing unit's incoming weights (its rows in each
gate of W_ih, W_hh and the biases), so all copies have the same activation;
every outgoing weight of a unit with c copies (its columns in W_hh and in the
next layer's W_ih) is divided by c (halved for one copy), so what the copies
feed forward sums to what the original fed. All on the CSR entries.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import csr as csr_format
from ..nn import SparseLinear
from ..nn.recurrent import GATES, SparseRNNBase
from ..storage import CSRWeight

__all__ = ["replicate_hidden_units", "replicate_input_features"]


def _expand(weight: CSRWeight, row_source: torch.Tensor, col_source: torch.Tensor | None,
            col_scale: torch.Tensor | None, new_cols: int) -> CSRWeight:
    """A new CSRWeight whose row r is old row row_source[r] and whose column
    c' holds old column col_source[c'] times col_scale[col_source[c']]."""
    row_ptr = weight.row_ptr.long()
    lengths = row_ptr.diff()[row_source]
    total = int(lengths.sum())
    first = torch.zeros_like(lengths)
    first[1:] = lengths.cumsum(0)[:-1]
    slots = row_ptr[row_source].repeat_interleave(lengths) + torch.arange(total) - first.repeat_interleave(lengths)
    rows = torch.arange(row_source.numel()).repeat_interleave(lengths)
    cols, values = weight.col_idx.long()[slots], weight.values.detach()[slots]
    if col_source is not None:
        # Old column c -> every new column c' with col_source[c'] == c.
        order = torch.argsort(col_source, stable=True)
        per_old = torch.bincount(col_source, minlength=weight.in_features)
        start = torch.zeros_like(per_old)
        start[1:] = per_old.cumsum(0)[:-1]
        copies = per_old[cols]
        entry = torch.arange(cols.numel()).repeat_interleave(copies)
        k = torch.arange(int(copies.sum())) - (copies.cumsum(0) - copies).repeat_interleave(copies)
        new_col = order[start[cols[entry]] + k]
        rows, values = rows[entry], values[entry] * col_scale[cols[entry]].to(values.dtype)
        cols = new_col
    new_row_ptr, new_col_idx, order = csr_format.from_coordinates(rows, cols, (row_source.numel(), new_cols))
    return CSRWeight(values[order].contiguous(), new_row_ptr, new_col_idx, (row_source.numel(), new_cols))


def replicate_hidden_units(rnn: SparseRNNBase, hidden_size: int, *,
                           generator: torch.Generator | None = None) -> tuple[SparseRNNBase, torch.Tensor]:
    """A SparseLSTM / SparseGRU / SparseRNN (Elman) with ``hidden_size`` units
    per layer computing the function of ``rnn`` with units repeated: returns
    (grown, source) where ``grown``'s unit j copies ``rnn``'s unit source[j]
    (source[j] = j for the first units, random among the old units for the
    new ones), and from zero states ``grown(x)[0][..., j] ==
    rnn(x)[0][..., source[j]]`` (per direction). The recurrence sees the
    hidden state only through W_hh h, so dividing a unit's outgoing columns
    among its copies keeps every gate's input, the GRU's reset-gated W_hn h
    included. With ``proj_size`` the cell units are replicated and W_hr's
    columns divided: the output is unchanged. A layer that reads the grown
    output (a decoder) keeps its function through
    ``replicate_input_features(decoder, source, num_directions)``."""
    if not isinstance(rnn, SparseRNNBase):
        raise TypeError(f"rnn must be a SparseLSTM, SparseGRU or SparseRNN, got {type(rnn).__name__}")
    if getattr(rnn, "block_shape", None) is not None:
        raise ValueError("replicating units of a block-sparse layer (block_shape set) is not supported: "
                         "copied units would split blocks")
    old = rnn.hidden_size
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < old:
        raise ValueError(f"hidden_size must be an int >= the current hidden size {old}, got {hidden_size!r}")
    source = torch.cat([torch.arange(old), torch.randint(old, (hidden_size - old,), generator=generator)])
    scale = 1.0 / torch.bincount(source, minlength=old).double()
    directions, projected = rnn.num_directions, bool(rnn.proj_size)
    gate_rows = torch.cat([g * old + source for g in range(GATES[rnn.mode])])
    # What the next layer (and W_hh) read: the hidden units, or the projection when there is one.
    if projected:
        state_source, state_scale, state_width = None, None, rnn.proj_size
    else:
        state_source, state_scale, state_width = source, scale, hidden_size
    dir_source = None if projected else torch.cat([d * old + source for d in range(directions)])
    dir_scale = None if projected else scale.repeat(directions)
    param = rnn.weight_ih_l0.values
    grown = type(rnn)(**dict(rnn._config(), hidden_size=hidden_size), density=0.0, init=rnn.init,
                      dtype=param.dtype)
    for layer in range(rnn.num_layers):
        for sfx in rnn._suffixes():
            w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}{sfx}"), getattr(rnn, f"weight_hh_l{layer}{sfx}")
            if layer == 0:
                new_ih = _expand(w_ih, gate_rows, None, None, rnn.input_size)
            else:
                new_ih = _expand(w_ih, gate_rows, dir_source, dir_scale, state_width * directions)
            setattr(grown, f"weight_ih_l{layer}{sfx}", new_ih)
            setattr(grown, f"weight_hh_l{layer}{sfx}", _expand(w_hh, gate_rows, state_source, state_scale,
                                                              state_width))
            if projected:
                w_hr = getattr(rnn, f"weight_hr_l{layer}{sfx}")
                setattr(grown, f"weight_hr_l{layer}{sfx}",
                        _expand(w_hr, torch.arange(rnn.proj_size), source, scale, hidden_size))
            if rnn.bias:
                for kind in ("ih", "hh"):
                    name = f"bias_{kind}_l{layer}{sfx}"
                    setattr(grown, name, nn.Parameter(getattr(rnn, name).detach()[gate_rows].clone()))
    grown.target_density = grown.density
    return grown.to(param.device).train(rnn.training), source


def replicate_input_features(layer: nn.Module, source: torch.Tensor, num_directions: int = 1) -> nn.Module:
    """The layer reading a grown network's output (an nn.Linear or a
    SparseLinear decoder), rewired to the grown units: input feature j of the
    result reads old feature source[j] (per direction block), divided by the
    number of copies, so ``new(grown_output) == layer(old_output)``. (Not
    needed with proj_size, whose output does not grow.)"""
    if not isinstance(source, torch.Tensor) or source.dtype != torch.int64 or source.dim() != 1:
        raise TypeError("source must be the 1-D int64 tensor returned by replicate_hidden_units")
    old = int(source.max()) + 1 if source.numel() else 0
    if not isinstance(num_directions, int) or num_directions not in (1, 2):
        raise ValueError(f"num_directions must be 1 or 2, got {num_directions!r}")
    scale = 1.0 / torch.bincount(source, minlength=old).double()
    columns = torch.cat([d * old + source for d in range(num_directions)])
    column_scale = scale.repeat(num_directions)
    width = source.numel() * num_directions
    if isinstance(layer, SparseLinear):
        if layer.in_features != old * num_directions:
            raise ValueError(f"layer reads {layer.in_features} features, the old network gives "
                             f"{old * num_directions}")
        grown = copy.deepcopy(layer)
        grown.weight = _expand(layer.weight, torch.arange(layer.out_features), columns, column_scale, width)
        grown.in_features = width
        return grown
    if isinstance(layer, nn.Linear):
        if layer.in_features != old * num_directions:
            raise ValueError(f"layer reads {layer.in_features} features, the old network gives "
                             f"{old * num_directions}")
        grown = copy.deepcopy(layer)
        with torch.no_grad():
            weight = layer.weight.detach()[:, columns] * column_scale[columns].to(layer.weight.dtype)
        grown.weight = nn.Parameter(weight)
        grown.in_features = width
        return grown
    raise TypeError(f"layer must be an nn.Linear or a SparseLinear, got {type(layer).__name__}")
