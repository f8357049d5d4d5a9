"""The whole-sequence RHN layer op against its per-step reference: forward and
every gradient over a grid (depth, packed lengths, reverse, T = 1, B = 0/1,
nnz = 0), gradcheck, opcheck and bad input."""

import pytest
import torch

from sparse_kernels import csr, ops, reference
from conftest import TOL, device_params

_ops = torch.ops.sparse_kernels

RHN_CASES = [  # (T, B, H, depth, density, batch_sizes)
    (5, 4, 3, 1, 0.5, None),
    (5, 4, 3, 2, 0.5, [4, 4, 3, 2, 1]),  # PackedSequence-style variable lengths
    (4, 3, 2, 3, 0.6, [3, 2, 2, 0]),     # depth 3, an empty final step
    (1, 3, 4, 2, 0.3, None),             # sequence length 1
    (4, 1, 5, 2, 0.2, None),             # batch 1
    (3, 0, 2, 2, 0.5, None),             # batch 0
    (4, 2, 3, 2, 0.0, None),             # nnz = 0
    (6, 3, 1, 2, 1.0, [3, 2, 2, 1, 1, 1]),  # one hidden unit, full R
    (0, 2, 3, 2, 0.5, None),             # no steps at all
]


def _rhn_problem(steps, batch, hidden, depth, density, sizes, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    row_ptr, col_idx, values, csc = [], [], [], []
    for _ in range(depth):
        rp, ci = csr.random_csr((2 * hidden, hidden), density, generator=g)
        rp, ci = rp.to(device), ci.to(device)
        row_ptr.append(rp)
        col_idx.append(ci)
        values.append(torch.randn(ci.numel(), generator=g, dtype=dtype).to(device).requires_grad_())
        csc.append(csr.csr_transpose(rp, ci, hidden))
    gates = torch.randn(steps, batch, 2 * hidden, generator=g, dtype=dtype).to(device).requires_grad_()
    h0 = torch.randn(batch, hidden, generator=g, dtype=dtype).to(device).requires_grad_()
    biases = torch.randn(depth, 2 * hidden, generator=g, dtype=dtype).to(device).requires_grad_()
    sizes = None if sizes is None else torch.tensor(sizes, dtype=torch.int64)
    return dict(gates=gates, h0=h0, values=values, row_ptr=row_ptr, col_idx=col_idx, csc=csc,
                biases=biases, sizes=sizes)


def _run(p, reverse, gates=None, h0=None, values=None, biases=None):
    return ops.rhn_layer(p["gates"] if gates is None else gates, p["h0"] if h0 is None else h0,
                         p["values"] if values is None else values, p["row_ptr"], p["col_idx"], p["csc"],
                         p["biases"] if biases is None else biases, p["sizes"], reverse)


@device_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", RHN_CASES, ids=str)
def test_rhn_layer_matches_per_step_reference(case, reverse, dtype, device):
    p = _rhn_problem(*case, dtype=dtype, device=device)
    leaves = [p["gates"], p["h0"], *p["values"], p["biases"]]
    got = _run(p, reverse)
    ref = [t.detach().clone().requires_grad_() for t in leaves]
    depth = case[3]
    want = reference.rhn_layer(ref[0], ref[1], ref[2:2 + depth], p["row_ptr"], p["col_idx"], ref[-1],
                               p["sizes"], reverse)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])
    g = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(t.shape, generator=g, dtype=dtype).to(device) for t in got]
    g_got = torch.autograd.grad(got, leaves, cotangents, allow_unused=True)
    # With T = 0 the reference's (empty) output is a constant, outside its graph.
    linked = [(w, c) for w, c in zip(want, cotangents) if w.requires_grad]
    g_want = torch.autograd.grad([w for w, _ in linked], ref, [c for _, c in linked], allow_unused=True)
    for a, b, leaf in zip(g_got, g_want, leaves):
        assert a is not None
        b = torch.zeros_like(leaf) if b is None else b
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_rhn_layer_packed_rows_keep_their_state():
    """A row whose sequence has ended keeps its last state: h_n of a row of
    length k is output[k - 1] (forward) or output[0] (reverse)."""
    p = _rhn_problem(5, 4, 3, 2, 0.5, [4, 3, 3, 1, 1], seed=3)
    lengths = [5, 3, 3, 1]
    for reverse in (False, True):
        out, h_n = _run(p, reverse)
        for row, k in enumerate(lengths):
            torch.testing.assert_close(h_n[row], out[0 if reverse else k - 1, row], rtol=0, atol=0)
            assert torch.count_nonzero(out[k:, row]) == 0


def test_rhn_layer_only_one_output_used():
    """Either output alone reaching the loss (the other's gradient is None)."""
    p = _rhn_problem(3, 2, 3, 2, 0.5, None, seed=4)
    for pick in (0, 1):
        loss = _run(p, False)[pick].sum()
        grads = torch.autograd.grad(loss, [p["gates"], p["h0"], *p["values"], p["biases"]])
        ref = reference.rhn_layer(p["gates"], p["h0"], p["values"], p["row_ptr"], p["col_idx"], p["biases"])
        want = torch.autograd.grad(ref[pick].sum(), [p["gates"], p["h0"], *p["values"], p["biases"]])
        for a, b in zip(grads, want):
            torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", [RHN_CASES[1], RHN_CASES[2], RHN_CASES[3], RHN_CASES[7]], ids=str)
def test_rhn_layer_gradcheck(case, reverse):
    p = _rhn_problem(*case, seed=1)
    depth = case[3]

    def fn(gates, h0, biases, *values):
        return _run(p, reverse, gates, h0, list(values), biases)

    assert torch.autograd.gradcheck(fn, (p["gates"], p["h0"], p["biases"], *p["values"]))
    assert len(p["values"]) == depth


def _op_args(p):
    steps, batch = p["gates"].shape[:2]
    sizes = torch.full((steps,), batch, dtype=torch.int64) if p["sizes"] is None else p["sizes"]
    col_ptr, row_idx, csr2csc = (list(part) for part in zip(*p["csc"]))
    return (p["gates"], p["h0"], p["values"], p["row_ptr"], p["col_idx"], col_ptr, row_idx, csr2csc,
            p["biases"], sizes)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", RHN_CASES, ids=str)
def test_rhn_layer_opcheck(case, reverse):
    p = _rhn_problem(*case, seed=2)
    args = (*_op_args(p), reverse)
    torch.library.opcheck(_ops.rhn_layer.default, args)
    detached = [[t.detach() for t in a] if isinstance(a, list) else
                (a.detach() if isinstance(a, torch.Tensor) else a) for a in args]
    out, h_n, pre, states = _ops.rhn_layer(*detached)
    gates, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, _, sizes, _ = detached
    back_args = (torch.randn_like(out), torch.randn_like(h_n), pre, states, values, row_ptr, col_idx, col_ptr,
                 row_idx, csr2csc, sizes, reverse)
    torch.library.opcheck(_ops.rhn_layer_backward.default, back_args)


def test_rhn_layer_value_gradient_is_one_sddmm_per_micro_layer():
    """The value gradient of R_l equals the SDDMM of all T*B pre-activation
    gradients with all T*B states entering micro-layer l: checked by rebuilding
    both from the op's saved tensors."""
    p = _rhn_problem(4, 3, 3, 2, 0.5, [3, 3, 2, 1], seed=5)
    detached = [[t.detach() for t in a] if isinstance(a, list) else
                (a.detach() if isinstance(a, torch.Tensor) else a) for a in (*_op_args(p), False)]
    out, h_n, pre, states = _ops.rhn_layer(*detached)
    grad_out, grad_h = torch.randn_like(out), torch.randn_like(h_n)
    _, _, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, _, sizes, _ = detached
    grad_gates, _, grad_values, grad_biases = _ops.rhn_layer_backward(
        grad_out, grad_h, pre, states, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, sizes, False)
    # The pre-activation gradients of the first micro-layer are the input
    # gates' gradient; rebuild the others through the reference by autograd.
    leaves = [t.clone().requires_grad_() for t in values]
    biases = p["biases"].detach().clone().requires_grad_()
    ref_out, ref_h = reference.rhn_layer(p["gates"].detach(), p["h0"].detach(), leaves, row_ptr, col_idx, biases,
                                         sizes)
    want = torch.autograd.grad((ref_out, ref_h), [*leaves, biases], (grad_out, grad_h))
    for got, expected in zip([*grad_values, grad_biases], want):
        torch.testing.assert_close(got, expected, **TOL[torch.float64])
    torch.testing.assert_close(grad_biases[0], grad_gates.sum((0, 1)), **TOL[torch.float64])


def test_rhn_layer_bad_input():
    p = _rhn_problem(4, 2, 3, 2, 0.5, None)
    with pytest.raises(ValueError, match="expected input_gates"):
        _run(p, False, h0=p["h0"][:1])
    with pytest.raises(ValueError, match=r"batch_sizes must have shape \(steps,\)"):
        ops.rhn_layer(p["gates"], p["h0"], p["values"], p["row_ptr"], p["col_idx"], p["csc"], p["biases"],
                      torch.tensor([2, 2, 1]))
    with pytest.raises(TypeError, match="h0 must have the dtype of input_gates"):
        _run(p, False, h0=p["h0"].float())
    with pytest.raises(ValueError, match="biases must have shape"):
        _run(p, False, biases=p["biases"][:1])
    with pytest.raises(ValueError, match="equal lengths"):
        _run(p, False, values=p["values"][:1])
    with pytest.raises(ValueError, match="at least one micro-layer"):
        ops.rhn_layer(p["gates"], p["h0"], [], [], [], [], p["biases"][:0])
    with pytest.raises(TypeError, match="r_values must be a list"):
        _run(p, False, values=p["values"][0])
    with pytest.raises(TypeError, match=r"r_values\[1\] must have the dtype"):
        _run(p, False, values=[p["values"][0], p["values"][1].float()])
    args = list(_op_args(p))
    wrong_h = [rp for rp in args[3]]
    wrong_h[1] = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"r_row_ptr\[1\] must have rows \+ 1 = 7 entries"):
        ops.rhn_layer(p["gates"], p["h0"], p["values"], wrong_h, p["col_idx"], p["csc"], p["biases"])
    # Straight to torch.ops: the C++ checks still refuse instead of reading out of bounds.
    with pytest.raises(RuntimeError, match="batch_sizes must be non-increasing"):
        _ops.rhn_layer(*args[:-1], torch.tensor([1, 2, 2, 1]), False)
    args[3] = wrong_h
    with pytest.raises(RuntimeError, match="R_1 must have 2\\*hidden"):
        _ops.rhn_layer(*args, False)
