"""SparseGRU and SparseRNN against nn.GRU and nn.RNN: parity of outputs and
every gradient over a grid of configurations, masked-dense equality at 90%
sparsity, gradcheck, conversions, and bad input like torch.nn."""

import io

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from sparse_kernels import SparseGRU, SparseRNN
from conftest import TOL
from test_nn_lstm import _compare_param_grads, _gen

F32, F64 = TOL[torch.float32], TOL[torch.float64]

KINDS = {  # name -> (dense factory, sparse class, extra constructor kwargs)
    "gru": (nn.GRU, SparseGRU, {}),
    "rnn_tanh": (nn.RNN, SparseRNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, SparseRNN, {"nonlinearity": "relu"}),
}

CONFIGS = [  # (name, constructor kwargs, input kind, T, B)
    ("base", {}, "batched", 5, 3),
    ("2-layers", {"num_layers": 2}, "batched", 4, 2),
    ("3-layers-batch-first", {"num_layers": 3, "batch_first": True}, "batched", 3, 2),
    ("bidir", {"bidirectional": True}, "batched", 4, 3),
    ("bidir-packed-unsorted", {"bidirectional": True, "num_layers": 2}, "packed", 5, 4),
    ("packed", {}, "packed", 6, 3),
    ("unbatched-bidir", {"bidirectional": True}, "unbatched", 4, 1),
    ("no-bias", {"bias": False}, "batched", 3, 2),
    ("T1-B1", {}, "batched", 1, 1),
    ("dropout-eval", {"num_layers": 2, "dropout": 0.5}, "batched", 3, 2),
]


def _make_input(kind, steps, batch, size, batch_first, seed):
    g = _gen(seed)
    if kind == "unbatched":
        return torch.randn(steps, size, generator=g)
    x = torch.randn(batch, steps, size, generator=g) if batch_first else torch.randn(steps, batch, size, generator=g)
    if kind == "packed":
        lengths = torch.randint(1, steps + 1, (batch,), generator=g)
        lengths[0] = steps
        lengths = lengths[torch.randperm(batch, generator=g)]  # unsorted
        return pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    return x


def _out(result):
    out, h = result
    return (out.data if isinstance(out, PackedSequence) else out), h


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name,kwargs,input_kind,steps,batch", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_parity_with_torch_nn(kind, name, kwargs, input_kind, steps, batch):
    dense_cls, sparse_cls, extra = KINDS[kind]
    torch.manual_seed(0)
    dense = dense_cls(4, 5, **extra, **kwargs).eval()
    sparse = sparse_cls.from_dense(dense).eval()
    x = _make_input(input_kind, steps, batch, 4, kwargs.get("batch_first", False), seed=1)
    dirs = 2 if kwargs.get("bidirectional") else 1
    layers = kwargs.get("num_layers", 1) * dirs
    h0_shape = (layers, 5) if input_kind == "unbatched" else (layers, batch, 5)
    h0 = torch.randn(h0_shape, generator=_gen(2))
    xs = x if isinstance(x, PackedSequence) else x.clone().requires_grad_()
    xd = x if isinstance(x, PackedSequence) else x.clone().requires_grad_()
    hs, hd = h0.clone().requires_grad_(), h0.clone().requires_grad_()
    res_s, res_d = _out(sparse(xs, hs)), _out(dense(xd, hd))
    for a, b in zip(res_s, res_d):
        torch.testing.assert_close(a, b, **F32)
    cot = [torch.randn(o.shape, generator=_gen(3)) for o in res_d]
    torch.autograd.backward(res_s, cot)
    torch.autograd.backward(res_d, cot)
    torch.testing.assert_close(hs.grad, hd.grad, **F32)
    if not isinstance(x, PackedSequence):
        torch.testing.assert_close(xs.grad, xd.grad, **F32)
    _compare_param_grads(sparse, dense, F32)


@pytest.mark.parametrize("kind", list(KINDS))
def test_sparse_equals_its_masked_dense_model(kind):
    _, sparse_cls, extra = KINDS[kind]
    sparse = sparse_cls(6, 8, num_layers=2, bidirectional=True, **extra, density=0.1, generator=_gen(4))
    assert all(w.nnz == round(0.1 * w.shape.numel()) for _, w in sparse.sparse_weights())
    dense = sparse.to_dense()
    x = _make_input("packed", 7, 4, 6, False, seed=5)
    res_s, res_d = _out(sparse(x)), _out(dense(x))
    for a, b in zip(res_s, res_d):
        torch.testing.assert_close(a, b, **F32)
    cot = [torch.randn(o.shape, generator=_gen(6)) for o in res_d]
    torch.autograd.backward(res_s, cot)
    torch.autograd.backward(res_d, cot)
    _compare_param_grads(sparse, dense, F32)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_float64(kind):
    _, sparse_cls, extra = KINDS[kind]
    sparse = sparse_cls(3, 3, num_layers=2, bidirectional=True, **extra, density=0.5, dtype=torch.float64,
                        generator=_gen(7))
    names = [n for n, _ in sparse.named_parameters()]
    x = torch.randn(3, 2, 3, dtype=torch.float64, generator=_gen(8), requires_grad=True)
    h0 = torch.randn(4, 2, 3, dtype=torch.float64, generator=_gen(9), requires_grad=True)
    params = [p.detach().clone().requires_grad_() for _, p in sparse.named_parameters()]

    def fn(x, h0, *ps):
        out, h = torch.func.functional_call(sparse, dict(zip(names, ps)), (x, h0))
        return out, h

    assert torch.autograd.gradcheck(fn, (x, h0, *params))


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_save_and_dense_checkpoint(kind):
    dense_cls, sparse_cls, extra = KINDS[kind]
    a = sparse_cls(4, 5, num_layers=2, **extra, density=0.3, generator=_gen(10))
    b = sparse_cls(4, 5, num_layers=2, **extra, density=0.6, generator=_gen(11))
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 2, 4, generator=_gen(12))
    torch.testing.assert_close(b(x)[0], a(x)[0])
    buf = io.BytesIO()
    torch.save(a, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(x)[0], a(x)[0])
    # A dense torch.nn checkpoint loads at the sparse pattern.
    torch.manual_seed(13)
    dense = dense_cls(4, 5, num_layers=2, **extra)
    a.load_state_dict(dense.state_dict())
    masked = {n: (p * getattr(a, n).mask() if n.startswith("weight") else p) for n, p in dense.state_dict().items()}
    dense.load_state_dict(masked)
    torch.testing.assert_close(a(x)[0], dense(x)[0], **F32)


def test_from_dense_by_magnitude_and_to_dense_round_trip():
    torch.manual_seed(14)
    dense = nn.GRU(4, 6, num_layers=2)
    sparse = SparseGRU.from_dense(dense, density=0.25)
    for name, weight in sparse.sparse_weights():
        w = getattr(dense, name).detach()
        k = round(0.25 * w.numel())
        assert weight.nnz == k
        assert weight.values.detach().abs().min() >= w.abs().flatten().topk(k).values.min()
    back = sparse.to_dense()
    assert isinstance(back, nn.GRU)
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(back(x)[0], sparse(x)[0], **F32)
    assert isinstance(SparseRNN.from_dense(nn.RNN(3, 4, nonlinearity="relu")).to_dense(), nn.RNN)
    assert SparseRNN.from_dense(nn.RNN(3, 4, nonlinearity="relu")).nonlinearity == "relu"
    with pytest.raises(TypeError, match="module must be an GRU"):
        SparseGRU.from_dense(nn.LSTM(3, 4))


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_arguments_and_input_like_torch_nn(kind):
    dense_cls, sparse_cls, extra = KINDS[kind]
    for bad in ({"dropout": 1.5}, {"num_layers": 0}):
        with pytest.raises(ValueError):
            dense_cls(4, 5, **extra, **bad)
        with pytest.raises(ValueError):
            sparse_cls(4, 5, **extra, **bad)
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        SparseRNN(4, 5, nonlinearity="sigmoid")
    m, d = sparse_cls(4, 5, **extra), dense_cls(4, 5, **extra)
    cases = [
        ((torch.randn(3, 2, 7),), RuntimeError, "input.size\\(-1\\) must be equal to input_size"),
        ((torch.randn(3, 2, 4), torch.randn(1, 3, 5)), RuntimeError, "Expected hidden size"),
        ((torch.randn(3, 2, 4), torch.randn(3, 5)), RuntimeError, "should also be 3-D"),
        ((torch.randn(3, 2, 4, 1),), ValueError, "Expected input to be 2D or 3D"),
        ((torch.randn(3, 2, 4, dtype=torch.float64),), ValueError, "does not match weight dtype"),
    ]
    for args, error, match in cases:
        with pytest.raises(error):
            d(*args)
        with pytest.raises(error, match=match):
            m(*args)


def test_dropout_only_in_training_between_layers():
    m = SparseGRU(4, 5, num_layers=2, dropout=0.5, generator=_gen(15))
    x = torch.randn(3, 2, 4, generator=_gen(16))
    torch.manual_seed(0)
    a = m(x)[0]
    torch.manual_seed(1)
    b = m(x)[0]
    assert not torch.allclose(a, b)
    m.eval()
    torch.testing.assert_close(m(x)[0], m.to_dense().eval()(x)[0], **F32)
