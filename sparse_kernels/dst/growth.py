"""Growing a trained network by replicating hidden units (Shao 2014): a
small SparseLSTM becomes a larger one computing the same function, then
sparse training continues on it.

Every new unit copies an existing unit's incoming weights (its rows in each
gate of W_ih, W_hh and the biases), so all copies have the same activation;
every outgoing weight of a unit with c copies (its columns in W_hh and in the
next layer's W_ih) is divided by c (halved for one copy), so what the copies
feed forward sums to what the original fed. All on the CSR entries.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import csr as csr_format
from ..nn import SparseLSTM
from ..storage import CSRWeight

__all__ = ["replicate_hidden_units"]


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


def replicate_hidden_units(lstm: SparseLSTM, hidden_size: int, *,
                           generator: torch.Generator | None = None) -> tuple[SparseLSTM, torch.Tensor]:
    """A SparseLSTM with ``hidden_size`` units per layer whose outputs are
    those of ``lstm`` with units repeated: returns (grown, source) where
    ``grown``'s unit j copies ``lstm``'s unit source[j] (source[j] = j for the
    first units, random among the old units for the new ones), and
    ``grown(x)[0][..., j] == lstm(x)[0][..., source[j]]`` from zero states.
    A layer reading the LSTM's output (a decoder) keeps its function by
    dividing its input column source[j] by the number of copies."""
    if not isinstance(lstm, SparseLSTM):
        raise TypeError(f"lstm must be a SparseLSTM, got {type(lstm).__name__}")
    if lstm.proj_size:
        raise ValueError("replicating units of an LSTM with proj_size > 0 is not supported")
    if getattr(lstm, "block_shape", None) is not None:
        raise ValueError("replicating units of a block-sparse SparseLSTM (block_shape set) is not supported: "
                         "copied units would split blocks")
    old = lstm.hidden_size
    if not isinstance(hidden_size, int) or hidden_size < old:
        raise ValueError(f"hidden_size must be an int >= the current hidden size {old}, got {hidden_size!r}")
    source = torch.cat([torch.arange(old), torch.randint(old, (hidden_size - old,), generator=generator)])
    copies = torch.bincount(source, minlength=old)
    scale = 1.0 / copies.double()
    directions = lstm.num_directions
    gate_rows = torch.cat([g * old + source for g in range(4)])
    dir_source = torch.cat([d * old + source for d in range(directions)])
    dir_scale = scale.repeat(directions)
    param = lstm.weight_ih_l0.values
    grown = SparseLSTM(lstm.input_size, hidden_size, num_layers=lstm.num_layers, bias=lstm.bias,
                       batch_first=lstm.batch_first, dropout=lstm.dropout, bidirectional=lstm.bidirectional,
                       density=0.0, init=lstm.init, dtype=param.dtype)
    for layer in range(lstm.num_layers):
        for sfx in lstm._suffixes():
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}{sfx}"), getattr(lstm, f"weight_hh_l{layer}{sfx}")
            if layer == 0:
                new_ih = _expand(w_ih, gate_rows, None, None, lstm.input_size)
            else:
                new_ih = _expand(w_ih, gate_rows, dir_source, dir_scale, hidden_size * directions)
            setattr(grown, f"weight_ih_l{layer}{sfx}", new_ih)
            setattr(grown, f"weight_hh_l{layer}{sfx}", _expand(w_hh, gate_rows, source, scale, hidden_size))
            if lstm.bias:
                for kind in ("ih", "hh"):
                    name = f"bias_{kind}_l{layer}{sfx}"
                    setattr(grown, name, nn.Parameter(getattr(lstm, name).detach()[gate_rows].clone()))
    grown.target_density = grown.density
    return grown.to(param.device).train(lstm.training), source
