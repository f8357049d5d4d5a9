"""lstm_layer's save_activations: a forward nobody differentiates keeps no
gates and cells (the CPU's fused loop never writes them) and returns the very
same output and states; the Python wrapper and SparseLSTM choose it from grad
mode; a differentiable call without them is refused before it runs."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sparse_kernels import CSRWeight, SparseLSTM, csr, ops
from sparse_kernels.ops.layers import SAVE_ACTIVATIONS_ARG

_ops = torch.ops.sparse_kernels

# (T, B, H, density, batch_sizes): the small edge cases, then the fused loop's
# 16 + 8 lane tiles (batch 20, part of the last tile idle), variable lengths,
# and batch 1 (a plain vector; float32 reads the sliced view).
CASES = [
    (5, 4, 3, 0.5, None),
    (1, 3, 4, 0.3, None),             # sequence length 1
    (3, 0, 2, 0.5, None),             # batch 0
    (4, 2, 3, 0.0, None),             # nnz = 0
    (6, 3, 1, 1.0, [3, 2, 2, 1, 1, 1]),  # one hidden unit, variable lengths
    (7, 20, 37, 0.3, None),
    (7, 20, 37, 0.3, [20, 18, 17, 9, 3, 1, 1]),
    (9, 1, 70, 0.2, None),
]


def _problem(steps, batch, hidden, density, sizes, dtype, proj=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = proj or hidden
    row_ptr, col_idx = csr.random_csr((4 * hidden, state), density, generator=g)
    values = torch.randn(col_idx.numel(), generator=g, dtype=dtype) * 0.5
    gates = torch.randn(steps, batch, 4 * hidden, generator=g, dtype=dtype)
    h0 = torch.randn(batch, state, generator=g, dtype=dtype)
    c0 = torch.randn(batch, hidden, generator=g, dtype=dtype)
    sizes = torch.full((steps,), batch, dtype=torch.int64) if sizes is None else torch.tensor(sizes)
    hr = (None,) * 6
    if proj:
        hr_row_ptr, hr_col_idx = csr.random_csr((proj, hidden), 0.7, generator=g)
        hr_values = torch.randn(hr_col_idx.numel(), generator=g, dtype=dtype)
        hr = (hr_values, hr_row_ptr, hr_col_idx, *csr.csr_transpose(hr_row_ptr, hr_col_idx, hidden))
    csc = csr.csr_transpose(row_ptr, col_idx, state)
    kwargs = {}
    if batch == 1 and dtype == torch.float32 and not proj:
        weight = CSRWeight(values, row_ptr, col_idx, (4 * hidden, hidden))
        kwargs = dict(zip(("hh_sliced_values", "hh_sliced_cols", "hh_slice_ptr"), weight.sliced_view(hidden)))
    args = (gates, h0, c0, values, row_ptr, col_idx, *csc, sizes, False, *hr)
    return args, kwargs


def _with_reverse(args, reverse):
    return (*args[:10], reverse, *args[11:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [0, 2], ids=["no-proj", "proj"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_without_saved_activations_the_same_result_and_nothing_saved(case, proj, reverse, dtype):
    proj = min(proj, case[2] - 1)
    args, kwargs = _problem(*case, dtype=dtype, proj=proj)
    args = _with_reverse(args, reverse)
    saved = _ops.lstm_layer(*args, **kwargs)
    unsaved = _ops.lstm_layer(*args, **kwargs, save_activations=False)
    for name, a, b in zip(("output", "h_n", "c_n"), saved[:3], unsaved[:3]):
        assert torch.equal(a, b), name  # the same loop: the same bits
    steps, batch, hidden = case[0], case[1], case[2]
    assert saved[3].shape == (steps, batch, 4 * hidden) and saved[4].shape == (steps, batch, hidden)
    for name, t in zip(("gates", "cells", "hidden_full"), unsaved[3:]):
        assert t.numel() == 0 and t.dtype == dtype, name


@pytest.mark.parametrize("proj", [0, 2], ids=["no-proj", "proj"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_opcheck_without_saved_activations(case, proj):
    proj = min(proj, case[2] - 1)
    args, kwargs = _problem(*case, dtype=torch.float32, proj=proj, seed=3)
    torch.library.opcheck(_ops.lstm_layer.default, args, {**kwargs, "save_activations": False})


def test_differentiable_call_without_saved_activations_is_refused():
    args, _ = _problem(4, 3, 5, 0.4, None, torch.float64)
    leaves = [t.requires_grad_() for t in args[:4]]
    args = (*leaves, *args[4:])
    with pytest.raises(RuntimeError, match="save_activations=False.*cannot be differentiated"):
        _ops.lstm_layer(*args, save_activations=False)
    with torch.no_grad():
        _ops.lstm_layer(*args, save_activations=False)  # nothing to record: runs
    gates, h0, c0, values, row_ptr, col_idx = args[:6]
    csc = csr.CSCIndex(*args[6:9])
    with pytest.raises(RuntimeError, match="save_activations=False"):
        ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, save_activations=False)
    with pytest.raises(TypeError, match="save_activations must be a bool or None"):
        ops.lstm_layer(gates, h0, c0, values, row_ptr, col_idx, csc, save_activations=1)


class _RecordSave(TorchDispatchMode):
    """The save_activations of each lstm_layer call under it."""

    def __init__(self):
        super().__init__()
        self.saves = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _ops.lstm_layer.default:
            if "save_activations" in kwargs:
                self.saves.append(kwargs["save_activations"])
            else:
                self.saves.append(args[SAVE_ACTIVATIONS_ARG] if len(args) > SAVE_ACTIVATIONS_ARG else True)
        return func(*args, **kwargs)


@pytest.mark.parametrize("batch", [1, 20])
def test_sparse_lstm_saves_activations_only_when_autograd_needs_them(batch):
    torch.manual_seed(0)
    model = SparseLSTM(24, 40, 2, density=0.3)
    x = torch.randn(6, batch, 24)
    record = _RecordSave()
    with record:
        with torch.no_grad():
            out_inference, (h_inference, c_inference) = model(x)
        out_train, (h_train, c_train) = model(x)
    assert record.saves == [False, False, True, True]
    # Under grad the product reads the CSR; without it at batch 1 the sliced view: the same sums up to order.
    torch.testing.assert_close(out_inference, out_train.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_inference, h_train.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_inference, c_train.detach(), rtol=1e-5, atol=1e-6)
    out_train.sum().backward()  # the recorded forward kept what its backward reads
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_frozen_model_keeps_no_activations_under_grad_mode():
    torch.manual_seed(1)
    model = SparseLSTM(8, 12, 1, density=0.5).requires_grad_(False)
    record = _RecordSave()
    with record:
        model(torch.randn(3, 2, 8))  # grad mode on, but nothing requires grad
        model(torch.randn(3, 2, 8, requires_grad=True))  # the input's gradient needs them
    assert record.saves == [False, True]


def test_the_named_position_is_the_schemas():
    assert _ops.lstm_layer.default._schema.arguments[SAVE_ACTIVATIONS_ARG].name == "save_activations"
