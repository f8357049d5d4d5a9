"""block_shape= on every sparse module: each block-sparse module equals its
masked dense torch.nn equivalent (outputs and every gradient), conversions,
state dicts and bad block shapes."""

import io

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from sparse_kernels import bsr
from sparse_kernels import (BSRWeight, SparseEmbedding, SparseGRU, SparseLinear, SparseLSTM, SparseLSTMCell, SparseRHN, SparseRNN,
                            reference)
from conftest import TOL

F32, F64 = TOL[torch.float32], TOL[torch.float64]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _compare_grads(sparse, dense, tol):
    """Every dense parameter's gradient has its block-sparse counterpart: the
    values' grad is the dense weight grad at the stored blocks; biases equal."""
    dense_params = dict(dense.named_parameters())
    assert {n for n, _ in sparse.named_parameters()} == {
        (f"{n}.values" if n.startswith("weight") else n) for n in dense_params}
    for name, p in dense_params.items():
        if name.startswith("weight"):
            weight = getattr(sparse, name)
            assert isinstance(weight, BSRWeight) and weight.values.grad is not None, name
            torch.testing.assert_close(weight.values.grad, weight.values_at(p.grad), **tol,
                                       msg=lambda m, name=name: f"{name}: {m}")
        else:
            torch.testing.assert_close(getattr(sparse, name).grad, p.grad, **tol,
                                       msg=lambda m, name=name: f"{name}: {m}")


# ----------------------------------------------------------------------------- SparseLinear
@pytest.mark.parametrize("block_shape", [(1, 8), (4, 4), (8, 8), (16, 16), (2, 4)])
def test_linear_equals_masked_dense_linear(block_shape):
    layer = SparseLinear(32, 48, density=0.3, block_shape=block_shape, generator=_gen(0), dtype=torch.float64)
    assert isinstance(layer.weight, BSRWeight) and layer.weight.block_shape == block_shape
    grid = (48 // block_shape[0]) * (32 // block_shape[1])
    assert layer.weight.nblocks == round(0.3 * grid)
    dense = layer.to_dense()
    assert torch.equal(dense.weight.detach() != 0, layer.weight.mask())  # random values: no zero inside a block
    x = torch.randn(3, 5, 32, generator=_gen(1), dtype=torch.float64)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yd = layer(xs), dense(xd)
    torch.testing.assert_close(ys, yd, **F64)
    cot = torch.randn(ys.shape, generator=_gen(2), dtype=torch.float64)
    ys.backward(cot)
    yd.backward(cot)
    torch.testing.assert_close(xs.grad, xd.grad, **F64)
    _compare_grads(layer, dense, F64)
    assert f"block_shape={block_shape}" in repr(layer)


def test_linear_from_dense_state_dict_and_dense_checkpoint():
    torch.manual_seed(3)
    dense = nn.Linear(16, 8)
    layer = SparseLinear.from_dense(dense, density=0.5, block_shape=(4, 4))
    assert layer.weight.nblocks == 4
    all_norms = bsr.block_norms(dense.weight.detach(), (4, 4)).flatten().sort(descending=True).values
    torch.testing.assert_close(layer.weight.slot_magnitudes().sort(descending=True).values, all_norms[:4])
    exact = SparseLinear.from_dense(dense, block_shape=(4, 4))  # every block: computes what dense does
    x = torch.randn(5, 16)
    torch.testing.assert_close(exact(x), dense(x))
    # state_dict round trip into a module with another block count.
    other = SparseLinear(16, 8, density=0.25, block_shape=(4, 4))
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), layer(x))
    # A dense nn.Linear checkpoint is read at the current block pattern.
    other.load_state_dict(dense.state_dict())
    torch.testing.assert_close(other.weight.to_dense(), dense.weight.detach() * other.weight.mask())
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = SparseLinear(16, 8, density=0.1, block_shape=(4, 4))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh(x), layer(x))
    with pytest.raises(RuntimeError, match="block_shape"):
        SparseLinear(16, 8, block_shape=(2, 2)).load_state_dict(layer.state_dict())


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(block_shape=(3, 4)), ValueError, r"SparseLinear: the weight of shape \(8, 16\) is not tiled"),
    (dict(block_shape=(4,)), TypeError, "SparseLinear: block_shape must be a pair"),
    (dict(block_shape=(0, 4)), ValueError, "SparseLinear: block_shape must be positive"),
    (dict(block_shape="4x4"), TypeError, "SparseLinear: block_shape must be a pair"),
])
def test_linear_bad_block_shape(kwargs, error, match):
    with pytest.raises(error, match=match):
        SparseLinear(16, 8, **kwargs)


def test_linear_block_sparse_torch_compile_matches_eager():
    layer = SparseLinear(16, 8, density=0.5, block_shape=(4, 4), generator=_gen(4))
    x = torch.randn(6, 16, generator=_gen(5))
    torch.testing.assert_close(torch.compile(layer)(x), layer(x))


# ----------------------------------------------------------------------------- SparseLSTMCell
def test_lstm_cell_equals_masked_dense_cell():
    cell = SparseLSTMCell(8, 4, density=0.5, block_shape=(4, 4), generator=_gen(6), dtype=torch.float64)
    assert isinstance(cell.weight_ih, BSRWeight) and isinstance(cell.weight_hh, BSRWeight)
    dense = cell.to_dense()
    x = torch.randn(3, 8, generator=_gen(7), dtype=torch.float64)
    hx = tuple(torch.randn(3, 4, generator=_gen(s), dtype=torch.float64) for s in (8, 9))
    out_s, out_d = cell(x, hx), dense(x, hx)
    for a, b in zip(out_s, out_d):
        torch.testing.assert_close(a, b, **F64)
    cot = [torch.randn(3, 4, generator=_gen(10), dtype=torch.float64) for _ in range(2)]
    torch.autograd.backward(out_s, cot)
    torch.autograd.backward(out_d, cot)
    _compare_grads(cell, dense, F64)
    back = SparseLSTMCell.from_dense(dense, block_shape=(4, 4))
    torch.testing.assert_close(back(x, hx)[0], out_d[0], **F64)
    with pytest.raises(ValueError, match=r"SparseLSTMCell: weight_hh of shape \(24, 6\) is not tiled"):
        SparseLSTMCell(8, 6, block_shape=(4, 4))


# ----------------------------------------------------------------------------- recurrent layers
RECURRENT = {
    "lstm": (SparseLSTM, {}),
    "lstm-proj": (SparseLSTM, {"proj_size": 8}),
    "gru": (SparseGRU, {}),
    "rnn-relu": (SparseRNN, {"nonlinearity": "relu"}),
}


def _packed_input(steps, batch, size, seed):
    g = _gen(seed)
    x = torch.randn(steps, batch, size, generator=g)
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    lengths[0] = steps
    return pack_padded_sequence(x, lengths[torch.randperm(batch, generator=g)], enforce_sorted=False)


@pytest.mark.parametrize("kind", list(RECURRENT))
@pytest.mark.parametrize("block_shape", [(4, 4), (2, 8)])
def test_recurrent_layers_equal_their_masked_dense_models(kind, block_shape):
    cls, extra = RECURRENT[kind]
    sparse = cls(8, 16, num_layers=2, bidirectional=True, density=0.4, block_shape=block_shape,
                 generator=_gen(11), **extra)
    assert all(isinstance(w, BSRWeight) and w.block_shape == block_shape for _, w in sparse.sparse_weights())
    dense = sparse.to_dense()
    x = _packed_input(6, 4, 8, seed=12)
    res_s, res_d = sparse(x), dense(x)
    out_s = [res_s[0].data, *(res_s[1] if isinstance(res_s[1], tuple) else (res_s[1],))]
    out_d = [res_d[0].data, *(res_d[1] if isinstance(res_d[1], tuple) else (res_d[1],))]
    for a, b in zip(out_s, out_d):
        torch.testing.assert_close(a, b, **F32)
    cot = [torch.randn(o.shape, generator=_gen(13)) for o in out_d]
    torch.autograd.backward(out_s, cot)
    torch.autograd.backward(out_d, cot)
    _compare_grads(sparse, dense, F32)
    assert f"block_shape={block_shape}" in repr(sparse)


def test_lstm_gradcheck_float64_with_blocks():
    lstm = SparseLSTM(4, 4, density=0.5, block_shape=(2, 2), generator=_gen(14), dtype=torch.float64)
    x = torch.randn(3, 2, 4, generator=_gen(15), dtype=torch.float64, requires_grad=True)
    names = [f"{n}.values" for n, _ in lstm.sparse_weights()]
    values = [w.values.detach().clone().requires_grad_() for _, w in lstm.sparse_weights()]

    def fn(x, *values):
        out, (h_n, c_n) = torch.func.functional_call(lstm, dict(zip(names, values)), (x,))
        return out, h_n, c_n
    assert torch.autograd.gradcheck(fn, (x, *values))


def test_recurrent_from_dense_state_dict_and_errors():
    torch.manual_seed(16)
    dense = nn.GRU(8, 8, num_layers=2)
    sparse = SparseGRU.from_dense(dense, density=0.5, block_shape=(4, 4))
    assert all(w.nblocks == round(0.5 * w.grid_shape[0] * w.grid_shape[1]) for _, w in sparse.sparse_weights())
    exact = SparseGRU.from_dense(dense, block_shape=(4, 4))
    x = torch.randn(5, 2, 8)
    for a, b in zip(exact(x), dense(x)):
        torch.testing.assert_close(a, b, **F32)
    other = SparseGRU(8, 8, num_layers=2, density=0.25, block_shape=(4, 4))
    other.load_state_dict(sparse.state_dict())
    for a, b in zip(other(x), sparse(x)):
        torch.testing.assert_close(a, b)
    other.load_state_dict(dense.state_dict())  # dense checkpoint, read at the block patterns
    torch.testing.assert_close(other.weight_hh_l1.to_dense(), dense.weight_hh_l1.detach() * other.weight_hh_l1.mask())
    with pytest.raises(ValueError, match=r"SparseLSTM: weight_ih_l0 of shape \(32, 6\) is not tiled"):
        SparseLSTM(6, 8, block_shape=(4, 4))
    with pytest.raises(ValueError, match=r"SparseLSTM: weight_hh_l0 of shape \(32, 2\) is not tiled"):
        SparseLSTM(8, 8, proj_size=2, block_shape=(4, 4))
    with pytest.raises(TypeError, match="SparseGRU: block_shape must be a pair"):
        SparseGRU(8, 8, block_shape=4)


def test_rhn_with_blocks_equals_the_same_matrices_in_csr():
    """torch.nn has no RHN: the block-sparse SparseRHN must equal a CSR
    SparseRHN holding the same matrices (every entry of every block)."""
    from sparse_kernels import CSRWeight
    rhn = SparseRHN(8, 8, depth=3, num_layers=2, density=0.5, block_shape=(4, 4), generator=_gen(17),
                    dtype=torch.float64)
    assert "block_shape=(4, 4)" in repr(rhn)
    twin = SparseRHN(8, 8, depth=3, num_layers=2, density=0.0, dtype=torch.float64)
    for name, w in rhn.sparse_weights():
        setattr(twin, name, CSRWeight.from_dense(w.to_dense().detach(), w.mask()))
    twin.load_state_dict({k: v for k, v in rhn.state_dict().items() if k.startswith("bias")}, strict=False)
    x = _packed_input(5, 3, 8, seed=18)
    x = PackedSequence(x.data.double(), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    out_b, h_b = rhn(x)
    out_c, h_c = twin(x)
    torch.testing.assert_close(out_b.data, out_c.data, **F64)
    torch.testing.assert_close(h_b, h_c, **F64)
    cot = torch.randn(out_b.data.shape, generator=_gen(19), dtype=torch.float64)
    out_b.data.backward(cot)
    out_c.data.backward(cot)
    for (name, w), (_, w_csr) in zip(rhn.sparse_weights(), twin.sparse_weights()):
        dense_grad = reference.csr_to_dense(w_csr.values.grad, w_csr.row_ptr, w_csr.col_idx, w_csr.shape)
        torch.testing.assert_close(w.values.grad, w.values_at(dense_grad), **F64)
    with pytest.raises(ValueError, match=r"SparseRHN: weight_ih_l0 of shape \(16, 6\) is not tiled"):
        SparseRHN(6, 8, block_shape=(4, 4))


def test_embedding_refuses_block_shape_with_the_reason():
    with pytest.raises(ValueError, match="SparseEmbedding: block_shape is not supported"):
        SparseEmbedding(16, 8, density=0.5, block_shape=(4, 4))
