"""Property-based tests of the ops' public functions (sparse_kernels.ops,
sparse_kernels.csr): random shapes, dtypes, densities (0 and 1 included),
sequence lengths (0 included) and batch layouts against the plain-PyTorch
oracle (sparse_kernels.reference), and every way of breaking an argument
(tests/fuzz_helpers.broken_csrs and the cases below) against the contract:
a TypeError or ValueError that names the argument, raised in Python before
any kernel runs.

The same broken structures go straight to torch.ops.sparse_kernels (no
Python checks) in a subprocess in tests/test_fuzz_raw_ops.py, where a
segfault would be reported rather than kill the test run.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from sparse_kernels import csr, ops, reference
from fuzz_helpers import TOL, broken_csrs, densities, dtypes, expect_error, randn, random_pattern, seeds, tried

ARG_ERRORS = (TypeError, ValueError)
META = torch.device("meta")


def _grads(out, leaves, grad_out):
    """d(sum <out, grad_out>)/d(leaves); zeros for a leaf nothing reaches
    (an empty sequence leaves some outputs outside the graph)."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    grads_out = grad_out if isinstance(grad_out, (tuple, list)) else (grad_out,)
    loss = sum((o * g).sum() for o, g in zip(outs, grads_out)) + sum(leaf.sum() * 0 for leaf in leaves)
    return torch.autograd.grad(loss, leaves)


def _assert_grads_close(got, want, dtype):
    for g, w in zip(got, want):
        if g is None and w is None:
            continue
        g = torch.zeros_like(w) if g is None else g
        w = torch.zeros_like(g) if w is None else w
        torch.testing.assert_close(g, w, **TOL[dtype])


# ----------------------------------------------------------------------------- sparse_linear
@st.composite
def linear_problems(draw, max_dim=7):
    out_f, in_f = draw(st.integers(0, max_dim)), draw(st.integers(0, max_dim))
    lead = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))  # (*, in_features)
    dtype, seed = draw(dtypes), draw(seeds)
    init = draw(st.sampled_from(["uniform", "erdos_renyi"]))
    row_ptr, col_idx = random_pattern(out_f, in_f, draw(densities), seed, init)
    return dict(x=randn((*lead, in_f), dtype, seed + 1), values=randn(col_idx.numel(), dtype, seed + 2),
                row_ptr=row_ptr, col_idx=col_idx,
                bias=randn(out_f, dtype, seed + 3) if draw(st.booleans()) else None,
                shape=(out_f, in_f), dtype=dtype)


@settings(max_examples=50)
@given(linear_problems())
def test_sparse_linear_matches_reference(p):
    tried("ops.sparse_linear valid")
    leaves = [t.clone().requires_grad_() for t in (p["x"], p["values"]) + ((p["bias"],) if p["bias"] is not None else ())]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    bias, ref_bias = (leaves[2], ref_leaves[2]) if len(leaves) == 3 else (None, None)
    y = ops.sparse_linear(leaves[0], leaves[1], p["row_ptr"], p["col_idx"], bias)
    x_flat = ref_leaves[0].reshape(math.prod(p["x"].shape[:-1]), p["shape"][1])
    y_ref = reference.sparse_linear(x_flat, ref_leaves[1], p["row_ptr"], p["col_idx"], p["shape"], ref_bias)
    y_ref = y_ref.reshape(*p["x"].shape[:-1], p["shape"][0])
    torch.testing.assert_close(y, y_ref, **TOL[p["dtype"]])
    grad_out = randn(y.shape, p["dtype"], 7)
    _assert_grads_close(_grads(y, leaves, grad_out), _grads(y_ref, ref_leaves, grad_out), p["dtype"])


@settings(max_examples=40)
@given(linear_problems(), st.booleans())
def test_sparse_linear_rejects_broken_csr(p, with_csc):
    csc = csr.csr_transpose(p["row_ptr"], p["col_idx"], p["shape"][1]) if with_csc else None
    cases = broken_csrs(p["row_ptr"], p["col_idx"], p["shape"][1])
    tried("ops.sparse_linear broken CSR", len(cases))
    for broken in cases:
        expect_error(lambda: ops.sparse_linear(p["x"], p["values"], broken.ptr, broken.idx, p["bias"], csc=csc),
                     (broken.kind,), broken.names + ("values",))


def _linear_bad_arguments(p):
    """(label, call, exception kinds, names) for one broken non-index argument."""
    x, v, rp, ci, b, dtype = p["x"], p["values"], p["row_ptr"], p["col_idx"], p["bias"], p["dtype"]
    other = torch.float64 if dtype == torch.float32 else torch.float32
    csc = csr.csr_transpose(rp, ci, p["shape"][1])
    call = lambda **kw: (lambda: ops.sparse_linear(*(kw.get(k, d) for k, d in
                                                     (("x", x), ("v", v), ("rp", rp), ("ci", ci), ("b", b))),
                                                   csc=kw.get("csc")))
    cases = [
        ("values other dtype", call(v=v.to(other)), (TypeError,), ("values",)),
        ("values int", call(v=v.long()), (TypeError,), ("values",)),
        ("values half", call(v=v.half()), (TypeError,), ("values",)),
        ("values one extra", call(v=torch.cat([v, v[:1] + 1]) if v.numel() else v.new_ones(1)), (ValueError,),
         ("values",)),
        ("values 2-D", call(v=v.unsqueeze(0)), (ValueError,), ("values",)),
        ("values a list", call(v=v.tolist()), (TypeError,), ("values",)),
        ("values on meta", call(v=v.to(META)), (ValueError,), ("values",)),
        ("input other dtype", call(x=x.to(other)), (TypeError,), ("values", "input")),
        ("input int", call(x=x.long()), (TypeError,), ("input",)),
        ("input 0-D", call(x=x.new_tensor(1.5)), (ValueError,), ("input",)),
        ("input a list", call(x=x.tolist()), (TypeError,), ("input",)),
        ("input None", call(x=None), (TypeError,), ("input",)),
        ("bias wrong length", call(b=torch.cat([v.new_ones(1), b if b is not None else v.new_ones(p["shape"][0])])),
         (ValueError,), ("bias",)),
        ("bias 2-D", call(b=v.new_ones(1, p["shape"][0])), (ValueError,), ("bias",)),
        ("bias other dtype", call(b=torch.ones(p["shape"][0], dtype=other)), (TypeError,), ("bias",)),
        ("bias int", call(b=torch.ones(p["shape"][0], dtype=torch.long)), (TypeError,), ("bias",)),
        ("bias a list", call(b=[1.0] * p["shape"][0]), (TypeError,), ("bias",)),
        ("bias on meta", call(b=torch.ones(p["shape"][0], dtype=dtype, device=META)), (ValueError,), ("bias",)),
        ("csc col_ptr too short", call(csc=csr.CSCIndex(csc.col_ptr[:-1], csc.row_idx, csc.csr2csc)),
         (ValueError,), ("col_ptr",)),
        ("csc int64", call(csc=csr.CSCIndex(csc.col_ptr.long(), csc.row_idx, csc.csr2csc)), (TypeError,),
         ("col_ptr",)),
        ("csc a tuple of lists", call(csc=tuple(t.tolist() for t in csc)), (TypeError,), ("col_ptr",)),
        ("csc None entries", call(csc=(None, None, None)), (TypeError,), ("col_ptr",)),
        ("csc not a triple", call(csc=(csc.col_ptr,)), (TypeError, ValueError), ("csc",)),
    ]
    if ci.numel() >= 2:
        # A permuted csr2csc: the right shape, the wrong matrix.
        cases.append(("csc of another matrix", call(csc=csr.CSCIndex(csc.col_ptr, csc.row_idx, csc.csr2csc.flip(0))),
                      (ValueError,), ("csc",)))
    return cases


@settings(max_examples=40)
@given(linear_problems())
def test_sparse_linear_rejects_bad_arguments(p):
    cases = _linear_bad_arguments(p)
    tried("ops.sparse_linear bad arguments", len(cases))
    for label, call, kinds, names in cases:
        expect_error(call, kinds, names)


# ----------------------------------------------------------------------------- product gradients
@settings(max_examples=40)
@given(linear_problems(), st.integers(0, 10**6))
def test_input_and_value_grad_match_reference_and_reject_broken(p, which):
    out_f, in_f = p["shape"]
    x = p["x"].reshape(math.prod(p["x"].shape[:-1]), in_f)
    gy = randn((x.shape[0], out_f), p["dtype"], 11)
    rp, ci, v = p["row_ptr"], p["col_idx"], p["values"]
    csc = csr.csr_transpose(rp, ci, in_f)
    torch.testing.assert_close(ops.sparse_linear_input_grad(gy, v, csc),
                               reference.sparse_linear_input_grad(gy, v, rp, ci, p["shape"]), **TOL[p["dtype"]])
    torch.testing.assert_close(ops.sparse_linear_value_grad(gy, x, rp, ci),
                               reference.sparse_linear_value_grad(gy, x, rp, ci), **TOL[p["dtype"]])
    # The transposed index is a CSR of W^T: break it the same ways.
    transposed = broken_csrs(csc.col_ptr, csc.row_idx, out_f, "col_ptr", "row_idx")
    for broken in transposed:
        expect_error(lambda: ops.sparse_linear_input_grad(gy, v, csr.CSCIndex(broken.ptr, broken.idx, csc.csr2csc)),
                     (broken.kind,), broken.names + ("values", "csr2csc"))
    direct = broken_csrs(rp, ci, in_f)
    for broken in direct:
        expect_error(lambda: ops.sparse_linear_value_grad(gy, x, broken.ptr, broken.idx),
                     (broken.kind,), broken.names)
    tried("ops.sparse_linear_input/value_grad", 2 + len(transposed) + len(direct) + 5)
    if ci.numel():
        bad_perm = csc.csr2csc.clone()
        bad_perm[which % ci.numel()] = [ci.numel(), -1, 2**31 - 1][which % 3]
        expect_error(lambda: ops.sparse_linear_input_grad(gy, v, csr.CSCIndex(csc.col_ptr, csc.row_idx, bad_perm)),
                     (ValueError,), ("csr2csc",))
    if ci.numel() >= 2:
        repeated = csc.csr2csc.clone()
        repeated[1] = repeated[0]
        expect_error(lambda: ops.sparse_linear_input_grad(gy, v, csr.CSCIndex(csc.col_ptr, csc.row_idx, repeated)),
                     (ValueError,), ("csr2csc",))
    # Operand shapes.
    expect_error(lambda: ops.sparse_linear_value_grad(gy[:, :-1] if out_f else gy.new_ones(x.shape[0], 1),
                                                      x, rp, ci), ARG_ERRORS, ("grad_output",))
    expect_error(lambda: ops.sparse_linear_value_grad(gy, torch.cat([x, x[:1]]) if x.shape[0] else x.new_ones(1, in_f),
                                                      rp, ci), ARG_ERRORS, ("grad_output", "input"))
    expect_error(lambda: ops.sparse_linear_input_grad(gy.unsqueeze(0), v, csc), ARG_ERRORS, ("grad_output",))
    if ci.numel() and int(csc.row_idx.max()) == out_f - 1:
        # grad_output's columns are W's rows: one fewer leaves a stored row out.
        expect_error(lambda: ops.sparse_linear_input_grad(gy[:, :-1], v, csc), ARG_ERRORS, ("row_idx",))


# ----------------------------------------------------------------------------- lstm_cell
@settings(max_examples=40)
@given(st.integers(0, 5), st.integers(0, 5), dtypes, seeds)
def test_lstm_cell_matches_reference_and_rejects_bad_shapes(n, hidden, dtype, seed):
    gates = randn((n, 4 * hidden), dtype, seed).requires_grad_()
    c = randn((n, hidden), dtype, seed + 1).requires_grad_()
    h1, c1 = ops.lstm_cell(gates, c)
    rg, rc = gates.detach().clone().requires_grad_(), c.detach().clone().requires_grad_()
    h2, c2 = reference.lstm_cell(rg, rc)
    torch.testing.assert_close((h1, c1), (h2, c2), **TOL[dtype])
    go = (randn(h1.shape, dtype, seed + 2), randn(c1.shape, dtype, seed + 3))
    _assert_grads_close(_grads((h1, c1), (gates, c), go), _grads((h2, c2), (rg, rc), go), dtype)
    other = torch.float64 if dtype == torch.float32 else torch.float32
    g, cp = gates.detach(), c.detach()
    bad = [(lambda: ops.lstm_cell(g[:, :-1] if hidden else g.new_ones(n, 1), cp), ("gates",)),
           (lambda: ops.lstm_cell(g, cp.new_ones(n + 1, hidden)), ("gates", "c_prev")),
           (lambda: ops.lstm_cell(g, cp.to(other)), ("c_prev",)),
           (lambda: ops.lstm_cell(g.long(), cp), ("gates",)),
           (lambda: ops.lstm_cell(g.unsqueeze(0), cp), ("gates",)),
           (lambda: ops.lstm_cell(g, cp.to(META)), ("c_prev",)),
           (lambda: ops.lstm_cell(g.tolist(), cp), ("gates",))]
    tried("ops.lstm_cell", 1 + len(bad))
    for fn, names in bad:
        expect_error(fn, ARG_ERRORS, names)


# ----------------------------------------------------------------------------- whole-sequence layers
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "rhn": 2}


def _batch_sizes(draw, steps, batch):
    sizes = sorted(draw(st.lists(st.integers(0, batch), min_size=steps, max_size=steps)), reverse=True)
    return torch.tensor(sizes, dtype=torch.int64)


@st.composite
def layer_problems(draw):
    kind = draw(st.sampled_from(sorted(GATES)))
    steps, batch, hidden = draw(st.integers(0, 4)), draw(st.integers(0, 3)), draw(st.integers(1, 4))
    dtype, seed, density = draw(dtypes), draw(seeds), draw(densities)
    proj = draw(st.integers(0, hidden - 1)) if kind == "lstm" else 0
    state = proj or hidden
    gate_rows = GATES[kind] * hidden
    depth = draw(st.integers(1, 3)) if kind == "rhn" else 1
    weights = []
    for l in range(depth):
        rp, ci = random_pattern(gate_rows, state, density, seed + 10 * l)
        weights.append((randn(ci.numel(), dtype, seed + 10 * l + 1), rp, ci, csr.csr_transpose(rp, ci, state)))
    projection = None
    if proj:
        rp, ci = random_pattern(proj, hidden, density, seed + 99)
        projection = (randn(ci.numel(), dtype, seed + 98), rp, ci, csr.csr_transpose(rp, ci, hidden))
    packed = draw(st.booleans())
    return dict(kind=kind, steps=steps, batch=batch, hidden=hidden, state=state, dtype=dtype,
                input_gates=randn((steps, batch, gate_rows), dtype, seed + 1), h0=randn((batch, state), dtype, seed + 2),
                c0=randn((batch, hidden), dtype, seed + 3), weights=weights, projection=projection,
                hh_bias=randn(gate_rows, dtype, seed + 4) if kind == "gru" and draw(st.booleans()) else None,
                biases=randn((depth, gate_rows), dtype, seed + 5),
                batch_sizes=_batch_sizes(draw, steps, batch) if packed else None, reverse=draw(st.booleans()))


def _run_layer(p, *, input_gates=None, h0=None, c0=None, weights=None, projection=None, batch_sizes=None,
               hh_bias=None, biases=None, use_ref=False, **_):
    """The op (or its reference) of p["kind"] on p's tensors, any overridden."""
    ig = p["input_gates"] if input_gates is None else input_gates
    h0 = p["h0"] if h0 is None else h0
    c0 = p["c0"] if c0 is None else c0
    weights = p["weights"] if weights is None else weights
    projection = p["projection"] if projection is None else projection
    bs = p["batch_sizes"] if batch_sizes is None else batch_sizes
    hh_bias = p["hh_bias"] if hh_bias is None else hh_bias
    biases = p["biases"] if biases is None else biases
    kind, reverse = p["kind"], p["reverse"]
    v, rp, ci, csc = weights[0]
    if use_ref:
        if kind == "lstm":
            proj = None if projection is None else projection[:3]
            return reference.lstm_layer(ig, h0, c0, v, rp, ci, bs, reverse, proj)
        if kind == "gru":
            return reference.gru_layer(ig, h0, v, rp, ci, hh_bias, bs, reverse)
        if kind.startswith("rnn"):
            return reference.rnn_layer(ig, h0, v, rp, ci, bs, reverse, kind[4:])
        return reference.rhn_layer(ig, h0, [w[0] for w in weights], [w[1] for w in weights],
                                   [w[2] for w in weights], biases, bs, reverse)
    if kind == "lstm":
        return ops.lstm_layer(ig, h0, c0, v, rp, ci, csc, bs, reverse, projection)
    if kind == "gru":
        return ops.gru_layer(ig, h0, v, rp, ci, csc, hh_bias, bs, reverse)
    if kind.startswith("rnn"):
        return ops.rnn_layer(ig, h0, v, rp, ci, csc, bs, reverse, kind[4:])
    return ops.rhn_layer(ig, h0, [w[0] for w in weights], [w[1] for w in weights], [w[2] for w in weights],
                         [w[3] for w in weights], biases, bs, reverse)


def _differentiable(p):
    """p with its float tensors as fresh leaves, and the list of leaves."""
    q = dict(p)
    leaves = []

    def leaf(t):
        t = t.detach().clone().requires_grad_()
        leaves.append(t)
        return t

    q["input_gates"], q["h0"] = leaf(p["input_gates"]), leaf(p["h0"])
    if p["kind"] == "lstm":
        q["c0"] = leaf(p["c0"])
    q["weights"] = [(leaf(v), rp, ci, csc) for v, rp, ci, csc in p["weights"]]
    if p["projection"] is not None:
        v, rp, ci, csc = p["projection"]
        q["projection"] = (leaf(v), rp, ci, csc)
    if p["hh_bias"] is not None:
        q["hh_bias"] = leaf(p["hh_bias"])
    if p["kind"] == "rhn":
        q["biases"] = leaf(p["biases"])
    return q, leaves


@settings(max_examples=60)
@given(layer_problems())
def test_layer_ops_match_reference(p):
    tried(f"ops.<layer> valid")
    q, leaves = _differentiable(p)
    r, ref_leaves = _differentiable(p)
    got = _run_layer(q)
    want = _run_layer(r, use_ref=True)
    assert len(got) == len(want)
    torch.testing.assert_close(tuple(got), tuple(want), **TOL[p["dtype"]])
    grads_out = [randn(t.shape, p["dtype"], 20 + i) for i, t in enumerate(got)]
    _assert_grads_close(_grads(got, leaves, grads_out), _grads(want, ref_leaves, grads_out), p["dtype"])


def _layer_bad_arguments(p):
    """(label, overrides, kinds, names) breaking one argument of a layer op."""
    kind, steps, batch, hidden, state, dtype = (p[k] for k in ("kind", "steps", "batch", "hidden", "state", "dtype"))
    other = torch.float64 if dtype == torch.float32 else torch.float32
    ig, h0, c0 = p["input_gates"], p["h0"], p["c0"]
    prefix = "r_" if kind == "rhn" else "hh_"
    cases = [
        ("h0 one row more", dict(h0=h0.new_ones(batch + 1, state)), ARG_ERRORS, ("h0", "input_gates")),
        ("h0 one column more", dict(h0=h0.new_ones(batch, state + 1)), ARG_ERRORS, ("h0", "input_gates")),
        ("h0 3-D", dict(h0=h0.unsqueeze(0)), ARG_ERRORS, ("h0",)),
        ("h0 other dtype", dict(h0=h0.to(other)), (TypeError,), ("h0",)),
        ("h0 on meta", dict(h0=h0.to(META)), (ValueError,), ("h0",)),
        ("h0 a list", dict(h0=h0.tolist()), (TypeError,), ("h0",)),
        ("input_gates one feature short", dict(input_gates=ig[..., 1:]), ARG_ERRORS, ("input_gates", "h0")),
        ("input_gates 2-D", dict(input_gates=ig[0] if steps else ig.new_ones(batch, ig.shape[2])), ARG_ERRORS,
         ("input_gates",)),
        ("input_gates int", dict(input_gates=ig.long()), (TypeError,), ("input_gates",)),
        ("batch_sizes increasing", dict(batch_sizes=torch.arange(steps, dtype=torch.int64) + (batch - steps + 1)),
         (ValueError,), ("batch_sizes",)),
        ("batch_sizes above batch", dict(batch_sizes=torch.full((steps,), batch + 1, dtype=torch.int64)),
         (ValueError,), ("batch_sizes",)),
        ("batch_sizes negative", dict(batch_sizes=torch.full((steps,), -1, dtype=torch.int64)), (ValueError,),
         ("batch_sizes",)),
        ("batch_sizes one too many", dict(batch_sizes=torch.full((steps + 1,), batch, dtype=torch.int64)),
         (ValueError,), ("batch_sizes",)),
        ("batch_sizes int32", dict(batch_sizes=torch.full((steps,), batch, dtype=torch.int32)), ARG_ERRORS,
         ("batch_sizes",)),
        ("batch_sizes float", dict(batch_sizes=torch.full((steps,), float(batch))), ARG_ERRORS, ("batch_sizes",)),
        ("batch_sizes a list", dict(batch_sizes=[batch] * steps), ARG_ERRORS, ("batch_sizes",)),
        ("batch_sizes on meta", dict(batch_sizes=torch.full((steps,), batch, dtype=torch.int64, device=META)),
         (ValueError,), ("batch_sizes",)),
    ]
    v, rp, ci, csc = p["weights"][0]
    rest = p["weights"][1:]
    cases += [
        (f"{prefix}values other dtype", dict(weights=[(v.to(other), rp, ci, csc)] + rest), (TypeError,),
         (f"{prefix}values",)),
        (f"{prefix}values one short", dict(weights=[(v[1:] if v.numel() else v.new_ones(1), rp, ci, csc)] + rest),
         (ValueError,), (f"{prefix}values", f"{prefix}col_idx", "values")),
        (f"{prefix}csc of another matrix",
         dict(weights=[(v, rp, ci, csr.CSCIndex(csc.col_ptr + 1, csc.row_idx, csc.csr2csc))] + rest),
         (ValueError,), (f"{prefix}csc", "col_ptr")),
        (f"{prefix}csc of Nones", dict(weights=[(v, rp, ci, (None, None, None))] + rest), (TypeError,),
         (f"{prefix}csc", "csc")),
    ]
    if kind == "lstm":
        cases += [("c0 one column more", dict(c0=c0.new_ones(batch, hidden + 1)), ARG_ERRORS, ("c0", "input_gates")),
                  ("c0 other dtype", dict(c0=c0.to(other)), (TypeError,), ("c0",))]
        if p["projection"] is not None:
            pv, prp, pci, pcsc = p["projection"]
            cases.append(("projection values short", dict(projection=(pv[1:] if pv.numel() else pv.new_ones(1),
                                                                      prp, pci, pcsc)),
                          (ValueError,), ("projection",)))
    if kind == "gru":
        cases.append(("hh_bias one short", dict(hh_bias=v.new_ones(3 * hidden - 1)), (ValueError,), ("hh_bias",)))
    if kind == "rhn":
        cases += [("biases wrong depth", dict(biases=p["biases"][:0]), (ValueError,), ("biases",)),
                  # A micro-layer more than biases has rows (its transposed index
                  # None: optional since the CPU keeps none).
                  ("one micro-layer more than biases", dict(weights=p["weights"] + [p["weights"][0][:3] + (None,)]),
                   ARG_ERRORS, ("biases",))]
    steps = p["steps"]
    # Cases that are no error for this problem: an "increasing" or
    # out-of-range batch_sizes needs steps to be wrong in.
    skip = {"batch_sizes increasing"} if steps < 2 else set()
    skip |= {"batch_sizes above batch", "batch_sizes negative"} if steps == 0 else set()
    return [c for c in cases if c[0] not in skip]


@settings(max_examples=50)
@given(layer_problems())
def test_layer_ops_reject_bad_arguments(p):
    cases = _layer_bad_arguments(p)
    tried("ops.<layer> bad arguments", len(cases))
    for label, overrides, kinds, names in cases:
        expect_error(lambda: _run_layer(p, **overrides), kinds, names)


@settings(max_examples=40)
@given(layer_problems(), st.integers(0, 10**6))
def test_layer_ops_reject_broken_recurrent_csr(p, which):
    prefix = "r_" if p["kind"] == "rhn" else "hh_"
    calls = []
    layer = which % len(p["weights"])
    v, rp, ci, csc = p["weights"][layer]
    label = (lambda f: f"r_{f}[{layer}]") if p["kind"] == "rhn" else (lambda f: f"hh_{f}")
    for broken in broken_csrs(rp, ci, p["state"], label("row_ptr"), label("col_idx")):
        weights = list(p["weights"])
        weights[layer] = (v, broken.ptr, broken.idx, csc)
        calls.append((dict(weights=weights), broken, label("values")))
    if p["projection"] is not None:
        v, rp, ci, csc = p["projection"]
        for broken in broken_csrs(rp, ci, p["hidden"], "projection row_ptr", "projection col_idx"):
            calls.append((dict(projection=(v, broken.ptr, broken.idx, csc)), broken, "projection values"))
    tried("ops.<layer> broken CSR", len(calls))
    for overrides, broken, values_name in calls:
        expect_error(lambda: _run_layer(p, **overrides), (broken.kind,), broken.names + (values_name,))


# ----------------------------------------------------------------------------- topology ops
@st.composite
def patterns(draw):
    rows, cols = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    seed = draw(seeds)
    rp, ci = random_pattern(rows, cols, draw(densities), seed)
    return rows, cols, rp, ci, seed


@settings(max_examples=40)
@given(patterns())
def test_topology_ops_reject_broken_patterns(pattern):
    rows, cols, rp, ci, seed = pattern
    occupied = torch.ones(ci.numel(), dtype=torch.bool)
    gy, x = randn((3, rows), torch.float64, seed), randn((3, cols), torch.float64, seed + 1)
    cases = broken_csrs(rp, ci, cols)
    grown = broken_csrs(rp, ci, cols, "grow_row_ptr", "grow_col_idx")
    no_growth = (torch.zeros_like(rp), ci[:0])
    tried("ops topology broken pattern", 3 * len(cases) + len(grown))
    others = ("occupied", "keep", "grow_row_ptr", "grow_col_idx")
    for broken in cases:
        expect_error(lambda: ops.random_regrow(broken.ptr, broken.idx, occupied, cols, [0], seed=seed),
                     (broken.kind,), broken.names + others)
        expect_error(lambda: ops.gradient_regrow(gy, x, broken.ptr, broken.idx, occupied, 0),
                     (broken.kind,), broken.names + others)
        if broken.label != "column = n_cols":  # rebuild_csr has no column count: any column >= 0 is in range
            expect_error(lambda: ops.rebuild_csr(broken.ptr, broken.idx, occupied, *no_growth),
                         (broken.kind,), broken.names + others)
    # The grown positions: a CSR of their own, broken the same ways.
    keep_none = torch.zeros(ci.numel(), dtype=torch.bool)
    for broken in grown:
        if broken.label != "column = n_cols":
            expect_error(lambda: ops.rebuild_csr(rp, ci, keep_none, broken.ptr, broken.idx), (broken.kind,),
                         broken.names + ("keep",))


@settings(max_examples=30)
@given(patterns())
def test_topology_ops_reject_bad_counts_and_groups(pattern):
    rows, cols, rp, ci, seed = pattern
    nnz = ci.numel()
    values = randn(nnz, torch.float64, seed)
    free = rows * cols - nnz
    occupied = torch.ones(nnz, dtype=torch.bool)
    cases = [
        (lambda: ops.magnitude_prune(values, [nnz + 1]), ("drop_counts",)),
        (lambda: ops.magnitude_prune(values, [-1]), ("drop_counts",)),
        (lambda: ops.magnitude_prune(values, [0.5]), ("drop_counts",)),
        (lambda: ops.magnitude_prune(values, [0, 0]), ("drop_counts",)),
        (lambda: ops.magnitude_prune(values, [0], [0, nnz + 1]), ("group_ptr",)),
        (lambda: ops.magnitude_prune(values, [0], [1.0, 2.0]), ("group_ptr",)),
        (lambda: ops.signed_magnitude_prune(values, 1.5), ("fraction",)),
        (lambda: ops.signed_magnitude_prune(values, float("nan")), ("fraction",)),
        (lambda: ops.signed_magnitude_prune(values, "0.5"), ("fraction",)),
        (lambda: ops.random_regrow(rp, ci, occupied, cols, [free + 1], seed=seed), ("grow_counts",)),
        (lambda: ops.random_regrow(rp, ci, occupied, cols, [0.5], seed=seed), ("grow_counts",)),
        (lambda: ops.random_regrow(rp, ci, occupied, cols, [0], seed=-1), ("seed",)),
        (lambda: ops.random_regrow(rp, ci, occupied, -1, [0], seed=seed), ("n_cols",)),
        (lambda: ops.random_regrow(rp, ci, occupied, 2**31, [0], seed=seed), ("n_cols", "col_idx")),
        (lambda: ops.random_regrow(rp, ci, occupied[:-1] if nnz else occupied[:0].new_ones(1), cols, [0],
                                   seed=seed), ("occupied",)),
        (lambda: ops.random_regrow(rp, ci, occupied.int(), cols, [0], seed=seed), ("occupied",)),
        (lambda: ops.gradient_regrow(randn((2, rows), torch.float64, 1), randn((2, cols), torch.float64, 2), rp, ci,
                                     occupied, free + 1), ("k",)),
        (lambda: ops.gradient_regrow(randn((2, rows), torch.float64, 1), randn((2, cols), torch.float64, 2), rp, ci,
                                     occupied, 0, block_rows=0), ("block_rows",)),
        (lambda: ops.gradient_regrow(randn((2, rows + 1), torch.float64, 1), randn((2, cols), torch.float64, 2), rp,
                                     ci, occupied, 0), ("grad_output",)),
        (lambda: ops.rebuild_csr(rp, ci, occupied, rp[:-1], ci[:0]), ("grow_row_ptr",)),
    ]
    if nnz:
        # A grown position already kept.
        cases.append((lambda: ops.rebuild_csr(rp, ci, occupied, rp, ci), ("already stored", "grow")))
    tried("ops topology bad counts", len(cases))
    for fn, names in cases:
        expect_error(fn, (TypeError, ValueError), names)


# ----------------------------------------------------------------------------- csr helpers
@settings(max_examples=40)
@given(st.integers(0, 6), st.integers(0, 6), densities, seeds)
def test_validate_csr_accepts_valid_and_names_the_broken_index(rows, cols, density, seed):
    rp, ci = random_pattern(rows, cols, density, seed, "erdos_renyi")
    csr.validate_csr(rp, ci, (rows, cols), randn(ci.numel(), torch.float32, seed))
    cases = broken_csrs(rp, ci, cols)
    bad_shapes = [(rows, cols, 1), (-1, cols), (rows + 0.5, cols), ("3", cols), None]
    tried("csr.validate_csr", 1 + len(cases) + len(bad_shapes))
    for broken in cases:
        expect_error(lambda: csr.validate_csr(broken.ptr, broken.idx, (rows, cols)), (broken.kind,), broken.names)
    for shape in bad_shapes:
        expect_error(lambda: csr.validate_csr(rp, ci, shape), ARG_ERRORS, ("shape",))
