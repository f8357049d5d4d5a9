"""The language-model loop on tiny sizes: it learns, keeps the best model,
writes its files atomically, and a run interrupted mid-epoch then resumed
gives exactly the metrics of an uninterrupted run."""

import csv
import threading

import pytest
import torch

from sparse_kernels import SparseLSTM
from sparse_kernels.train import CheckpointError, LMConfig, synthetic_lm, train_lm
from sparse_kernels.train.checkpoint import atomic_save
from sparse_kernels.train.loop import ConfigError


@pytest.fixture(scope="module")
def corpus():
    return synthetic_lm(900, 300, 300, seed=1)


def tiny(**overrides):
    settings = dict(hidden_size=16, embedding_size=16, num_layers=2, batch_size=4, eval_batch_size=4, bptt=12,
                    epochs=2, lr=5.0, momentum=0.0, dropout=0.2, clip=0.5, seed=7,
                    init_scale="dense")  # the settings these tests were written for (before issue #17)
    settings.update(overrides)
    return LMConfig(**settings)


def metric_rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("method", ["dense", "static"])
def test_lm_learns_and_reports(corpus, tmp_path, method):
    config = tiny(method=method, sparsity=0.75, tie_weights=True)
    result = train_lm(corpus, config, tmp_path, progress=False)
    assert not result.interrupted and len(result.history) == 2
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["valid_ppl"] < len(corpus.vocab)  # better than uniform guessing
    assert result.test_ppl == pytest.approx(torch.exp(torch.tensor(result.test_loss)).item(), rel=1e-6)
    assert result.best_valid_loss == min(row["valid_loss"] for row in result.history)
    assert len(metric_rows(tmp_path / "metrics.csv")) == 2
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint.pt", "best.pt", "metrics.csv"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    if method == "static":
        assert isinstance(result.model.rnn, SparseLSTM)
        assert result.params["stored"] < result.params["dense"]
        assert 0 < result.flops_ratio < 1
        # Recurrent nonzeros are 25% of the dense count (uniform init is exact per matrix).
        rnn = result.model.rnn
        assert rnn.nnz == round(0.25 * sum(w.shape.numel() for _, w in rnn.sparse_weights()))
    else:
        assert result.params["stored"] == result.params["dense"] and result.flops_ratio == 1.0


@pytest.mark.parametrize("progress", [True, False])
def test_a_run_leaves_no_thread_behind(corpus, tmp_path, progress):
    """tqdm's monitor thread, started with the progress bar (a disabled one
    too), is stopped when the run ends: a thread still alive at interpreter
    exit is woken there by tqdm's atexit hook and races finalisation (issue
    #16: a torchrun rank aborted at exit once, this thread the only one
    left)."""
    before = set(threading.enumerate())
    during = []
    train_lm(corpus, tiny(epochs=1), tmp_path, progress=progress,
             on_step=lambda step: during.extend(t.name for t in threading.enumerate()))
    assert "tqdm_monitor" in during   # else this test would prove nothing
    after = threading.enumerate()
    assert [t.name for t in after if t not in before] == []
    assert "tqdm_monitor" not in [t.name for t in after]   # nor one an earlier run left


@pytest.mark.parametrize("method", ["st-rnn", "set", "rigl", "snfs", "gradual", "iht", "predefined"])
def test_every_sparse_training_method_reaches_its_sparsity(corpus, tmp_path, method):
    result = train_lm(corpus, tiny(method=method, sparsity=0.8, update_every=4), tmp_path, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    weights = [w for _, w in result.model.rnn.sparse_weights()]
    total = sum(w.shape.numel() for w in weights)
    if method == "iht":
        # IHT keeps the full support stored and zeroes values at its update
        # steps only (the optimizer revives them in between; the thresholding
        # itself is tested with sparse_kernels.dst).
        assert sum(w.nnz for w in weights) == total
    else:
        assert abs(sum(w.nnz for w in weights) - 0.2 * total) <= 0.02 * total


def test_bad_method_options_are_config_errors(corpus, tmp_path):
    with pytest.raises(ConfigError, match="'st-rnn'.*granularity"):
        train_lm(corpus, tiny(method="st-rnn", method_options={"granularity": "weird"}), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="'st-rnn'"):
        train_lm(corpus, tiny(method="st-rnn", method_options={"no_such_option": 1}), tmp_path, progress=False)


@pytest.mark.parametrize("method,lr_schedule", [("dense", "plateau"), ("static", "plateau"), ("st-rnn", "plateau"),
                                                ("st-rnn", "cosine")])
def test_resume_after_interrupt_is_exact(corpus, tmp_path, method, lr_schedule):
    # st-rnn: topology updates every 3 steps, before and after the interrupt;
    # cosine: the lr changes every step, the scheduler's count must resume too.
    config = tiny(method=method, sparsity=0.8, update_every=3, lr_schedule=lr_schedule,
                  sparse_lr_scale="sqrt_fan_in")
    full = train_lm(corpus, config, tmp_path / "full", progress=False)
    steps_per_epoch = full.history[0]["step"]

    def interrupt(step):
        if step == steps_per_epoch + 2:  # in the middle of the second epoch
            raise KeyboardInterrupt

    part = train_lm(corpus, config, tmp_path / "resumed", progress=False, on_step=interrupt)
    assert part.interrupted and len(part.history) == 1
    resumed = train_lm(corpus, config, tmp_path / "resumed", resume=tmp_path / "resumed", progress=False)
    assert metric_rows(tmp_path / "resumed" / "metrics.csv") == metric_rows(tmp_path / "full" / "metrics.csv")
    assert resumed.test_loss == full.test_loss


def test_resume_between_an_epochs_last_step_and_its_deferred_update_is_exact(corpus, tmp_path):
    """Interrupted after an epoch's last step, before its validation and the
    topology update that waits for it: the resumed run validates, then
    updates, as the uninterrupted one did."""
    config = tiny(method="st-rnn", sparsity=0.8, epochs=3)   # one update an epoch, at its last step
    full = train_lm(corpus, config, tmp_path / "full", progress=False)
    steps_per_epoch = full.history[0]["step"]

    def interrupt(step):
        if step == steps_per_epoch:
            raise KeyboardInterrupt

    part = train_lm(corpus, config, tmp_path / "resumed", progress=False, on_step=interrupt)
    assert part.interrupted and part.history == []
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["progress"]["sparsity_step_pending"]
    resumed = train_lm(corpus, config, tmp_path / "resumed", resume=tmp_path / "resumed", progress=False)
    assert metric_rows(tmp_path / "resumed" / "metrics.csv") == metric_rows(tmp_path / "full" / "metrics.csv")
    assert resumed.test_loss == full.test_loss


def test_cosine_schedule_decays_every_group_to_zero(corpus, tmp_path):
    """lr_schedule "cosine": after step s of T every parameter group's lr is
    its initial lr times (1 + cos(pi s / T)) / 2, so the sparse groups keep
    their ratio to the dense one, and the last step leaves 0."""
    import math
    from sparse_kernels.train.loop import make_lr_scheduler, make_optimizer
    config = tiny(method="st-rnn", sparsity=0.8, lr_schedule="cosine", sparse_lr_scale="sqrt_fan_in", epochs=3)
    result = train_lm(corpus, config, tmp_path, progress=False)
    total = result.history[-1]["step"]
    for row in result.history:
        assert row["lr"] == pytest.approx(config.lr * 0.5 * (1 + math.cos(math.pi * row["step"] / total)), abs=1e-12)
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert result.history[0]["lr"] < config.lr  # it moved within the first epoch, not at its end only

    optimizer = make_optimizer(config, result.model)
    initial = [group["lr"] for group in optimizer.param_groups]
    assert len(set(initial)) > 1  # a dense group and sparse groups with their own lr
    scheduler = make_lr_scheduler(config, optimizer, total_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    factor = 0.5 * (1 + math.cos(math.pi * 4 / 10))
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([lr * factor for lr in initial])


def test_resume_keeps_the_lr_schedule(corpus, tmp_path):
    """The saved scheduler state belongs to its schedule: resuming with the
    other one is refused, also for a checkpoint saved before the setting
    existed (its runs decayed on a plateau)."""
    from sparse_kernels.train.checkpoint import save_checkpoint
    train_lm(corpus, tiny(epochs=1, lr_schedule="cosine"), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="lr_schedule='cosine', this run asks for lr_schedule='plateau'"):
        train_lm(corpus, tiny(lr_schedule="plateau"), tmp_path / "run", resume=tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["lr_schedule"]
    save_checkpoint(state, path, kind="lm")
    with pytest.raises(CheckpointError, match="lr_schedule='plateau', this run asks for lr_schedule='cosine'"):
        train_lm(corpus, tiny(lr_schedule="cosine"), tmp_path / "run", resume=tmp_path / "run", progress=False)


def test_resume_with_more_epochs_keeps_the_planned_schedules(corpus, tmp_path, capsys):
    """A finished run resumed with more epochs trains on (to convergence,
    say) under the schedules it was planned with: ST-RNN's prune rate reached
    0 at the planned end, so the topology stays; stretched to the new length
    it would have prune-and-regrow steps again. A cosine lr schedule, which
    is 0 at the planned end, refuses to go past it."""
    def last_patterns():  # the run's last model (result.model is the best one)
        model = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
        return {k: v for k, v in model.items() if k.endswith(("row_ptr", "col_idx"))}

    config = tiny(method="st-rnn", sparsity=0.8, update_every=3)
    train_lm(corpus, config, tmp_path / "run", progress=False)
    patterns = last_patterns()
    assert patterns  # else the comparison below proves nothing
    capsys.readouterr()
    longer = train_lm(corpus, tiny(method="st-rnn", sparsity=0.8, update_every=3, epochs=4), tmp_path / "run",
                      resume=tmp_path / "run", progress=False)
    assert "planned for 2" in capsys.readouterr().err
    assert len(longer.history) == 4
    assert longer.history[3]["train_loss"] != longer.history[1]["train_loss"]  # it trained on
    assert all(torch.equal(patterns[k], v) for k, v in last_patterns().items())
    # Extended once more, the horizon is still the first plan's.
    train_lm(corpus, tiny(method="st-rnn", sparsity=0.8, update_every=3, epochs=5), tmp_path / "run",
             resume=tmp_path / "run", progress=False)
    assert "planned for 2" in capsys.readouterr().err

    train_lm(corpus, tiny(epochs=1, lr_schedule="cosine"), tmp_path / "cos", progress=False)
    with pytest.raises(ConfigError, match="cosine lr schedule reaches 0 at its planned end .1 epochs"):
        train_lm(corpus, tiny(epochs=2, lr_schedule="cosine"), tmp_path / "cos", resume=tmp_path / "cos",
                 progress=False)


@pytest.mark.parametrize("method", ["st-rnn", "gradual"])
def test_validation_scores_the_model_before_the_epoch_end_topology_update(corpus, tmp_path, method):
    """With one update an epoch (the default schedule) the update falls on
    the epoch's last step. A prune-and-regrow update runs after that epoch's
    validation, so the validated model (best.pt after epoch 1) is the one the
    epoch trained, and the epoch-end checkpoint holds the updated topology.
    Gradual pruning's update is the sparsification itself: validated after."""
    def patterns(path):
        model = torch.load(path, weights_only=True)["model"]
        return {k: v for k, v in model.items() if k.endswith(("row_ptr", "col_idx"))}

    def stop_in_epoch_2(step):
        if step == steps_per_epoch + 1:
            raise KeyboardInterrupt

    config = tiny(method=method, sparsity=0.8, epochs=3)   # update_every 0: one update an epoch
    steps_per_epoch = train_lm(corpus, tiny(epochs=1), tmp_path / "probe", progress=False).history[0]["step"]
    result = train_lm(corpus, config, tmp_path / "run", progress=False, on_step=stop_in_epoch_2)
    assert result.interrupted and len(result.history) == 1
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert sum(s["total_pruned"] for s in ckpt["sparsity_scheduler"]["layer_stats"].values()) > 0  # it updated
    validated, after = patterns(tmp_path / "run" / "best.pt"), patterns(tmp_path / "run" / "checkpoint.pt")
    assert validated.keys() == after.keys() and validated
    same = all(torch.equal(validated[k], after[k]) for k in validated)
    assert same == (method == "gradual")


def test_lr_schedule_is_checked():
    with pytest.raises(ConfigError, match="lr_schedule must be one of plateau, cosine, got 'linear'"):
        tiny(lr_schedule="linear").validate()


def test_resume_rejects_incompatible_checkpoints(corpus, tmp_path):
    train_lm(corpus, tiny(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="embedding_size=16.*embedding_size=32"):
        train_lm(corpus, tiny(hidden_size=32, embedding_size=32), tmp_path / "other", resume=tmp_path / "run")
    other_words = synthetic_lm(900, 300, 300, seed=1)
    other_words.vocab.itos = other_words.vocab.itos[::-1]
    with pytest.raises(CheckpointError, match="another vocab"):
        train_lm(other_words, tiny(epochs=1), tmp_path / "other", resume=tmp_path / "run")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train_lm(corpus, tiny(), tmp_path / "other", resume=tmp_path / "nothing")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a sparse-rnn checkpoint"):
        train_lm(corpus, tiny(), tmp_path / "other", resume=tmp_path / "junk.pt")
    atomic_save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a sparse-rnn checkpoint"):
        train_lm(corpus, tiny(), tmp_path / "other", resume=tmp_path / "foreign.pt")


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize("field, value, message", [
    ("method", "magic", "unknown method"), ("sparsity", 1.0, "sparsity must be in"),
    ("sparsity", -0.1, "sparsity must be in"), ("bptt", 0, "bptt must be positive"),
])
def test_config_errors(corpus, tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        train_lm(corpus, tiny(**{field: value}), tmp_path, progress=False)


def test_sparse_embedding_lm_sizes_prefixes_by_train_frequency(corpus, tmp_path):
    from sparse_kernels import SparseEmbedding
    from sparse_kernels.train.lm import frequency_ranks
    result = train_lm(corpus, tiny(method="predefined", sparsity=0.5, embedding_density=0.5, epochs=1), tmp_path,
                      progress=False)
    embed = result.model.encoder
    assert isinstance(embed, SparseEmbedding)
    widths = embed.weight.row_ptr.diff()
    counts = torch.bincount(corpus.train, minlength=len(corpus.vocab))
    ranks = frequency_ranks(corpus.train, len(corpus.vocab))
    assert int(ranks[int(counts.argmax())]) == 0
    assert int(widths[int(counts.argmax())]) == int(widths.max())  # the most frequent word: the longest prefix
    by_rank = widths[torch.argsort(ranks)]
    assert bool((by_rank.diff() <= 0).all())  # widths fall with the rank
    assert embed.weight.nnz == round(0.5 * len(corpus.vocab) * 16)
    with pytest.raises(ConfigError, match="tie_weights"):
        train_lm(corpus, tiny(embedding_density=0.5, tie_weights=True), tmp_path / "x", progress=False)


@pytest.mark.parametrize("model", ["lstm", "rnn", "gru"])
def test_grown_language_model_computes_the_same_function(model):
    from sparse_kernels.train.lm import build_lm
    from sparse_kernels.train.models import grow_language_model
    small = build_lm(tiny(model=model, method="static", sparsity=0.5, hidden_size=6), 30).double().eval()
    grown = grow_language_model(small, 11, generator=torch.Generator().manual_seed(2)).eval()
    assert grown.rnn.hidden_size == 11 and grown.decoder.in_features == 11
    tokens = torch.randint(30, (7, 3))
    torch.testing.assert_close(grown(tokens)[0], small(tokens)[0])
    dense = build_lm(tiny(model=model, method="dense"), 30)
    with pytest.raises(ConfigError, match="sparse"):
        grow_language_model(dense, 20)
