"""The ops' call path (ops/_checks.py ``_call_op``): below the autograd layer
when no gradient can flow, through it otherwise; the same results either
way, and nothing that watches the dispatcher (dispatch modes, fake tensors,
torch.compile) loses sight of the op."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from sparse_kernels import BSRWeight, CSRWeight, ops, reference
from sparse_kernels.nn import SparseLinear
from sparse_kernels.ops import _checks


class _CountBelowAutograd:
    """Stands in for the guard _call_op enters (torch._C._AutoDispatchBelowAutograd) and counts its uses."""

    def __init__(self, monkeypatch):
        self.entered = 0
        real = _checks._below_autograd
        counter = self

        class Guard:
            def __enter__(self):
                counter.entered += 1
                self.inner = real()
                return self.inner.__enter__()

            def __exit__(self, *exc):
                return self.inner.__exit__(*exc)

        monkeypatch.setattr(_checks, "_below_autograd", Guard)


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _weight(rows=37, cols=23, density=0.3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = CSRWeight.random(rows, cols, density, generator=g, dtype=dtype)
    return w, torch.randn(5, cols, generator=g, dtype=dtype)


@pytest.mark.parametrize("shape", [(5,), (1,), (0,), (2, 3)])
def test_no_grad_takes_the_path_below_autograd_with_the_same_result(monkeypatch, shape):
    w, x = _weight()
    x = torch.randn(*shape, w.in_features, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(w.out_features, generator=torch.Generator().manual_seed(2))
    expected = x @ w.to_dense().detach().T + bias
    with_grad = w(x, bias)  # values require grad: through the autograd layer
    assert with_grad.requires_grad and with_grad.grad_fn is not None
    count = _CountBelowAutograd(monkeypatch)
    with torch.no_grad():
        out = w(x, bias)
    assert count.entered == 1
    assert not out.requires_grad and out.grad_fn is None
    assert out.shape == (*shape, w.out_features)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out, with_grad.detach())


def test_grad_mode_without_differentiable_inputs_goes_below_autograd(monkeypatch):
    w, x = _weight()
    values = w.values.detach()
    count = _CountBelowAutograd(monkeypatch)
    out = ops.sparse_linear(x, values, w.row_ptr, w.col_idx)
    assert count.entered == 1 and out.grad_fn is None
    torch.testing.assert_close(out, x @ w.to_dense().detach().T)


@pytest.mark.parametrize("needs", ["input", "values", "bias"])
def test_any_differentiable_input_keeps_the_autograd_layer(monkeypatch, needs):
    w, x = _weight(dtype=torch.float64)
    values = w.values.detach().requires_grad_(needs == "values")
    x = x.requires_grad_(needs == "input")
    bias = torch.randn(w.out_features, dtype=torch.float64).requires_grad_(needs == "bias")
    count = _CountBelowAutograd(monkeypatch)
    out = ops.sparse_linear(x, values, w.row_ptr, w.col_idx, bias)
    assert count.entered == 0 and out.grad_fn is not None
    out.sum().backward()
    dense = torch.zeros(w.out_features, w.in_features, dtype=torch.float64)
    dense[w.mask()] = values.detach()
    if needs == "input":
        torch.testing.assert_close(x.grad, torch.ones(5, w.out_features, dtype=torch.float64) @ dense)
    elif needs == "bias":
        torch.testing.assert_close(bias.grad, torch.full((w.out_features,), 5.0, dtype=torch.float64))
    else:
        assert values.grad is not None and values.grad.shape == values.shape


def test_a_dispatch_mode_still_sees_the_op_under_no_grad():
    w, x = _weight()
    with torch.no_grad(), _RecordOps() as mode:
        out = w(x)
    assert any("sparse_kernels.sparse_linear" in name for name in mode.names), mode.names
    torch.testing.assert_close(out, x @ w.to_dense().detach().T)


def test_fake_tensors_reach_the_fake_kernel_under_no_grad():
    w, x = _weight()
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        out = w(torch.empty(4, w.in_features))
    assert out.shape == (4, w.out_features)


def test_bad_input_is_refused_before_either_path(monkeypatch):
    w, x = _weight()
    count = _CountBelowAutograd(monkeypatch)
    with torch.no_grad():
        with pytest.raises(TypeError, match="input"):
            ops.sparse_linear(x.double(), w.values, w.row_ptr, w.col_idx)
        with pytest.raises(ValueError, match="in_features"):
            w(torch.randn(3, w.in_features + 1))
    assert count.entered == 0


def test_torch_compile_calls_the_op_as_it_is(monkeypatch):
    torch._dynamo.reset()
    layer = SparseLinear(23, 37, density=0.3)
    x = torch.randn(4, 23)
    with torch.no_grad():
        expected = layer(x)
        compiled = torch.compile(layer, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), expected)


def test_block_product_and_cell_take_the_same_path(monkeypatch):
    g = torch.Generator().manual_seed(3)
    w = BSRWeight.random(16, 12, 0.5, block_shape=(4, 3), generator=g)
    x = torch.randn(3, 12, generator=g)
    gates = torch.randn(3, 20, generator=g)
    c_prev = torch.randn(3, 5, generator=g)
    with_grad = w(x)
    cell_leaves = (gates.clone().requires_grad_(), c_prev.clone().requires_grad_())
    h_grad, c_grad = ops.lstm_cell(*cell_leaves)
    assert with_grad.grad_fn is not None and h_grad.grad_fn is not None
    count = _CountBelowAutograd(monkeypatch)
    with torch.no_grad():
        out = w(x)
        h, c = ops.lstm_cell(gates, c_prev)
    assert count.entered == 2
    assert out.grad_fn is None and h.grad_fn is None
    assert torch.equal(out, with_grad.detach()) and torch.equal(h, h_grad.detach()) and torch.equal(c, c_grad.detach())
    torch.testing.assert_close(out, x @ w.to_dense().detach().T)
    ref_h, ref_c = reference.lstm_cell(gates.double(), c_prev.double())
    torch.testing.assert_close(h.double(), ref_h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c.double(), ref_c, rtol=1e-5, atol=1e-6)
