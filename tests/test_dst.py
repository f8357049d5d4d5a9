"""DynamicSparsity: invariants after every update (exact nnz, valid sorted
CSR, density), schedules, statistics, exact checkpoint restore, RigL's
regrow against the dense gradient, loss decreasing on a small task, and the
other methods (SET, SNFS, gradual, IHT, predefined)."""

import io
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sparse_kernels import SparseGRU, SparseLinear, SparseLSTM, SparseLSTMCell, SparseRNN, csr
from sparse_kernels.csr import validate_csr
from sparse_kernels.dst import DynamicSparsity, block_diagonal_mask, find_sparse_weights
from dst_helpers import next_token_task, train_with_dst


class TinyLM(nn.Module):
    """Embedding -> SparseLSTM -> SparseLinear decoder, plus a SparseLSTMCell."""

    def __init__(self, vocab=12, hidden=16, density=0.3, bidirectional=False, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = SparseLSTM(hidden, hidden, num_layers=2, density=density, bidirectional=bidirectional,
                              generator=g)
        width = hidden * (2 if bidirectional else 1)
        self.cell = SparseLSTMCell(width, width, density=density, generator=g)
        self.decoder = SparseLinear(width, vocab, density=min(1.0, 2 * density), generator=g)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        h, _ = self.cell(out[-1])
        return self.decoder(out + h)


def _check_invariants(dst, expected_nnz):
    for name, w in dst.weights.items():
        validate_csr(w.row_ptr, w.col_idx, w.shape, w.values)  # sorted, no duplicates, in range
        assert w.nnz == expected_nnz[name], name
        assert w.density == pytest.approx(expected_nnz[name] / w.shape.numel())


def test_find_sparse_weights_reaches_every_module_kind():
    model = TinyLM()
    names = set(find_sparse_weights(model))
    assert {n for n, _ in model.rnn.sparse_weights()} <= {n.split(".", 1)[1] for n in names if n.startswith("rnn.")}
    assert {"cell.weight_ih", "cell.weight_hh", "decoder.weight"} <= names


@pytest.mark.parametrize("method", ["st-rnn", "predefined"])
def test_a_predefined_embedding_pattern_is_left_alone(method):
    """SparseEmbedding's frequency prefixes are Demeester's fixed pattern: no
    method prunes, regrows or re-patterns them."""
    from sparse_kernels import SparseEmbedding
    model = nn.Sequential(SparseEmbedding(20, 8, density=0.5), SparseLinear(8, 8, density=0.5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dst = DynamicSparsity(model, optimizer, method, total_steps=4, update_every=1)
    assert set(dst.weights) == {"1.weight"}
    pattern = (model[0].weight.row_ptr.clone(), model[0].weight.col_idx.clone())
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randint(20, (5,))).pow(2).sum().backward()
        optimizer.step()
        dst.step()
    assert torch.equal(model[0].weight.row_ptr, pattern[0]) and torch.equal(model[0].weight.col_idx, pattern[1])


@pytest.mark.parametrize("method,granularity", [("st-rnn", "tensor"), ("st-rnn", "gate"), ("st-rnn", "row"),
                                                ("set", "tensor"), ("set", "row"), ("rigl", "tensor")])
def test_every_update_keeps_exact_nnz_and_valid_patterns(method, granularity):
    torch.manual_seed(0)
    model = TinyLM(bidirectional=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    dst = DynamicSparsity(model, optimizer, method, total_steps=12, update_every=2, prune_rate=0.4,
                          granularity=granularity)
    nnz = {n: w.nnz for n, w in dst.weights.items()}
    patterns = {n: w.col_idx.clone() for n, w in dst.weights.items()}
    updates = []
    train_with_dst(model, optimizer, dst, 12, next_token_task(), on_update=lambda: (_check_invariants(dst, nnz), updates.append(1)))
    assert len(updates) == dst.updates > 0
    assert any(not torch.equal(patterns[n], w.col_idx) for n, w in dst.weights.items()), "topology never changed"


def test_cosine_schedule_and_counts():
    torch.manual_seed(1)
    model = TinyLM()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dst = DynamicSparsity(model, optimizer, "st-rnn", total_steps=20, update_every=5, prune_rate=0.5)
    for step in (0, 5, 10, 20, 25):
        assert dst.current_prune_rate(step) == pytest.approx(0.25 * (1 + math.cos(math.pi * min(step, 20) / 20)))
    seen = []

    def record():
        rate = dst.current_prune_rate()
        for name, s in dst.stats()["layers"].items():
            w = dst.weights[name]
            room = w.shape.numel() - w.nnz
            assert s["pruned"] == min(round(rate * w.nnz), room)
            assert s["regrown"] == s["pruned"]
            assert s["change_rate"] == pytest.approx(s["regrown"] / w.nnz)
        seen.append(dst.steps)

    train_with_dst(model, optimizer, dst, 20, next_token_task(), on_update=record)
    assert seen == [5, 10, 15]  # step 20 has rate 0: ST-RNN stops at the end of the schedule
    stats = dst.stats()
    assert stats["updates"] == 3 and stats["step"] == 20
    for s in stats["layers"].values():
        assert s["total_pruned"] == s["total_regrown"] >= s["pruned"]


def test_set_prunes_both_signs_and_grows_random_values():
    torch.manual_seed(2)
    layer = SparseLinear(20, 30, density=0.3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)
    dst = DynamicSparsity(layer, optimizer, "set", total_steps=10, update_every=1, prune_rate=0.3, decay="constant")
    values = layer.weight.values.detach().clone()
    dense_before = layer.weight.to_dense()
    optimizer.step()
    dst.step()
    w = layer.weight
    kept = dense_before != 0
    survived = kept & w.mask()
    gone = kept & ~w.mask()
    pos, neg = dense_before > 0, dense_before < 0
    # The smallest positives and the largest negatives went.
    assert dense_before[gone & pos].max() <= dense_before[survived & pos].min()
    assert dense_before[gone & neg].min() >= dense_before[survived & neg].max()
    assert int((gone & pos).sum()) == round(0.3 * int((values >= 0).sum()))
    grown = w.mask() & ~kept
    assert int(grown.sum()) == int(gone.sum())
    assert bool((w.to_dense()[grown] != 0).all())  # SET's new weights are random, not zero


def _rigl_model(bidirectional, packed, kind=SparseLSTM):
    torch.manual_seed(3)
    lstm = kind(5, 6, num_layers=1, density=0.3, bidirectional=bidirectional, dtype=torch.float64)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([4, 3, 2]))
    return lstm, x


@pytest.mark.parametrize("kind", [SparseLSTM, SparseRNN], ids=["lstm", "elman"])
@pytest.mark.parametrize("bidirectional,packed", [(False, False), (True, False), (True, True)])
def test_rigl_regrows_the_largest_dense_gradients(bidirectional, packed, kind):
    lstm, x = _rigl_model(bidirectional, packed, kind)
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.0)
    dst = DynamicSparsity(lstm, optimizer, "rigl", total_steps=10, update_every=1, prune_rate=0.3)
    dense = lstm.to_dense()  # the oracle: nn.LSTM's dense gradient at every position
    out, _ = lstm(x)
    out_dense, _ = dense(x)
    data = lambda o: o.data if packed else o
    grad = torch.randn_like(data(out))
    data(out).backward(grad)
    data(out_dense).backward(grad)
    old_masks = {n: w.mask() for n, w in lstm.sparse_weights()}
    optimizer.step()
    assert dst.step()
    for name, w in lstm.sparse_weights():
        grown = w.mask() & ~old_masks[name]
        k = int(grown.sum())
        assert k == dst.stats()["layers"][name]["regrown"] > 0
        scores = getattr(dense, name).grad.abs().masked_fill(old_masks[name], -1).flatten()
        expected = torch.zeros_like(grown.flatten()).index_fill(0, scores.topk(k).indices, True)
        assert torch.equal(grown.flatten(), expected), name


def test_rigl_warns_when_a_weight_has_no_gradient_rows():
    """A GRU's W_hh output is gated by r inside the C++ loop: no rows are
    captured for it, RigL regrows it at random and says so."""
    gru, x = _rigl_model(False, False, SparseGRU)
    optimizer = torch.optim.SGD(gru.parameters(), lr=0.0)
    dst = DynamicSparsity(gru, optimizer, "rigl", total_steps=10, update_every=1, prune_rate=0.3)
    gru(x)[0].sum().backward()
    optimizer.step()
    with pytest.warns(UserWarning, match="weight_hh_l0.*at random"):
        assert dst.step()
    assert all(dst.stats()["layers"][n]["regrown"] > 0 for n in dst.weights)


def test_skip_step_drops_the_capture_of_a_skipped_step():
    # RigL regrows from the inputs/gradients captured during the step before
    # an update; a step the loop skipped (NaN gradients) must not count.
    def run(skipped_first):
        lstm, x = _rigl_model(False, False)
        optimizer = torch.optim.SGD(lstm.parameters(), lr=0.0)
        dst = DynamicSparsity(lstm, optimizer, "rigl", total_steps=10, update_every=1, prune_rate=0.3)
        if skipped_first:
            out, _ = lstm(x)
            (out * float("nan")).sum().backward()
            optimizer.zero_grad()
            dst.skip_step()
        out, _ = lstm(x)
        out.backward(torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1)))
        optimizer.step()
        assert dst.step()
        return {n: w.mask() for n, w in lstm.sparse_weights()}, dst.stats()

    (masks, stats), (masks_after_skip, stats_after_skip) = run(False), run(True)
    assert stats_after_skip["step"] == stats["step"] == 1 and stats_after_skip["updates"] == 1
    assert all(torch.equal(masks[n], masks_after_skip[n]) for n in masks)


def test_rigl_rejects_row_granularity():
    with pytest.raises(ValueError, match="granularity"):
        DynamicSparsity(SparseLinear(4, 4), torch.optim.SGD(SparseLinear(4, 4).parameters(), lr=0.1), "rigl",
                        total_steps=5, granularity="row")


@pytest.mark.parametrize("method", ["st-rnn", "rigl", "set"])
def test_loss_decreases_on_a_small_task(method):
    torch.manual_seed(4)
    model = TinyLM(density=0.4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    dst = DynamicSparsity(model, optimizer, method, total_steps=60, update_every=6, prune_rate=0.3)
    losses = train_with_dst(model, optimizer, dst, 60, next_token_task())
    assert dst.updates >= 5
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["st-rnn", "rigl", "set", "snfs"])
def test_checkpoint_restores_exactly(method):
    data = next_token_task(seed=5)

    def build():
        torch.manual_seed(5)
        model = TinyLM(seed=5)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, optimizer, DynamicSparsity(model, optimizer, method, total_steps=20, update_every=3, seed=7)

    model, optimizer, dst = build()
    train_with_dst(model, optimizer, dst, 7, data)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "dst": dst.state_dict()}, buffer)
    train_with_dst(model, optimizer, dst, 10, data)

    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model2, optimizer2, dst2 = build()
    # A different topology at construction is replaced by the checkpoint's.
    model2.load_state_dict(ckpt["model"])
    optimizer2.load_state_dict(ckpt["optim"])
    dst2.load_state_dict(ckpt["dst"])
    train_with_dst(model2, optimizer2, dst2, 10, data)
    assert dst2.stats() == dst.stats()
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, k


@pytest.mark.parametrize("method", ["st-rnn", "gradual"])
def test_a_loaded_state_keeps_its_schedule_horizon(method):
    """A state loaded into a scheduler built for a longer run brings back the
    horizon it was saved with (as torch's lr schedulers keep T_max): the
    prune rate, the update steps and gradual's density curve stay those of
    the run that started, where the new total_steps would stretch them."""
    torch.manual_seed(3)
    model = TinyLM(seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    short = DynamicSparsity(model, optimizer, method, total_steps=12, update_every=3, final_density=0.2)
    train_with_dst(model, optimizer, short, 5, next_token_task(seed=3))
    state = short.state_dict()
    longer = DynamicSparsity(model, optimizer, method, total_steps=40, update_every=5, final_density=0.2)
    assert longer.current_prune_rate(9) != short.current_prune_rate(9)  # else this test proves nothing
    longer.load_state_dict(state)
    assert (longer.total_steps, longer.update_every, longer.stop_step, longer.end_step, longer.ramp_step) == (
        12, 3, short.stop_step, short.end_step, short.ramp_step)
    for step in range(0, 20):
        assert longer.current_prune_rate(step) == short.current_prune_rate(step)
        assert longer.is_update_step(step) == short.is_update_step(step)
    if method == "gradual":
        name = next(iter(short.weights))
        assert [longer._gradual_density(name, s) for s in range(20)] == [
            short._gradual_density(name, s) for s in range(20)]
    # A state saved before the horizon was kept leaves the constructor's.
    old = {k: v for k, v in state.items() if k != "horizon"}
    again = DynamicSparsity(model, optimizer, method, total_steps=40, update_every=5, final_density=0.2)
    again.load_state_dict(old)
    assert (again.total_steps, again.update_every) == (40, 5)


def test_snfs_keeps_the_total_and_moves_budget_by_momentum():
    torch.manual_seed(6)
    model = TinyLM()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dst = DynamicSparsity(model, optimizer, "snfs", total_steps=20, update_every=4, prune_rate=0.5)
    total = sum(w.nnz for w in dst.weights.values())
    before = {n: w.nnz for n, w in dst.weights.items()}
    train_with_dst(model, optimizer, dst, 12, next_token_task(),
           on_update=lambda: (None if sum(w.nnz for w in dst.weights.values()) == total else pytest.fail("total")))
    assert dst.updates == 3
    assert any(w.nnz != before[n] for n, w in dst.weights.items()), "budget never moved between layers"
    for w in dst.weights.values():
        validate_csr(w.row_ptr, w.col_idx, w.shape, w.values)


def test_st_rnn_with_momentum_redistribution_moves_counts_by_mean_momentum():
    # Liu et al. Table 7's "ST-LSTM + sparse momentum": each layer prunes its share by magnitude, the
    # regrow budget then goes to the layers in proportion to their stored weights' mean |momentum|.
    torch.manual_seed(7)
    model = nn.Sequential(SparseLinear(40, 30, density=0.3), SparseLinear(30, 20, density=0.3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dst = DynamicSparsity(model, optimizer, "st-rnn", total_steps=10, update_every=1, prune_rate=0.5,
                          decay="constant", redistribute="momentum")
    assert dst.redistribute == "momentum"
    weights = list(dst.weights.values())
    before = [w.nnz for w in weights]
    scale = (3.0, 1.0)  # the first layer's mean |momentum| is three times the second's
    for w, k in zip(weights, scale):
        optimizer.state[w.values]["momentum_buffer"] = k * (torch.rand(w.nnz) + 0.5)
    means = [float(optimizer.state[w.values]["momentum_buffer"].abs().mean()) for w in weights]
    pruned = [round(0.5 * n) for n in before]
    budget = sum(pruned)
    share = [math.floor(m / sum(means) * budget) for m in means]
    share[means.index(max(means))] += budget - sum(share)
    assert dst.step()
    assert [w.nnz for w in weights] == [n - p + g for n, p, g in zip(before, pruned, share)]
    assert sum(w.nnz for w in weights) == sum(before)
    assert weights[0].nnz > before[0] and weights[1].nnz < before[1]
    for w in weights:
        validate_csr(w.row_ptr, w.col_idx, w.shape, w.values)


def test_redistribution_defaults_and_bad_settings():
    model = nn.Sequential(SparseLinear(12, 10, density=0.3), SparseLinear(10, 8, density=0.3))
    momentum = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert DynamicSparsity(model, momentum, "snfs", total_steps=5).redistribute == "momentum"
    assert DynamicSparsity(model, momentum, "st-rnn", total_steps=5).redistribute == "none"
    assert DynamicSparsity(model, momentum, "snfs", total_steps=5, redistribute="none").redistribute == "none"
    with pytest.raises(ValueError, match="redistribute must be one of"):
        DynamicSparsity(model, momentum, "st-rnn", total_steps=5, redistribute="gradient")
    with pytest.raises(ValueError, match="method must be one of"):
        DynamicSparsity(model, momentum, "gradual", total_steps=5, redistribute="momentum")
    with pytest.raises(ValueError, match="granularity must be 'tensor'"):
        DynamicSparsity(model, momentum, "st-rnn", total_steps=5, granularity="row", redistribute="momentum")
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="keeps no momentum"):
        DynamicSparsity(model, plain, "st-rnn", total_steps=5, redistribute="momentum")


@pytest.mark.parametrize("optimizer_name,beta", [("sgd", 0.9), ("adam", 0.8), ("sgd", 0.0)])
def test_snfs_regrows_where_the_windowed_momentum_is_largest(optimizer_name, beta):
    """The oracle: the dense gradient of every step (grad_y^T x at every
    position, from a dense twin), summed with weights beta^age over the
    momentum window; the regrown positions are its top-k among the absent."""
    torch.manual_seed(9)
    layer = SparseLinear(12, 10, bias=False, density=0.3)
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.0, momentum=beta)
    else:
        optimizer = torch.optim.Adam(layer.parameters(), lr=0.0, betas=(beta, 0.99))
    window, period = 3, 5
    dst = DynamicSparsity(layer, optimizer, "snfs", total_steps=20, update_every=period, prune_rate=0.4,
                          momentum_window=window)
    dense_grads = []
    for _ in range(period):
        x, g = torch.randn(7, 12), torch.randn(7, 10)
        twin = layer.weight.to_dense().detach().requires_grad_()
        (x @ twin.t()).backward(g)
        dense_grads.append(twin.grad)
        optimizer.zero_grad()
        layer(x).backward(g)
        optimizer.step()
        old_mask = layer.weight.mask()
        updated = dst.step()
    assert updated
    momentum = sum(beta ** age * grad for age, grad in enumerate(reversed(dense_grads[-window:])))
    grown = layer.weight.mask() & ~old_mask
    k = int(grown.sum())
    assert k == dst.stats()["layers"]["weight"]["regrown"] > 0
    scores = momentum.abs().masked_fill(old_mask, -1).flatten()
    expected = torch.zeros(grown.numel(), dtype=torch.bool).index_fill(0, scores.topk(k).indices, True)
    assert torch.equal(grown.flatten(), expected)


def test_snfs_rejects_a_bad_momentum_window():
    layer = SparseLinear(4, 4)
    with pytest.raises(ValueError, match="momentum_window"):
        DynamicSparsity(layer, torch.optim.SGD(layer.parameters(), lr=0.1), "snfs", total_steps=5,
                        momentum_window=0)


def test_gradual_pruning_follows_its_schedule_and_shrinks_storage():
    torch.manual_seed(7)
    model = TinyLM(density=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    dst = DynamicSparsity(model, optimizer, "gradual", total_steps=40, update_every=2, final_density=0.2,
                          start_step=4, end_step=30)
    history = []
    train_with_dst(model, optimizer, dst, 40, next_token_task(),
           on_update=lambda: history.append({n: w.nnz for n, w in dst.weights.items()}))
    for name, w in dst.weights.items():
        counts = [h[name] for h in history]
        assert all(a >= b for a, b in zip(counts, counts[1:])), "density must only fall"
        assert w.nnz == round(0.2 * w.shape.numel())
        assert w.values.numel() == w.nnz  # the storage shrank with the density


def test_iht_thresholds_to_the_top_k_each_update():
    torch.manual_seed(8)
    model = TinyLM(density=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dst = DynamicSparsity(model, optimizer, "iht", total_steps=10, update_every=1, target_density=0.2)

    def check():
        for w in dst.weights.values():
            assert int((w.values.detach() != 0).sum()) <= round(0.2 * w.shape.numel())
            buf = optimizer.state[w.values]["momentum_buffer"]
            assert bool((buf[w.values.detach() == 0] == 0).all())

    train_with_dst(model, optimizer, dst, 6, next_token_task(), on_update=check)
    assert dst.updates == 6


def test_iht_thresholds_at_the_last_step_too():
    """Training for exactly total_steps ends with a thresholded model: the
    optimizer cannot revive weights after the last update."""
    torch.manual_seed(8)
    model = TinyLM(density=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dst = DynamicSparsity(model, optimizer, "iht", total_steps=5, update_every=1, target_density=0.2)
    train_with_dst(model, optimizer, dst, 5, next_token_task())
    assert dst.updates == 5
    for w in dst.weights.values():
        assert int((w.values.detach() != 0).sum()) <= round(0.2 * w.shape.numel())


def test_predefined_block_diagonal_never_changes():
    torch.manual_seed(9)
    model = TinyLM(density=0.25)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    dst = DynamicSparsity(model, optimizer, "predefined", total_steps=10, n_blocks=4)
    w = model.rnn.weight_hh_l0
    assert torch.equal(w.mask(), block_diagonal_mask(64, 16, 4, row_groups=4))
    patterns = {n: (w.row_ptr.clone(), w.col_idx.clone()) for n, w in dst.weights.items()}
    train_with_dst(model, optimizer, dst, 10, next_token_task())
    assert dst.updates == 0
    for n, w in dst.weights.items():
        assert torch.equal(w.row_ptr, patterns[n][0]) and torch.equal(w.col_idx, patterns[n][1])


def test_block_diagonal_mask_structure():
    mask = block_diagonal_mask(8, 6, 2, row_groups=2)  # 2 gates of 4 rows, 2 blocks
    for r in range(8):
        band = (r % 4) // 2
        assert mask[r].nonzero().flatten().tolist() == [c for c in range(6) if c * 2 // 6 == band]


def test_bad_arguments():
    layer = SparseLinear(4, 4)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="method"):
        DynamicSparsity(layer, optimizer, "magic", total_steps=5)
    with pytest.raises(ValueError, match="total_steps"):
        DynamicSparsity(layer, optimizer, "st-rnn", total_steps=0)
    with pytest.raises(ValueError, match="prune_rate"):
        DynamicSparsity(layer, optimizer, "st-rnn", total_steps=5, prune_rate=2.0)
    with pytest.raises(ValueError, match="does not hold"):
        DynamicSparsity(layer, torch.optim.SGD([layer.bias], lr=0.1), "st-rnn", total_steps=5)
    with pytest.raises(ValueError, match="no CSRWeight"):
        DynamicSparsity(nn.Linear(3, 3), torch.optim.SGD(nn.Linear(3, 3).parameters(), lr=0.1), total_steps=5)
    dst = DynamicSparsity(layer, optimizer, "st-rnn", total_steps=5)
    with pytest.raises(ValueError, match="not a DynamicSparsity state"):
        dst.load_state_dict({"method": "set"})


@settings(max_examples=40, deadline=None)
@given(out_f=st.integers(1, 10), in_f=st.integers(1, 10), density=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
       rate=st.floats(0.0, 1.0), repick=st.booleans(), granularity=st.sampled_from(["tensor", "gate", "row"]))
def test_update_properties(out_f, in_f, density, rate, repick, granularity):
    layer = SparseLinear(in_f, out_f, density=density, generator=torch.Generator().manual_seed(out_f * in_f))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.5)
    dst = DynamicSparsity(layer, optimizer, "st-rnn", total_steps=4, update_every=1, prune_rate=rate,
                          decay="constant", allow_repick=repick, granularity=granularity)
    nnz = layer.weight.nnz
    x = torch.randn(3, in_f)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).sum().backward()
        optimizer.step()
        dst.step()
        w = layer.weight
        validate_csr(w.row_ptr, w.col_idx, w.shape, w.values)
        assert w.nnz == nnz
        assert optimizer.state[w.values]["momentum_buffer"].shape == (nnz,)


@pytest.mark.parametrize("kind,extra", [("lstm", {}), ("gru", {}), ("elman", {"nonlinearity": "relu"}),
                                        ("lstm", {"proj_size": 3})], ids=["lstm", "gru", "elman-relu", "lstm-proj"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_replicating_hidden_units_preserves_the_function(bidirectional, kind, extra):
    from sparse_kernels.dst import replicate_hidden_units, replicate_input_features
    torch.manual_seed(10)
    cls = {"lstm": SparseLSTM, "gru": SparseGRU, "elman": SparseRNN}[kind]
    small = cls(5, 4, num_layers=2, density=0.5, bidirectional=bidirectional, dtype=torch.float64, **extra)
    grown, source = replicate_hidden_units(small, 7, generator=torch.Generator().manual_seed(1))
    assert grown.hidden_size == 7 and source[:4].tolist() == [0, 1, 2, 3]
    assert source.shape == (7,) and bool((source[4:] < 4).all())  # new units copy old ones
    assert type(grown) is cls and grown.proj_size == small.proj_size
    assert getattr(grown, "nonlinearity", None) == getattr(small, "nonlinearity", None)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    out_small, state_small = small(x)
    out_grown, state_grown = grown(x)
    directions = 2 if bidirectional else 1
    if extra.get("proj_size"):
        torch.testing.assert_close(out_grown, out_small)  # the projection's output does not grow
        torch.testing.assert_close(state_grown[1], state_small[1][..., source])  # cell states repeat
    else:
        columns = torch.cat([d * 4 + source for d in range(directions)])
        torch.testing.assert_close(out_grown, out_small[..., columns])
        if kind == "lstm":
            torch.testing.assert_close(state_grown[1], state_small[1][..., source])
        # A decoder reading the output keeps its function once rewired.
        for decoder in (nn.Linear(4 * directions, 3, dtype=torch.float64),
                        SparseLinear(4 * directions, 3, density=0.6, dtype=torch.float64)):
            rewired = replicate_input_features(decoder, source, directions)
            torch.testing.assert_close(rewired(out_grown), decoder(out_small))
        with pytest.raises(ValueError, match="reads 5 features"):
            replicate_input_features(nn.Linear(5, 3), source, directions)
    for _, w in grown.sparse_weights():
        validate_csr(w.row_ptr, w.col_idx, w.shape, w.values)
    # Sparse training continues on the grown network.
    optimizer = torch.optim.SGD(grown.parameters(), lr=0.1, momentum=0.9)
    dst = DynamicSparsity(grown, optimizer, "st-rnn", total_steps=4, update_every=1)
    for _ in range(2):
        optimizer.zero_grad()
        grown(x)[0].pow(2).sum().backward()
        optimizer.step()
        dst.step()
    assert dst.updates == 2


def test_grow_init_callable_gives_the_new_values():
    layer = SparseLinear(10, 10, density=0.3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)
    calls = []

    def init(weight, count, generator):
        calls.append((weight, count))
        return torch.full((count,), 0.125)

    dst = DynamicSparsity(layer, optimizer, "st-rnn", total_steps=4, update_every=1, grow_init=init)
    before = layer.weight.mask()
    optimizer.step()
    dst.step()
    grown = layer.weight.mask() & ~before
    assert calls == [(layer.weight, int(grown.sum()))] and int(grown.sum()) > 0
    assert bool((layer.weight.to_dense()[grown] == 0.125).all())


def test_narang_threshold_rises_and_prunes_what_falls_below_it():
    torch.manual_seed(11)
    model = TinyLM(density=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    dst = DynamicSparsity(model, optimizer, "gradual", schedule="narang", total_steps=30, update_every=2,
                          final_density=0.3, start_step=2, ramp_step=12, end_step=24)
    history = []

    def record():
        history.append({n: (w.nnz, dst.narang_threshold(n, dst.steps), w.values.detach().abs().min())
                        for n, w in dst.weights.items()})

    train_with_dst(model, optimizer, dst, 30, next_token_task(), on_update=record)
    for name in dst.weights:
        nnz = [h[name][0] for h in history]
        eps = [h[name][1] for h in history]
        assert all(a >= b for a, b in zip(nnz, nnz[1:])) and nnz[-1] < nnz[0]
        assert all(a <= b for a, b in zip(eps, eps[1:])) and eps[-1] > 0  # monotonically increasing
        # Right after an update nothing stored is below the threshold.
        assert all(float(h[name][2]) >= h[name][1] for h in history if h[name][0])
        # The slope steepens at ramp_step by Narang's 1.5.
        theta = dst.theta[name]
        rise_before = dst.narang_threshold(name, 11) - dst.narang_threshold(name, 10)
        rise_after = dst.narang_threshold(name, 14) - dst.narang_threshold(name, 13)
        assert rise_before == pytest.approx(theta / 2) and rise_after == pytest.approx(1.5 * theta / 2)
