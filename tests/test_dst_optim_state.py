"""remap_optimizer_state: per-element state follows the slot permutation, new
slots start from zero, scalar state is untouched; a pruned weight is never
revived by momentum or weight decay (SGD+momentum, Adam, AdamW, ASGD)."""

import pytest
import torch

from sparse_kernels import SparseLinear, csr, ops
from sparse_kernels.dst import remap_optimizer_state

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True),
    "asgd": lambda p: torch.optim.ASGD(p, lr=0.05, t0=0, weight_decay=0.01),
}


def _positions_state(weight, tensor):
    """{(row, col): value} of a per-slot tensor."""
    rows = csr.row_indices(weight.row_ptr).tolist()
    return {(r, c): float(v) for r, c, v in zip(rows, weight.col_idx.tolist(), tensor.tolist())}


def _train(layer, optimizer, x, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        layer(x).pow(2).sum().backward()
        optimizer.step()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_follows_positions_and_pruned_weights_stay_dead(name):
    torch.manual_seed(0)
    layer = SparseLinear(6, 5, density=0.6, dtype=torch.float64)
    optimizer = OPTIMIZERS[name](layer.parameters())
    x = torch.randn(7, 6, dtype=torch.float64)
    _train(layer, optimizer, x, 4)
    w = layer.weight
    state = optimizer.state[w.values]
    per_slot = {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor) and v.shape == w.values.shape}
    scalars = {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor) and v.dim() == 0}
    assert per_slot, "the optimizer keeps per-element state"
    before = {k: _positions_state(w, v) for k, v in per_slot.items()}

    # Prune half; regrow with re-picking allowed on a small matrix, so that
    # just-pruned positions come back as new slots.
    keep = ops.magnitude_prune(w.values.detach(), [w.nnz // 2])
    grow = ops.random_regrow(w.row_ptr, w.col_idx, keep, w.in_features, [int((~keep).sum())], seed=3)
    old_nnz = w.nnz
    perm = w.rebuild(keep, *grow)
    remap_optimizer_state(optimizer, w.values, perm, old_nnz)

    state = optimizer.state[w.values]
    grown = perm < 0
    for key, old in before.items():
        new = _positions_state(w, state[key])
        for slot, (pos, value) in enumerate(new.items()):
            assert value == (0.0 if grown[slot] else old[pos]), (key, pos)
    for key, value in scalars.items():
        assert torch.equal(state[key], value), key  # step counters, eta, mu untouched
    assert bool((w.values.detach()[grown] == 0).all())

    # A step with zero gradient: nothing may move a grown (zero, zero-state)
    # weight, whatever momentum, moments or decay the slot's previous owner had.
    optimizer.zero_grad()
    (layer(x) * 0).sum().backward()
    optimizer.step()
    assert bool((w.values.detach()[grown] == 0).all())


def test_remap_handles_nnz_change_and_errors():
    layer = SparseLinear(4, 4, density=0.5)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    _train(layer, optimizer, torch.randn(3, 4), 2)
    w = layer.weight
    keep = ops.magnitude_prune(w.values.detach(), [3])
    empty = (torch.zeros(5, dtype=torch.int32), torch.zeros(0, dtype=torch.int32))
    old_nnz = w.nnz
    perm = w.rebuild(keep, *empty)
    remap_optimizer_state(optimizer, w.values, perm, old_nnz)
    assert optimizer.state[w.values]["momentum_buffer"].shape == (old_nnz - 3,)
    _train(layer, optimizer, torch.randn(3, 4), 1)  # the smaller layer still trains
    with pytest.raises(ValueError, match="perm must have one entry"):
        remap_optimizer_state(optimizer, w.values, perm[:-1], old_nnz)
    with pytest.raises(TypeError, match="optimizer"):
        remap_optimizer_state(object(), w.values, perm, old_nnz)
