"""SparseLinear and SparseLSTMCell against nn.Linear / nn.LSTMCell: parity of
outputs and of every gradient, masked-dense equality at 90% sparsity,
gradcheck, edge cases, state_dict (sparse and dense), from_dense / to_dense,
torch.compile and bad input."""

import io
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sparse_kernels import csr
from sparse_kernels.nn.linear import SparseLinear
from sparse_kernels.nn.lstm_cell import SparseLSTMCell
from conftest import TOL

F32 = TOL[torch.float32]
F64 = TOL[torch.float64]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _positions(weight):
    """(rows, cols) of the stored entries, in values order."""
    return csr.row_indices(weight.row_ptr), weight.col_idx.long()


def _dense_linear(in_f, out_f, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias, dtype=dtype)


def _dense_cell(input_size, hidden, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.LSTMCell(input_size, hidden, bias=bias, dtype=dtype)


def _cell_inputs(input_size, hidden, batch, *, dtype=torch.float32, seed=1):
    """x, h_0, c_0 for a batch (None: unbatched), fresh and nonzero."""
    g = _gen(seed)
    lead = () if batch is None else (batch,)
    x = torch.randn(*lead, input_size, generator=g, dtype=dtype)
    h = torch.randn(*lead, hidden, generator=g, dtype=dtype)
    c = torch.randn(*lead, hidden, generator=g, dtype=dtype)
    return x, h, c


def _leaf(t):
    return t.detach().clone().requires_grad_()


# ============================================================================ SparseLinear
# ----------------------------------------------------------------------------- construction
def test_linear_init_matches_nn_linear_contract():
    m = SparseLinear(40, 30, density=0.25, generator=_gen(0))
    assert (m.in_features, m.out_features) == (40, 30)
    assert m.nnz == round(0.25 * 40 * 30) and m.weight.shape == (30, 40)
    bound = 1 / math.sqrt(40)
    assert m.weight.values.abs().max() <= bound and m.bias.abs().max() <= bound
    # Spread over the whole interval, not a narrower one.
    assert m.weight.values.max() > 0.9 * bound and m.weight.values.min() < -0.9 * bound
    assert isinstance(m.weight.values, nn.Parameter) and isinstance(m.bias, nn.Parameter)
    assert sorted(m.state_dict()) == ["bias", "weight._extra_state", "weight.col_idx", "weight.row_ptr",
                                      "weight.values"]
    assert m.weight.row_ptr.dtype == torch.int32 and m.weight.col_idx.dtype == torch.int32


def test_linear_options():
    no_bias = SparseLinear(5, 4, bias=False, sparsity=0.75, dtype=torch.float64, init="erdos_renyi")
    assert no_bias.bias is None and "bias" in no_bias._parameters and "bias" not in no_bias.state_dict()
    assert no_bias.nnz == 5 and no_bias.weight.values.dtype == torch.float64
    assert SparseLinear(10, 10).nnz == 10  # default density 0.1
    a = SparseLinear(9, 7, density=0.3, generator=_gen(3))
    b = SparseLinear(9, 7, density=0.3, generator=_gen(3))
    assert torch.equal(a.weight.col_idx, b.weight.col_idx) and torch.equal(a.weight.values, b.weight.values)
    assert torch.equal(a.bias, b.bias)
    text = repr(a)
    assert "in_features=9" in text and "out_features=7" in text and "bias=True" in text
    assert f"nnz={a.nnz}" in text and "density=0.3016" in text


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(in_features=-1, out_features=3), ValueError, "in_features must be non-negative"),
    (dict(in_features=3, out_features=-2), ValueError, "out_features must be non-negative"),
    (dict(in_features=3.5, out_features=2), TypeError, "in_features must be an int"),
    (dict(in_features=3, out_features=2, density=0.5, sparsity=0.5), ValueError, "not both"),
    (dict(in_features=3, out_features=2, density=1.5), ValueError, "density must be in"),
    (dict(in_features=3, out_features=2, init="normal"), ValueError, "init must be one of"),
])
def test_linear_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SparseLinear(**kwargs)


def test_linear_reset_parameters_keeps_pattern():
    m = SparseLinear(16, 8, density=0.5, generator=_gen(0))
    pattern, values = m.weight.mask(), m.weight.values.detach().clone()
    m.reset_parameters(generator=_gen(1))
    assert torch.equal(m.weight.mask(), pattern)
    assert not torch.equal(m.weight.values, values)
    assert m.weight.values.abs().max() <= 1 / math.sqrt(16)


# ----------------------------------------------------------------------------- parity with nn.Linear
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(), (5,), (2, 3)], ids=["unbatched", "batched", "2-leading-dims"])
def test_linear_parity_with_nn_linear(bias, lead):
    """With every entry kept, SparseLinear is nn.Linear: outputs and all grads."""
    lin = _dense_linear(7, 6, bias=bias)
    sparse = SparseLinear.from_dense(lin)
    assert sparse.nnz == 42
    x = torch.randn(*lead, 7, generator=_gen(1))
    xs, xd = _leaf(x), _leaf(x)
    y, y_ref = sparse(xs), lin(xd)
    assert y.shape == y_ref.shape == (*lead, 6)
    torch.testing.assert_close(y, y_ref, **F32)
    grad_out = torch.randn(y.shape, generator=_gen(2))
    y.backward(grad_out)
    y_ref.backward(grad_out)
    torch.testing.assert_close(xs.grad, xd.grad, **F32)
    torch.testing.assert_close(sparse.weight.values.grad, lin.weight.grad[_positions(sparse.weight)], **F32)
    if bias:
        torch.testing.assert_close(sparse.bias.grad, lin.bias.grad, **F32)


def test_linear_90_percent_sparse_equals_masked_dense():
    lin = _dense_linear(48, 64, seed=3)
    sparse = SparseLinear.from_dense(lin, density=0.1)
    mask = sparse.weight.mask()
    assert sparse.nnz == round(0.1 * 48 * 64) == int(mask.sum())
    w = _leaf(lin.weight * mask)
    b = _leaf(lin.bias)
    x = torch.randn(10, 48, generator=_gen(4))
    xs, xd = _leaf(x), _leaf(x)
    y, y_ref = sparse(xs), xd @ w.T + b
    torch.testing.assert_close(y, y_ref, **F32)
    grad_out = torch.randn(y.shape, generator=_gen(5))
    y.backward(grad_out)
    y_ref.backward(grad_out)
    torch.testing.assert_close(xs.grad, xd.grad, **F32)
    torch.testing.assert_close(sparse.weight.values.grad, w.grad[_positions(sparse.weight)], **F32)
    torch.testing.assert_close(sparse.bias.grad, b.grad, **F32)


@pytest.mark.parametrize("lead", [(), (4,)], ids=["unbatched", "batched"])
def test_linear_gradcheck(lead):
    m = SparseLinear(5, 6, density=0.5, dtype=torch.float64, generator=_gen(0))
    x = torch.randn(*lead, 5, dtype=torch.float64, generator=_gen(1), requires_grad=True)
    values, bias = _leaf(m.weight.values), _leaf(m.bias)

    def fn(x, values, bias):
        return functional_call(m, {"weight.values": values, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(fn, (x, values, bias))


# ----------------------------------------------------------------------------- edge cases
def test_linear_batch_zero():
    m = SparseLinear(6, 4, density=0.5, generator=_gen(0))
    x = torch.randn(0, 6, requires_grad=True)
    y = m(x)
    assert y.shape == (0, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 6)
    torch.testing.assert_close(m.weight.values.grad, torch.zeros(m.nnz))
    torch.testing.assert_close(m.bias.grad, torch.zeros(4))


def test_linear_one_input_feature():
    lin = _dense_linear(1, 5, seed=2)
    m = SparseLinear.from_dense(lin)
    x = torch.randn(3, 1, generator=_gen(1))
    torch.testing.assert_close(m(x), lin(x), **F32)
    fresh = SparseLinear(1, 5, density=0.6, generator=_gen(0))
    assert fresh.nnz == 3 and fresh.weight.values.abs().max() <= 1.0


def test_linear_density_zero_is_the_bias():
    m = SparseLinear(6, 4, density=0.0)
    assert m.nnz == 0 and m.weight.values.shape == (0,)
    x = torch.randn(3, 6, generator=_gen(1), requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, m.bias.expand(3, 4))
    y.backward(torch.randn(3, 4, generator=_gen(2)))
    torch.testing.assert_close(x.grad, torch.zeros(3, 6))
    assert m.weight.values.grad.shape == (0,)


def test_linear_dtype_conversion_with_module_to():
    m = SparseLinear(5, 3, density=0.6, generator=_gen(0)).double()
    assert m.weight.values.dtype == m.bias.dtype == torch.float64
    assert m.weight.row_ptr.dtype == torch.int32  # .double() leaves the index alone
    x = torch.randn(2, 5, dtype=torch.float64, generator=_gen(1))
    torch.testing.assert_close(m(x), x @ m.weight.to_dense().T + m.bias, **F64)


# ----------------------------------------------------------------------------- state dict
def test_linear_state_dict_round_trip_replaces_pattern():
    src = SparseLinear(12, 9, density=0.3, generator=_gen(0))
    dst = SparseLinear(12, 9, density=0.5, generator=_gen(1))  # other pattern, other nnz
    result = dst.load_state_dict(src.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert dst.nnz == src.nnz and torch.equal(dst.weight.mask(), src.weight.mask())
    x = torch.randn(4, 12, generator=_gen(2))
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_linear_torch_save_load_module_and_state_dict():
    m = SparseLinear(8, 5, density=0.4, generator=_gen(0))
    x = torch.randn(3, 8, generator=_gen(1))
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert isinstance(loaded, SparseLinear) and loaded.nnz == m.nnz
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = SparseLinear(8, 5, density=0.9)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


def test_linear_loads_dense_state_dict_into_current_pattern():
    m = SparseLinear(10, 6, density=0.3, generator=_gen(0))
    pattern = m.weight.mask()
    lin = _dense_linear(10, 6, seed=5)
    result = m.load_state_dict(lin.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(m.weight.mask(), pattern) and m.nnz == 18
    torch.testing.assert_close(m.weight.values, lin.weight.detach()[_positions(m.weight)], rtol=0, atol=0)
    torch.testing.assert_close(m.bias, lin.bias, rtol=0, atol=0)
    x = torch.randn(4, 10, generator=_gen(1))
    torch.testing.assert_close(m(x), x @ (lin.weight * pattern).T + lin.bias, **F32)


def test_linear_loads_dense_state_dict_nested_and_rejects_wrong_shape():
    model = nn.Sequential(SparseLinear(4, 3, density=0.5, generator=_gen(0)), nn.Tanh())
    dense = nn.Sequential(_dense_linear(4, 3, seed=1), nn.Tanh())
    model.load_state_dict(dense.state_dict())
    torch.testing.assert_close(model[0].weight.values, dense[0].weight.detach()[_positions(model[0].weight)])
    with pytest.raises(RuntimeError, match=r"size mismatch for weight.*\(3, 5\)"):
        SparseLinear(4, 3).load_state_dict(_dense_linear(5, 3).state_dict())


# ----------------------------------------------------------------------------- from_dense / to_dense
def test_linear_from_dense_density_keeps_largest_magnitudes():
    lin = _dense_linear(20, 15, seed=6)
    m = SparseLinear.from_dense(lin, density=0.23)
    assert m.nnz == round(0.23 * 300)
    mask = m.weight.mask()
    magnitude = lin.weight.detach().abs()
    assert magnitude[mask].min() >= magnitude[~mask].max()
    torch.testing.assert_close(m.weight.to_dense(), lin.weight * mask, rtol=0, atol=0)
    torch.testing.assert_close(m.bias, lin.bias, rtol=0, atol=0)


def test_linear_from_dense_with_mask_and_errors():
    lin = _dense_linear(6, 4, bias=False, seed=7)
    mask = torch.rand(4, 6, generator=_gen(0)) < 0.5
    m = SparseLinear.from_dense(lin, density=0.9, mask=mask)  # the mask wins
    assert torch.equal(m.weight.mask(), mask) and m.bias is None
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        SparseLinear.from_dense(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="mask must be a tensor of shape"):
        SparseLinear.from_dense(lin, mask=torch.ones(6, 4, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_to_dense_round_trip(dtype):
    m = SparseLinear(9, 7, density=0.4, dtype=dtype, generator=_gen(0))
    lin = m.to_dense()
    assert isinstance(lin, nn.Linear) and lin.weight.dtype == dtype and lin.weight.device == m.bias.device
    torch.testing.assert_close(lin.weight, m.weight.to_dense(), rtol=0, atol=0)
    x = torch.randn(3, 9, dtype=dtype, generator=_gen(1))
    torch.testing.assert_close(lin(x), m(x), **TOL[dtype])
    back = SparseLinear.from_dense(lin, mask=m.weight.mask())
    assert torch.equal(back.weight.col_idx, m.weight.col_idx) and torch.equal(back.weight.row_ptr, m.weight.row_ptr)
    torch.testing.assert_close(back.weight.values, m.weight.values, rtol=0, atol=0)
    # Without a mask, the zeros outside the pattern are kept as entries.
    assert SparseLinear.from_dense(lin).nnz == 63


# ----------------------------------------------------------------------------- torch.compile
def test_linear_torch_compile_matches_eager():
    torch._dynamo.reset()
    model = nn.Sequential(SparseLinear(8, 16, density=0.3, generator=_gen(0)), nn.ReLU(),
                          SparseLinear(16, 4, density=0.3, generator=_gen(1)))
    compiled = torch.compile(model)
    x = torch.randn(5, 8, generator=_gen(2))
    xe, xc = _leaf(x), _leaf(x)
    y_eager = model(xe)
    y_compiled = compiled(xc)
    torch.testing.assert_close(y_compiled, y_eager, **F32)
    grad_out = torch.randn(5, 4, generator=_gen(3))
    eager_grads = torch.autograd.grad(y_eager, [xe, *model.parameters()], grad_out)
    compiled_grads = torch.autograd.grad(y_compiled, [xc, *model.parameters()], grad_out)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, **F32)


# ----------------------------------------------------------------------------- bad input
def test_linear_bad_input():
    m = SparseLinear(6, 4, density=0.5)
    with pytest.raises(ValueError, match=r"in_features=6.*\(3, 5\)"):
        m(torch.randn(3, 5))
    with pytest.raises(ValueError, match="in_features=6"):
        m(torch.randn(3, 7))  # wider: the op alone would not notice
    with pytest.raises(ValueError, match="in_features=6"):
        m(torch.tensor(1.0))
    with pytest.raises(TypeError, match="input has dtype torch.float64 but the weights are torch.float32"):
        m(torch.randn(3, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        m([[1.0] * 6])


# ============================================================================ SparseLSTMCell
# ----------------------------------------------------------------------------- construction
def test_cell_init_matches_nn_lstm_cell_contract():
    c = SparseLSTMCell(12, 10, density=0.2, generator=_gen(0))
    assert (c.input_size, c.hidden_size, c.bias) == (12, 10, True)
    assert c.weight_ih.shape == (40, 12) and c.weight_hh.shape == (40, 10)
    assert c.weight_ih.nnz == round(0.2 * 480) and c.weight_hh.nnz == round(0.2 * 400)
    assert c.nnz == c.weight_ih.nnz + c.weight_hh.nnz
    bound = 1 / math.sqrt(10)
    for p in c.parameters():
        assert p.abs().max() <= bound
    assert c.weight_ih.values.max() > 0.9 * bound and c.weight_ih.values.min() < -0.9 * bound
    assert sorted(c.state_dict()) == sorted(
        ["bias_ih", "bias_hh"] + [f"{w}.{k}" for w in ("weight_ih", "weight_hh")
                                  for k in ("values", "row_ptr", "col_idx", "_extra_state")])
    text = repr(c)
    assert "12, 10" in text and f"nnz={c.nnz}" in text and "density=0.2000" in text
    no_bias = SparseLSTMCell(3, 2, bias=False, sparsity=0.5)
    assert no_bias.bias_ih is None and no_bias.bias_hh is None and "bias=False" in repr(no_bias)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight_ih.values", "weight_hh.values"]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(input_size=-1, hidden_size=3), ValueError, "input_size must be non-negative"),
    (dict(input_size=3, hidden_size=-1), ValueError, "hidden_size must be non-negative"),
    (dict(input_size=3, hidden_size=2, density=0.1, sparsity=0.9), ValueError, "not both"),
    (dict(input_size=3, hidden_size=2, init="dense"), ValueError, "init must be one of"),
])
def test_cell_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SparseLSTMCell(**kwargs)


# ----------------------------------------------------------------------------- parity with nn.LSTMCell
def _cell_grads_match(sparse, dense, inputs_s, inputs_d, outputs_s, outputs_d, tol, mask=None):
    """Backpropagate the same random cotangents through both cells and compare
    every gradient: the inputs, the values (against the dense weight gradient
    at the stored positions) and the biases."""
    cotangents = [torch.randn(o.shape, generator=_gen(9), dtype=o.dtype) for o in outputs_s]
    torch.autograd.backward(outputs_s, cotangents)
    torch.autograd.backward(outputs_d, cotangents)
    for a, b in zip(inputs_s, inputs_d):
        torch.testing.assert_close(a.grad, b.grad, **tol)
    for name in ("weight_ih", "weight_hh"):
        weight = getattr(sparse, name)
        torch.testing.assert_close(weight.values.grad, getattr(dense, name).grad[_positions(weight)], **tol)
    if sparse.bias:
        torch.testing.assert_close(sparse.bias_ih.grad, dense.bias_ih.grad, **tol)
        torch.testing.assert_close(sparse.bias_hh.grad, dense.bias_hh.grad, **tol)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [None, 4], ids=["unbatched", "batched"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "no-hx"])
def test_cell_parity_with_nn_lstm_cell(bias, batch, with_hx):
    dense = _dense_cell(6, 5, bias=bias, seed=1)
    sparse = SparseLSTMCell.from_dense(dense)
    assert sparse.nnz == 20 * 6 + 20 * 5
    x, h, c = _cell_inputs(6, 5, batch)
    xs, hs, cs = _leaf(x), _leaf(h), _leaf(c)
    xd, hd, cd = _leaf(x), _leaf(h), _leaf(c)
    out_s = sparse(xs, (hs, cs) if with_hx else None)
    out_d = dense(xd, (hd, cd) if with_hx else None)
    for a, b in zip(out_s, out_d):
        assert a.shape == b.shape == ((5,) if batch is None else (batch, 5))
        torch.testing.assert_close(a, b, **F32)
    inputs_s, inputs_d = ([xs, hs, cs], [xd, hd, cd]) if with_hx else ([xs], [xd])
    _cell_grads_match(sparse, dense, inputs_s, inputs_d, out_s, out_d, F32)
    if not with_hx:  # weight_hh still ran (on zeros), like nn.LSTMCell: a zero grad, not None
        torch.testing.assert_close(sparse.weight_hh.values.grad, torch.zeros(sparse.weight_hh.nnz))


def test_cell_90_percent_sparse_equals_masked_dense():
    dense = _dense_cell(24, 16, seed=2)
    sparse = SparseLSTMCell.from_dense(dense, density=0.1)
    assert sparse.weight_ih.nnz == round(0.1 * 64 * 24) and sparse.weight_hh.nnz == round(0.1 * 64 * 16)
    with torch.no_grad():  # the dense cell with the same zeros: the masked computation
        dense.weight_ih.mul_(sparse.weight_ih.mask())
        dense.weight_hh.mul_(sparse.weight_hh.mask())
    x, h, c = _cell_inputs(24, 16, 7, seed=3)
    xs, hs, cs = _leaf(x), _leaf(h), _leaf(c)
    xd, hd, cd = _leaf(x), _leaf(h), _leaf(c)
    out_s, out_d = sparse(xs, (hs, cs)), dense(xd, (hd, cd))
    for a, b in zip(out_s, out_d):
        torch.testing.assert_close(a, b, **F32)
    _cell_grads_match(sparse, dense, [xs, hs, cs], [xd, hd, cd], out_s, out_d, F32)


def test_cell_two_steps_match_nn_lstm_cell():
    """The state fed back in: gradients flow through h and c across steps."""
    dense = _dense_cell(3, 4, seed=4)
    sparse = SparseLSTMCell.from_dense(dense)
    xs = torch.randn(2, 5, 3, generator=_gen(5))
    state_s = state_d = None
    for t in range(2):
        state_s, state_d = sparse(xs[t], state_s), dense(xs[t], state_d)
    _cell_grads_match(sparse, dense, [], [], state_s, state_d, F32)


@pytest.mark.parametrize("batch", [None, 3], ids=["unbatched", "batched"])
def test_cell_gradcheck(batch):
    cell = SparseLSTMCell(4, 3, density=0.5, dtype=torch.float64, generator=_gen(0))
    x, h, c = (t.requires_grad_() for t in _cell_inputs(4, 3, batch, dtype=torch.float64))
    params = [_leaf(p) for p in (cell.weight_ih.values, cell.weight_hh.values, cell.bias_ih, cell.bias_hh)]
    names = ["weight_ih.values", "weight_hh.values", "bias_ih", "bias_hh"]

    def fn(x, h, c, *params):
        return functional_call(cell, dict(zip(names, params)), (x, (h, c)))

    assert torch.autograd.gradcheck(fn, (x, h, c, *params))


# ----------------------------------------------------------------------------- edge cases
def test_cell_batch_zero():
    cell = SparseLSTMCell(5, 3, density=0.5, generator=_gen(0))
    x = torch.randn(0, 5, requires_grad=True)
    h, c = cell(x)
    assert h.shape == c.shape == (0, 3)
    (h.sum() + c.sum()).backward()
    assert x.grad.shape == (0, 5)
    torch.testing.assert_close(cell.weight_ih.values.grad, torch.zeros(cell.weight_ih.nnz))
    torch.testing.assert_close(cell.bias_ih.grad, torch.zeros(12))


def test_cell_one_input_feature_and_density_zero():
    dense = _dense_cell(1, 2, seed=3)
    x, h, c = _cell_inputs(1, 2, 3)
    for a, b in zip(SparseLSTMCell.from_dense(dense)(x, (h, c)), dense(x, (h, c))):
        torch.testing.assert_close(a, b, **F32)
    empty = SparseLSTMCell(4, 3, density=0.0, generator=_gen(0))
    assert empty.nnz == 0 and empty.density == 0.0
    x, h, c = _cell_inputs(4, 3, 2)
    gates = (empty.bias_ih + empty.bias_hh).expand(2, 12)
    i, f, g, o = gates.chunk(4, 1)
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_1, c_1 = empty(x, (h, c))
    torch.testing.assert_close(c_1, c_ref, **F32)
    torch.testing.assert_close(h_1, torch.sigmoid(o) * torch.tanh(c_ref), **F32)


# ----------------------------------------------------------------------------- state dict
def test_cell_state_dict_round_trip_and_torch_save():
    src = SparseLSTMCell(6, 4, density=0.3, generator=_gen(0))
    dst = SparseLSTMCell(6, 4, density=0.6, generator=_gen(1))
    result = dst.load_state_dict(src.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(dst.weight_hh.mask(), src.weight_hh.mask()) and dst.nnz == src.nnz
    x, h, c = _cell_inputs(6, 4, 3)
    for a, b in zip(dst(x, (h, c)), src(x, (h, c))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(src, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert isinstance(loaded, SparseLSTMCell)
    for a, b in zip(loaded(x, (h, c)), src(x, (h, c))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cell_loads_dense_state_dict_into_current_patterns():
    cell = SparseLSTMCell(6, 4, density=0.3, generator=_gen(0))
    masks = {name: getattr(cell, name).mask() for name in ("weight_ih", "weight_hh")}
    dense = _dense_cell(6, 4, seed=8)
    result = cell.load_state_dict(dense.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    for name, mask in masks.items():
        weight = getattr(cell, name)
        assert torch.equal(weight.mask(), mask)
        torch.testing.assert_close(weight.values, getattr(dense, name).detach()[_positions(weight)],
                                   rtol=0, atol=0)
    torch.testing.assert_close(cell.bias_hh, dense.bias_hh, rtol=0, atol=0)
    with torch.no_grad():
        dense.weight_ih.mul_(masks["weight_ih"])
        dense.weight_hh.mul_(masks["weight_hh"])
    x, h, c = _cell_inputs(6, 4, 2)
    for a, b in zip(cell(x, (h, c)), dense(x, (h, c))):
        torch.testing.assert_close(a, b, **F32)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight_hh"):
        SparseLSTMCell(6, 4).load_state_dict(_dense_cell(6, 5).state_dict())


# ----------------------------------------------------------------------------- from_dense / to_dense
def test_cell_from_dense_density_and_masks():
    dense = _dense_cell(10, 6, seed=5)
    cell = SparseLSTMCell.from_dense(dense, density=0.15)
    for name in ("weight_ih", "weight_hh"):
        weight, w = getattr(cell, name), getattr(dense, name).detach()
        assert weight.nnz == round(0.15 * w.numel())
        mask = weight.mask()
        assert w.abs()[mask].min() >= w.abs()[~mask].max()
    m_ih = torch.rand(24, 10, generator=_gen(1)) < 0.3
    partial = SparseLSTMCell.from_dense(dense, density=0.5, mask={"weight_ih": m_ih})
    assert torch.equal(partial.weight_ih.mask(), m_ih)
    assert partial.weight_hh.nnz == round(0.5 * 24 * 6)  # not in the dict: by density
    with pytest.raises(ValueError, match="unknown keys"):
        SparseLSTMCell.from_dense(dense, mask={"weight": m_ih})
    with pytest.raises(TypeError, match="mask must be a dict"):
        SparseLSTMCell.from_dense(dense, mask=m_ih)
    with pytest.raises(TypeError, match="expects an nn.LSTMCell"):
        SparseLSTMCell.from_dense(nn.GRUCell(10, 6))


@pytest.mark.parametrize("bias", [True, False])
def test_cell_to_dense_round_trip(bias):
    cell = SparseLSTMCell(5, 4, bias=bias, density=0.4, dtype=torch.float64, generator=_gen(0))
    dense = cell.to_dense()
    assert isinstance(dense, nn.LSTMCell) and dense.weight_ih.dtype == torch.float64 and dense.bias == bias
    torch.testing.assert_close(dense.weight_hh, cell.weight_hh.to_dense(), rtol=0, atol=0)
    x, h, c = _cell_inputs(5, 4, 3, dtype=torch.float64)
    for a, b in zip(dense(x, (h, c)), cell(x, (h, c))):
        torch.testing.assert_close(a, b, **F64)
    back = SparseLSTMCell.from_dense(dense, mask={n: getattr(cell, n).mask() for n in ("weight_ih", "weight_hh")})
    torch.testing.assert_close(back.weight_ih.values, cell.weight_ih.values, rtol=0, atol=0)
    assert torch.equal(back.weight_hh.col_idx, cell.weight_hh.col_idx)


# ----------------------------------------------------------------------------- bad input
def test_cell_bad_input():
    cell = SparseLSTMCell(5, 3, density=0.5)
    x, h, c = _cell_inputs(5, 3, 2)
    with pytest.raises(ValueError, match=r"input_size=5.*\(2, 4\)"):
        cell(torch.randn(2, 4))
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\) of shape \(2, 3\).*got \(3, 3\)"):
        cell(x, (torch.randn(3, 3), c))  # batch mismatch
    with pytest.raises(ValueError, match=r"hx\[1\] \(c_0\) of shape \(2, 3\).*got \(2, 4\)"):
        cell(x, (h, torch.randn(2, 4)))  # hidden mismatch
    with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\) of shape \(3,\).*got \(1, 3\)"):
        cell(x[0], (h[:1], c[0]))  # unbatched input, batched state
    with pytest.raises(ValueError, match=r"Expected hx\[1\] \(c_0\) to be 1D or 2D, got 3D"):
        cell(x, (h, c.unsqueeze(0)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        cell(x, h)
    with pytest.raises(TypeError, match=r"hx\[1\] \(c_0\) has dtype torch.float64, input has torch.float32"):
        cell(x, (h, c.double()))
    with pytest.raises(TypeError, match="input has dtype torch.float64 but the weights are torch.float32"):
        cell(x.double(), (h.double(), c.double()))
