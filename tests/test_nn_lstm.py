"""SparseLSTM against nn.LSTM: parity of outputs and of every gradient over a
grid of configurations, masked-dense equality at 90% sparsity, an
independent oracle (sparse_kernels.reference), gradcheck, dropout,
torch.compile, state_dict / save / from_dense / to_dense, and bad arguments
and inputs (the same exception types as nn.LSTM)."""

import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from sparse_kernels import csr, reference
from sparse_kernels.storage import CSRWeight
from conftest import TOL

from sparse_kernels.nn.lstm import SparseLSTM

F32 = TOL[torch.float32]
F64 = TOL[torch.float64]
EXACT = dict(rtol=0, atol=0)

# nn.LSTM's own notice when the oneDNN path cannot take proj_size: noise here.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_()


def _positions(weight):
    """(rows, cols) of the stored entries, in values order."""
    return csr.row_indices(weight.row_ptr), weight.col_idx.long()


def _weight_names(num_layers, bidirectional, proj_size):
    names = []
    for k in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
            if proj_size > 0:
                names.append(f"weight_hr_l{k}{sfx}")
    return names


def _bias_names(num_layers, bidirectional):
    return [f"bias_{kind}_l{k}{sfx}" for k in range(num_layers)
            for sfx in (("", "_reverse") if bidirectional else ("",)) for kind in ("ih", "hh")]


def _dense_lstm(*args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return nn.LSTM(*args, **kwargs)


def _masks(module):
    return {name: getattr(module, name).mask() for name in
            _weight_names(module.num_layers, module.bidirectional, module.proj_size)}


def _outputs(result):
    """(output tensor, h_n, c_n) of an LSTM call; a PackedSequence gives its .data."""
    out, (h, c) = result
    return (out.data if isinstance(out, PackedSequence) else out), h, c


def _backward_both(res_s, res_d, seed=9):
    """The same random cotangents into output, h_n and c_n of both models."""
    outs_s, outs_d = _outputs(res_s), _outputs(res_d)
    g = _gen(seed)
    cot = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs_d]
    torch.autograd.backward(outs_s, cot)
    torch.autograd.backward(outs_d, cot)


def _compare_param_grads(sparse, dense, tol):
    """Every dense parameter's gradient has its sparse counterpart: the values'
    grad is the dense weight grad at the stored positions; biases equal."""
    dense_params = dict(dense.named_parameters())
    expected = {(f"{n}.values" if n.startswith("weight") else n) for n in dense_params}
    assert {n for n, _ in sparse.named_parameters()} == expected
    for name, p in dense_params.items():
        if name.startswith("weight"):
            weight = getattr(sparse, name)
            assert isinstance(weight, CSRWeight) and weight.values.grad is not None, name
            torch.testing.assert_close(weight.values.grad, p.grad[_positions(weight)], **tol,
                                       msg=lambda m, name=name: f"{name}: {m}")
        else:
            bias = getattr(sparse, name)
            assert bias.grad is not None, name
            torch.testing.assert_close(bias.grad, p.grad, **tol, msg=lambda m, name=name: f"{name}: {m}")


# ============================================================================ construction
def test_parameters_shapes_and_init_match_nn_lstm_contract():
    m = SparseLSTM(5, 6, num_layers=2, bidirectional=True, proj_size=3, density=0.25, generator=_gen(0))
    assert (m.input_size, m.hidden_size, m.num_layers, m.bias, m.batch_first, m.dropout,
            m.bidirectional, m.proj_size) == (5, 6, 2, True, False, 0.0, True, 3)
    dense = nn.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=3)
    names = _weight_names(2, True, 3)
    assert len(names) == 12
    for name in names:
        weight = getattr(m, name)
        assert isinstance(weight, CSRWeight), name
        assert tuple(weight.shape) == tuple(getattr(dense, name).shape), name
        assert weight.nnz == round(0.25 * getattr(dense, name).numel()), name
        assert weight.row_ptr.dtype == weight.col_idx.dtype == torch.int32
        assert isinstance(weight.values, nn.Parameter)
    for name in _bias_names(2, True):
        assert isinstance(getattr(m, name), nn.Parameter) and getattr(m, name).shape == (24,), name
    # nn.LSTM's initialisation: everything uniform in +-1/sqrt(hidden_size).
    bound = 1 / math.sqrt(6)
    for p in m.parameters():
        assert p.abs().max() <= bound
    all_values = torch.cat([getattr(m, n).values.detach() for n in names])
    assert all_values.max() > 0.9 * bound and all_values.min() < -0.9 * bound
    expected_keys = {f"{n}.{k}" for n in names for k in ("values", "row_ptr", "col_idx")}
    assert expected_keys | set(_bias_names(2, True)) <= set(m.state_dict())
    # Deterministic from a generator; sparsity = 1 - density.
    a = SparseLSTM(4, 3, sparsity=0.5, generator=_gen(7))
    b = SparseLSTM(4, 3, density=0.5, generator=_gen(7))
    assert a.weight_ih_l0.nnz == 24 and a.weight_hh_l0.nnz == 18
    for name in ("weight_ih_l0", "weight_hh_l0"):
        assert torch.equal(getattr(a, name).col_idx, getattr(b, name).col_idx)
        assert torch.equal(getattr(a, name).values, getattr(b, name).values)
    assert torch.equal(a.bias_hh_l0, b.bias_hh_l0)


def test_no_bias_and_repr_and_flatten_parameters():
    m = SparseLSTM(4, 3, num_layers=2, bias=False, density=0.5, generator=_gen(0))
    for name in _bias_names(2, False):
        assert getattr(m, name, None) is None, name
        assert name not in m.state_dict()
    assert sorted(n for n, _ in m.named_parameters()) == sorted(
        f"{n}.values" for n in _weight_names(2, False, 0))
    text = repr(m)
    assert "density" in text and "nnz" in text
    x = torch.randn(5, 2, 4, generator=_gen(1))
    before = _outputs(m(x))
    state = {k: v.clone() for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}
    assert m.flatten_parameters() is None
    for k, v in m.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, state[k]), k
    for a, b in zip(_outputs(m(x)), before):
        torch.testing.assert_close(a, b, **EXACT)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(dropout=1.5), ValueError, "dropout"),
    (dict(dropout=-0.1), ValueError, "dropout"),
    (dict(dropout=True), ValueError, "dropout"),
    (dict(proj_size=4), ValueError, "proj_size"),
    (dict(proj_size=-1), ValueError, "proj_size"),
    (dict(hidden_size=0), ValueError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(hidden_size=2.5), TypeError, "hidden_size"),
], ids=["dropout>1", "dropout<0", "dropout-bool", "proj>=hidden", "proj<0", "hidden=0", "layers=0",
        "hidden-float"])
def test_bad_arguments_like_nn_lstm(kwargs, error, match):
    args = dict(input_size=5, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(error):  # what nn.LSTM raises for the same mistake
        nn.LSTM(**args)
    with pytest.raises(error, match=match):
        SparseLSTM(**args)


@pytest.mark.parametrize("kwargs,match", [
    (dict(density=0.5, sparsity=0.5), "density|sparsity"),
    (dict(density=1.5), "density"),
    (dict(init="normal"), "init"),
])
def test_bad_sparse_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseLSTM(5, 4, **kwargs)


def test_dropout_with_one_layer_warns_like_nn_lstm():
    with pytest.warns(UserWarning, match="dropout"):
        nn.LSTM(5, 4, dropout=0.3)
    with pytest.warns(UserWarning, match="dropout"):
        SparseLSTM(5, 4, dropout=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when it is meaningful
        SparseLSTM(5, 4, num_layers=2, dropout=0.3)


# ============================================================================ parity with nn.LSTM
IN, HID, PROJ = 5, 6, 3
_DEFAULT_CASE = dict(layers=1, bidir=False, batch_first=False, proj=0, mode="padded", dropout=0.0,
                     bias=True, T=5, B=4, hx=True)


def _case(**kw):
    case = dict(_DEFAULT_CASE)
    case.update(kw)
    return case


# Each feature alone, then pairs, then everything together.
PARITY_CASES = {
    "base": _case(),
    "no-hx": _case(hx=False),
    "2-layers": _case(layers=2),
    "3-layers-batch-first": _case(layers=3, batch_first=True),
    "bidir": _case(bidir=True),
    "2-layers-bidir-no-hx": _case(layers=2, bidir=True, hx=False),
    "proj": _case(proj=PROJ),
    "2-layers-bidir-proj": _case(layers=2, bidir=True, proj=PROJ),
    "packed-unsorted": _case(mode="packed_unsorted"),
    "packed-unsorted-2-layers-bidir": _case(mode="packed_unsorted", layers=2, bidir=True),
    "packed-sorted-bidir-batch-first": _case(mode="packed_sorted", bidir=True, batch_first=True),
    "packed-unsorted-bidir-proj-no-hx": _case(mode="packed_unsorted", bidir=True, proj=PROJ, hx=False),
    "unbatched": _case(mode="unbatched"),
    "unbatched-2-layers-bidir-proj": _case(mode="unbatched", layers=2, bidir=True, proj=PROJ),
    "dropout-eval-3-layers-bidir": _case(layers=3, bidir=True, dropout=0.3),
    "no-bias-2-layers-bidir": _case(layers=2, bidir=True, bias=False),
    "seq-len-1-2-layers": _case(T=1, layers=2),
    "batch-1-bidir-packed": _case(B=1, bidir=True, mode="packed_unsorted"),
    "seq-1-batch-1-unbatched-no-bias": _case(T=1, mode="unbatched", bias=False, proj=PROJ),
    "everything": _case(layers=3, bidir=True, batch_first=True, proj=PROJ, mode="packed_unsorted",
                        dropout=0.2, bias=False),
}


def _lengths(case):
    T, B = case["T"], case["B"]
    if B == 1:
        return torch.tensor([T])
    if case["mode"] == "packed_sorted":
        return torch.tensor([T, T - 1, 2, 1][:B])
    return torch.tensor([3, T, 1, T - 1][:B])  # unsorted, longest not first


def _parity_inputs(case, dtype=torch.float32, seed=1):
    g = _gen(seed)
    T, B = case["T"], case["B"]
    dirs = 2 if case["bidir"] else 1
    h_out = case["proj"] or HID
    if case["mode"] == "unbatched":
        x = torch.randn(T, IN, generator=g, dtype=dtype)
        hx = (torch.randn(case["layers"] * dirs, h_out, generator=g, dtype=dtype),
              torch.randn(case["layers"] * dirs, HID, generator=g, dtype=dtype))
    else:
        x = torch.randn(*((B, T) if case["batch_first"] else (T, B)), IN, generator=g, dtype=dtype)
        hx = (torch.randn(case["layers"] * dirs, B, h_out, generator=g, dtype=dtype),
              torch.randn(case["layers"] * dirs, B, HID, generator=g, dtype=dtype))
    return x, (hx if case["hx"] else None)


def _call(module, case, x, hx):
    inp = x
    if case["mode"].startswith("packed"):
        inp = pack_padded_sequence(x, _lengths(case), batch_first=case["batch_first"],
                                   enforce_sorted=case["mode"] == "packed_sorted")
    return module(inp, hx)


@pytest.mark.parametrize("case", list(PARITY_CASES.values()), ids=list(PARITY_CASES))
def test_parity_with_nn_lstm(case):
    """With every entry kept, SparseLSTM is nn.LSTM: output, h_n, c_n and the
    gradients of the input, h_0, c_0, every weight and every bias."""
    dense = _dense_lstm(IN, HID, num_layers=case["layers"], bias=case["bias"], batch_first=case["batch_first"],
                        dropout=case["dropout"], bidirectional=case["bidir"], proj_size=case["proj"], seed=3)
    sparse = SparseLSTM.from_dense(dense)
    assert (sparse.num_layers, sparse.bidirectional, sparse.batch_first, sparse.proj_size, sparse.dropout,
            sparse.bias) == (case["layers"], case["bidir"], case["batch_first"], case["proj"],
                             case["dropout"], case["bias"])
    for name in _weight_names(case["layers"], case["bidir"], case["proj"]):
        assert getattr(sparse, name).nnz == getattr(dense, name).numel(), name  # all entries kept
    if case["dropout"]:
        dense.eval()
        sparse.eval()

    x, hx = _parity_inputs(case)
    xs, xd = _leaf(x), _leaf(x)
    hxs = None if hx is None else tuple(_leaf(t) for t in hx)
    hxd = None if hx is None else tuple(_leaf(t) for t in hx)
    res_s, res_d = _call(sparse, case, xs, hxs), _call(dense, case, xd, hxd)

    if case["mode"].startswith("packed"):
        out_s, out_d = res_s[0], res_d[0]
        assert isinstance(out_s, PackedSequence)
        assert torch.equal(out_s.batch_sizes, out_d.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out_s, attr), getattr(out_d, attr)
            assert (a is None and b is None) or torch.equal(a, b), attr
        padded_s, len_s = pad_packed_sequence(out_s, batch_first=case["batch_first"])
        padded_d, _ = pad_packed_sequence(out_d, batch_first=case["batch_first"])
        assert torch.equal(len_s, _lengths(case))
        torch.testing.assert_close(padded_s, padded_d, **F32)
    for a, b in zip(_outputs(res_s), _outputs(res_d)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **F32)

    _backward_both(res_s, res_d)
    torch.testing.assert_close(xs.grad, xd.grad, **F32)
    if hx is not None:
        torch.testing.assert_close(hxs[0].grad, hxd[0].grad, **F32)
        torch.testing.assert_close(hxs[1].grad, hxd[1].grad, **F32)
    _compare_param_grads(sparse, dense, F32)


def test_output_shapes_bidirectional_proj_batch_first():
    m = SparseLSTM(IN, HID, num_layers=2, batch_first=True, bidirectional=True, proj_size=PROJ,
                   density=0.3, generator=_gen(0))
    out, (h, c) = m(torch.randn(3, 7, IN, generator=_gen(1)))
    assert out.shape == (3, 7, 2 * PROJ) and h.shape == (4, 3, PROJ) and c.shape == (4, 3, HID)
    out, (h, c) = m(torch.randn(7, IN, generator=_gen(2)))  # unbatched
    assert out.shape == (7, 2 * PROJ) and h.shape == (4, PROJ) and c.shape == (4, HID)
    # The last layer's final states are the ends of the output halves.
    full, (h, _) = m(torch.randn(3, 7, IN, generator=_gen(3)))
    torch.testing.assert_close(h[-2], full[:, -1, :PROJ], **EXACT)
    torch.testing.assert_close(h[-1], full[:, 0, PROJ:], **EXACT)


# ============================================================================ sparse: masked dense model
@pytest.mark.parametrize("proj_size", [0, 4], ids=["no-proj", "proj"])
def test_90_percent_sparse_equals_its_dense_masked_model(proj_size):
    m = SparseLSTM(12, 10, num_layers=2, bidirectional=True, proj_size=proj_size, density=0.1,
                   generator=_gen(4))
    dense = m.to_dense()
    assert isinstance(dense, nn.LSTM)
    for name in _weight_names(2, True, proj_size):
        weight = getattr(m, name)
        assert weight.nnz == round(0.1 * getattr(dense, name).numel()), name
        torch.testing.assert_close(getattr(dense, name), weight.to_dense(), **EXACT)
        assert int((getattr(dense, name) != 0).sum()) <= weight.nnz
    lengths = torch.tensor([4, 9, 2, 7, 9])
    x = torch.randn(9, 5, 12, generator=_gen(5))
    h_out = proj_size or 10
    hx = (torch.randn(4, 5, h_out, generator=_gen(6)), torch.randn(4, 5, 10, generator=_gen(7)))
    xs, xd = _leaf(x), _leaf(x)
    hs, hd = tuple(_leaf(t) for t in hx), tuple(_leaf(t) for t in hx)
    res_s = m(pack_padded_sequence(xs, lengths, enforce_sorted=False), hs)
    res_d = dense(pack_padded_sequence(xd, lengths, enforce_sorted=False), hd)
    assert isinstance(res_s[0], PackedSequence)
    for a, b in zip(_outputs(res_s), _outputs(res_d)):
        torch.testing.assert_close(a, b, **F32)
    _backward_both(res_s, res_d)
    for a, b in ((xs, xd), (hs[0], hd[0]), (hs[1], hd[1])):
        torch.testing.assert_close(a.grad, b.grad, **F32)
    _compare_param_grads(m, dense, F32)


def test_sparse_matches_reference_oracle():
    """One bidirectional layer on a sorted PackedSequence against the plain
    dense oracles of sparse_kernels.reference (float64)."""
    m = SparseLSTM(6, 5, bidirectional=True, density=0.3, dtype=torch.float64, generator=_gen(11))
    lengths = torch.tensor([6, 5, 3, 1])
    x = torch.randn(6, 4, 6, dtype=torch.float64, generator=_gen(12))
    h0 = torch.randn(2, 4, 5, dtype=torch.float64, generator=_gen(13))
    c0 = torch.randn(2, 4, 5, dtype=torch.float64, generator=_gen(14))
    packed = pack_padded_sequence(x, lengths)
    out, (h_n, c_n) = m(packed, (h0, c0))
    out, _ = pad_packed_sequence(out)

    params = {n: _leaf(p) for n, p in m.named_parameters()}
    outs, hs, cs = [], [], []
    for d, sfx in enumerate(("", "_reverse")):
        w_ih, w_hh = getattr(m, f"weight_ih_l0{sfx}"), getattr(m, f"weight_hh_l0{sfx}")
        gates = reference.sparse_linear(x.reshape(-1, 6), params[f"weight_ih_l0{sfx}.values"], w_ih.row_ptr,
                                        w_ih.col_idx, w_ih.shape, params[f"bias_ih_l0{sfx}"])
        gates = (gates + params[f"bias_hh_l0{sfx}"]).reshape(6, 4, 20)
        o, h, c = reference.lstm_layer(gates, h0[d], c0[d], params[f"weight_hh_l0{sfx}.values"], w_hh.row_ptr,
                                       w_hh.col_idx, batch_sizes=packed.batch_sizes, reverse=bool(d))
        outs.append(o)
        hs.append(h)
        cs.append(c)
    out_ref, h_ref, c_ref = torch.cat(outs, -1), torch.stack(hs), torch.stack(cs)
    torch.testing.assert_close(out, out_ref, **F64)
    torch.testing.assert_close(h_n, h_ref, **F64)
    torch.testing.assert_close(c_n, c_ref, **F64)
    cot = [torch.randn(t.shape, dtype=torch.float64, generator=_gen(15 + i)) for i, t in enumerate((out, h_n, c_n))]
    torch.autograd.backward((out, h_n, c_n), cot)
    torch.autograd.backward((out_ref, h_ref, c_ref), cot)
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, **F64, msg=lambda s, name=name: f"{name}: {s}")


# ============================================================================ gradcheck
@pytest.mark.parametrize("kwargs", [dict(bidirectional=True), dict(num_layers=2, proj_size=2)],
                         ids=["1-layer-bidir", "2-layers-proj"])
def test_gradcheck(kwargs):
    m = SparseLSTM(4, 3, density=0.5, dtype=torch.float64, generator=_gen(0), **kwargs)
    layers_dirs = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    h_out = kwargs.get("proj_size", 0) or 3
    g = _gen(1)
    x = torch.randn(3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    h0 = torch.randn(layers_dirs, 2, h_out, dtype=torch.float64, generator=g, requires_grad=True)
    c0 = torch.randn(layers_dirs, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]
    assert sum(n.endswith(".values") for n in names) == len(_weight_names(kwargs.get("num_layers", 1),
                                                                        kwargs.get("bidirectional", False),
                                                                        kwargs.get("proj_size", 0)))
    params = [_leaf(p) for _, p in m.named_parameters()]

    def fn(x, h0, c0, *params):
        out, (h, c) = functional_call(m, dict(zip(names, params)), (x, (h0, c0)))
        return out, h, c

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *params))


# ============================================================================ dropout
def test_training_dropout_between_layers_only():
    m = SparseLSTM(IN, HID, num_layers=2, dropout=0.5, density=0.5, generator=_gen(0))
    x = torch.randn(6, 3, IN, generator=_gen(1))
    m.train()
    torch.manual_seed(1)
    out1, (h1, _) = m(x)
    torch.manual_seed(2)
    out2, _ = m(x)
    torch.manual_seed(1)
    out1_again, _ = m(x)
    assert not torch.allclose(out1, out2, atol=1e-3)  # other masks
    torch.testing.assert_close(out1_again, out1, **EXACT)  # the global RNG drives it
    # Not applied to the output of the last layer: no zeroed or doubled outputs.
    assert out1.abs().max() <= 1 and (out1 == 0).float().mean() < 0.05
    torch.testing.assert_close(h1[-1], out1[-1], **EXACT)

    m.eval()
    torch.manual_seed(1)
    e1 = _outputs(m(x))
    torch.manual_seed(2)
    e2 = _outputs(m(x))
    for a, b in zip(e1, e2):
        torch.testing.assert_close(a, b, **EXACT)
    assert not torch.allclose(e1[0], out1, atol=1e-3)
    no_dropout = SparseLSTM(IN, HID, num_layers=2, dropout=0.0)
    no_dropout.load_state_dict(m.state_dict())
    no_dropout.train()  # no dropout to apply, even in training mode
    for a, b in zip(e1, _outputs(no_dropout(x))):
        torch.testing.assert_close(a, b, **F32)
    # The same model's weights in nn.LSTM, evaluated: the same outputs.
    dense = m.to_dense().eval()
    assert dense.dropout == 0.5
    for a, b in zip(e1, _outputs(dense(x))):
        torch.testing.assert_close(a, b, **F32)


def test_one_layer_dropout_is_not_applied_in_training():
    with pytest.warns(UserWarning):
        m = SparseLSTM(IN, HID, dropout=0.5, density=0.5, generator=_gen(0))
    x = torch.randn(6, 3, IN, generator=_gen(1))
    m.train()
    torch.manual_seed(0)
    train_out = _outputs(m(x))
    m.eval()
    for a, b in zip(train_out, _outputs(m(x))):
        torch.testing.assert_close(a, b, **EXACT)


# ============================================================================ torch.compile
class _TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = SparseLSTM(8, 12, density=0.3, generator=_gen(0))
        self.head = nn.Linear(12, 5)

    def forward(self, tokens):
        out, (h, c) = self.lstm(self.embed(tokens))
        return self.head(out), h, c


def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _TinyModel()
    compiled = torch.compile(model)
    tokens = torch.randint(0, 20, (7, 3), generator=_gen(1))
    eager_out = model(tokens)
    compiled_out = compiled(tokens)
    for a, b in zip(compiled_out, eager_out):
        torch.testing.assert_close(a, b, **F32)
    cot = [torch.randn(t.shape, generator=_gen(2 + i)) for i, t in enumerate(eager_out)]
    params = list(model.parameters())
    assert any(p is model.lstm.weight_hh_l0.values for p in params)
    eager_grads = torch.autograd.grad(eager_out, params, cot)
    compiled_grads = torch.autograd.grad(compiled_out, params, cot)
    for (name, _), got, want in zip(model.named_parameters(), compiled_grads, eager_grads):
        assert want.abs().sum() > 0, name
        torch.testing.assert_close(got, want, **F32, msg=lambda s, name=name: f"{name}: {s}")


# ============================================================================ state dict, save, dense
def _config_inputs(input_size=6, hidden=5, proj=3, layers=2, dirs=2, batch=3, seed=1):
    g = _gen(seed)
    x = torch.randn(4, batch, input_size, generator=g)
    hx = (torch.randn(layers * dirs, batch, proj or hidden, generator=g),
          torch.randn(layers * dirs, batch, hidden, generator=g))
    return x, hx


def test_state_dict_round_trip_replaces_pattern():
    config = dict(num_layers=2, bidirectional=True, proj_size=3)
    src = SparseLSTM(6, 5, **config, density=0.3, generator=_gen(0))
    dst = SparseLSTM(6, 5, **config, density=0.6, generator=_gen(1))  # other patterns, other nnz
    result = dst.load_state_dict(src.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    for name, mask in _masks(src).items():
        assert torch.equal(getattr(dst, name).mask(), mask), name
        assert getattr(dst, name).nnz == getattr(src, name).nnz
    x, hx = _config_inputs()
    for a, b in zip(_outputs(dst(x, hx)), _outputs(src(x, hx))):
        torch.testing.assert_close(a, b, **EXACT)


def test_torch_save_load_module_and_state_dict():
    m = SparseLSTM(6, 5, num_layers=2, bidirectional=True, proj_size=3, batch_first=False, density=0.4,
                   generator=_gen(0))
    x, hx = _config_inputs()
    want = _outputs(m(x, hx))
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert isinstance(loaded, SparseLSTM) and loaded.proj_size == 3 and loaded.bidirectional
    for a, b in zip(_outputs(loaded(x, hx)), want):
        torch.testing.assert_close(a, b, **EXACT)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = SparseLSTM(6, 5, num_layers=2, bidirectional=True, proj_size=3, density=0.9)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for a, b in zip(_outputs(fresh(x, hx)), want):
        torch.testing.assert_close(a, b, **EXACT)


def test_loads_dense_nn_lstm_state_dict_into_current_patterns():
    config = dict(num_layers=2, bidirectional=True, proj_size=3)
    m = SparseLSTM(6, 5, **config, density=0.3, generator=_gen(0))
    masks = _masks(m)
    dense = _dense_lstm(6, 5, **config, seed=8)
    result = m.load_state_dict(dense.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    for name, mask in masks.items():
        weight = getattr(m, name)
        assert torch.equal(weight.mask(), mask), name
        torch.testing.assert_close(weight.values, getattr(dense, name).detach()[_positions(weight)], **EXACT)
    for name in _bias_names(2, True):
        torch.testing.assert_close(getattr(m, name), getattr(dense, name), **EXACT)
    with torch.no_grad():
        for name, mask in masks.items():
            getattr(dense, name).mul_(mask)
    x, hx = _config_inputs()
    for a, b in zip(_outputs(m(x, hx)), _outputs(dense(x, hx))):
        torch.testing.assert_close(a, b, **F32)
    with pytest.raises(RuntimeError, match="weight_hh_l0"):
        SparseLSTM(6, 5).load_state_dict(nn.LSTM(6, 4).state_dict())


def test_from_dense_density_keeps_largest_magnitudes_per_matrix():
    config = dict(num_layers=2, bidirectional=True, proj_size=4, batch_first=True)
    dense = _dense_lstm(8, 6, **config, seed=5)
    m = SparseLSTM.from_dense(dense, density=0.23)
    assert (m.input_size, m.hidden_size, m.num_layers, m.bidirectional, m.proj_size, m.batch_first) == \
        (8, 6, 2, True, 4, True)
    for name in _weight_names(2, True, 4):
        w = getattr(dense, name).detach()
        weight = getattr(m, name)
        assert weight.nnz == round(0.23 * w.numel()), name
        mask = weight.mask()
        assert w.abs()[mask].min() >= w.abs()[~mask].max(), name
        torch.testing.assert_close(weight.to_dense(), w * mask, **EXACT)
    for name in _bias_names(2, True):
        torch.testing.assert_close(getattr(m, name), getattr(dense, name), **EXACT)


def test_from_dense_with_mask_dict():
    dense = _dense_lstm(6, 5, num_layers=2, seed=6)
    m_hh = torch.rand(20, 5, generator=_gen(1)) < 0.3
    m_ih1 = torch.rand(20, 5, generator=_gen(2)) < 0.6
    m = SparseLSTM.from_dense(dense, mask={"weight_hh_l0": m_hh, "weight_ih_l1": m_ih1})
    assert torch.equal(m.weight_hh_l0.mask(), m_hh) and torch.equal(m.weight_ih_l1.mask(), m_ih1)
    torch.testing.assert_close(m.weight_hh_l0.to_dense(), dense.weight_hh_l0 * m_hh, **EXACT)
    assert m.weight_ih_l0.nnz == 20 * 6  # not in the dict, no density: every entry
    assert m.weight_hh_l1.nnz == 20 * 5
    with torch.no_grad():
        dense.weight_hh_l0.mul_(m_hh)
        dense.weight_ih_l1.mul_(m_ih1)
    x = torch.randn(4, 2, 6, generator=_gen(3))
    for a, b in zip(_outputs(m(x)), _outputs(dense(x))):
        torch.testing.assert_close(a, b, **F32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_to_dense_round_trip(dtype, bias):
    m = SparseLSTM(5, 4, num_layers=2, bias=bias, batch_first=True, dropout=0.25, bidirectional=True,
                   proj_size=2, density=0.4, dtype=dtype, generator=_gen(0))
    dense = m.to_dense()
    assert isinstance(dense, nn.LSTM)
    assert (dense.input_size, dense.hidden_size, dense.num_layers, dense.bias, dense.batch_first, dense.dropout,
            dense.bidirectional, dense.proj_size) == (5, 4, 2, bias, True, 0.25, True, 2)
    assert dense.weight_ih_l0.dtype == dtype
    for name in _weight_names(2, True, 2):
        torch.testing.assert_close(getattr(dense, name), getattr(m, name).to_dense(), **EXACT)
    for name in _bias_names(2, True) if bias else []:
        torch.testing.assert_close(getattr(dense, name), getattr(m, name), **EXACT)
    m.eval()
    dense.eval()
    x = torch.randn(3, 4, 5, dtype=dtype, generator=_gen(1))
    for a, b in zip(_outputs(dense(x)), _outputs(m(x))):
        torch.testing.assert_close(a, b, **TOL[dtype])
    back = SparseLSTM.from_dense(dense, mask=_masks(m))
    for name in _weight_names(2, True, 2):
        assert torch.equal(getattr(back, name).col_idx, getattr(m, name).col_idx), name
        assert torch.equal(getattr(back, name).row_ptr, getattr(m, name).row_ptr), name
        torch.testing.assert_close(getattr(back, name).values, getattr(m, name).values, **EXACT)


# ============================================================================ bad input
_H_NAMES = r"(hidden\[0\]|h_0|hx\[0\]|h0)"
_C_NAMES = r"(hidden\[1\]|c_0|hx\[1\]|c0|cx)"


def _all_of(*patterns):
    """A regex that matches when every pattern occurs, in any order."""
    return "(?s)^" + "".join(f"(?=.*{p})" for p in patterns)


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(sum(shape)), dtype=dtype)


# (id, call(module), nn.LSTM config, exception type (nn.LSTM's), message regex)
BAD_INPUTS = [
    ("input-size-too-big", lambda m: m(_x(3, 2, 6)), {}, RuntimeError, _all_of("input_size", "5", "6")),
    ("input-size-too-small", lambda m: m(_x(3, 2, 4)), {}, RuntimeError, _all_of("input_size", "5", "4")),
    ("unbatched-input-size", lambda m: m(_x(3, 6)), {}, RuntimeError, _all_of("input_size", "5", "6")),
    ("packed-input-size", lambda m: m(pack_padded_sequence(_x(3, 2, 6), torch.tensor([3, 2]))), {},
     RuntimeError, _all_of("input_size|in_features", "6")),
    ("h0-batch", lambda m: m(_x(3, 2, 5), (_x(2, 3, 4), _x(2, 2, 4))), {}, RuntimeError,
     _all_of(_H_NAMES, "2, 2, 4", "2, 3, 4")),
    ("h0-layers", lambda m: m(_x(3, 2, 5), (_x(1, 2, 4), _x(2, 2, 4))), {}, RuntimeError,
     _all_of(_H_NAMES, "2, 2, 4", "1, 2, 4")),
    ("c0-hidden", lambda m: m(_x(3, 2, 5), (_x(2, 2, 4), _x(2, 2, 5))), {}, RuntimeError,
     _all_of(_C_NAMES, "2, 2, 4", "2, 2, 5")),
    ("proj-h0-given-hidden-size", lambda m: m(_x(3, 2, 5), (_x(2, 2, 4), _x(2, 2, 4))), dict(proj_size=2),
     RuntimeError, _all_of(_H_NAMES, "2, 2, 2", "2, 2, 4")),
    ("unbatched-h0-hidden", lambda m: m(_x(3, 5), (_x(2, 5), _x(2, 4))), {}, RuntimeError,
     _all_of(_H_NAMES, "4", "5")),
    ("unbatched-input-batched-hx", lambda m: m(_x(3, 5), (_x(2, 1, 4), _x(2, 1, 4))), {}, RuntimeError,
     _all_of(r"(hx|h_0|h0|hidden)", r"(2-?D|3-?D)")),
    ("batched-input-unbatched-hx", lambda m: m(_x(3, 2, 5), (_x(2, 4), _x(2, 4))), {}, RuntimeError,
     _all_of(r"(hx|h_0|h0|hidden)", r"(2-?D|3-?D)")),
    ("input-dtype", lambda m: m(_x(3, 2, 5, dtype=torch.float64)), {}, ValueError,
     _all_of("dtype", "float64", "float32")),
    ("4d-input", lambda m: m(_x(1, 3, 2, 5)), {}, ValueError, _all_of("input", "4-?D")),
    ("1d-input", lambda m: m(_x(5)), {}, ValueError, _all_of("input", "1-?D")),
]


@pytest.mark.parametrize("call,config,error,match", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_like_nn_lstm(call, config, error, match):
    dense = nn.LSTM(5, 4, num_layers=2, **config)
    with pytest.raises(error):  # nn.LSTM's exception type for this mistake
        call(dense)
    sparse = SparseLSTM(5, 4, num_layers=2, density=0.5, **config)
    with pytest.raises(error, match=match):
        call(sparse)


def test_bad_hx_dtype():
    """nn.LSTM fails on a float64 h_0 only inside its kernel (RuntimeError);
    a TypeError naming the dtype (SparseLSTMCell's choice) is accepted too."""
    x = _x(3, 2, 5)
    h, c = _x(2, 2, 4), _x(2, 2, 4)
    with pytest.raises(RuntimeError):
        nn.LSTM(5, 4, num_layers=2)(x, (h.double(), c))
    sparse = SparseLSTM(5, 4, num_layers=2, density=0.5)
    with pytest.raises((RuntimeError, TypeError), match=_all_of(_H_NAMES, "float64")):
        sparse(x, (h.double(), c))
    with pytest.raises((RuntimeError, TypeError), match=_all_of(_C_NAMES, "float64")):
        sparse(x, (h, c.double()))
