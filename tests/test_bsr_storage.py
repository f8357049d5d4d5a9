"""BSRWeight: constructors, cached indices, topology changes with the block
permutation, state_dict, the element-level CSR view."""

import io

import pytest
import torch

import sparse_kernels
from sparse_kernels import BSRWeight, CSRWeight, SparseWeight, bsr, csr, reference


def test_exported_at_top_level_and_shares_the_weight_interface():
    assert sparse_kernels.BSRWeight is BSRWeight
    w = BSRWeight.random(8, 12, 0.5, block_shape=(4, 4), generator=torch.Generator().manual_seed(0))
    assert isinstance(w, SparseWeight) and not isinstance(w, CSRWeight)
    assert w.values.shape == (w.nblocks, 4, 4) and isinstance(w.values, torch.nn.Parameter)
    assert w.block_row_ptr.dtype == w.block_col_idx.dtype == torch.int32
    assert w.grid_shape == (2, 3) and w.slot_shape == (4, 4) and w.slot_size == 16
    assert w.nnz == w.nblocks * 16 and w.density == w.nblocks / 6
    assert "block_shape=(4, 4)" in repr(w)


@pytest.mark.parametrize("init", ["uniform", "erdos_renyi"])
@pytest.mark.parametrize("block_shape,density", [((1, 8), 0.3), ((4, 4), 0.5), ((2, 4), 0.0), ((8, 8), 1.0)])
def test_random_has_exact_block_count_and_computes_like_dense(init, block_shape, density):
    g = torch.Generator().manual_seed(1)
    w = BSRWeight.random(16, 32, density, block_shape=block_shape, init=init, generator=g, dtype=torch.float64)
    grid = (16 // block_shape[0], 32 // block_shape[1])
    assert w.nblocks == round(density * grid[0] * grid[1])
    bsr.validate_bsr(w.block_row_ptr, w.block_col_idx, w.shape, block_shape, w.values)
    assert bool((w.values.detach().abs() <= 1 / 32 ** 0.5).all())
    x = torch.randn(5, 32, generator=g, dtype=torch.float64)
    b = torch.randn(16, generator=g, dtype=torch.float64)
    torch.testing.assert_close(w(x, b), x @ w.to_dense().detach().T + b)
    # The mask covers whole blocks.
    assert int(w.mask().sum()) == w.nnz
    assert torch.equal(w.mask(), w.to_dense().detach() != 0)


def test_random_rejects_shapes_the_blocks_do_not_tile():
    with pytest.raises(ValueError, match=r"not tiled by block_shape \(4, 4\)"):
        BSRWeight.random(10, 8, 0.5, block_shape=(4, 4))
    with pytest.raises(TypeError, match="block_shape"):
        BSRWeight.random(8, 8, 0.5)  # block_shape is required
    with pytest.raises(ValueError, match="density must be in"):
        BSRWeight.random(8, 8, 1.5, block_shape=(2, 2))


def test_from_dense_by_block_norm_mask_and_nonzero_blocks():
    g = torch.Generator().manual_seed(2)
    dense = torch.randn(8, 12, generator=g)
    dense[:4, 4:8] *= 10  # the largest block
    w = BSRWeight.from_dense(dense, block_shape=(4, 4), density=1 / 6)
    assert w.nblocks == 1 and w.block_col_idx.tolist() == [1] and w.block_row_ptr.tolist() == [0, 1, 1]
    torch.testing.assert_close(w.values.detach()[0], dense[:4, 4:8])
    norms = bsr.block_norms(dense, (4, 4))
    w = BSRWeight.from_dense(dense, block_shape=(4, 4), density=0.5)
    kept = torch.zeros(2, 3, dtype=torch.bool)
    kept[csr.row_indices(w.block_row_ptr), w.block_col_idx.long()] = True
    assert float(norms[kept].min()) >= float(norms[~kept].max())
    # A block mask, and an entry mask (a block is kept when any entry is).
    block_mask = torch.tensor([[True, False, True], [False, False, True]])
    w = BSRWeight.from_dense(dense, block_mask, block_shape=(4, 4))
    assert torch.equal(w.mask(), block_mask.repeat_interleave(4, 0).repeat_interleave(4, 1))
    entry_mask = torch.zeros(8, 12, dtype=torch.bool)
    entry_mask[5, 1] = True
    w = BSRWeight.from_dense(dense, entry_mask, block_shape=(4, 4))
    assert w.nblocks == 1 and w.block_row_ptr.tolist() == [0, 0, 1] and w.block_col_idx.tolist() == [0]
    # Neither: the blocks holding a nonzero, and the round trip is exact.
    sparse_dense = dense * bsr.blocks_of(torch.ones(8, 12), (4, 4)).new_tensor(
        [[1, 0, 1], [0, 1, 0]]).repeat_interleave(4, 0).repeat_interleave(4, 1)
    w = BSRWeight.from_dense(sparse_dense, block_shape=(4, 4))
    assert w.nblocks == 3
    torch.testing.assert_close(w.to_dense().detach(), sparse_dense)
    with pytest.raises(ValueError, match="mask must be a tensor of the block grid's shape"):
        BSRWeight.from_dense(dense, torch.ones(3, 3, dtype=torch.bool), block_shape=(4, 4))
    with pytest.raises(ValueError, match="not tiled"):
        BSRWeight.from_dense(dense, block_shape=(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        BSRWeight.from_dense(dense.long(), block_shape=(4, 4))


def test_constructor_validates():
    rp, ci = torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([1, 0], dtype=torch.int32)
    BSRWeight(torch.randn(2, 2, 4), rp, ci, (4, 8))
    with pytest.raises(ValueError, match="values must be 3-D"):
        BSRWeight(torch.randn(16), rp, ci, (4, 8))
    with pytest.raises(ValueError, match="block_col_idx must be in"):
        BSRWeight(torch.randn(2, 2, 4), rp, ci, (4, 4))
    with pytest.raises(ValueError, match="block_row_ptr must have rows"):
        BSRWeight(torch.randn(2, 2, 4), rp, ci, (6, 8))
    with pytest.raises(TypeError, match="values must be a torch.Tensor"):
        BSRWeight([1.0], rp, ci, (4, 8))


def test_transposed_and_element_indices_are_cached_and_rebuilt_on_topology_change():
    g = torch.Generator().manual_seed(3)
    w = BSRWeight.random(12, 16, 0.4, block_shape=(3, 4), generator=g, dtype=torch.float64)
    first, elements = w.transposed_index(), w.element_index()
    assert w.transposed_index().col_ptr is first.col_ptr and w.element_index()[0] is elements[0]
    values, row_ptr, col_idx, csc = w.csr_operands()
    torch.testing.assert_close(reference.csr_to_dense(values, row_ptr, col_idx, w.shape), w.to_dense())
    # On the CPU the element view has no transposed index: the layer loops'
    # backward scatters from the CSR (a CUDA weight's view carries one).
    assert csc is None and w.element_col_ptr is None
    other = BSRWeight.random(12, 16, 0.6, block_shape=(3, 4), generator=g, dtype=torch.float64)
    w.set_pattern(other.block_row_ptr.clone(), other.block_col_idx.clone(), other.values.detach().clone())
    assert w.transposed_index().col_ptr is not first.col_ptr and w.element_index()[0] is not elements[0]
    values, row_ptr, col_idx, _ = w.csr_operands()
    torch.testing.assert_close(reference.csr_to_dense(values, row_ptr, col_idx, w.shape), other.to_dense())
    # An in-place edit of the block index is noticed too.
    second = w.transposed_index()
    w.block_col_idx.copy_(other.block_col_idx)
    assert w.transposed_index().col_ptr is not second.col_ptr


def test_csr_operands_gradient_reaches_the_blocks():
    g = torch.Generator().manual_seed(4)
    w = BSRWeight.random(8, 8, 0.5, block_shape=(2, 4), generator=g, dtype=torch.float64)
    values, row_ptr, col_idx, csc = w.csr_operands()
    x = torch.randn(3, 8, generator=g, dtype=torch.float64)
    gy = torch.randn(3, 8, generator=g, dtype=torch.float64)
    sparse_kernels.ops.sparse_linear(x, values, row_ptr, col_idx, csc=csc).backward(gy)
    want = reference.bsr_linear_value_grad(gy, x, w.block_row_ptr, w.block_col_idx, (2, 4))
    torch.testing.assert_close(w.values.grad, want)


def test_rebuild_returns_block_permutation_and_keeps_the_parameter():
    g = torch.Generator().manual_seed(5)
    w = BSRWeight.random(8, 12, 0.5, block_shape=(4, 4), generator=g, dtype=torch.float64)
    param, before = w.values, w.values.detach().clone()
    old_dense = w.to_dense().detach()
    keep = torch.ones(w.nblocks, dtype=torch.bool)
    keep[0] = False
    free = (~w.mask()[::4, ::4]).nonzero()[0]  # one free block (row, col)
    grow_rp = torch.zeros(3, dtype=torch.int32)
    grow_rp[int(free[0]) + 1:] = 1
    grow_values = torch.randn(1, 4, 4, generator=g, dtype=torch.float64)
    perm = w.rebuild(keep, grow_rp, free[1:].to(torch.int32), grow_values)
    assert w.values is param and perm.dtype == torch.int64 and int((perm < 0).sum()) == 1
    torch.testing.assert_close(w.values.detach()[perm >= 0], before[perm[perm >= 0]])
    torch.testing.assert_close(w.values.detach()[perm < 0], grow_values)
    dense = w.to_dense().detach()
    r, c = int(free[0]) * 4, int(free[1]) * 4
    torch.testing.assert_close(dense[r:r + 4, c:c + 4], grow_values[0])
    bsr.validate_bsr(w.block_row_ptr, w.block_col_idx, w.shape, (4, 4), w.values)
    with pytest.raises(ValueError, match=r"grow_values must have one slot per grown position"):
        w.rebuild(torch.ones(w.nblocks, dtype=torch.bool), torch.zeros(3, dtype=torch.int32),
                  torch.empty(0, dtype=torch.int32), torch.randn(1, 4, 4))
    del old_dense


def test_state_dict_round_trip_with_a_different_block_count_and_mismatches():
    g = torch.Generator().manual_seed(6)
    a = BSRWeight.random(8, 16, 0.5, block_shape=(2, 4), generator=g)
    b = BSRWeight.random(8, 16, 0.2, block_shape=(2, 4), generator=g)
    b.transposed_index()
    b.element_index()
    state = a.state_dict()
    assert set(state) == {"values", "block_row_ptr", "block_col_idx", "_extra_state"}
    b.load_state_dict(state)
    assert b.nblocks == a.nblocks
    x = torch.randn(3, 16, generator=g)
    torch.testing.assert_close(b(x), a(x))  # caches rebuilt for the loaded pattern
    torch.testing.assert_close(b.csr_operands()[0], a.csr_operands()[0])
    with pytest.raises(RuntimeError, match="block_shape"):
        BSRWeight.random(8, 16, 0.5, block_shape=(4, 4)).load_state_dict(state)
    with pytest.raises(RuntimeError, match="shape"):
        BSRWeight.random(8, 12, 0.5, block_shape=(2, 4)).load_state_dict(state)
    bad = dict(state, block_col_idx=state["block_col_idx"].flip(0).contiguous())
    if a.nblocks > 1 and not torch.equal(bad["block_col_idx"], state["block_col_idx"]):
        with pytest.raises(RuntimeError, match="invalid BSR pattern"):
            BSRWeight.random(8, 16, 0.5, block_shape=(2, 4)).load_state_dict(bad)
    with pytest.raises(RuntimeError, match="holds a 'bsr' weight, this one is 'csr'"):
        CSRWeight.random(8, 16, 0.5).load_state_dict(state)
    with pytest.raises(RuntimeError, match="holds a 'csr' weight, this one is block-sparse"):
        a.load_state_dict(CSRWeight.random(8, 16, 0.5).state_dict(), strict=False)


def test_torch_save_weights_only_and_dtype_and_optimizer_step():
    w = BSRWeight.random(8, 8, 0.5, block_shape=(4, 2), generator=torch.Generator().manual_seed(7)).double()
    assert w.values.dtype == torch.float64 and w.block_row_ptr.dtype == torch.int32
    buf = io.BytesIO()
    torch.save(w.state_dict(), buf)
    buf.seek(0)
    fresh = BSRWeight.random(8, 8, 0.25, block_shape=(4, 2), dtype=torch.float64)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh.to_dense(), w.to_dense())
    opt = torch.optim.Adam(w.parameters(), lr=0.1)
    before = w.values.detach().clone()
    w(torch.randn(4, 8, dtype=torch.float64)).square().sum().backward()
    opt.step()
    assert not torch.equal(before, w.values.detach())
    assert w.values.grad.shape == w.values.shape  # block-sized gradients, never dense


def test_to_torch_sparse_is_a_bsr_tensor_of_the_same_matrix():
    w = BSRWeight.random(8, 12, 0.5, block_shape=(4, 4), generator=torch.Generator().manual_seed(8))
    t = w.to_torch_sparse()
    assert t.layout == torch.sparse_bsr
    torch.testing.assert_close(t.to_dense(), w.to_dense().detach())
