"""SparseEmbedding: the predefined frequency pattern (exact nnz, prefix
widths non-increasing with frequency rank), forward and gradient against
nn.Embedding on the masked table, padding_idx, scale_grad_by_freq,
max_norm, from_dense / to_dense, state_dict, and bad arguments and indices."""

import io

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from sparse_kernels import SparseEmbedding
from sparse_kernels.nn.embedding import frequency_widths
from conftest import TOL, device_params

F32, F64 = TOL[torch.float32], TOL[torch.float64]
EXACT = dict(rtol=0, atol=0)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _indices(vocab, shape, seed=1):
    return torch.randint(0, vocab, shape, generator=_gen(seed))


# ============================================================================ the pattern rule
@settings(max_examples=200, deadline=None)
@given(vocab=st.integers(0, 300), dim=st.integers(0, 64), density=st.floats(0.0, 1.0))
def test_frequency_widths_exact_total_prefix_and_monotone(vocab, dim, density):
    widths = frequency_widths(vocab, dim, density)
    assert widths.shape == (vocab,) and widths.dtype == torch.int64
    assert int(widths.sum()) == round(density * vocab * dim)
    if vocab:
        assert int(widths.min()) >= 0 and int(widths.max()) <= dim
        assert bool((widths[1:] <= widths[:-1]).all())  # rarer words never wider
    if vocab and density * dim >= 1:
        assert int(widths.min()) >= 1  # column 0 is kept by every word


def test_frequency_widths_follow_the_geometric_allocation():
    """Column j is kept by V * alpha**j words (up to rounding), alpha solving
    mean_j alpha**j = density."""
    vocab, dim, density = 1000, 20, 0.3
    widths = frequency_widths(vocab, dim, density)
    users = torch.stack([(widths > j).sum() for j in range(dim)]).double()
    alpha = users[1] / users[0]
    assert users[0] == vocab
    torch.testing.assert_close((alpha ** torch.arange(dim)).mean(), torch.tensor(density, dtype=torch.float64),
                               atol=5e-3, rtol=0)
    torch.testing.assert_close(users, vocab * alpha ** torch.arange(dim, dtype=torch.float64), atol=1.5, rtol=0)
    # Below density 1/dim only the most frequent words keep one column.
    low = frequency_widths(100, 10, 0.05)
    assert low.tolist() == [1] * 50 + [0] * 50


# ============================================================================ construction
def test_construction_pattern_init_and_options():
    e = SparseEmbedding(200, 16, padding_idx=3, density=0.25, generator=_gen(0))
    assert e.nnz == round(0.25 * 200 * 16)
    widths = e.dims_per_row()
    assert torch.equal(widths, frequency_widths(200, 16, 0.25))
    mask = e.weight.mask()
    assert torch.equal(mask, torch.arange(16).unsqueeze(0) < widths.unsqueeze(1))  # a prefix per row
    dense = e.weight.to_dense()
    assert torch.count_nonzero(dense[3]) == 0  # padding row starts at zero
    values = e.weight.values.detach()
    assert 0.9 < values.std() < 1.1 and abs(values.mean()) < 0.1  # N(0, 1) as nn.Embedding
    assert "density" in repr(e) and "padding_idx=3" in repr(e)
    # frequency_ranks: word i gets the width of its rank.
    ranks = torch.randperm(200, generator=_gen(1))
    r = SparseEmbedding(200, 16, density=0.25, frequency_ranks=ranks)
    assert torch.equal(r.dims_per_row(), widths[ranks])
    explicit = torch.tensor([4, 0, 2, 4, 1])
    d = SparseEmbedding(5, 4, dims_per_row=explicit)
    assert torch.equal(d.dims_per_row(), explicit) and d.nnz == 11
    # Deterministic from a generator; sparsity = 1 - density; negative padding_idx as nn.Embedding.
    a = SparseEmbedding(30, 8, sparsity=0.6, generator=_gen(5), padding_idx=-1)
    b = SparseEmbedding(30, 8, density=0.4, generator=_gen(5), padding_idx=29)
    assert a.padding_idx == 29 and torch.equal(a.weight.values, b.weight.values)


# ============================================================================ against nn.Embedding
def _dense_twin(e: SparseEmbedding, **options) -> nn.Embedding:
    dense = e.to_dense()
    for name, value in options.items():
        setattr(dense, name, value)
    return dense


def _grad_at_pattern(e: SparseEmbedding, dense: nn.Embedding):
    return dense.weight.grad[e.weight.mask()]  # mask order = CSR order


@device_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 4), (0,), (3, 0), ()], ids=str)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_forward_and_gradient_match_nn_embedding_on_masked_table(shape, padding_idx, dtype, device):
    e = SparseEmbedding(12, 6, padding_idx=padding_idx, density=0.4, dtype=dtype, generator=_gen(0)).to(device)
    with torch.no_grad():  # a nonzero padding row is still returned, as in nn.Embedding
        e.weight.values.add_(0.5)
    dense = e.to_dense()
    idx = _indices(12, shape, seed=2).to(device)
    if padding_idx is not None and idx.numel():
        idx.view(-1)[0] = padding_idx
    out, want = e(idx), dense(idx)
    assert out.shape == (*shape, 6)
    torch.testing.assert_close(out, want, **EXACT)
    cot = torch.randn(out.shape, generator=_gen(3), dtype=dtype).to(device)
    out.backward(cot)
    want.backward(cot)
    torch.testing.assert_close(e.weight.values.grad, _grad_at_pattern(e, dense), **TOL[dtype])
    if padding_idx is not None:
        rp = e.weight.row_ptr
        pad_grad = e.weight.values.grad[int(rp[padding_idx]):int(rp[padding_idx + 1])]
        assert pad_grad.numel() > 0 and torch.count_nonzero(pad_grad) == 0


def test_int32_indices_and_repeated_words():
    e = SparseEmbedding(9, 5, density=0.5, generator=_gen(0))
    idx = torch.tensor([[1, 1, 1], [8, 0, 1]], dtype=torch.int32)
    torch.testing.assert_close(e(idx), e.to_dense()(idx), **EXACT)


def test_scale_grad_by_freq_matches_nn_embedding():
    e = SparseEmbedding(10, 4, density=0.5, scale_grad_by_freq=True, generator=_gen(0))
    dense = e.to_dense()
    assert dense.scale_grad_by_freq
    idx = torch.tensor([[1, 1, 3], [1, 5, 3]])
    out, want = e(idx), dense(idx)
    torch.testing.assert_close(out, want, **EXACT)
    cot = torch.randn(out.shape, generator=_gen(1))
    out.backward(cot)
    want.backward(cot)
    torch.testing.assert_close(e.weight.values.grad, _grad_at_pattern(e, dense), **F32)


@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_max_norm_renormalises_like_nn_embedding(norm_type):
    e = SparseEmbedding(10, 6, max_norm=1.0, norm_type=norm_type, density=0.6, generator=_gen(0))
    dense = e.to_dense()
    assert dense.max_norm == 1.0
    idx = torch.tensor([[0, 4, 4], [9, 2, 0]])
    out, want = e(idx), dense(idx)
    torch.testing.assert_close(out, want, **F32)
    # Both tables were renormalised in place, the rows looked up only.
    torch.testing.assert_close(e.weight.to_dense(), dense.weight.detach(), **F32)
    norms = torch.linalg.vector_norm(e.weight.to_dense(), ord=norm_type, dim=1)
    assert bool((norms[[0, 2, 4, 9]] <= 1.0 + 1e-5).all()) and bool((norms[[1, 3]] > 1.0).all())


def test_gradient_flows_into_a_model():
    e = SparseEmbedding(20, 8, density=0.3, generator=_gen(0))
    head = nn.Linear(8, 3)
    loss = head(e(_indices(20, (4, 5)))).square().sum()
    loss.backward()
    assert e.weight.values.grad is not None and e.weight.values.grad.shape == (e.nnz,)
    assert torch.count_nonzero(e.weight.values.grad) > 0


# ============================================================================ from_dense / to_dense
def test_from_dense_keeps_everything_without_arguments():
    torch.manual_seed(0)
    dense = nn.Embedding(11, 5, padding_idx=0)
    e = SparseEmbedding.from_dense(dense)
    assert e.nnz == 55  # every entry, the zero padding row included, as stored values
    idx = _indices(11, (3, 4))
    torch.testing.assert_close(e(idx), dense(idx), **EXACT)
    assert e.padding_idx == 0 and e.to_dense().padding_idx == 0
    torch.testing.assert_close(e.to_dense().weight, dense.weight, **EXACT)


def test_from_dense_mask_magnitude_and_predefined():
    torch.manual_seed(0)
    dense = nn.Embedding(12, 6)
    mask = torch.rand(12, 6, generator=_gen(1)) < 0.3
    e = SparseEmbedding.from_dense(dense, mask=mask)
    assert torch.equal(e.weight.mask(), mask)
    torch.testing.assert_close(e.to_dense().weight, dense.weight.detach() * mask, **EXACT)
    mag = SparseEmbedding.from_dense(dense, density=0.25)
    assert mag.nnz == 18
    kept = dense.weight.detach().abs()[mag.weight.mask()]
    dropped = dense.weight.detach().abs()[~mag.weight.mask()]
    assert kept.min() >= dropped.max()
    ranks = torch.randperm(12, generator=_gen(2))
    pre = SparseEmbedding.from_dense(dense, density=0.5, frequency_ranks=ranks)
    assert torch.equal(pre.dims_per_row(), frequency_widths(12, 6, 0.5)[ranks])
    torch.testing.assert_close(pre.to_dense().weight, dense.weight.detach() * pre.weight.mask(), **EXACT)
    with pytest.raises(TypeError, match="nn.Embedding"):
        SparseEmbedding.from_dense(nn.Linear(3, 4))


# ============================================================================ state dict
def test_state_dict_round_trip_save_and_dense_checkpoint():
    src = SparseEmbedding(15, 6, density=0.3, generator=_gen(0))
    dst = SparseEmbedding(15, 6, density=0.7, generator=_gen(1))
    result = dst.load_state_dict(src.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(dst.weight.mask(), src.weight.mask())
    idx = _indices(15, (4, 3))
    torch.testing.assert_close(dst(idx), src(idx), **EXACT)
    buf = io.BytesIO()
    torch.save(src, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(idx), src(idx), **EXACT)
    # A dense nn.Embedding checkpoint: values read at the current pattern.
    torch.manual_seed(2)
    dense = nn.Embedding(15, 6)
    dst.load_state_dict(dense.state_dict())
    assert torch.equal(dst.weight.mask(), src.weight.mask())
    torch.testing.assert_close(dst.weight.to_dense(), dense.weight.detach() * src.weight.mask(), **EXACT)


# ============================================================================ bad input
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(padding_idx=10), ValueError, "padding_idx"),
    (dict(padding_idx=-11), ValueError, "padding_idx"),
    (dict(sparse=True), ValueError, "sparse=True"),
    (dict(max_norm=-1.0), ValueError, "max_norm"),
    (dict(density=1.5), ValueError, "density"),
    (dict(density=0.5, dims_per_row=torch.ones(10, dtype=torch.long)), ValueError, "dims_per_row"),
    (dict(dims_per_row=torch.ones(9, dtype=torch.long)), ValueError, "dims_per_row must have shape"),
    (dict(dims_per_row=torch.full((10,), 5)), ValueError, "dims_per_row must be in"),
    (dict(dims_per_row=torch.ones(10)), TypeError, "dims_per_row must be an integer tensor"),
    (dict(frequency_ranks=torch.zeros(10, dtype=torch.long)), ValueError, "permutation"),
    (dict(num_embeddings=-1), ValueError, "num_embeddings"),
    (dict(embedding_dim=2.5), TypeError, "embedding_dim"),
    (dict(_weight=torch.randn(3, 4)), ValueError, "_weight must have shape"),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(num_embeddings=10, embedding_dim=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        SparseEmbedding(**args)


@pytest.mark.parametrize("idx,error,match", [
    (torch.tensor([1, 10]), IndexError, "index 10, outside"),
    (torch.tensor([[-1, 2]]), IndexError, "index -1, outside"),
    (torch.tensor([1.0, 2.0]), TypeError, "integer indices"),
    ([1, 2], TypeError, "must be a torch.Tensor"),
    (torch.tensor([1, 2]).to("meta"), ValueError, "input is on meta"),
])
def test_bad_indices(idx, error, match):
    e = SparseEmbedding(10, 4, density=0.5)
    with pytest.raises(error, match=match):
        e(idx)
