"""CSRWeight and the CSR format helpers: constructors, validation, the cached
transposed index, state_dict, devices and dtypes."""

import io

import pytest
import torch
from hypothesis import given, settings, strategies as st

import sparse_kernels
from sparse_kernels import CSRWeight, csr, reference


def _mask_of(w):
    return w.mask()


# ----------------------------------------------------------------------------- constructors
def test_from_dense_keeps_nonzeros_and_round_trips():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(9, 7, generator=g) * (torch.rand(9, 7, generator=g) < 0.3)
    w = CSRWeight.from_dense(dense)
    assert w.nnz == int((dense != 0).sum())
    torch.testing.assert_close(w.to_dense().detach(), dense)
    torch.testing.assert_close(w.to_torch_sparse().to_dense(), dense)


def test_from_dense_with_mask_stores_masked_positions_even_if_zero():
    dense = torch.randn(4, 5)
    dense[0, 1] = 0.0
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[0, 1] = mask[2, 3] = mask[3, 0] = True
    w = CSRWeight.from_dense(dense, mask)
    assert w.nnz == 3
    assert torch.equal(w.mask(), mask)
    torch.testing.assert_close(w.to_dense().detach(), dense * mask)


def test_from_torch_sparse_csr_and_coo_with_unsorted_columns():
    # A COO tensor with entries out of order; torch CSR with unsorted columns.
    idx = torch.tensor([[2, 0, 0, 1], [1, 3, 0, 2]])
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    coo = torch.sparse_coo_tensor(idx, vals, (3, 4))
    w = CSRWeight.from_torch_sparse(coo)
    torch.testing.assert_close(w.to_dense().detach(), coo.to_dense())
    unsorted = torch.sparse_csr_tensor(torch.tensor([0, 2, 3, 4]), torch.tensor([3, 0, 2, 1]), vals, (3, 4))
    w2 = CSRWeight.from_torch_sparse(unsorted)
    torch.testing.assert_close(w2.to_dense().detach(), unsorted.to_dense())
    assert w2.col_idx.tolist() == [0, 3, 2, 1]
    with pytest.raises(TypeError, match="sparse must be a torch.sparse_csr"):
        CSRWeight.from_torch_sparse(torch.randn(3, 3))


@pytest.mark.parametrize("init", ["uniform", "erdos_renyi"])
@pytest.mark.parametrize("shape,density", [((50, 40), 0.1), ((8, 3), 0.5), ((6, 6), 0.0), ((5, 4), 1.0),
                                           ((300, 2000), 0.01), ((3, 5000), 0.3)])
def test_random_topology_has_exact_nnz(init, shape, density):
    g = torch.Generator().manual_seed(1)
    w = CSRWeight.random(*shape, density, init=init, generator=g)
    assert w.nnz == round(density * shape[0] * shape[1])
    csr.validate_csr(w.row_ptr, w.col_idx, shape, w.values)  # sorted, no duplicates, in range
    lengths = w.row_ptr.diff()
    if init == "uniform" and w.nnz:
        assert int(lengths.max() - lengths.min()) <= 1


def test_random_is_reproducible_and_uniform_over_columns():
    a = CSRWeight.random(200, 50, 0.1, generator=torch.Generator().manual_seed(5))
    b = CSRWeight.random(200, 50, 0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.col_idx, b.col_idx) and torch.equal(a.values, b.values)
    # Every column is hit about nnz / cols = 20 times; a biased sampler (e.g.
    # one that favours small column indices) fails this.
    counts = torch.bincount(a.col_idx.long(), minlength=50).float()
    assert counts.min() > 5 and counts.max() < 40
    assert abs(counts[:25].sum() - counts[25:].sum()) < 0.2 * counts.sum()


def test_random_sparse_path_is_uniform():
    """The oversampling path (k much smaller than the row) is unbiased too."""
    w = CSRWeight.random(400, 10000, 0.002, generator=torch.Generator().manual_seed(2))
    assert w.nnz == 8000
    low_half = int((w.col_idx < 5000).sum())
    assert abs(low_half - 4000) < 300


def test_erdos_renyi_density():
    assert csr.erdos_renyi_density(1500, 1500, 10) == pytest.approx(10 * 3000 / 1500**2)
    assert csr.erdos_renyi_density(2, 2, 10) == 1.0
    with pytest.raises(ValueError, match="epsilon must be positive"):
        csr.erdos_renyi_density(3, 3, 0)


# ----------------------------------------------------------------------------- validation
def _valid():
    return torch.tensor([0, 2, 2, 4], dtype=torch.int32), torch.tensor([0, 3, 1, 2], dtype=torch.int32)


@pytest.mark.parametrize("row_ptr,col_idx,error,match", [
    ([0, 2, 2, 4], [3, 0, 1, 2], ValueError, "strictly increasing"),      # unsorted
    ([0, 2, 2, 4], [1, 1, 1, 2], ValueError, "strictly increasing"),      # duplicate
    ([0, 2, 2, 4], [0, 4, 1, 2], ValueError, r"col_idx must be in \[0, 4\)"),
    ([0, 2, 2, 4], [0, -1, 1, 2], ValueError, r"col_idx must be in"),
    ([0, 2, 4], [0, 3, 1, 2], ValueError, "row_ptr must have rows \\+ 1 = 4"),
    ([0, 2, 2, 5], [0, 3, 1, 2], ValueError, "row_ptr must end at nnz"),
    ([1, 2, 2, 4], [0, 3, 1, 2], ValueError, "row_ptr must start at 0"),
    ([0, 3, 2, 4], [0, 1, 3, 2], ValueError, "non-decreasing"),
])
def test_validate_csr_rejects_malformed(row_ptr, col_idx, error, match):
    with pytest.raises(error, match=match):
        csr.validate_csr(torch.tensor(row_ptr, dtype=torch.int32), torch.tensor(col_idx, dtype=torch.int32), (3, 4))
    with pytest.raises(error, match=match):
        CSRWeight(torch.randn(len(col_idx)), torch.tensor(row_ptr, dtype=torch.int32),
                  torch.tensor(col_idx, dtype=torch.int32), (3, 4))


def test_validate_csr_rejects_wrong_types():
    row_ptr, col_idx = _valid()
    with pytest.raises(TypeError, match="row_ptr must have dtype torch.int32"):
        csr.validate_csr(row_ptr.long(), col_idx, (3, 4))
    with pytest.raises(TypeError, match="col_idx must be a torch.Tensor"):
        csr.validate_csr(row_ptr, [0, 3, 1, 2], (3, 4))
    with pytest.raises(ValueError, match="values must be 1-D with nnz = 4"):
        csr.validate_csr(row_ptr, col_idx, (3, 4), torch.randn(5))
    with pytest.raises(TypeError, match="values must be a floating-point"):
        csr.validate_csr(row_ptr, col_idx, (3, 4), torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="density must be in"):
        CSRWeight.random(3, 3, 1.5)


# ----------------------------------------------------------------------------- transposed index cache
def test_transposed_index_is_cached_and_rebuilt_on_topology_change():
    w = CSRWeight.random(30, 20, 0.2, generator=torch.Generator().manual_seed(3))
    first = w.transposed_index()
    assert w.transposed_index().col_ptr is first.col_ptr  # cached, not rebuilt
    torch.testing.assert_close(w.values[first.csr2csc.long()],
                               w.to_torch_sparse().to_sparse_csc().values())
    # A new pattern through set_pattern ...
    other = CSRWeight.random(30, 20, 0.2, generator=torch.Generator().manual_seed(4))
    w.set_pattern(other.row_ptr.clone(), other.col_idx.clone(), other.values.detach().clone())
    second = w.transposed_index()
    assert second.col_ptr is not first.col_ptr
    assert torch.equal(second.row_idx, other.transposed_index().row_idx)
    # ... or an in-place edit of the index buffers is noticed too.
    w.col_idx.copy_(other.col_idx)
    assert w.transposed_index().col_ptr is not second.col_ptr


def test_cpu_training_keeps_no_transposed_index():
    """On the CPU the backward scatters from the CSR: a training step of a
    SparseLSTM (input projection, recurrent and projection matrices) and of
    a SparseLinear builds no transposed index, so a stored nonzero costs its
    value, its gradient, the optimizer's state and one int32 column index."""
    torch.manual_seed(0)
    lstm = sparse_kernels.SparseLSTM(6, 8, num_layers=2, proj_size=5, density=0.5)
    lin = sparse_kernels.SparseLinear(5, 3, density=0.5)
    opt = torch.optim.SGD(list(lstm.parameters()) + list(lin.parameters()), lr=0.1, momentum=0.9)
    x = torch.randn(4, 3, 6, requires_grad=True)
    out, _ = lstm(x)
    lin(out).sum().backward()
    opt.step()
    weights = [m for m in (*lstm.modules(), *lin.modules()) if isinstance(m, CSRWeight)]
    assert len(weights) == 2 * 3 + 1
    for w in weights:
        assert w.col_ptr is None and w.row_idx is None and w.csr2csc is None, w
        assert w.values.grad is not None and w.values.grad.abs().sum() > 0
    # What a nonzero costs in training: value + gradient + momentum + column index.
    nnz = sum(w.nnz for w in weights)
    stored = sum(t.numel() * t.element_size()
                 for w in weights for t in (w.values, w.values.grad, opt.state[w.values]["momentum_buffer"],
                                            w.col_idx, w.row_ptr))
    rows = sum(w.row_ptr.numel() for w in weights)
    assert stored == 16 * nnz + 4 * rows


def test_forward_uses_current_topology_after_set_pattern():
    g = torch.Generator().manual_seed(9)
    w = CSRWeight.random(12, 10, 0.3, generator=g, dtype=torch.float64)
    param = w.values
    x = torch.randn(4, 10, dtype=torch.float64)
    w(x).sum().backward()  # builds the cache
    new = CSRWeight.random(12, 10, 0.5, generator=g, dtype=torch.float64)
    w.set_pattern(new.row_ptr, new.col_idx, new.values.detach())
    assert w.values is param and w.nnz == new.nnz  # optimizers keep their Parameter
    torch.testing.assert_close(w(x), x @ new.to_dense().detach().T)


# ----------------------------------------------------------------------------- state, devices, dtypes
def test_state_dict_round_trip_including_different_nnz():
    g = torch.Generator().manual_seed(6)
    a = CSRWeight.random(15, 11, 0.3, generator=g)
    b = CSRWeight.random(15, 11, 0.1, generator=g)
    b.transposed_index()
    b.load_state_dict(a.state_dict())
    assert b.nnz == a.nnz
    torch.testing.assert_close(b.to_dense(), a.to_dense())
    x = torch.randn(3, 11)
    torch.testing.assert_close(b(x), a(x))  # cache rebuilt for the loaded pattern
    with pytest.raises(RuntimeError, match="shape"):
        CSRWeight.random(15, 12, 0.3).load_state_dict(a.state_dict())


def test_load_state_dict_rejects_malformed_pattern():
    a = CSRWeight.random(5, 4, 0.5, generator=torch.Generator().manual_seed(1))
    state = a.state_dict()
    state["col_idx"] = state["col_idx"].flip(0).contiguous()
    with pytest.raises(RuntimeError, match="invalid CSR pattern"):
        CSRWeight.random(5, 4, 0.5).load_state_dict(state)


def test_torch_save_load_module_and_weights_only_state_dict():
    w = CSRWeight.random(8, 6, 0.4, generator=torch.Generator().manual_seed(2))
    buf = io.BytesIO()
    torch.save(w.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = CSRWeight.random(8, 6, 0.4)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.to_dense(), w.to_dense())
    buf = io.BytesIO()
    torch.save(w, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    torch.testing.assert_close(whole.to_dense(), w.to_dense())


def test_to_dtype_and_optimizer_step():
    w = CSRWeight.random(10, 8, 0.3, generator=torch.Generator().manual_seed(3)).double()
    assert w.values.dtype == torch.float64 and w.row_ptr.dtype == torch.int32
    opt = torch.optim.Adam(w.parameters(), lr=0.1)
    before = w.values.detach().clone()
    w(torch.randn(4, 8, dtype=torch.float64)).square().sum().backward()
    opt.step()
    assert not torch.equal(before, w.values.detach())
    assert w.values.grad.shape == (w.nnz,)  # gradients are nnz-sized, never dense


def test_build_info_reports_compiled_paths():
    info = sparse_kernels.build_info()
    assert set(info) >= {"torch_version", "cpu_paths", "cuda", "cuda_version", "cuda_archs"}
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]


def test_simd_clones_run_on_a_cpu_with_avx2():
    """The dispatcher must pick the AVX2+FMA clones wherever the CPU has them.
    build_info's cpu_path_active comes from a dispatched probe (a fused
    multiply-add rounds once), so this fails if the clones' resolver passes
    over this CPU, as the "arch=haswell" clones did on every CPU but Haswell."""
    info = sparse_kernels.build_info()
    if info["cpu_paths"] == ["generic"]:
        pytest.skip("built without SIMD clones (GCC on x86-64 only)")
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip(f"this CPU has no AVX2 ({torch.backends.cpu.get_cpu_capability()})")
    assert info["cpu_path_active"] == info["cpu_paths"][0]  # "avx2+fma" (GCC >= 12) or "avx2"



def test_build_info_names_the_tile_kernels_that_run():
    """cpu_tile_kernels says which kernels the tiled products and fused LSTM
    loops run here; with the AVX-512 switch off (a fresh process: it is read
    once) a CPU with AVX-512 reports the AVX2 kernels."""
    # The tile kernels do not depend on the SIMD clones (cpu_paths): a clang
    # build has none of those and still runs the AVX2 / AVX-512 tiles.
    from csr_helpers import cpu_flags, run_fresh
    info = sparse_kernels.build_info()
    flags = cpu_flags()
    if not {"avx2", "fma"} <= flags:
        assert info["cpu_tile_kernels"] == "portable"
        return
    want = "avx512" if {"avx512f", "avx512vl"} <= flags else "avx2+fma"
    assert info["cpu_tile_kernels"] == want
    run_fresh("import sparse_kernels\n"
              "assert sparse_kernels.build_info()['cpu_tile_kernels'] == 'avx2+fma'\n"
              "print('ok')\n", SPARSE_KERNELS_CPU_AVX512="0")


# ----------------------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 40), cols=st.integers(1, 40), density=st.floats(0, 1),
       init=st.sampled_from(["uniform", "erdos_renyi"]), seed=st.integers(0, 2**31 - 1),
       n=st.integers(0, 5))
def test_random_weights_are_valid_and_compute_like_dense(rows, cols, density, init, seed, n):
    g = torch.Generator().manual_seed(seed)
    w = CSRWeight.random(rows, cols, density, init=init, generator=g, dtype=torch.float64)
    csr.validate_csr(w.row_ptr, w.col_idx, (rows, cols), w.values)
    assert w.nnz == round(density * rows * cols)
    col_ptr, row_idx, csr2csc = w.transposed_index()
    assert int(col_ptr[-1]) == w.nnz and sorted(csr2csc.tolist()) == list(range(w.nnz))
    x = torch.randn(n, cols, generator=g, dtype=torch.float64)
    torch.testing.assert_close(w(x), reference.sparse_linear(x, w.values, w.row_ptr, w.col_idx, (rows, cols)))


@pytest.mark.parametrize("rows,cols,n_blocks,groups", [(8, 6, 2, 1), (12, 5, 3, 4), (16, 4, 4, 4), (9, 7, 7, 1),
                                                       (4, 9, 1, 1)])
def test_block_diagonal_csr_matches_its_dense_mask(rows, cols, n_blocks, groups):
    from sparse_kernels.dst import block_diagonal_mask
    row_ptr, col_idx = csr.block_diagonal_csr(rows, cols, n_blocks, groups)
    csr.validate_csr(row_ptr, col_idx, (rows, cols))
    w = CSRWeight(torch.randn(col_idx.numel()), row_ptr, col_idx, (rows, cols))
    assert torch.equal(w.mask(), block_diagonal_mask(rows, cols, n_blocks, groups))


def test_sparse_lstm_block_diagonal_init_is_per_gate():
    from sparse_kernels import SparseLSTM
    from sparse_kernels.dst import block_diagonal_mask
    m = SparseLSTM(8, 12, num_layers=2, init="block_diagonal", density=0.25, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.weight_hh_l0.mask(), block_diagonal_mask(48, 12, 4, 4))
    assert torch.equal(m.weight_ih_l0.mask(), block_diagonal_mask(48, 8, 4, 4))
    x = torch.randn(5, 3, 8)
    torch.testing.assert_close(m(x)[0], m.to_dense()(x)[0])
    with pytest.raises(ValueError, match="init must be one of"):
        SparseLSTM(8, 12, init="diagonal")
