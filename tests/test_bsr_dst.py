"""Dynamic sparse training of block-sparse weights: prune by block norm,
random and gradient (RigL) regrow of whole blocks, the optimizer state
following the block permutation, and every method on a BSR model."""

import io

import pytest
import torch
from torch import nn

from sparse_kernels import BSRWeight, SparseLinear, SparseLSTM, bsr, csr, ops, reference
from sparse_kernels.dst import DynamicSparsity, remap_optimizer_state, replicate_hidden_units
from dst_helpers import next_token_task, train_with_dst


def _gen(seed):
    return torch.Generator().manual_seed(seed)


class BlockLM(nn.Module):
    """Embedding -> block-sparse SparseLSTM -> block-sparse decoder, plus a CSR
    decoder bias path (a model mixing both formats)."""

    def __init__(self, vocab=12, hidden=16, density=0.4, block_shape=(4, 4), seed=0):
        super().__init__()
        g = _gen(seed)
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = SparseLSTM(hidden, hidden, num_layers=2, density=density, block_shape=block_shape, generator=g)
        self.decoder = SparseLinear(hidden, vocab, density=0.5, block_shape=(4, 4), generator=g)
        self.skip = SparseLinear(hidden, vocab, density=0.3, generator=g)  # CSR

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.decoder(out) + self.skip(out)


def _check_block_invariants(dst, expected_slots):
    for name, w in dst.weights.items():
        if isinstance(w, BSRWeight):
            bsr.validate_bsr(w.block_row_ptr, w.block_col_idx, w.shape, w.block_shape, w.values)
        else:
            csr.validate_csr(w.row_ptr, w.col_idx, w.shape, w.values)
        assert w.num_slots == expected_slots[name], name
        state = dst.optimizer.state.get(w.values, {})
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                assert value.shape == w.values.shape, (name, key)


# ----------------------------------------------------------------------------- block_gradient_regrow
@pytest.mark.parametrize("block_rows", [1, 4, 7, 256])
@pytest.mark.parametrize("block_shape", [(2, 3), (4, 4), (1, 8)])
def test_block_gradient_regrow_picks_the_largest_free_block_norms(block_rows, block_shape):
    bh, bw = block_shape
    g = _gen(1)
    grid = (6, 5)
    rp, ci = csr.random_csr(grid, 0.4, generator=g)
    occupied = torch.rand(ci.numel(), generator=g) < 0.7
    grad_out = torch.randn(9, grid[0] * bh, generator=g, dtype=torch.float64)
    x = torch.randn(9, grid[1] * bw, generator=g, dtype=torch.float64)
    k = 7
    grow_rp, grow_ci = ops.block_gradient_regrow(grad_out, x, rp, ci, occupied, k, block_shape, block_rows)
    csr.validate_csr(grow_rp, grow_ci, grid)
    assert grow_ci.numel() == k
    scores = reference.block_gradient_regrow_scores(grad_out, x, rp, ci, occupied, block_shape).flatten()
    expected = torch.zeros(grid[0] * grid[1], dtype=torch.bool)
    expected[torch.sort(scores, descending=True, stable=True).indices[:k]] = True
    got = torch.zeros(grid, dtype=torch.bool)
    got[csr.row_indices(grow_rp), grow_ci.long()] = True
    assert torch.equal(got.flatten(), expected)


def test_block_gradient_regrow_bad_input():
    rp, ci = torch.tensor([0, 1, 1], dtype=torch.int32), torch.tensor([1], dtype=torch.int32)
    occ = torch.ones(1, dtype=torch.bool)
    gy, x = torch.randn(3, 4), torch.randn(3, 6)
    ops.block_gradient_regrow(gy, x, rp, ci, occ, 5, (2, 2))  # every free block
    with pytest.raises(ValueError, match=r"k must be an int in \[0, 5\]"):
        ops.block_gradient_regrow(gy, x, rp, ci, occ, 6, (2, 2))
    with pytest.raises(ValueError, match="grad_output must have out_features = 6 columns, got 4"):
        ops.block_gradient_regrow(gy, x, rp, ci, occ, 1, (3, 2))
    with pytest.raises(ValueError, match="multiple of the block width 4"):
        ops.block_gradient_regrow(gy, x, rp, ci, occ, 1, (2, 4))
    with pytest.raises(ValueError, match="block_rows must be a positive int"):
        ops.block_gradient_regrow(gy, x, rp, ci, occ, 1, (2, 2), block_rows=0)
    with pytest.raises(ValueError, match="occupied must be contiguous with shape"):
        ops.block_gradient_regrow(gy, x, rp, ci, torch.ones(2, dtype=torch.bool), 1, (2, 2))
    with pytest.raises(TypeError, match="input must have the dtype of grad_output"):
        ops.block_gradient_regrow(gy, x.double(), rp, ci, occ, 1, (2, 2))


# ----------------------------------------------------------------------------- optimizer state remap
def test_remap_optimizer_state_moves_block_state_with_the_blocks():
    w = BSRWeight.random(8, 8, 0.5, block_shape=(2, 4), generator=_gen(2))
    opt = torch.optim.Adam(w.parameters(), lr=0.1)
    w(torch.randn(3, 8, generator=_gen(3))).square().sum().backward()
    opt.step()
    state = {k: v.clone() for k, v in opt.state[w.values].items()}
    keep = torch.ones(w.nblocks, dtype=torch.bool)
    keep[1] = False
    old = w.nblocks
    perm = w.rebuild(keep, torch.zeros(5, dtype=torch.int32), torch.empty(0, dtype=torch.int32))
    remap_optimizer_state(opt, w.values, perm, old)
    for key in ("exp_avg", "exp_avg_sq"):
        assert opt.state[w.values][key].shape == w.values.shape
        torch.testing.assert_close(opt.state[w.values][key], state[key][perm])
    torch.testing.assert_close(opt.state[w.values]["step"], state["step"])  # scalar state untouched
    with pytest.raises(ValueError, match="perm must have one entry per slot"):
        remap_optimizer_state(opt, w.values, perm[:-1], old)


# ----------------------------------------------------------------------------- DynamicSparsity
@pytest.mark.parametrize("method,granularity", [("st-rnn", "tensor"), ("st-rnn", "gate"), ("st-rnn", "row"),
                                                ("set", "tensor"), ("rigl", "tensor"), ("snfs", "tensor")])
def test_every_update_keeps_block_counts_and_valid_patterns(method, granularity):
    torch.manual_seed(4)
    model = BlockLM()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dst = DynamicSparsity(model, optimizer, method, total_steps=12, update_every=3, prune_rate=0.5,
                          granularity=granularity, seed=1)
    assert any(isinstance(w, BSRWeight) for w in dst.weights.values())
    slots = {n: w.num_slots for n, w in dst.weights.items()}
    total = sum(slots.values())
    checks = []

    def check():
        current = {n: w.num_slots for n, w in dst.weights.items()}
        if method == "snfs":  # the budget moves between layers of the same slot shape
            assert sum(current.values()) == total
            for shape in {tuple(w.slot_shape) for w in dst.weights.values()}:
                names = [n for n, w in dst.weights.items() if tuple(w.slot_shape) == shape]
                assert sum(current[n] for n in names) == sum(slots[n] for n in names)
            _check_block_invariants(dst, current)
        else:
            _check_block_invariants(dst, slots)
        checks.append(True)

    expected_updates = sum(dst.is_update_step(step) for step in range(1, 13))
    train_with_dst(model, optimizer, dst, 12, next_token_task(), on_update=check)
    assert len(checks) == expected_updates >= 2
    assert any(s["total_regrown"] > 0 for s in dst.stats()["layers"].values())


def test_magnitude_prune_drops_the_smallest_block_norms():
    layer = SparseLinear(16, 16, density=0.5, block_shape=(4, 4), generator=_gen(5))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)
    dst = DynamicSparsity(layer, optimizer, "st-rnn", total_steps=4, update_every=1, prune_rate=0.5,
                          decay="constant", seed=2)
    w = layer.weight
    before = w.mask()[::4, ::4].clone()
    norms = torch.zeros(4, 4)
    norms[csr.row_indices(w.block_row_ptr), w.block_col_idx.long()] = w.slot_magnitudes()
    layer(torch.randn(2, 16)).sum().backward()
    optimizer.step()
    assert dst.step()
    after = w.mask()[::4, ::4]
    pruned = before & ~after
    assert int(pruned.sum()) == 4 and w.nblocks == 8
    assert float(norms[pruned].max()) <= float(norms[before & after].min())
    grown = after & ~before
    assert int(grown.sum()) == 4
    grown_values = w.values.detach()[torch.tensor([bool(grown[r, c]) for r, c in zip(
        csr.row_indices(w.block_row_ptr).tolist(), w.block_col_idx.tolist())])]
    assert bool((grown_values == 0).all())  # grow_init "zero"


def test_rigl_regrows_the_blocks_of_largest_dense_gradient_norm():
    torch.manual_seed(6)
    lstm = SparseLSTM(8, 8, density=0.4, block_shape=(4, 2), generator=_gen(6))
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.0)
    dst = DynamicSparsity(lstm, optimizer, "rigl", total_steps=10, update_every=1, prune_rate=0.3, block_rows=4)
    dense = lstm.to_dense()  # the oracle: nn.LSTM's dense gradient at every position
    x = torch.randn(5, 3, 8, generator=_gen(7))
    out, _ = lstm(x)
    out_dense, _ = dense(x)
    grad = torch.randn(out.shape, generator=_gen(8))
    out.backward(grad)
    out_dense.backward(grad)
    old = {n: w.mask()[::w.block_shape[0], ::w.block_shape[1]].clone() for n, w in lstm.sparse_weights()}
    optimizer.step()
    assert dst.step()
    for name, w in lstm.sparse_weights():
        new = w.mask()[::4, ::2]
        grown = new & ~old[name]
        k = int(grown.sum())
        assert k == dst.stats()["layers"][name]["regrown"] > 0
        scores = bsr.block_norms(getattr(dense, name).grad, (4, 2)).masked_fill(old[name], -1).flatten()
        expected = torch.zeros_like(grown.flatten())
        expected[torch.sort(scores, descending=True, stable=True).indices[:k]] = True
        assert torch.equal(grown.flatten(), expected), name


@pytest.mark.parametrize("method,kwargs", [
    ("gradual", dict(final_density=0.25, start_step=0, end_step=6)),
    ("gradual", dict(final_density=0.25, start_step=0, end_step=6, schedule="narang", ramp_step=3)),
    ("iht", dict(target_density=0.2)),
    ("predefined", dict(n_blocks=2)),
])
def test_other_methods_on_block_sparse_weights(method, kwargs):
    torch.manual_seed(9)
    model = BlockLM(density=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dst = DynamicSparsity(model, optimizer, method, total_steps=8, update_every=2, seed=3, **kwargs)
    before = {n: w.num_slots for n, w in dst.weights.items()}
    train_with_dst(model, optimizer, dst, 8, next_token_task())
    for name, w in dst.weights.items():
        if isinstance(w, BSRWeight):
            bsr.validate_bsr(w.block_row_ptr, w.block_col_idx, w.shape, w.block_shape, w.values)
        state = optimizer.state.get(w.values, {})
        assert all(v.shape == w.values.shape for v in state.values() if isinstance(v, torch.Tensor) and v.dim())
    bsr_names = [n for n, w in dst.weights.items() if isinstance(w, BSRWeight)]
    if method == "gradual" and kwargs.get("schedule") != "narang":
        for n in bsr_names:
            w = dst.weights[n]
            assert w.num_slots == round(0.25 * w.grid_shape[0] * w.grid_shape[1])
    elif method == "gradual":
        assert all(dst.weights[n].num_slots < before[n] for n in bsr_names)
    elif method == "iht":
        for n in bsr_names:
            w = dst.weights[n]
            nonzero_blocks = int((w.slot_magnitudes() > 0).sum())
            assert nonzero_blocks <= round(0.2 * w.grid_shape[0] * w.grid_shape[1])
            assert w.num_slots == before[n]  # the support is kept
    else:  # predefined: block diagonal on the grid of blocks (per gate), never changed
        for n in bsr_names:
            w = dst.weights[n]
            rows, cols = w.grid_shape
            expected = csr.block_diagonal_csr(rows, cols, 2, 4 if rows % 4 == 0 and rows >= 4 else 1)
            assert torch.equal(w.block_row_ptr, expected[0]) and torch.equal(w.block_col_idx, expected[1]), n


def test_loss_decreases_and_checkpoint_restores_exactly():
    data = next_token_task(seed=10)

    def build():
        torch.manual_seed(10)
        model = BlockLM(seed=10)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
        return model, optimizer, DynamicSparsity(model, optimizer, "rigl", total_steps=40, update_every=4, seed=5)

    model, optimizer, dst = build()
    losses = train_with_dst(model, optimizer, dst, 17, data)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "dst": dst.state_dict()}, buffer)
    losses += train_with_dst(model, optimizer, dst, 10, data)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model2, optimizer2, dst2 = build()
    model2.load_state_dict(ckpt["model"])
    optimizer2.load_state_dict(ckpt["optim"])
    dst2.load_state_dict(ckpt["dst"])
    train_with_dst(model2, optimizer2, dst2, 10, data)
    state, state2 = model.state_dict(), model2.state_dict()
    assert list(state) == list(state2)
    for k, a in state.items():
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, state2[k]), k
        else:
            assert a == state2[k], k
    assert dst.pattern_checksum() == dst2.pattern_checksum()


def test_replicating_units_refuses_block_sparse_layers():
    with pytest.raises(ValueError, match="block-sparse layer"):
        replicate_hidden_units(SparseLSTM(8, 8, block_shape=(4, 4)), 12)
