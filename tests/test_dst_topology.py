"""The topology ops of dynamic sparse training (magnitude prune, SET prune,
random regrow, gradient regrow, rebuild) against their references; exact
counts, no duplicates, sorted rows; opcheck; hypothesis properties over
shapes and densities including 0 and 1; bad input."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from sparse_kernels import csr, ops, reference
from sparse_kernels.csr import validate_csr

_ops = torch.ops.sparse_kernels


def _pattern(rows, cols, density, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    row_ptr, col_idx = csr.random_csr((rows, cols), density, init="erdos_renyi", generator=g)
    values = torch.randn(col_idx.numel(), generator=g, dtype=dtype)
    return row_ptr, col_idx, values


def _positions(row_ptr, col_idx):
    return set(zip(csr.row_indices(row_ptr).tolist(), col_idx.tolist()))


# ----------------------------------------------------------------------------- prune
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", ["tensor", "row", "gate"])
def test_magnitude_prune_matches_reference(dtype, groups):
    row_ptr, col_idx, values = _pattern(16, 12, 0.4, seed=1, dtype=dtype)
    values[3] = values[7] = 0.25  # a tie, broken by slot
    group_ptr = {"tensor": torch.tensor([0, values.numel()]), "row": row_ptr.long(),
                 "gate": row_ptr.long()[::4]}[groups]
    sizes = group_ptr.diff()
    drop = sizes // 3
    keep = ops.magnitude_prune(values, drop, group_ptr)
    assert torch.equal(keep, reference.magnitude_prune(values, drop, group_ptr))
    # Exactly the asked count per group, and nothing kept is smaller than what went.
    dropped_per_group = torch.stack([(~keep[a:b]).sum() for a, b in zip(group_ptr[:-1], group_ptr[1:])])
    assert torch.equal(dropped_per_group, drop)


def test_signed_magnitude_prune_matches_reference():
    row_ptr, col_idx, values = _pattern(10, 20, 0.5, seed=2)
    for fraction in (0.0, 0.3, 0.5, 1.0):
        for group_ptr in (torch.tensor([0, values.numel()]), row_ptr.long()):
            keep = ops.signed_magnitude_prune(values, fraction, group_ptr)
            assert torch.equal(keep, reference.signed_magnitude_prune(values, fraction, group_ptr))
    keep = ops.signed_magnitude_prune(values, 0.3)
    pos, neg = values >= 0, values < 0
    # The dropped positives are the smallest positives, the dropped negatives the largest negatives.
    assert values[pos & ~keep].max() <= values[pos & keep].min()
    assert values[neg & ~keep].min() >= values[neg & keep].max()


# ----------------------------------------------------------------------------- random regrow
def _check_regrow(row_ptr, col_idx, occupied, shape, grow_row_ptr, grow_col_idx, counts, group_rows):
    validate_csr(grow_row_ptr, grow_col_idx, shape)  # sorted, in range, no duplicates
    free = reference.free_positions(row_ptr, col_idx, occupied, shape)
    grow_rows = csr.row_indices(grow_row_ptr)
    assert bool(free[grow_rows, grow_col_idx.long()].all()), "regrew an occupied position"
    per_group = grow_row_ptr.long()[group_rows].diff()
    assert torch.equal(per_group, torch.as_tensor(counts, dtype=torch.int64))


@pytest.mark.parametrize("repick", [False, True])
def test_random_regrow_exact_and_fresh(repick):
    row_ptr, col_idx, values = _pattern(24, 30, 0.3, seed=3)
    keep = ops.magnitude_prune(values, [values.numel() // 2])
    occupied = keep if repick else torch.ones_like(keep)
    k = int((~keep).sum())
    grow_rp, grow_ci = ops.random_regrow(row_ptr, col_idx, occupied, 30, [k], seed=11)
    _check_regrow(row_ptr, col_idx, occupied, (24, 30), grow_rp, grow_ci, [k], torch.tensor([0, 24]))
    again = ops.random_regrow(row_ptr, col_idx, occupied, 30, [k], seed=11)
    assert torch.equal(again[1], grow_ci) and torch.equal(again[0], grow_rp)  # deterministic in the seed
    other = ops.random_regrow(row_ptr, col_idx, occupied, 30, [k], seed=12)
    assert not torch.equal(other[1], grow_ci) or not torch.equal(other[0], grow_rp)


def test_random_regrow_fills_a_nearly_full_matrix_exactly():
    row_ptr, col_idx, _ = _pattern(50, 40, 0.999, seed=4)
    occupied = torch.ones(col_idx.numel(), dtype=torch.bool)
    free = 50 * 40 - col_idx.numel()
    grow_rp, grow_ci = ops.random_regrow(row_ptr, col_idx, occupied, 40, [free], seed=5)
    _check_regrow(row_ptr, col_idx, occupied, (50, 40), grow_rp, grow_ci, [free], torch.tensor([0, 50]))
    assert _positions(row_ptr, col_idx) | _positions(grow_rp, grow_ci) == {(r, c) for r in range(50) for c in range(40)}


def test_random_regrow_is_uniform():
    """Every free position of a small matrix is picked about equally often."""
    row_ptr, col_idx, _ = _pattern(4, 5, 0.4, seed=6)
    occupied = torch.ones(col_idx.numel(), dtype=torch.bool)
    free = reference.free_positions(row_ptr, col_idx, occupied, (4, 5))
    hits = torch.zeros(4, 5)
    trials, k = 3000, 3
    for seed in range(trials):
        grow_rp, grow_ci = ops.random_regrow(row_ptr, col_idx, occupied, 5, [k], seed=seed)
        hits[csr.row_indices(grow_rp), grow_ci.long()] += 1
    assert bool((hits[~free] == 0).all())
    expected = trials * k / int(free.sum())
    # Binomial standard deviation ~ sqrt(expected): 5 sigma keeps this test stable.
    assert float((hits[free] - expected).abs().max()) < 5 * expected ** 0.5


def test_random_regrow_per_row_groups():
    row_ptr, col_idx, values = _pattern(8, 16, 0.5, seed=7)
    keep = ops.magnitude_prune(values, row_ptr.long().diff() // 2, row_ptr.long())
    per_row = torch.tensor([int((~keep[a:b]).sum()) for a, b in zip(row_ptr[:-1].tolist(), row_ptr[1:].tolist())])
    group_rows = torch.arange(9)
    grow_rp, grow_ci = ops.random_regrow(row_ptr, col_idx, keep, 16, per_row, seed=1, group_rows=group_rows)
    _check_regrow(row_ptr, col_idx, keep, (8, 16), grow_rp, grow_ci, per_row, group_rows)


# ----------------------------------------------------------------------------- rebuild
def test_rebuild_matches_reference_and_carries_values():
    row_ptr, col_idx, values = _pattern(12, 9, 0.4, seed=8)
    keep = ops.magnitude_prune(values, [values.numel() // 3])
    k = int((~keep).sum())
    grow = ops.random_regrow(row_ptr, col_idx, torch.ones_like(keep), 9, [k], seed=2)
    new_rp, new_ci, perm = ops.rebuild_csr(row_ptr, col_idx, keep, *grow)
    ref = reference.rebuild_csr(row_ptr, col_idx, keep, *grow, (12, 9))
    for got, want in zip((new_rp, new_ci, perm), ref):
        assert torch.equal(got, want.to(got.dtype))
    assert new_ci.numel() == col_idx.numel()  # same nnz
    new_values = torch.where(perm >= 0, values[perm.clamp(min=0)], 0.0)
    dense_old = reference.csr_to_dense(values, row_ptr, col_idx, (12, 9))
    dense_new = reference.csr_to_dense(new_values, new_rp, new_ci, (12, 9))
    kept_mask = reference.csr_to_dense(keep.double(), row_ptr, col_idx, (12, 9)).bool()
    assert torch.equal(dense_new[kept_mask], dense_old[kept_mask])
    assert int((perm < 0).sum()) == k


def test_rebuild_rejects_a_grown_position_that_is_kept():
    row_ptr, col_idx, values = _pattern(3, 4, 0.5, seed=9)
    keep = torch.ones(col_idx.numel(), dtype=torch.bool)
    grow_rp = torch.tensor([0, 1, 1, 1], dtype=torch.int32)
    first_col = col_idx[: int(row_ptr[1])][:1]
    assert first_col.numel() == 1  # uniform init at density 0.5: every row holds 2 of 4 columns
    with pytest.raises(ValueError, match="already stored"):
        ops.rebuild_csr(row_ptr, col_idx, keep, grow_rp, first_col.clone())
    # Straight to the kernel, its own check still refuses.
    with pytest.raises(RuntimeError, match="already stored"):
        torch.ops.sparse_kernels.rebuild_csr(row_ptr, col_idx, keep, grow_rp, first_col.clone())


# ----------------------------------------------------------------------------- gradient regrow
@pytest.mark.parametrize("block_rows", [1, 3, 7, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_regrow_picks_the_largest_free_gradients(block_rows, dtype):
    row_ptr, col_idx, values = _pattern(14, 11, 0.3, seed=10, dtype=dtype)
    g = torch.Generator().manual_seed(10)
    grad_out = torch.randn(6, 14, generator=g, dtype=dtype)
    x = torch.randn(6, 11, generator=g, dtype=dtype)
    occupied = ops.magnitude_prune(values, [5])
    k = 9
    grow_rp, grow_ci = ops.gradient_regrow(grad_out, x, row_ptr, col_idx, occupied, k, block_rows)
    _check_regrow(row_ptr, col_idx, occupied, (14, 11), grow_rp, grow_ci, [k], torch.tensor([0, 14]))
    scores = reference.gradient_regrow_scores(grad_out, x, row_ptr, col_idx, occupied, (14, 11))
    chosen = torch.zeros(14, 11, dtype=torch.bool)
    chosen[csr.row_indices(grow_rp), grow_ci.long()] = True
    # Random normal data: no ties, so the top-k set is unique.
    assert torch.equal(chosen.flatten(), torch.zeros(154, dtype=torch.bool).index_fill(0, scores.flatten().topk(k).indices, True))


# ----------------------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 12), cols=st.integers(0, 12), density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
       prune_fraction=st.floats(0.0, 1.0), repick=st.booleans(), seed=st.integers(0, 2**62))
def test_prune_regrow_rebuild_properties(rows, cols, density, prune_fraction, repick, seed):
    row_ptr, col_idx, values = _pattern(rows, cols, density, seed=seed % 1000)
    nnz = col_idx.numel()
    drop = int(prune_fraction * nnz)
    keep = ops.magnitude_prune(values, [drop])
    occupied = keep if repick else torch.ones_like(keep)
    free = rows * cols - int(occupied.sum())
    grow_count = min(drop, free)  # without re-picking, a full matrix has nowhere to grow
    grow = ops.random_regrow(row_ptr, col_idx, occupied, cols, [grow_count], seed=seed)
    new_rp, new_ci, perm = ops.rebuild_csr(row_ptr, col_idx, keep, *grow)
    new_values = torch.where(perm >= 0, values[perm.clamp(min=0)], 0.0)
    validate_csr(new_rp, new_ci, (rows, cols), new_values)
    assert new_ci.numel() == nnz - drop + grow_count
    assert int((perm >= 0).sum()) == nnz - drop
    assert torch.equal(perm[perm >= 0], keep.nonzero().flatten())  # old slots in order, each once
    if not repick:
        pruned = _positions(row_ptr, col_idx) - _positions(new_rp, new_ci)
        assert not pruned & _positions(*grow)


# ----------------------------------------------------------------------------- opcheck
def _opcheck_cases():
    for rows, cols, density in [(6, 5, 0.4), (4, 3, 0.0), (3, 3, 1.0), (0, 4, 0.5), (5, 1, 0.6)]:
        for dtype in (torch.float32, torch.float64):
            row_ptr, col_idx, values = _pattern(rows, cols, density, seed=rows + cols, dtype=dtype)
            nnz = values.numel()
            slot_groups = torch.tensor([0, nnz // 2, nnz])
            yield "magnitude_prune", (values, slot_groups, slot_groups.diff() // 2)
            yield "signed_magnitude_prune", (values, slot_groups, 0.4)
            keep = ops.magnitude_prune(values, [nnz // 2])
            row_groups = torch.tensor([0, rows])
            free = rows * cols - int(keep.sum())
            yield "random_regrow", (row_ptr, col_idx, keep, cols, row_groups, torch.tensor([min(2, free)]), 7)
            grow = ops.random_regrow(row_ptr, col_idx, keep, cols, [min(2, free)], seed=7)
            yield "rebuild_csr", (row_ptr, col_idx, keep, *grow)
            g = torch.Generator().manual_seed(1)
            yield "gradient_regrow", (torch.randn(3, rows, generator=g, dtype=dtype),
                                      torch.randn(3, cols, generator=g, dtype=dtype),
                                      row_ptr, col_idx, keep, min(2, free), 2)


@pytest.mark.parametrize("case", list(_opcheck_cases()), ids=lambda c: c[0])
def test_topology_opcheck(case):
    name, args = case
    torch.library.opcheck(getattr(_ops, name).default, args)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    row_ptr, col_idx, values = _pattern(5, 6, 0.5, seed=12)
    nnz = values.numel()
    full = torch.ones(nnz, dtype=torch.bool)
    with pytest.raises(ValueError, match="drop_counts"):
        ops.magnitude_prune(values, [nnz + 1])
    with pytest.raises(ValueError, match="group_ptr"):
        ops.magnitude_prune(values, [1], torch.tensor([0, nnz + 3]))
    with pytest.raises(TypeError, match="values must be float32 or float64"):
        ops.magnitude_prune(values.int(), [1])
    with pytest.raises(ValueError, match="fraction"):
        ops.signed_magnitude_prune(values, 1.5)
    with pytest.raises(ValueError, match="grow_counts"):
        ops.random_regrow(row_ptr, col_idx, full, 6, [30 - nnz + 1], seed=0)
    with pytest.raises(TypeError, match="occupied must be a bool"):
        ops.random_regrow(row_ptr, col_idx, full.int(), 6, [1], seed=0)
    with pytest.raises(ValueError, match="seed"):
        ops.random_regrow(row_ptr, col_idx, full, 6, [1], seed=-1)
    with pytest.raises(ValueError, match="k must be"):
        ops.gradient_regrow(torch.randn(2, 5), torch.randn(2, 6), row_ptr, col_idx, full, 31 - nnz)
    with pytest.raises(ValueError, match="block_rows"):
        ops.gradient_regrow(torch.randn(2, 5), torch.randn(2, 6), row_ptr, col_idx, full, 1, block_rows=0)
    with pytest.raises(ValueError, match="grow_row_ptr"):
        ops.rebuild_csr(row_ptr, col_idx, full, torch.zeros(3, dtype=torch.int32), col_idx[:0])
    # Straight to the dispatcher: the C++ checks, not a crash.
    with pytest.raises(RuntimeError, match="grow_counts"):
        _ops.random_regrow(row_ptr, col_idx, full, 6, torch.tensor([0, 5]), torch.tensor([10**6]), 0)
