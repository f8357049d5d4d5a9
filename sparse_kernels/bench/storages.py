"""What each storage computes for every op of the study.

A grid point's tensors live in one :class:`Problem`, shared by every storage,
so that all of them compute the same thing from the same numbers. A storage
turns the problem into :class:`Kernel` s (zero-argument callables), one per
layout it can run the op in (dense has two for the products: ``x @ W^T`` and
``W @ x^T``; the study keeps the faster). Adding a storage is one entry in
:data:`STORAGES`.

The weight of the products is an LSTM's recurrent matrix W_hh, (4H x H) for
hidden size H, with a uniform random pattern at the grid point's sparsity
(the same number of entries in every row, as ``CSRWeight.random``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune

import sparse_kernels
from .. import csr as csr_format
from .. import ops, reference
from ..nn import SparseLSTM, SparseLSTMCell

# op name -> what it measures (shown in the report)
OPS = {
    "forward": "forward product W_hh h: (B, H) -> (B, 4H)",
    "transposed": "transposed product grad_gates W_hh (input gradient): (B, 4H) -> (B, H)",
    "value_grad": "value gradient grad_gates^T h at the stored entries (weight gradient)",
    "cell": "one LSTM cell step: W_ih x + W_hh h + b, then the gates (nn.LSTMCell)",
    "layer_forward": "an LSTM layer over T steps, inference (nn.LSTM)",
    "layer_forward_backward": "an LSTM layer over T steps, forward + backward to the weights",
}
PRODUCT_OPS = ("forward", "transposed", "value_grad", "cell")
LAYER_OPS = ("layer_forward", "layer_forward_backward")


class Unsupported(Exception):
    """This storage cannot run this op at this grid point (the reason is reported)."""


@dataclass
class Kernel:
    """``run()`` computes the op once; ``canonical(out)`` turns its result into
    the form every storage agrees on (checked against dense before timing)."""
    run: Callable[[], object]
    canonical: Callable[[object], torch.Tensor] = field(default=lambda out: out)


@dataclass
class Built:
    """A storage's kernels for one problem. ``weights``: the dense matrices the
    storage actually holds, when it cannot hold the problem's own pattern
    (block-sparse: whole blocks); the check then compares with dense torch
    run on these. ``stored``: the entries of W_hh it keeps (reported)."""
    kernels: dict[str, Kernel]
    stored: int
    weights: dict[str, torch.Tensor] | None = None


class Matrices:
    """The weights of one (hidden, sparsity): W_hh and, made on first use,
    W_ih, each (4H x H) with exactly round((1 - sparsity) * 4H * H) stored
    entries (uniform random pattern, values uniform in +-1/sqrt(H), never 0),
    and the two biases. Shared by every op and batch of that (hidden,
    sparsity): a 4096-wide dense pattern takes seconds to draw."""

    NAMES = ("weight_hh", "weight_ih")

    def __init__(self, hidden: int, sparsity: float, seed: int = 0):
        self.hidden, self.sparsity, self.seed = hidden, sparsity, seed
        self.density = 1.0 - sparsity
        self.bound = 1.0 / math.sqrt(hidden)
        self.shape = (4 * hidden, hidden)
        self.dense, self.masks, self.csr = {}, {}, {}
        g = torch.Generator().manual_seed(seed)
        self.bias_ih = nonzero_uniform(4 * hidden, self.bound, g)
        self.bias_hh = nonzero_uniform(4 * hidden, self.bound, g)

    def get(self, name: str):
        if name not in self.csr:
            g = torch.Generator().manual_seed(self.seed * len(self.NAMES) + self.NAMES.index(name) + 1)
            row_ptr, col_idx = csr_format.random_csr(self.shape, self.density, generator=g)
            values = nonzero_uniform(col_idx.numel(), self.bound, g)
            self.csr[name] = (values, row_ptr, col_idx)
            self.dense[name] = reference.csr_to_dense(values, row_ptr, col_idx, self.shape)
            self.masks[name] = self.dense[name] != 0
        return self.dense[name], self.masks[name], self.csr[name]


class Problem:
    """The tensors of one grid point: W_hh (and W_ih with biases for the cell
    and the layer) from :class:`Matrices`, and the activations of batch B
    (T steps for the layer), all random (never zeros)."""

    def __init__(self, op: str, hidden: int, sparsity: float, batch: int, steps: int, seed: int = 0,
                 matrices: Matrices | None = None):
        if op not in OPS:
            raise ValueError(f"op must be one of {sorted(OPS)}, got {op!r}")
        if matrices is None:
            matrices = Matrices(hidden, sparsity, seed)
        elif (matrices.hidden, matrices.sparsity) != (hidden, sparsity):
            raise ValueError(f"matrices are for hidden={matrices.hidden}, sparsity={matrices.sparsity}, "
                             f"not hidden={hidden}, sparsity={sparsity}")
        self.op, self.hidden, self.sparsity, self.batch, self.steps = op, hidden, sparsity, batch, steps
        self.density, self.bound = matrices.density, matrices.bound
        names = ("weight_hh",) if op in ("forward", "transposed", "value_grad") else ("weight_ih", "weight_hh")
        self.weights, self.masks, self.csr = {}, {}, {}
        for name in names:
            self.weights[name], self.masks[name], self.csr[name] = matrices.get(name)
        self.bias_ih, self.bias_hh = matrices.bias_ih, matrices.bias_hh
        # Activations depend on (seed, batch, steps) only, not on which points came before;
        # ``generator`` is left for storages drawing their own pattern (block-sparse).
        g = self.generator = torch.Generator().manual_seed(hash((seed, batch, steps)) & 0x7FFFFFFF)
        gates = 4 * hidden
        self.x = torch.randn(batch, hidden, generator=g)
        self.grad_gates = torch.randn(batch, gates, generator=g)
        self.h = torch.randn(batch, hidden, generator=g) * 0.5
        self.c = torch.randn(batch, hidden, generator=g) * 0.5
        if op in LAYER_OPS:
            self.seq = torch.randn(steps, batch, hidden, generator=g)
            self.grad_out = torch.randn(steps, batch, hidden, generator=g)

    @property
    def nnz(self) -> int:
        return self.csr["weight_hh"][2].numel()

    def with_weights(self, weights: dict[str, torch.Tensor]) -> "Problem":
        """The same problem over other dense matrices (zeros exactly where not
        stored); only dense torch runs on it (no CSR triple)."""
        other = object.__new__(Problem)
        other.__dict__.update(self.__dict__)
        other.weights = dict(weights)
        other.masks = {name: w != 0 for name, w in weights.items()}
        other.csr = None
        return other


def nonzero_uniform(count: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform in +-bound, never exactly 0 (a float32 draw is 0 about once in
    2^24; a zero would fall out of a pattern derived from the dense matrix)."""
    values = torch.empty(count).uniform_(-bound, bound, generator=generator)
    return values.masked_fill_(values == 0, bound)


# ---------------------------------------------------------------------------- helpers


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def _with_problem_weights(module: nn.Module, p: Problem, weights: dict[str, torch.Tensor], suffix: str):
    """``module`` (nn.LSTM: suffix "_l0"; nn.LSTMCell: "") holding the problem's weights and biases."""
    with torch.no_grad():
        for name, value in (("weight_ih", weights["weight_ih"]), ("weight_hh", weights["weight_hh"]),
                            ("bias_ih", p.bias_ih), ("bias_hh", p.bias_hh)):
            getattr(module, name + suffix).copy_(value)
    return module


def _dense_lstm(p: Problem, weights: dict[str, torch.Tensor]) -> nn.LSTM:
    return _with_problem_weights(nn.LSTM(p.hidden, p.hidden), p, weights, "_l0")


def _dense_cell(p: Problem, weights: dict[str, torch.Tensor]) -> nn.LSTMCell:
    return _with_problem_weights(nn.LSTMCell(p.hidden, p.hidden), p, weights, "")


def _cat_state(out) -> torch.Tensor:
    h, c = out
    return torch.cat([h, c], dim=1)


def _layer_kernels(module: nn.Module, p: Problem, grad_of_hh: Callable[[], torch.Tensor],
                   to_dense_grad: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Kernel]:
    """layer_forward / layer_forward_backward through a module taking (T, B, H)."""
    if p.op == "layer_forward":
        return {"module": Kernel(_no_grad(lambda: module(p.seq)[0]))}
    params = list(module.parameters())

    def run():
        for q in params:
            q.grad = None  # optimizer.zero_grad(set_to_none=True) between steps
        module(p.seq)[0].backward(p.grad_out)
        return grad_of_hh()
    return {"module": Kernel(run, to_dense_grad)}


# ---------------------------------------------------------------------------- dense torch

def build_dense(p: Problem) -> Built:
    w = p.weights["weight_hh"]
    mask = p.masks["weight_hh"]
    built = partial(Built, stored=w.numel())
    if p.op == "forward":
        x_t = p.x.t().contiguous()
        return built({"x@W^T": Kernel(lambda: p.x @ w.t()),
                      "W@x^T": Kernel(lambda: w @ x_t, lambda out: out.t())})
    if p.op == "transposed":
        gy_t = p.grad_gates.t().contiguous()
        return built({"gy@W": Kernel(lambda: p.grad_gates @ w),
                      "W^T@gy^T": Kernel(lambda: w.t() @ gy_t, lambda out: out.t())})
    if p.op == "value_grad":
        # The whole dense weight gradient; only its stored entries are compared.
        return built({"gy^T@x": Kernel(lambda: p.grad_gates.t() @ p.x, lambda out: out * mask)})
    if p.op == "cell":
        cell = _dense_cell(p, p.weights)
        return built({"module": Kernel(_no_grad(lambda: cell(p.x, (p.h, p.c))), _cat_state)})
    lstm = _dense_lstm(p, p.weights)
    return built(_layer_kernels(lstm, p, lambda: lstm.weight_hh_l0.grad, lambda g: g * mask))


# ---------------------------------------------------------------------------- masked dense

def build_masked(p: Problem) -> Built:
    """A dense weight times its 0/1 mask at every use, as mask-based sparse
    training runs (torch.nn.utils.prune for the modules)."""
    w = p.weights["weight_hh"]
    mask = p.masks["weight_hh"]
    m = mask.to(w.dtype)
    built = partial(Built, stored=w.numel())
    if p.op == "forward":
        x_t = p.x.t().contiguous()
        return built({"x@(W*M)^T": Kernel(lambda: p.x @ (w * m).t()),
                      "(W*M)@x^T": Kernel(lambda: (w * m) @ x_t, lambda out: out.t())})
    if p.op == "transposed":
        gy_t = p.grad_gates.t().contiguous()
        return built({"gy@(W*M)": Kernel(lambda: p.grad_gates @ (w * m)),
                      "(W*M)^T@gy^T": Kernel(lambda: (w * m).t() @ gy_t, lambda out: out.t())})
    if p.op == "value_grad":
        return built({"(gy^T@x)*M": Kernel(lambda: (p.grad_gates.t() @ p.x) * m)})
    if p.op == "cell":
        cell = _dense_cell(p, p.weights)
        prune.custom_from_mask(cell, "weight_ih", p.masks["weight_ih"])
        prune.custom_from_mask(cell, "weight_hh", mask)
        return built({"module": Kernel(_no_grad(lambda: cell(p.x, (p.h, p.c))), _cat_state)})
    lstm = _dense_lstm(p, p.weights)
    prune.custom_from_mask(lstm, "weight_ih_l0", p.masks["weight_ih"])
    prune.custom_from_mask(lstm, "weight_hh_l0", mask)
    return built(_layer_kernels(lstm, p, lambda: lstm.weight_hh_l0_orig.grad, lambda g: g))


# ---------------------------------------------------------------------------- torch.sparse CSR

def _torch_csr(values, row_ptr, col_idx, shape, transposed: bool = False) -> torch.Tensor:
    """A torch CSR tensor of exactly this pattern (int64 indices, as
    Tensor.to_sparse_csr makes), or of its transpose."""
    if transposed:
        col_ptr, row_idx, csr2csc = csr_format.csr_transpose(row_ptr, col_idx, shape[1])
        values, row_ptr, col_idx, shape = values[csr2csc.long()], col_ptr, row_idx, (shape[1], shape[0])
    return torch.sparse_csr_tensor(row_ptr.long(), col_idx.long(), values, tuple(shape))


def _torch_sparse_lstm(w_ih, w_hh, bias, seq_t, steps: int, batch: int) -> torch.Tensor:
    """An LSTM layer with torch.sparse CSR products, activations kept
    transposed ((features, batch), the layout torch.sparse.mm multiplies
    without copies). seq_t: (H, T*B). Returns (T, B, H)."""
    projected = torch.sparse.mm(w_ih, seq_t) + bias.unsqueeze(1)
    hidden = w_hh.shape[1]
    h = seq_t.new_zeros(hidden, batch)
    c = seq_t.new_zeros(hidden, batch)
    outputs = []
    for t in range(steps):
        gates = projected[:, t * batch:(t + 1) * batch] + torch.sparse.mm(w_hh, h)
        i, f, g, o = gates.chunk(4, dim=0)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs).transpose(1, 2)


def build_torch_sparse(p: Problem) -> Built:
    """torch.sparse CSR (MKL on CPU, cuSPARSE on CUDA), given its preferred
    layout: W @ x^T with x^T prebuilt, the transposed matrix prebuilt as our
    CSC view is."""
    w_dense = p.weights["weight_hh"]
    shape = tuple(w_dense.shape)
    w = _torch_csr(*p.csr["weight_hh"], shape)
    built = partial(Built, stored=w.values().numel())
    if p.op == "forward":
        x_t = p.x.t().contiguous()
        return built({"W@x^T": Kernel(lambda: torch.sparse.mm(w, x_t), lambda out: out.t())})
    if p.op == "transposed":
        w_t = _torch_csr(*p.csr["weight_hh"], shape, transposed=True)
        gy_t = p.grad_gates.t().contiguous()
        return built({"W^T@gy^T": Kernel(lambda: torch.sparse.mm(w_t, gy_t), lambda out: out.t())})
    if p.op == "value_grad":
        gy_t = p.grad_gates.t().contiguous()
        return built({"sampled_addmm": Kernel(lambda: torch.sparse.sampled_addmm(w, gy_t, p.x, beta=0.0),
                                              lambda out: out.to_dense())})
    w_ih = _torch_csr(*p.csr["weight_ih"], shape)
    bias = p.bias_ih + p.bias_hh
    if p.op == "cell":
        x_t, h_t, c_t = (t.t().contiguous() for t in (p.x, p.h, p.c))

        def cell():
            gates = torch.sparse.mm(w_ih, x_t) + torch.sparse.mm(w, h_t) + bias.unsqueeze(1)
            i, f, g, o = gates.chunk(4, dim=0)
            c = torch.sigmoid(f) * c_t + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        return built({"W@x^T": Kernel(cell, lambda out: torch.cat([out[0].t(), out[1].t()], dim=1))})
    seq_t = p.seq.reshape(-1, p.hidden).t().contiguous()
    if p.op == "layer_forward":
        return built({"W@x^T": Kernel(_no_grad(lambda: _torch_sparse_lstm(w_ih, w, bias, seq_t, p.steps, p.batch)))})
    # Leaves for the stored values (and biases); the CSR tensors are rebuilt
    # from them at each call so that autograd reaches them.
    leaves = {"ih": w_ih, "hh": w}
    values = {name: t.values().clone().requires_grad_() for name, t in leaves.items()}
    b_ih, b_hh = p.bias_ih.clone().requires_grad_(), p.bias_hh.clone().requires_grad_()

    def run():
        for leaf in (*values.values(), b_ih, b_hh):
            leaf.grad = None
        ih, hh = (torch.sparse_csr_tensor(leaves[n].crow_indices(), leaves[n].col_indices(), values[n], shape)
                  for n in ("ih", "hh"))
        out = _torch_sparse_lstm(ih, hh, b_ih + b_hh, seq_t, p.steps, p.batch)
        out.backward(p.grad_out)
        return values["hh"].grad

    hh = leaves["hh"]
    return built({"W@x^T": Kernel(run, lambda g: torch.sparse_csr_tensor(
        hh.crow_indices(), hh.col_indices(), g, shape).to_dense())})


# ---------------------------------------------------------------------------- ours: CSR

def build_csr(p: Problem) -> Built:
    """sparse_kernels' CSRWeight and the modules over it."""
    values, row_ptr, col_idx = p.csr["weight_hh"]
    w = sparse_kernels.CSRWeight(values, row_ptr, col_idx, p.weights["weight_hh"].shape)
    values = w.values.detach()
    built = partial(Built, stored=w.nnz)
    if p.op == "forward":
        return built({"x@W^T": Kernel(_no_grad(lambda: w(p.x)))})
    if p.op == "transposed":
        # The product the backward runs on this device: the scatter from the
        # CSR on the CPU, the gather through the transposed index elsewhere.
        if values.device.type == "cpu":
            return built({"gy@W": Kernel(lambda: ops.sparse_linear_input_grad_csr(
                p.grad_gates, values, w.row_ptr, w.col_idx, w.in_features, validate=False))})
        csc = w.transposed_index()
        return built({"gy@W": Kernel(lambda: ops.sparse_linear_input_grad(p.grad_gates, values, csc,
                                                                          validate=False))})
    if p.op == "value_grad":
        return built({"SDDMM": Kernel(
            lambda: ops.sparse_linear_value_grad(p.grad_gates, p.x, w.row_ptr, w.col_idx, validate=False),
            lambda out: reference.csr_to_dense(out, w.row_ptr, w.col_idx, w.shape))})
    masks = p.masks
    if p.op == "cell":
        cell = SparseLSTMCell.from_dense(_dense_cell(p, p.weights),
                                         mask={"weight_ih": masks["weight_ih"], "weight_hh": masks["weight_hh"]})
        return built({"module": Kernel(_no_grad(lambda: cell(p.x, (p.h, p.c))), _cat_state)})
    lstm = SparseLSTM.from_dense(_dense_lstm(p, p.weights),
                                 mask={"weight_ih_l0": masks["weight_ih"], "weight_hh_l0": masks["weight_hh"]})
    hh = lstm.weight_hh_l0
    return built(_layer_kernels(lstm, p, lambda: hh.values.grad,
                                lambda g: reference.csr_to_dense(g, hh.row_ptr, hh.col_idx, hh.shape)))


# ---------------------------------------------------------------------------- ours: BSR

BSR_BLOCK = (16, 16)


def _bsr_unavailable() -> str | None:
    if getattr(sparse_kernels, "BSRWeight", None) is None:
        return "sparse_kernels.BSRWeight is not in this build (block-sparse storage not merged yet)"
    return None


def build_bsr(p: Problem) -> Built:
    """sparse_kernels' BSRWeight: a random pattern of whole BSR_BLOCK blocks
    holding the same number of entries (its own pattern: blocks, not the
    problem's scattered entries; checked against dense on its own matrices)."""
    bh, bw = BSR_BLOCK
    gates, hidden = 4 * p.hidden, p.hidden
    if gates % bh or hidden % bw:
        raise Unsupported(f"{bh}x{bw} blocks do not tile a {gates}x{hidden} matrix")
    BSRWeight = sparse_kernels.BSRWeight
    weights, block_masks = {}, {}
    for name in p.weights:
        row_ptr, col_idx = csr_format.random_csr((gates // bh, hidden // bw), p.density, generator=p.generator)
        grid_mask = reference.csr_to_dense(torch.ones(col_idx.numel(), dtype=torch.bool), row_ptr, col_idx,
                                           (gates // bh, hidden // bw))
        entry_mask = grid_mask.repeat_interleave(bh, 0).repeat_interleave(bw, 1)
        dense = nonzero_uniform(gates * hidden, p.bound, p.generator).reshape(gates, hidden) * entry_mask
        weights[name], block_masks[name] = dense, grid_mask
    w = BSRWeight.from_dense(weights["weight_hh"], block_masks["weight_hh"], block_shape=BSR_BLOCK)
    values = w.values.detach()
    if p.op == "forward":
        kernels = {"x@W^T": Kernel(_no_grad(lambda: w(p.x)))}
    elif p.op == "transposed":
        csc = w.transposed_index()
        kernels = {"gy@W": Kernel(lambda: ops.bsr_linear_input_grad(p.grad_gates, values, csc))}
    elif p.op == "value_grad":
        kernels = {"SDDMM": Kernel(
            lambda: ops.bsr_linear_value_grad(p.grad_gates, p.x, w.block_row_ptr, w.block_col_idx, w.block_shape),
            lambda out: BSRWeight(out.detach(), w.block_row_ptr, w.block_col_idx, w.shape).to_dense())}
    elif p.op == "cell":
        cell = SparseLSTMCell.from_dense(_dense_cell(p, weights), block_shape=BSR_BLOCK,
                                         mask={"weight_ih": block_masks["weight_ih"],
                                               "weight_hh": block_masks["weight_hh"]})
        kernels = {"module": Kernel(_no_grad(lambda: cell(p.x, (p.h, p.c))), _cat_state)}
    else:
        lstm = SparseLSTM.from_dense(_dense_lstm(p, weights), block_shape=BSR_BLOCK,
                                     mask={"weight_ih_l0": block_masks["weight_ih"],
                                           "weight_hh_l0": block_masks["weight_hh"]})
        hh = lstm.weight_hh_l0
        kernels = _layer_kernels(lstm, p, lambda: hh.values.grad,
                                 lambda g: BSRWeight(g, hh.block_row_ptr, hh.block_col_idx, hh.shape).to_dense())
    return Built(kernels, w.nnz, weights)


# ---------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Storage:
    name: str
    label: str
    build: Callable[[Problem], Built]
    ours: bool = False  # sparse_kernels' own storage (the report compares these with torch.sparse)
    unavailable: Callable[[], str | None] = lambda: None  # the reason it cannot run here, or None


STORAGES: dict[str, Storage] = {s.name: s for s in (
    Storage("dense", "dense torch", build_dense),
    Storage("masked", "masked dense", build_masked),
    Storage("torch_sparse", "torch.sparse CSR", build_torch_sparse),
    Storage("csr", "ours CSR", build_csr, ours=True),
    Storage("bsr", f"ours BSR {BSR_BLOCK[0]}x{BSR_BLOCK[1]}", build_bsr, ours=True, unavailable=_bsr_unavailable),
)}
BASELINE = "dense"
TORCH_SPARSE = "torch_sparse"
