"""SparseEmbedding: an nn.Embedding whose table keeps only its nonzeros, with
the predefined sparseness of Demeester et al. (2018): frequent words get long
embeddings, rare words short ones, the pattern fixed before training.

The pattern rule (``frequency_widths``): a word keeps a prefix of the
embedding columns, and column j is kept by the c_j most frequent words, with
c_j = V * alpha**j (Demeester et al.'s geometric allocation, at the
granularity of single columns), alpha in [0, 1] solving
(1/k) * sum_{j<k} alpha**j = density. Below density 1/k, alpha = 0 and
column 0 alone is kept, by the density*k*V most frequent words. The c_j are
rounded by largest remainder (ties to the lower column), so the table holds
exactly round(density * V * k) values and c_j stays non-increasing; the word
of frequency rank r (0 = most frequent) then has width #{j : c_j > r}.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

from ..csr import INDEX_DTYPE, exact_nnz, row_indices
from ..storage import CSRWeight
from ._common import SparseWeightsMixin, changed_options_repr, resolve_density, weight_from_dense
from .linear import _check_size, _load_dense_weights

__all__ = ["SparseEmbedding", "frequency_widths"]


def _geometric_ratio(density: float, dim: int) -> float:
    """alpha in [0, 1] with (1/dim) * sum_{j<dim} alpha**j = density (>= 1/dim)."""
    def mean_power(a: float) -> float:
        return 1.0 if a >= 1.0 else (1.0 - a ** dim) / ((1.0 - a) * dim)
    lo, hi = 0.0, 1.0
    for _ in range(200):  # bisection: mean_power increases with a
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_power(mid) < density else (lo, mid)
    return 0.5 * (lo + hi)


def frequency_widths(num_embeddings: int, embedding_dim: int, density: float) -> torch.Tensor:
    """Embedding width of each frequency rank (int64, (num_embeddings,),
    non-increasing), by the rule in this module's docstring; the widths sum
    to exactly round(density * num_embeddings * embedding_dim)."""
    vocab, dim = num_embeddings, embedding_dim
    total = exact_nnz((vocab, dim), density)
    if vocab == 0 or dim == 0 or total == 0:
        return torch.zeros(vocab, dtype=torch.int64)
    if density * dim >= 1.0:
        alpha = _geometric_ratio(density, dim)
        users = torch.tensor([vocab * alpha ** j for j in range(dim)], dtype=torch.float64)
    else:
        users = torch.zeros(dim, dtype=torch.float64)
        users[0] = density * dim * vocab
    users = users.clamp(max=vocab)
    counts = users.floor()
    remainder = int(total - counts.sum().item())
    # Largest remainder; a stable sort keeps ties in column order, which keeps
    # the counts non-increasing.
    order = torch.sort(users - counts, descending=True, stable=True).indices
    counts[order[:remainder]] += 1
    counts = counts.to(torch.int64)
    # Rank r keeps column j iff counts[j] > r; counts is non-increasing.
    return torch.searchsorted(-counts, -torch.arange(vocab), side="left")


def _prefix_pattern(widths: torch.Tensor, dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR (row_ptr, col_idx) of rows keeping columns [0, widths[i])."""
    row_ptr = torch.zeros(widths.numel() + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(widths, 0)
    nnz = int(row_ptr[-1])
    col_idx = torch.arange(nnz) - torch.repeat_interleave(row_ptr[:-1], widths, output_size=nnz)
    return row_ptr.to(device, INDEX_DTYPE), col_idx.to(device, INDEX_DTYPE)


def _check_vector(name: str, t, vocab: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {type(t).__name__ if not isinstance(t, torch.Tensor) else t.dtype}")
    if t.shape != (vocab,):
        raise ValueError(f"{name} must have shape (num_embeddings,) = ({vocab},), got {tuple(t.shape)}")
    return t.detach().to("cpu", torch.int64)


class SparseEmbedding(SparseWeightsMixin, nn.Module):
    """nn.Embedding with a CSR table (num_embeddings x embedding_dim) and
    Demeester et al.'s predefined sparseness.

    Same constructor arguments, attributes and forward as nn.Embedding.
    Keyword-only pattern options, one of:

    * ``density`` (or ``sparsity``; default density 0.1): word i keeps the
      first ``frequency_widths(...)[rank(i)]`` columns (the rule in this
      module's docstring), exactly round(density * V * k) values in all;
      ``frequency_ranks`` (V,) gives each word's frequency rank (0 = most
      frequent; a permutation), default: the index itself (a vocabulary
      sorted by frequency, most frequent first).
    * ``dims_per_row`` (V,): word i keeps its first dims_per_row[i] columns.

    ``weight`` is a :class:`~sparse_kernels.CSRWeight` submodule (state dict
    ``weight.values``, ``weight.row_ptr``, ``weight.col_idx``); the stored
    values start N(0, 1) as in nn.Embedding, those of ``padding_idx`` at
    zero. forward gathers the stored values only and returns zeros in the
    unstored columns; it is differentiable in the values (``padding_idx``'s
    get no gradient; ``scale_grad_by_freq`` divides each word's gradient by
    its count in the batch). ``max_norm`` renormalises, in place, the stored
    values of the rows looked up, as nn.Embedding does. ``sparse=True``
    (sparse gradients) is refused: the gradient is already nnz-sized.
    A dense nn.Embedding state_dict can be loaded (values read at the
    current pattern).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: torch.Tensor | None = None, _freeze: bool = False,
                 device=None, dtype=None, *, density: float | None = None, sparsity: float | None = None,
                 frequency_ranks: torch.Tensor | None = None, dims_per_row: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, block_shape=None) -> None:
        super().__init__()
        if block_shape is not None:
            # The other sparse modules take block_shape=; say why this one does not.
            raise ValueError("SparseEmbedding: block_shape is not supported: a lookup gathers rows and has no "
                             "product for dense blocks to speed up, and its pattern is the predefined per-row "
                             "prefix (dims_per_row / density); leave block_shape=None")
        self.num_embeddings = _check_size("SparseEmbedding", "num_embeddings", num_embeddings)
        self.embedding_dim = _check_size("SparseEmbedding", "embedding_dim", embedding_dim)
        self.padding_idx = self._check_padding_idx(padding_idx)
        if max_norm is not None and not (isinstance(max_norm, (int, float)) and max_norm > 0):
            raise ValueError(f"SparseEmbedding: max_norm must be a positive number or None, got {max_norm!r}")
        if sparse:
            raise ValueError("SparseEmbedding: sparse=True (sparse gradients) is not supported; the gradient "
                             "of the stored values is already nnz-sized, use sparse=False")
        self.max_norm, self.norm_type = max_norm, float(norm_type)
        self.scale_grad_by_freq, self.sparse = bool(scale_grad_by_freq), False
        vocab, dim = self.num_embeddings, self.embedding_dim
        if dims_per_row is not None:
            if density is not None or sparsity is not None or frequency_ranks is not None:
                raise ValueError("SparseEmbedding: give dims_per_row= or density=/sparsity= (with "
                                 "frequency_ranks=), not both")
            widths = _check_vector("dims_per_row", dims_per_row, vocab)
            if vocab and (int(widths.min()) < 0 or int(widths.max()) > dim):
                raise ValueError(f"SparseEmbedding: dims_per_row must be in [0, embedding_dim={dim}]")
        else:
            widths = frequency_widths(vocab, dim, resolve_density(density, sparsity))
            if frequency_ranks is not None:
                ranks = _check_vector("frequency_ranks", frequency_ranks, vocab)
                if not torch.equal(torch.sort(ranks).values, torch.arange(vocab)):
                    raise ValueError("SparseEmbedding: frequency_ranks must be a permutation of "
                                     "range(num_embeddings)")
                widths = widths[ranks]
        factory = dict(dtype=dtype or torch.get_default_dtype(), device=device)
        row_ptr, col_idx = _prefix_pattern(widths, dim, device)
        if _weight is not None:
            if tuple(_weight.shape) != (vocab, dim):
                raise ValueError(f"SparseEmbedding: _weight must have shape ({vocab}, {dim}), got "
                                 f"{tuple(_weight.shape)}")
            values = _weight.detach().to(**factory)[row_indices(row_ptr), col_idx.long()]
        else:
            values = torch.empty(col_idx.numel(), **factory).normal_(generator=generator)
        self.weight = CSRWeight(values, row_ptr, col_idx, (vocab, dim), validate=False)
        self.weight.dynamic = False  # Demeester's pattern is predefined: DynamicSparsity leaves it alone
        if _weight is None:
            self._zero_padding_row()
        self.weight.values.requires_grad_(not _freeze)

    def _check_padding_idx(self, padding_idx):
        if padding_idx is None:
            return None
        padding_idx = operator.index(padding_idx)
        if not -self.num_embeddings <= padding_idx < self.num_embeddings:
            raise ValueError(f"SparseEmbedding: padding_idx must be within num_embeddings "
                             f"({self.num_embeddings}), got {padding_idx}")
        return padding_idx % self.num_embeddings

    def _zero_padding_row(self) -> None:
        if self.padding_idx is not None:
            rp = self.weight.row_ptr
            with torch.no_grad():
                self.weight.values[int(rp[self.padding_idx]):int(rp[self.padding_idx + 1])] = 0

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the stored values N(0, 1) (padding row zero); the pattern is kept."""
        with torch.no_grad():
            self.weight.values.normal_(generator=generator)
        self._zero_padding_row()

    # ------------------------------------------------------------------ properties
    def sparse_weight_names(self) -> list[str]:
        return ["weight"]

    def dims_per_row(self) -> torch.Tensor:
        """The number of stored columns of each row (int64, (num_embeddings,))."""
        return self.weight.row_ptr.diff().long()

    def extra_repr(self) -> str:
        options = changed_options_repr(self, dict(padding_idx=None, max_norm=None, norm_type=2.0,
                                                  scale_grad_by_freq=False))
        return f"{self.num_embeddings}, {self.embedding_dim}{options}, density={self.density:.4f}, nnz={self.nnz}"

    # ------------------------------------------------------------------ compute
    def _stored_entries(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the given rows (int64, (n,)): (which of the n rows, position in
        values) of each of their stored entries, row by row."""
        row_ptr = self.weight.row_ptr
        starts = row_ptr[rows].long()
        lengths = row_ptr[rows + 1].long() - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        total = int(lengths.sum()) if rows.numel() else 0
        owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths, output_size=total)
        pos = torch.arange(total, device=rows.device) + torch.repeat_interleave(starts - offsets, lengths,
                                                                                 output_size=total)
        return owner, pos

    def _renorm(self, rows: torch.Tensor) -> None:
        """nn.Embedding's max_norm: rescale, in place, the rows looked up whose
        norm exceeds max_norm (norm of the stored values; the rest are zero)."""
        unique = torch.unique(rows)
        owner, pos = self._stored_entries(unique)
        with torch.no_grad():
            values = self.weight.values
            dense = values.new_zeros(unique.numel(), self.embedding_dim)
            dense[owner, self.weight.col_idx[pos].long()] = values[pos]
            norms = torch.linalg.vector_norm(dense, ord=self.norm_type, dim=1)
            scale = torch.where(norms > self.max_norm, self.max_norm / (norms + 1e-7), torch.ones_like(norms))
            values[pos] *= scale[owner]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"SparseEmbedding: input must be a torch.Tensor, got {type(input).__name__}")
        if input.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"SparseEmbedding: input must hold integer indices (int64 or int32), got {input.dtype}")
        rows = input.reshape(-1).long()
        if rows.device != self.weight.values.device:
            raise ValueError(f"SparseEmbedding: input is on {rows.device}, the weights on "
                             f"{self.weight.values.device}")
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.num_embeddings):
            bad = int(rows.min()) if int(rows.min()) < 0 else int(rows.max())
            raise IndexError(f"SparseEmbedding: input holds index {bad}, outside [0, num_embeddings="
                             f"{self.num_embeddings})")
        if self.max_norm is not None:
            self._renorm(rows)
        owner, pos = self._stored_entries(rows)
        values = self.weight.values[pos]
        if self.scale_grad_by_freq:
            # Same forward value; the gradient of each word divided by its count here.
            _, inverse, counts = torch.unique(rows, return_inverse=True, return_counts=True)
            scale = (1.0 / counts.to(values.dtype))[inverse][owner]
            values = values.detach() + (values - values.detach()) * scale
        if self.padding_idx is not None:
            values = torch.where(rows[owner] == self.padding_idx, values.detach(), values)
        out = values.new_zeros(rows.numel(), self.embedding_dim)
        out = out.index_put((owner, self.weight.col_idx[pos].long()), values)
        return out.reshape(*input.shape, self.embedding_dim)

    # ------------------------------------------------------------------ dense conversion
    @classmethod
    def from_dense(cls, embedding: nn.Embedding, density: float | None = None, mask: torch.Tensor | None = None,
                   *, frequency_ranks: torch.Tensor | None = None,
                   dims_per_row: torch.Tensor | None = None) -> "SparseEmbedding":
        """A SparseEmbedding holding ``embedding``'s table: at ``mask`` if
        given; else at the predefined frequency pattern when ``dims_per_row``
        or ``frequency_ranks`` is given (with ``density``); else at the
        round(density * numel) largest magnitudes (the family's convention);
        else (nothing given) every entry, so that it computes exactly what
        ``embedding`` does."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"from_dense expects an nn.Embedding, got {type(embedding).__name__}")
        if embedding.sparse:
            raise ValueError("from_dense: an nn.Embedding with sparse=True has no SparseEmbedding counterpart")
        table = embedding.weight
        config = dict(padding_idx=embedding.padding_idx, max_norm=embedding.max_norm,
                      norm_type=embedding.norm_type, scale_grad_by_freq=embedding.scale_grad_by_freq,
                      device=table.device, dtype=table.dtype)
        predefined = dims_per_row is not None or frequency_ranks is not None
        if predefined and mask is None:
            module = cls(embedding.num_embeddings, embedding.embedding_dim, _weight=table, density=density,
                         frequency_ranks=frequency_ranks, dims_per_row=dims_per_row, **config)
        elif predefined:
            raise ValueError("from_dense: give mask= or dims_per_row=/frequency_ranks=, not both")
        else:
            module = cls(embedding.num_embeddings, embedding.embedding_dim, density=0.0, **config)
            module.weight = weight_from_dense(table, density, mask)
        module.weight.values.requires_grad_(table.requires_grad)
        return module.train(embedding.training)

    def to_dense(self) -> nn.Embedding:
        """The equivalent nn.Embedding (same options, dtype and device; the
        unstored entries as zeros)."""
        values = self.weight.values
        dense = nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx,
                             max_norm=self.max_norm, norm_type=self.norm_type,
                             scale_grad_by_freq=self.scale_grad_by_freq, device=values.device, dtype=values.dtype)
        with torch.no_grad():
            dense.weight.copy_(self.weight.to_dense())
        dense.weight.requires_grad_(values.requires_grad)
        return dense.train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A dense nn.Embedding checkpoint: read its values at this module's pattern.
        _load_dense_weights(self, ("weight",), state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
