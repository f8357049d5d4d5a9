"""Property-based tests of the modules (SparseLSTM, SparseGRU, SparseRNN,
SparseRHN, SparseLSTMCell, SparseLinear, SparseEmbedding), CSRWeight and
DynamicSparsity: random configurations, densities 0 and 1 included,
dtypes, batched / unbatched / batch_first / packed input, empty and very long
sequences, against the equivalent torch.nn module (to_dense) or the
reference loop; and malformed input (wrong sizes, dtypes, mismatched hidden
states, broken CSR patterns, bad constructor arguments), which must raise a
TypeError, ValueError or RuntimeError naming the culprit before any kernel
runs.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sparse_kernels import (CSRWeight, SparseEmbedding, SparseGRU, SparseLinear, SparseLSTM, SparseLSTMCell,
                            SparseRHN, SparseRNN, reference)
from sparse_kernels.dst import DynamicSparsity
from fuzz_helpers import TOL, broken_csrs, densities, dtypes, expect_error, randn, random_pattern, seeds, tried

ERRORS = (TypeError, ValueError, RuntimeError)
RECURRENT = {"lstm": SparseLSTM, "gru": SparseGRU, "rnn_tanh": SparseRNN, "rnn_relu": SparseRNN}


def _make(kind, input_size, hidden, *, seed, **kw):
    extra = dict(nonlinearity=kind[4:]) if kind.startswith("rnn") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer
        return RECURRENT[kind](input_size, hidden, generator=torch.Generator().manual_seed(seed), **extra, **kw)


@st.composite
def recurrent_configs(draw):
    kind = draw(st.sampled_from(sorted(RECURRENT)))
    hidden = draw(st.integers(1, 4))
    return dict(kind=kind, input_size=draw(st.integers(1, 4)), hidden=hidden,
                num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                bias=draw(st.booleans()), batch_first=draw(st.booleans()),
                proj_size=draw(st.integers(0, hidden - 1)) if kind == "lstm" else 0,
                density=draw(densities), dtype=draw(dtypes), seed=draw(seeds),
                init=draw(st.sampled_from(["uniform", "erdos_renyi", "block_diagonal"])))


def _build(c):
    extra = dict(proj_size=c["proj_size"]) if c["kind"] == "lstm" else {}
    return _make(c["kind"], c["input_size"], c["hidden"], seed=c["seed"], num_layers=c["num_layers"],
                 bidirectional=c["bidirectional"], bias=c["bias"], batch_first=c["batch_first"],
                 density=c["density"], dtype=c["dtype"], init=c["init"], **extra)


def _states(c, module, batch, unbatched, seed):
    layers = c["num_layers"] * (2 if c["bidirectional"] else 1)
    shape = (layers, c["proj_size"] or c["hidden"]) if unbatched else (layers, batch, c["proj_size"] or c["hidden"])
    h0 = randn(shape, c["dtype"], seed)
    if c["kind"] != "lstm":
        return h0
    cshape = shape[:-1] + (c["hidden"],)
    return h0, randn(cshape, c["dtype"], seed + 1)


def _flat(out):
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        return [out.data]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


@settings(max_examples=40)
@given(recurrent_configs(), st.sampled_from(["batched", "unbatched", "packed"]), st.integers(1, 4),
       st.integers(1, 3), st.booleans(), st.data())
def test_recurrent_modules_match_torch_nn(c, layout, steps, batch, give_hx, data):
    tried("SparseLSTM/GRU/RNN valid")
    sparse = _build(c).eval()
    dense = sparse.to_dense().eval()
    seed = c["seed"]
    if layout == "packed":
        lengths = sorted(data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch)), reverse=True)
        padded = randn((batch, steps, c["input_size"]), c["dtype"], seed + 5)
        if not c["batch_first"]:
            padded = padded.transpose(0, 1)
        enforce = data.draw(st.booleans())
        if not enforce:
            order = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
            lengths = [lengths[i] for i in order]
        x = pack_padded_sequence(padded, torch.tensor(lengths), batch_first=c["batch_first"], enforce_sorted=enforce)
    elif layout == "unbatched":
        x = randn((steps, c["input_size"]), c["dtype"], seed + 5)
    else:
        shape = (batch, steps, c["input_size"]) if c["batch_first"] else (steps, batch, c["input_size"])
        x = randn(shape, c["dtype"], seed + 5)
    hx = _states(c, sparse, batch, layout == "unbatched", seed + 7) if give_hx else None
    got, want = sparse(x, hx), dense(x, hx)
    torch.testing.assert_close(_flat(got), _flat(want), **TOL[c["dtype"]])


@settings(max_examples=25)
@given(recurrent_configs(), st.integers(0, 3), st.integers(0, 10**6))
def test_recurrent_modules_handle_empty_sequences_and_batches(c, batch, which):
    tried("SparseLSTM/GRU/RNN empty")
    # torch.nn refuses zero steps; the sparse layers return the empty output
    # and the initial state unchanged, the limit of the recurrence.
    sparse = _build(c).eval()
    steps = 0 if which % 2 or batch else 2
    shape = (batch, steps, c["input_size"]) if c["batch_first"] else (steps, batch, c["input_size"])
    x = randn(shape, c["dtype"], 1)
    hx = _states(c, sparse, batch, False, 2)
    out, h_n = sparse(x, hx)
    out_features = (c["proj_size"] or c["hidden"]) * (2 if c["bidirectional"] else 1)
    assert out.shape == shape[:2] + (out_features,)
    if steps == 0:
        torch.testing.assert_close(h_n, hx, rtol=0, atol=0)
    else:  # batch 0
        assert all(t.shape[1] == 0 for t in _flat(h_n))


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_recurrent_modules_on_a_very_long_sequence(kind):
    tried("SparseLSTM/GRU/RNN 2000 steps")
    # Thousands of steps: no recursion or per-step state that grows, and
    # the result is still torch.nn's (forward and input gradient).
    sparse = _make(kind, 2, 3, seed=5, density=0.5, dtype=torch.float64)
    dense = sparse.to_dense()
    x = randn((2000, 1, 2), torch.float64, 6).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    threads = torch.get_num_threads()
    # One thread: each of the 2000 steps' tiny products would otherwise open
    # a parallel region, and on a busy machine every one waits for a core
    # (measured 0.1 s alone, 25 s beside other work).
    torch.set_num_threads(1)
    try:
        got, want = sparse(x), dense(x2)
        got[0].sum().backward()
        want[0].sum().backward()
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(_flat(got), _flat(want), **TOL[torch.float64])
    torch.testing.assert_close(x.grad, x2.grad, **TOL[torch.float64])


def _recurrent_bad_inputs(c, module, batch):
    """(label, input, hx, names) with one thing wrong; names: what the error
    message may name."""
    dtype = c["dtype"]
    other = torch.float64 if dtype == torch.float32 else torch.float32
    shape = (batch, 3, c["input_size"]) if c["batch_first"] else (3, batch, c["input_size"])
    x = randn(shape, dtype, 3)
    hx = _states(c, module, batch, False, 4)
    lstm = c["kind"] == "lstm"
    h0 = hx[0] if lstm else hx

    def with_h0(t):
        return (t, hx[1]) if lstm else t

    cases = [
        ("input one feature more", randn(shape[:2] + (c["input_size"] + 1,), dtype, 5), None, ("input",)),
        ("input other dtype", x.to(other), None, ("dtype",)),
        ("input int", x.long(), None, ("dtype",)),
        ("input 4-D", x.unsqueeze(0), None, ("input", "2D or 3D")),
        ("input 1-D", x.reshape(-1), None, ("input", "2D or 3D")),
        ("input a list", x.tolist(), None, ("input",)),
        ("h0 one layer more", x, with_h0(torch.cat([h0, h0[:1]])), ("hidden", "hx")),
        ("h0 wrong batch", x, with_h0(randn((h0.shape[0], batch + 1, h0.shape[2]), dtype, 6)), ("hidden", "hx")),
        ("h0 wrong size", x, with_h0(randn(h0.shape[:2] + (h0.shape[2] + 1,), dtype, 6)), ("hidden", "hx")),
        ("h0 2-D for batched input", x, with_h0(h0[0]), ("hx", "hidden")),
        ("h0 other dtype", x, with_h0(h0.to(other)), ("hidden", "hx")),
        ("h0 on meta", x, with_h0(h0.to("meta")), ("hidden", "hx")),
        ("hx a list of numbers", x, [1.0, 2.0], ("hx",)),
        ("hx a string", x, "zeros", ("hx",)),
    ]
    if lstm:
        cases += [
            ("c0 wrong size", x, (hx[0], randn(hx[1].shape[:2] + (c["hidden"] + 1,), dtype, 7)), ("hidden", "hx")),
            ("hx a single tensor", x, hx[0], ("hx",)),
            ("hx one tensor in a tuple", x, (hx[0],), ("hx",)),
            ("hx three tensors", x, (hx[0], hx[1], hx[1]), ("hx",)),
        ]
    else:
        cases.append(("hx a tuple for a single-state layer", x, (h0, h0), ("hx",)))
    return cases


@settings(max_examples=40)
@given(recurrent_configs(), st.integers(1, 3))
def test_recurrent_modules_reject_bad_input_and_states(c, batch):
    module = _build(c)
    cases = _recurrent_bad_inputs(c, module, batch)
    tried("SparseLSTM/GRU/RNN bad input", len(cases))
    for label, x, hx, names in cases:
        expect_error(lambda: module(x, hx), ERRORS, names)


# ----------------------------------------------------------------------------- SparseRHN
@settings(max_examples=20)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), densities, dtypes, seeds,
       st.integers(0, 4), st.integers(1, 3), st.booleans())
def test_rhn_matches_reference(input_size, hidden, depth, layers, density, dtype, seed, steps, batch, bias):
    tried("SparseRHN valid")
    m = SparseRHN(input_size, hidden, depth=depth, num_layers=layers, density=density, dtype=dtype, bias=bias,
                  generator=torch.Generator().manual_seed(seed))
    x = randn((steps, batch, input_size), dtype, seed)
    h0 = randn((layers, batch, hidden), dtype, seed + 1)
    out, h_n = m(x, h0)
    layer_in, finals = x, []
    for layer in range(layers):
        w = getattr(m, f"weight_ih_l{layer}")
        rs = [getattr(m, f"weight_hh_l{layer}_d{j}") for j in range(depth)]
        biases = (torch.stack([getattr(m, f"bias_l{layer}_d{j}") for j in range(depth)]) if bias
                  else x.new_zeros(depth, 2 * hidden))
        gates = layer_in @ w.to_dense().T
        layer_in, h = reference.rhn_layer(gates, h0[layer], [r.values for r in rs], [r.row_ptr for r in rs],
                                          [r.col_idx for r in rs], biases)
        finals.append(h)
    torch.testing.assert_close((out, h_n), (layer_in, torch.stack(finals)), **TOL[dtype])


@settings(max_examples=15)
@given(st.integers(1, 3), st.integers(1, 3), seeds)
def test_rhn_rejects_bad_input(input_size, hidden, seed):
    m = SparseRHN(input_size, hidden, depth=2, density=0.5, generator=torch.Generator().manual_seed(seed))
    x = randn((3, 2, input_size), torch.float32, seed)
    h0 = randn((1, 2, hidden), torch.float32, seed)
    cases = [(x[..., :-1] if input_size > 1 else x.new_ones(3, 2, 2), None, ("input",)),
             (x.double(), None, ("dtype",)), (x, h0[:, :1], ("hidden",)), (x, h0.double(), ("h0",)),
             (x, h0[0], ("h0",)), (x, [0.0], ("h0",)), (x.unsqueeze(0), None, ("input", "2D or 3D"))]
    tried("SparseRHN bad input", len(cases))
    for inp, h, names in cases:
        expect_error(lambda: m(inp, h), ERRORS, names)


# ----------------------------------------------------------------------------- cell, linear, embedding
@settings(max_examples=30)
@given(st.integers(0, 4), st.integers(1, 4), st.integers(0, 3), densities, dtypes, seeds, st.booleans())
def test_lstm_cell_matches_torch_nn_and_rejects_bad_states(input_size, hidden, batch, density, dtype, seed, bias):
    cell = SparseLSTMCell(input_size, hidden, bias=bias, density=density, dtype=dtype,
                          generator=torch.Generator().manual_seed(seed))
    x = randn((batch, input_size), dtype, seed)
    hx = (randn((batch, hidden), dtype, seed + 1), randn((batch, hidden), dtype, seed + 2))
    torch.testing.assert_close(cell(x, hx), cell.to_dense()(x, hx), **TOL[dtype])
    other = torch.float64 if dtype == torch.float32 else torch.float32
    bad = [(x, (hx[0][:, :-1], hx[1]), ("hx[0]",)), (x, (hx[0], hx[1].to(other)), ("hx[1]",)),
           (x, hx[0], ("hx",)), (x, (hx[0],), ("hx",)), (x.to(other), hx, ("input",)),
           (randn((batch, input_size + 1), dtype, 3), hx, ("input",)), (x.unsqueeze(0), hx, ("input",)),
           (x, (hx[0].unsqueeze(0), hx[1]), ("hx[0]",)), (x, (hx[0], hx[1].tolist()), ("hx[1]",))]
    tried("SparseLSTMCell", 1 + len(bad))
    for inp, h, names in bad:
        expect_error(lambda: cell(inp, h), ERRORS, names)


@settings(max_examples=30)
@given(st.integers(0, 5), st.integers(0, 5), st.lists(st.integers(0, 3), max_size=2), densities, dtypes, seeds,
       st.booleans())
def test_linear_matches_torch_nn_and_rejects_bad_input(in_f, out_f, lead, density, dtype, seed, bias):
    m = SparseLinear(in_f, out_f, bias=bias, density=density, dtype=dtype,
                     generator=torch.Generator().manual_seed(seed))
    x = randn((*lead, in_f), dtype, seed)
    torch.testing.assert_close(m(x), m.to_dense()(x), **TOL[dtype])
    other = torch.float64 if dtype == torch.float32 else torch.float32
    bad = [randn((*lead, in_f + 1), dtype, 1), x.to(other), x.long(), x.new_tensor(1.0), x.tolist(), None,
           x.to("meta")]
    tried("SparseLinear", 1 + len(bad))
    for x_bad in bad:
        expect_error(lambda: m(x_bad), ERRORS, ("input", "device", "values"))


@settings(max_examples=30)
@given(st.integers(1, 8), st.integers(1, 5), densities, st.lists(st.integers(0, 7), max_size=6), seeds)
def test_embedding_matches_torch_nn_and_rejects_bad_indices(vocab, dim, density, idx, seed):
    m = SparseEmbedding(vocab, dim, density=density, generator=torch.Generator().manual_seed(seed))
    indices = torch.tensor([i % vocab for i in idx], dtype=torch.long)
    torch.testing.assert_close(m(indices), m.to_dense()(indices))
    bad = [(torch.tensor([vocab]), IndexError), (torch.tensor([-1]), IndexError),
           (torch.tensor([0.0]), TypeError), (torch.tensor([True]), TypeError), ([0, 1], TypeError),
           (torch.tensor([2**40]), IndexError)]
    tried("SparseEmbedding", 1 + len(bad))
    for inp, kind in bad:
        expect_error(lambda: m(inp), (kind,), ("input", "index"))


# ----------------------------------------------------------------------------- CSRWeight
@settings(max_examples=30)
@given(st.integers(0, 6), st.integers(0, 6), densities, dtypes, seeds)
def test_csr_weight_rejects_broken_patterns_everywhere(rows, cols, density, dtype, seed):
    rp, ci = random_pattern(rows, cols, density, seed)
    values = randn(ci.numel(), dtype, seed)
    w = CSRWeight(values, rp, ci, (rows, cols))
    torch.testing.assert_close(w.to_dense(), reference.csr_to_dense(values, rp, ci, (rows, cols)))
    cases = broken_csrs(rp, ci, cols)
    bad_shapes = [(rows, cols, 1), (rows - 1, cols) if rows else (-1, cols), (rows + 0.5, cols), "ab", None]
    tried("CSRWeight broken pattern", 1 + 3 * len(cases) + len(bad_shapes))
    for broken in cases:
        expect_error(lambda: CSRWeight(values, broken.ptr, broken.idx, (rows, cols)), (broken.kind,),
                     broken.names + ("values",))
        expect_error(lambda: w.set_pattern(broken.ptr, broken.idx, values), (broken.kind,),
                     broken.names + ("values",))
        if isinstance(broken.ptr, torch.Tensor) and isinstance(broken.idx, torch.Tensor):
            state = dict(w.state_dict(), row_ptr=broken.ptr, col_idx=broken.idx)
            expect_error(lambda: CSRWeight(values, rp, ci, (rows, cols)).load_state_dict(state), (RuntimeError,),
                         ("invalid CSR pattern",))
    for shape in bad_shapes:
        expect_error(lambda: CSRWeight(values, rp, ci, shape), (TypeError, ValueError), ("shape", "row_ptr"))


def test_constructors_reject_bad_arguments():
    cases = [
        (lambda: CSRWeight.random(-1, 3, 0.5), ("out_features", "shape", "negative")),
        (lambda: CSRWeight.random(3, 3, 1.5), ("density",)),
        (lambda: CSRWeight.random(3, 3, float("nan")), ("density",)),
        (lambda: CSRWeight.random(3, 3, 0.5, init="gaussian"), ("init",)),
        (lambda: CSRWeight.from_dense(torch.ones(3)), ("dense",)),
        (lambda: CSRWeight.from_dense(torch.ones(3, 3, dtype=torch.long)), ("dense",)),
        (lambda: CSRWeight.from_dense(torch.ones(3, 3), torch.ones(2, 3, dtype=torch.bool)), ("mask",)),
        (lambda: CSRWeight.from_torch_sparse(torch.ones(3, 3)), ("sparse",)),
        (lambda: SparseLSTM(0, 4), ("input_size",)),
        (lambda: SparseLSTM(3, -1), ("hidden_size",)),
        (lambda: SparseLSTM(3, 4.0), ("hidden_size",)),
        (lambda: SparseLSTM(3, 4, num_layers=0), ("num_layers",)),
        (lambda: SparseLSTM(3, 4, proj_size=4), ("proj_size",)),
        (lambda: SparseLSTM(3, 4, dropout=1.5), ("dropout",)),
        (lambda: SparseLSTM(3, 4, density=1.5), ("density",)),
        (lambda: SparseLSTM(3, 4, density=float("nan")), ("density",)),
        (lambda: SparseLSTM(3, 4, density=0.5, sparsity=0.5), ("density", "sparsity")),
        (lambda: SparseLSTM(3, 4, init="dense"), ("init",)),
        (lambda: SparseGRU(3, 4, bias="yes"), ("bias",)),
        (lambda: SparseRNN(3, 4, nonlinearity="sigmoid"), ("nonlinearity",)),
        (lambda: SparseRHN(3, 4, depth=0), ("depth",)),
        (lambda: SparseRHN(3, 4, depth=1.5), ("depth",)),
        (lambda: SparseLinear(-1, 3), ("in_features",)),
        (lambda: SparseLinear(3, 3, sparsity=-0.1), ("density", "sparsity")),
        (lambda: SparseLSTMCell(3, "4"), ("hidden_size",)),
        (lambda: SparseEmbedding(5, 3, padding_idx=7), ("padding_idx",)),
        (lambda: SparseEmbedding(5, 3, max_norm=-1.0), ("max_norm",)),
        (lambda: SparseEmbedding(5, 3, dims_per_row=torch.tensor([1, 2])), ("dims_per_row",)),
        (lambda: SparseEmbedding(5, 3, dims_per_row=torch.tensor([1, 2, 3, 4, 1])), ("dims_per_row",)),
        (lambda: SparseEmbedding(5, 3, frequency_ranks=torch.tensor([0, 0, 1, 2, 3])), ("frequency_ranks",)),
    ]
    tried("module constructors", len(cases))
    for fn, names in cases:
        expect_error(fn, (TypeError, ValueError), names)


def test_dynamic_sparsity_rejects_bad_arguments():
    model = SparseLinear(6, 5, density=0.4, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cases = [
        (lambda: DynamicSparsity(model, opt, method="magic", total_steps=10), ("method",)),
        (lambda: DynamicSparsity(model, opt, method="set", total_steps=-1), ("total_steps",)),
        (lambda: DynamicSparsity(model, opt, method="set", total_steps=10, update_every=0), ("update_every",)),
        (lambda: DynamicSparsity(model, opt, method="set", total_steps=10, prune_rate=1.5), ("prune_rate",)),
        (lambda: DynamicSparsity(model, opt, method="set", total_steps=10, prune_rate=float("nan")),
         ("prune_rate",)),
        (lambda: DynamicSparsity(nn.Linear(3, 3), torch.optim.SGD(nn.Linear(3, 3).parameters(), lr=0.1),
                                 method="set", total_steps=10), ("CSRWeight", "sparse")),
        (lambda: DynamicSparsity("model", opt, method="set", total_steps=10), ("model",)),
        (lambda: DynamicSparsity(model, opt, method="set", total_steps=10, granularity="block"), ("granularity",)),
        (lambda: DynamicSparsity(model, opt, method="gradual", total_steps=10, final_density=2.0),
         ("final_density",)),
    ]
    tried("DynamicSparsity bad arguments", len(cases))
    for fn, names in cases:
        expect_error(fn, (TypeError, ValueError), names)
