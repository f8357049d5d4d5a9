"""Pieces shared by the sparse modules: the sparse options and how a weight
is made from them, and magnitude masks for from_dense."""

from __future__ import annotations

import math

import torch

from .. import bsr as bsr_format
from ..csr import exact_nnz
from ..storage import INIT_SCALES, BSRWeight, CSRWeight, SparseWeight, check_init_scale  # noqa: F401 (re-exported)

INITS = ("uniform", "erdos_renyi", "block_diagonal")


def resolve_density(density: float | None, sparsity: float | None) -> float:
    """Exactly one of density / sparsity (= 1 - density); default density 0.1."""
    if density is not None and sparsity is not None:
        raise ValueError("give either density= or sparsity=, not both")
    if sparsity is not None:
        density = 1.0 - float(sparsity)
    density = 0.1 if density is None else float(density)
    if not 0.0 <= density <= 1.0 or math.isnan(density):
        raise ValueError(f"density must be in [0, 1] (sparsity in [0, 1]), got density={density}")
    return density


def check_init(init: str) -> str:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return init


def check_block_shape(block_shape, owner: str):
    """None (CSR: single entries) or (bh, bw) positive ints (BSR blocks)."""
    if block_shape is None:
        return None
    return bsr_format.check_block_shape(block_shape, f"{owner}: block_shape")


def make_weight(out_features: int, in_features: int, density: float, *, init: str, bound: float,
                generator=None, dtype=None, device=None, row_groups: int = 1, block_shape=None,
                name: str = "the weight", init_scale: str = "dense") -> SparseWeight:
    """A random sparse weight, values uniform in [-bound, bound] (the dense
    module's own initialisation, applied to the stored entries only), each
    row scaled by sqrt(in_features / its stored entries) with
    ``init_scale="fan_in"``: a CSRWeight, or with ``block_shape`` a
    BSRWeight whose density counts blocks (exactly round(density * grid
    blocks) of them)."""
    dtype = dtype or torch.get_default_dtype()
    if block_shape is None:
        return CSRWeight.random(out_features, in_features, density, init=init, generator=generator,
                                dtype=dtype, device=device, bound=bound, row_groups=row_groups,
                                init_scale=init_scale)
    bsr_format.grid_shape((out_features, in_features), block_shape, name)
    return BSRWeight.random(out_features, in_features, density, block_shape=block_shape, init=init,
                            generator=generator, dtype=dtype, device=device, bound=bound, row_groups=row_groups,
                            init_scale=init_scale)


def magnitude_mask(dense: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the round(density * numel) entries of largest magnitude (ties broken
    by position, so the count is exact)."""
    k = exact_nnz(tuple(dense.shape), density)
    mask = torch.zeros(dense.numel(), dtype=torch.bool, device=dense.device)
    if k:
        mask[dense.detach().abs().flatten().topk(k).indices] = True
    return mask.reshape(dense.shape)


def weight_from_dense(dense: torch.Tensor, density: float | None, mask: torch.Tensor | None,
                      block_shape=None) -> SparseWeight:
    """from_dense for one matrix: a given mask wins, else magnitude at density,
    else (neither) every entry is kept. With ``block_shape``: a BSRWeight,
    the mask per block or per entry (a block is kept when any entry is),
    magnitude = block Frobenius norm, density counted in blocks."""
    if block_shape is not None:
        if mask is None:
            return BSRWeight.from_dense(dense.detach(), block_shape=block_shape,
                                        density=1.0 if density is None else density)
        return BSRWeight.from_dense(dense.detach(), mask, block_shape=block_shape)
    if mask is None:
        mask = magnitude_mask(dense, 1.0 if density is None else density)
    return CSRWeight.from_dense(dense.detach(), mask)


class SparseWeightsMixin:
    """nnz, density and the (name, SparseWeight) list of a module whose sparse
    matrices are the submodules named by its ``sparse_weight_names()``."""

    def sparse_weights(self):
        """(name, CSRWeight or BSRWeight) of every sparse matrix, for sparse-training tools."""
        return [(name, getattr(self, name)) for name in self.sparse_weight_names()]

    @property
    def nnz(self) -> int:
        return sum(w.nnz for _, w in self.sparse_weights())

    @property
    def density(self) -> float:
        total = sum(w.shape.numel() for _, w in self.sparse_weights())
        return self.nnz / total if total else 0.0


def changed_options_repr(module, defaults: dict) -> str:
    """", name=value" for each option of ``module`` that differs from its
    default, in the order given (torch.nn's extra_repr style)."""
    return "".join(f", {name}={getattr(module, name)}" for name, default in defaults.items()
                   if getattr(module, name) != default)
