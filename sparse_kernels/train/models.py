"""The models the training loops build: a word-level language model and a
sequence classifier around a recurrent stack chosen by name.

A recurrent kind names a torch.nn module (used for dense models, the
baseline users compare against) and a sparse_kernels module (used for sparse
ones). Sparse modules are looked up by name when a model is built, so a kind
becomes available as soon as the package exports its module.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .loop import ConfigError

# kind -> (torch.nn class name or None, sparse_kernels class name)
RECURRENT = {"lstm": ("LSTM", "SparseLSTM"), "gru": ("GRU", "SparseGRU"), "rnn": ("RNN", "SparseRNN"),
             "rhn": (None, "SparseRHN")}


def _sparse_class(kind: str):
    import sparse_kernels
    name = RECURRENT[kind][1]
    cls = getattr(sparse_kernels, name, None)
    if cls is None:
        raise ConfigError(f"model {kind!r} needs sparse_kernels.{name}, which this version does not provide")
    return cls


def recurrent_stack(kind: str, input_size: int, hidden_size: int, num_layers: int, *, dropout: float,
                    density: float, sparse: bool, init: str = "uniform", generator=None,
                    depth: int = 1, block_shape=None, init_scale: str = "dense") -> nn.Module:
    """A recurrent stack of ``kind``. ``sparse=False`` gives the torch.nn
    module (or the sparse one at density 1 where torch has none, as for
    RHN); ``depth`` is the recurrence depth of an RHN; ``block_shape`` stores
    the sparse weights as dense blocks (BSR); ``init_scale`` scales the sparse
    weights' initial values (see sparse_kernels.storage.INIT_SCALES)."""
    if kind not in RECURRENT:
        raise ConfigError(f"model must be one of {sorted(RECURRENT)}, got {kind!r}")
    dense_name = RECURRENT[kind][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer: nn.LSTM's warning, harmless here
        if kind == "rhn":
            return _sparse_class(kind)(input_size, hidden_size, depth=depth, density=density if sparse else 1.0,
                                       init=init, generator=generator, block_shape=block_shape if sparse else None,
                                       init_scale=init_scale)
        if not sparse:
            return getattr(nn, dense_name)(input_size, hidden_size, num_layers, dropout=dropout)
        return _sparse_class(kind)(input_size, hidden_size, num_layers, dropout=dropout, density=density,
                                   init=init, generator=generator, block_shape=block_shape, init_scale=init_scale)


def detach_state(state):
    """Cut the graph between BPTT windows: detach a tensor or a tuple of them."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(detach_state(s) for s in state)


class LanguageModel(nn.Module):
    """embedding -> dropout -> recurrent stack -> dropout -> decoder.

    ``tie_weights`` shares the embedding matrix with the decoder (Press &
    Wolf), which needs embedding_size == hidden_size.
    """

    def __init__(self, vocab_size: int, *, embedding_size: int, hidden_size: int, num_layers: int = 2,
                 model: str = "lstm", dropout: float = 0.5, tie_weights: bool = False, sparse: bool = False,
                 density: float = 1.0, init: str = "uniform", seed: int = 0, depth: int = 1,
                 embedding_density: float | None = None, frequency_ranks: torch.Tensor | None = None,
                 block_shape=None, init_scale: str = "dense"):
        super().__init__()
        if tie_weights and embedding_size != hidden_size:
            raise ConfigError(f"tie_weights needs embedding_size == hidden_size, got {embedding_size} "
                             f"and {hidden_size}")
        if tie_weights and embedding_density is not None:
            raise ConfigError("tie_weights needs a dense embedding (embedding_density=None)")
        generator = torch.Generator().manual_seed(seed)
        self.drop = nn.Dropout(dropout)
        if embedding_density is None:
            self.encoder = nn.Embedding(vocab_size, embedding_size)
        else:
            # Demeester et al.: frequent words get long embedding prefixes, rare words short ones.
            from .. import SparseEmbedding
            self.encoder = SparseEmbedding(vocab_size, embedding_size, density=embedding_density,
                                           frequency_ranks=frequency_ranks)
        self.rnn = recurrent_stack(model, embedding_size, hidden_size, num_layers, dropout=dropout,
                                   density=density, sparse=sparse, init=init, generator=generator, depth=depth,
                                   block_shape=block_shape, init_scale=init_scale)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        with torch.no_grad():
            encoder_values = self.encoder.weight if embedding_density is None else self.encoder.weight.values
            encoder_values.uniform_(-0.1, 0.1, generator=generator)
            self.decoder.weight.uniform_(-0.1, 0.1, generator=generator)
            self.decoder.bias.zero_()
        if tie_weights:
            self.decoder.weight = self.encoder.weight

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens (T, B) -> logits (T, B, vocab), state."""
        out, state = self.rnn(self.drop(self.encoder(tokens)), state)
        return self.decoder(self.drop(out)), state


def grow_language_model(model: LanguageModel, hidden_size: int, *,
                        generator: torch.Generator | None = None) -> LanguageModel:
    """Shao's growth: a copy of a trained ``model`` whose sparse recurrent
    stack has ``hidden_size`` units per layer, made by replicating hidden
    units (sparse_kernels.dst.replicate_hidden_units), with the decoder's
    input columns divided among the copies: it computes the same function
    and training continues from it."""
    from ..dst import replicate_hidden_units, replicate_input_features
    from ..nn.recurrent import SparseRNNBase
    if not isinstance(model.rnn, SparseRNNBase):
        raise ConfigError(f"growing needs a sparse LSTM/GRU/Elman stack, got {type(model.rnn).__name__}")
    grown = copy.deepcopy(model)
    grown.rnn, source = replicate_hidden_units(model.rnn, hidden_size, generator=generator)
    if not model.rnn.proj_size:
        grown.decoder = replicate_input_features(model.decoder, source, model.rnn.num_directions)
    return grown


class Classifier(nn.Module):
    """embedding -> recurrent stack over a PackedSequence -> last layer's
    final hidden state -> dropout -> linear."""

    def __init__(self, vocab_size: int, num_classes: int, *, embedding_size: int, hidden_size: int,
                 num_layers: int = 1, model: str = "lstm", dropout: float = 0.0, sparse: bool = False,
                 density: float = 1.0, init: str = "uniform", seed: int = 0, depth: int = 1, block_shape=None,
                 init_scale: str = "dense"):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.encoder = nn.Embedding(vocab_size, embedding_size, padding_idx=0)
        self.rnn = recurrent_stack(model, embedding_size, hidden_size, num_layers, dropout=dropout,
                                   density=density, sparse=sparse, init=init, generator=generator, depth=depth,
                                   block_shape=block_shape, init_scale=init_scale)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """tokens (T, B) padded with 0, lengths (B,) -> logits (B, classes)."""
        packed = pack_padded_sequence(self.encoder(tokens), lengths.cpu(), enforce_sorted=False)
        _, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state
        return self.head(self.drop(h_n[-1]))
