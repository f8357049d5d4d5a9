"""init_scale="fan_in": a sparse weight's stored values scaled per row by
sqrt(in_features / stored entries), so that its outputs start with the
variance a dense layer's outputs have (the pre-activation statistics are
what the tests check, on fresh random inputs)."""


import pytest
import torch
from torch import nn

from sparse_kernels import BSRWeight, CSRWeight, SparseLinear, SparseLSTM, SparseLSTMCell, SparseRHN


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _output_variance(weight_fn, in_features, batch=4096, seed=1):
    x = torch.randn(batch, in_features, generator=_gen(seed), dtype=torch.float64)
    with torch.no_grad():
        return float(weight_fn(x).var())


@pytest.mark.parametrize("init", ["uniform", "erdos_renyi"])
@pytest.mark.parametrize("density", [0.33, 0.1])
def test_sparse_linear_fan_in_matches_dense_variance(init, density):
    n_in, n_out = 400, 300
    dense = nn.Linear(n_in, n_out, bias=False, dtype=torch.float64)
    fan_in = SparseLinear(n_in, n_out, bias=False, density=density, init=init, init_scale="fan_in",
                          generator=_gen(0), dtype=torch.float64)
    plain = SparseLinear(n_in, n_out, bias=False, density=density, init=init, generator=_gen(0),
                         dtype=torch.float64)
    v_dense = _output_variance(dense, n_in)
    v_fan_in = _output_variance(fan_in, n_in)
    v_plain = _output_variance(plain, n_in)
    assert v_fan_in == pytest.approx(v_dense, rel=0.1)
    # The dense bound on a fraction `density` of the entries: variance times density.
    assert v_plain == pytest.approx(density * v_dense, rel=0.1)


def test_lstm_gate_preactivations_match_dense_lstm():
    """Both products of a SparseLSTM layer (W_ih x and W_hh h) at 25% density:
    with fan_in their variance is nn.LSTM's, without it a quarter of it."""
    e, h = 96, 128
    dense = nn.LSTM(e, h, dtype=torch.float64)
    sparse = SparseLSTM(e, h, density=0.25, init_scale="fan_in", generator=_gen(2), dtype=torch.float64)
    plain = SparseLSTM(e, h, density=0.25, generator=_gen(2), dtype=torch.float64)
    for name, width in (("weight_ih_l0", e), ("weight_hh_l0", h)):
        v_dense = _output_variance(lambda x: x @ getattr(dense, name).T, width)
        v_sparse = _output_variance(lambda x: getattr(sparse, name)(x), width)
        v_plain = _output_variance(lambda x: getattr(plain, name)(x), width)
        assert v_sparse == pytest.approx(v_dense, rel=0.1), name
        assert v_plain == pytest.approx(0.25 * v_dense, rel=0.1), name


def test_fan_in_factors_are_per_row_and_one_for_full_rows():
    w = CSRWeight.random(50, 40, 0.2, init="erdos_renyi", generator=_gen(3))
    lengths = w.row_ptr.long().diff()
    expected = (40 / lengths.clamp(min=1).double()).sqrt().float().repeat_interleave(lengths)
    torch.testing.assert_close(w.fan_in_factors(), expected)
    full = CSRWeight.random(6, 5, 1.0, generator=_gen(4))
    torch.testing.assert_close(full.fan_in_factors(), torch.ones(30))
    # At density 1 both scales give the same values.
    a = CSRWeight.random(6, 5, 1.0, generator=_gen(5), init_scale="fan_in")
    b = CSRWeight.random(6, 5, 1.0, generator=_gen(5))
    torch.testing.assert_close(a.values, b.values)


def test_fan_in_values_bounded_by_row_nnz():
    # uniform(+-1/sqrt(in)) * sqrt(in / k) = uniform(+-1/sqrt(k)) for k entries in the row.
    w = CSRWeight.random(64, 100, 0.09, generator=_gen(6), init_scale="fan_in")
    k = w.row_ptr.long().diff()
    bound = (1.0 / k.double().sqrt()).float().repeat_interleave(k)
    values = w.values.detach()
    assert bool((values.abs() <= bound + 1e-7).all())
    assert float((values.abs() / bound).max()) > 0.95


def test_bsr_fan_in_counts_entries_of_block_rows():
    n_in, n_out = 64, 96
    w = BSRWeight.random(n_out, n_in, 0.25, block_shape=(4, 8), generator=_gen(7), init_scale="fan_in",
                         dtype=torch.float64)
    blocks_per_row = w.block_row_ptr.long().diff()
    expected = (n_in / (blocks_per_row * 8).clamp(min=1).double()).sqrt().repeat_interleave(blocks_per_row)
    torch.testing.assert_close(w.fan_in_factors(), expected)
    dense = nn.Linear(n_in, n_out, bias=False, dtype=torch.float64)
    assert _output_variance(lambda x: w(x), n_in) == pytest.approx(_output_variance(dense, n_in), rel=0.15)


def test_cell_rhn_and_reset_parameters_keep_the_scale():
    cell = SparseLSTMCell(80, 60, density=0.2, init_scale="fan_in", generator=_gen(8), dtype=torch.float64)
    before = _output_variance(lambda x: cell.weight_hh(x), 60)
    cell.reset_parameters(generator=_gen(9))
    after = _output_variance(lambda x: cell.weight_hh(x), 60)
    dense = nn.LSTMCell(80, 60, dtype=torch.float64)
    v_dense = _output_variance(lambda x: x @ dense.weight_hh.T, 60)
    assert before == pytest.approx(v_dense, rel=0.15) and after == pytest.approx(v_dense, rel=0.15)
    linear = SparseLinear(80, 70, density=0.1, init_scale="fan_in", generator=_gen(10))
    linear.reset_parameters(generator=_gen(11))
    k = linear.weight.row_ptr.long().diff()
    assert float((linear.weight.values.detach().abs() * k.float().sqrt().repeat_interleave(k)).max()) > 0.9
    rhn = SparseRHN(32, 48, depth=2, density=0.3, init_scale="fan_in", generator=_gen(12))
    assert bool((rhn.weight_hh_l0_d1.fan_in_factors() > 1).all())


@pytest.mark.parametrize("make", [
    lambda: SparseLinear(4, 4, init_scale="kaiming"),
    lambda: SparseLSTM(4, 4, init_scale="kaiming"),
    lambda: CSRWeight.random(4, 4, 0.5, init_scale="kaiming"),
    lambda: BSRWeight.random(4, 4, 0.5, block_shape=(2, 2), init_scale="kaiming"),
])
def test_unknown_init_scale_is_a_clear_error(make):
    with pytest.raises(ValueError, match="init_scale must be one of"):
        make()
