"""SparseRHN: against a dense per-step oracle (forward and every gradient) over
a grid of configurations, packed sequences against per-sequence runs,
unbatched and batch_first layouts, gradcheck, dropout, torch.compile,
state_dict / torch.save, and bad arguments and inputs."""

import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from sparse_kernels import SparseRHN, reference
from sparse_kernels.storage import CSRWeight
from conftest import TOL, device_params

F32, F64 = TOL[torch.float32], TOL[torch.float64]
EXACT = dict(rtol=0, atol=0)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _dense_oracle(m: SparseRHN, x, h0, batch_sizes=None):
    """The module's computation from dense matrices and the per-step reference
    loop. Returns (output, h_n, leaves) where leaves maps every parameter name
    of ``m`` to the dense-side leaf its gradient is compared with."""
    leaves, layer_input, finals = {}, x, []
    for layer in range(m.num_layers):
        w = getattr(m, f"weight_ih_l{layer}")
        w_dense = w.to_dense().detach().requires_grad_()
        leaves[f"weight_ih_l{layer}.values"] = (w_dense, w)
        values = []
        for j in range(m.depth):
            r = getattr(m, f"weight_hh_l{layer}_d{j}")
            values.append(r.values.detach().clone().requires_grad_())
            leaves[f"weight_hh_l{layer}_d{j}.values"] = (values[-1], None)
        if m.bias:
            biases = [getattr(m, f"bias_l{layer}_d{j}").detach().clone().requires_grad_() for j in range(m.depth)]
            leaves.update({f"bias_l{layer}_d{j}": (b, None) for j, b in enumerate(biases)})
            biases = torch.stack(biases)
        else:
            biases = layer_input.new_zeros(m.depth, 2 * m.hidden_size)
        recurrent = [getattr(m, f"weight_hh_l{layer}_d{j}") for j in range(m.depth)]
        out, h_n = reference.rhn_layer(layer_input @ w_dense.T, h0[layer], values, [r.row_ptr for r in recurrent],
                                       [r.col_idx for r in recurrent], biases, batch_sizes)
        finals.append(h_n)
        layer_input = out
    return layer_input, torch.stack(finals), leaves


def _compare_grads(m: SparseRHN, leaves, tol):
    names = {n for n, _ in m.named_parameters()}
    assert names == set(leaves)
    for name, p in m.named_parameters():
        leaf, weight = leaves[name]
        want = leaf.grad if weight is None else leaf.grad[weight.mask()]  # mask order = CSR order
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, torch.zeros_like(p) if want is None else want, **tol,
                                   msg=lambda s, name=name: f"{name}: {s}")


# ============================================================================ construction
def test_parameters_shapes_and_init():
    m = SparseRHN(5, 6, depth=3, num_layers=2, density=0.25, generator=_gen(0))
    names = [f"weight_{kind}" for k in range(2) for kind in (f"ih_l{k}", *(f"hh_l{k}_d{j}" for j in range(3)))]
    assert m.sparse_weight_names() == names
    for name in names:
        w = getattr(m, name)
        cols = 5 if name == "weight_ih_l0" else 6
        assert isinstance(w, CSRWeight) and tuple(w.shape) == (12, cols), name
        assert w.nnz == round(0.25 * 12 * cols), name
    bound = 1 / math.sqrt(6)
    for k in range(2):
        for j in range(3):
            b = getattr(m, f"bias_l{k}_d{j}")
            assert isinstance(b, nn.Parameter) and b.shape == (12,)
            assert b[:6].abs().max() <= bound
            assert torch.equal(b[6:], torch.full((6,), -2.0))  # transform gate starts mostly closed
    values = torch.cat([getattr(m, n).values.detach() for n in names])
    assert values.abs().max() <= bound and values.max() > 0.8 * bound and values.min() < -0.8 * bound
    assert m.nnz == sum(getattr(m, n).nnz for n in names)
    assert "depth=3" in repr(m) and "nnz" in repr(m)
    # Deterministic from a generator; sparsity = 1 - density; transform_bias.
    a = SparseRHN(4, 3, depth=2, sparsity=0.5, generator=_gen(7), transform_bias=-1.0)
    b = SparseRHN(4, 3, depth=2, density=0.5, generator=_gen(7), transform_bias=-1.0)
    for (name, wa), (_, wb) in zip(a.sparse_weights(), b.sparse_weights()):
        assert torch.equal(wa.col_idx, wb.col_idx) and torch.equal(wa.values, wb.values), name
    assert torch.equal(a.bias_l0_d1[3:], torch.full((3,), -1.0))
    no_bias = SparseRHN(4, 3, depth=2, bias=False)
    assert {n for n, _ in no_bias.named_parameters()} == {f"{n}.values" for n in no_bias.sparse_weight_names()}


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(depth=0), ValueError, "depth"),
    (dict(depth=1.5), TypeError, "depth"),
    (dict(hidden_size=0), ValueError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(dropout=1.5), ValueError, "dropout"),
    (dict(bias=1), TypeError, "bias"),
    (dict(density=0.5, sparsity=0.5), ValueError, "density|sparsity"),
    (dict(init="normal"), ValueError, "init"),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(input_size=5, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        SparseRHN(**args)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="dropout"):
        SparseRHN(5, 4, dropout=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SparseRHN(5, 4, num_layers=2, dropout=0.3)


# ============================================================================ against the oracle
CASES = [  # (depth, num_layers, bias, T, B, density)
    (1, 1, True, 5, 3, 0.5),
    (2, 1, True, 4, 2, 0.3),
    (3, 2, True, 4, 3, 0.4),
    (2, 2, False, 3, 2, 0.5),
    (2, 1, True, 1, 3, 0.5),    # sequence length 1
    (3, 1, True, 4, 1, 0.5),    # batch 1
    (2, 2, True, 3, 0, 0.5),    # batch 0
    (2, 2, True, 4, 2, 0.0),    # nnz = 0 everywhere
    (1, 1, True, 3, 2, 1.0),    # dense
    (2, 2, True, 5, 3, 0.1),    # 90% sparse: equals the dense masked model
]


@device_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_dense_oracle_forward_and_gradients(case, dtype, device):
    depth, layers, bias, steps, batch, density = case
    m = SparseRHN(4, 5, depth=depth, num_layers=layers, bias=bias, density=density, dtype=dtype,
                  generator=_gen(0)).to(device)
    g = _gen(1)
    x = torch.randn(steps, batch, 4, generator=g, dtype=dtype).to(device)
    h0 = torch.randn(layers, batch, 5, generator=g, dtype=dtype).to(device)
    out, h_n = m(x, h0)
    want_out, want_h, leaves = _dense_oracle(m, x, h0)
    torch.testing.assert_close(out, want_out, **TOL[dtype])
    torch.testing.assert_close(h_n, want_h, **TOL[dtype])
    cot = (torch.randn(out.shape, generator=g, dtype=dtype).to(device),
           torch.randn(h_n.shape, generator=g, dtype=dtype).to(device))
    torch.autograd.backward((out, h_n), cot)
    torch.autograd.backward((want_out, want_h), cot)
    _compare_grads(m, leaves, TOL[dtype])


def test_default_h0_is_zeros_and_batch_first():
    m = SparseRHN(4, 5, depth=2, num_layers=2, density=0.4, generator=_gen(0))
    x = torch.randn(6, 3, 4, generator=_gen(1))
    out, h_n = m(x)
    out0, h0_n = m(x, torch.zeros(2, 3, 5))
    torch.testing.assert_close(out, out0, **EXACT)
    torch.testing.assert_close(h_n, h0_n, **EXACT)
    m.batch_first = True
    out_bf, h_bf = m(x.transpose(0, 1))
    torch.testing.assert_close(out_bf, out.transpose(0, 1), **EXACT)
    torch.testing.assert_close(h_bf, h_n, **EXACT)


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_equals_batch_of_one(batch_first):
    m = SparseRHN(4, 5, depth=2, num_layers=2, batch_first=batch_first, density=0.4, generator=_gen(0))
    x = torch.randn(6, 4, generator=_gen(1))
    h0 = torch.randn(2, 5, generator=_gen(2))
    out, h_n = m(x, h0)
    assert out.shape == (6, 5) and h_n.shape == (2, 5)
    batched = x.unsqueeze(0 if batch_first else 1)
    out_b, h_b = m(batched, h0.unsqueeze(1))
    torch.testing.assert_close(out, out_b.squeeze(0 if batch_first else 1), **EXACT)
    torch.testing.assert_close(h_n, h_b.squeeze(1), **EXACT)


@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_equals_separate_runs(enforce_sorted):
    """Each sequence of a PackedSequence (unsorted lengths, given h0) gives
    exactly what it gives run alone: outputs, h_n in the caller's order, and
    the gradients of both."""
    m = SparseRHN(4, 5, depth=3, num_layers=2, density=0.4, dtype=torch.float64, generator=_gen(0))
    lengths = [6, 6, 4, 1] if enforce_sorted else [4, 6, 1, 3]
    g = _gen(1)
    x = torch.randn(6, 4, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    out, h_n = m(packed, h0)
    assert isinstance(out, PackedSequence)
    padded, out_lengths = pad_packed_sequence(out)
    assert out_lengths.tolist() == lengths
    params = [p for _, p in m.named_parameters()]
    cot_out, cot_h = torch.randn(padded.shape, generator=g, dtype=torch.float64), torch.randn(h_n.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((padded, h_n), params, (cot_out, cot_h))
    want_grads = [torch.zeros_like(p) for p in params]
    for row, k in enumerate(lengths):
        out_r, h_r = m(x[:k, row:row + 1], h0[:, row:row + 1])
        torch.testing.assert_close(padded[:k, row:row + 1], out_r, **F64)
        torch.testing.assert_close(h_n[:, row:row + 1], h_r, **F64)
        for acc, gr in zip(want_grads, torch.autograd.grad((out_r, h_r), params,
                                                           (cot_out[:k, row:row + 1], cot_h[:, row:row + 1]))):
            acc += gr
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, **F64)


def test_packed_matches_dense_oracle_with_batch_sizes():
    m = SparseRHN(3, 4, depth=2, num_layers=1, density=0.5, dtype=torch.float64, generator=_gen(0))
    x = torch.randn(5, 3, 3, generator=_gen(1), dtype=torch.float64)
    lengths = torch.tensor([5, 3, 2])
    out, h_n = m(pack_padded_sequence(x, lengths), torch.zeros(1, 3, 4, dtype=torch.float64))
    padded, _ = pad_packed_sequence(out)
    sizes = torch.tensor([3, 3, 2, 1, 1])
    x_masked = x * (torch.arange(5).unsqueeze(1) < lengths).unsqueeze(2)
    want_out, want_h, _ = _dense_oracle(m, x_masked, torch.zeros(1, 3, 4, dtype=torch.float64), sizes)
    torch.testing.assert_close(padded, want_out, **F64)
    torch.testing.assert_close(h_n, want_h, **F64)


def test_gradcheck_float64():
    m = SparseRHN(3, 2, depth=2, num_layers=2, density=0.5, dtype=torch.float64, generator=_gen(0))
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(3, 2, 3, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 2, generator=_gen(2), dtype=torch.float64, requires_grad=True)

    def fn(x, h0, *params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x, h0))

    params = tuple(p.detach().clone().requires_grad_() for _, p in m.named_parameters())
    assert torch.autograd.gradcheck(fn, (x, h0, *params))


def test_dropout_between_layers_in_training_only():
    m = SparseRHN(4, 5, depth=2, num_layers=2, dropout=0.5, density=0.5, generator=_gen(0))
    x = torch.randn(4, 3, 4, generator=_gen(1))
    m.eval()
    ref, _ = SparseRHN.forward(m, x)
    m_no_dropout = SparseRHN(4, 5, depth=2, num_layers=2, density=0.5, generator=_gen(0))
    torch.testing.assert_close(ref, m_no_dropout(x)[0], **EXACT)  # same weights, eval: no dropout
    m.train()
    torch.manual_seed(0)
    trained, _ = m(x)
    assert not torch.allclose(trained, ref)


# ============================================================================ torch.compile
class _TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.rhn = SparseRHN(8, 6, depth=2, density=0.4, generator=_gen(0))
        self.head = nn.Linear(6, 5)

    def forward(self, tokens):
        out, h = self.rhn(self.embed(tokens))
        return self.head(out), h


def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _TinyModel()
    compiled = torch.compile(model)
    tokens = torch.randint(0, 20, (5, 3), generator=_gen(1))
    eager_out, compiled_out = model(tokens), compiled(tokens)
    for a, b in zip(compiled_out, eager_out):
        torch.testing.assert_close(a, b, **F32)
    cot = [torch.randn(t.shape, generator=_gen(2 + i)) for i, t in enumerate(eager_out)]
    params = list(model.parameters())
    eager_grads = torch.autograd.grad(eager_out, params, cot)
    compiled_grads = torch.autograd.grad(compiled_out, params, cot)
    for (name, _), got, want in zip(model.named_parameters(), compiled_grads, eager_grads):
        assert want.abs().sum() > 0, name
        torch.testing.assert_close(got, want, **F32, msg=lambda s, name=name: f"{name}: {s}")


# ============================================================================ state dict, save
def test_state_dict_round_trip_and_torch_save():
    src = SparseRHN(4, 5, depth=2, num_layers=2, density=0.3, generator=_gen(0))
    dst = SparseRHN(4, 5, depth=2, num_layers=2, density=0.6, generator=_gen(1))  # other patterns and nnz
    result = dst.load_state_dict(src.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    for (name, ws), (_, wd) in zip(src.sparse_weights(), dst.sparse_weights()):
        assert torch.equal(ws.mask(), wd.mask()), name
    x, h0 = torch.randn(4, 3, 4, generator=_gen(2)), torch.randn(2, 3, 5, generator=_gen(3))
    want = src(x, h0)
    for a, b in zip(dst(x, h0), want):
        torch.testing.assert_close(a, b, **EXACT)
    buf = io.BytesIO()
    torch.save(src, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert isinstance(loaded, SparseRHN) and loaded.depth == 2
    for a, b in zip(loaded(x, h0), want):
        torch.testing.assert_close(a, b, **EXACT)
    with pytest.raises(RuntimeError, match="Missing key"):
        SparseRHN(4, 5, depth=3, num_layers=2).load_state_dict(src.state_dict())


# ============================================================================ bad input
@pytest.mark.parametrize("call,error,match", [
    (lambda m: m(torch.randn(3, 2, 5)), RuntimeError, "input.size\\(-1\\) must be equal to input_size"),
    (lambda m: m(torch.randn(3, 2, 4, dtype=torch.float64)), ValueError, "dtype"),
    (lambda m: m(torch.randn(3, 2, 2, 4)), ValueError, "Expected input to be 2D or 3D"),
    (lambda m: m([[1.0]]), TypeError, "input must be a Tensor"),
    (lambda m: m(torch.randn(3, 2, 4), torch.randn(1, 2, 5)), RuntimeError, "Expected hidden size"),
    (lambda m: m(torch.randn(3, 2, 4), torch.randn(2, 5)), RuntimeError, "should also be 3-D"),
    (lambda m: m(torch.randn(3, 4), torch.randn(2, 1, 5)), RuntimeError, "should also be 2-D"),
    (lambda m: m(torch.randn(3, 2, 4), torch.randn(2, 2, 5, dtype=torch.float64)), RuntimeError, "dtype"),
])
def test_bad_input(call, error, match):
    m = SparseRHN(4, 5, depth=2, num_layers=2, density=0.5)
    with pytest.raises(error, match=match):
        call(m)
