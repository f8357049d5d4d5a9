"""`sparse-rnn demo` at a tiny size: it produces its table with the sentence
under it and the two-panel plot; its figures come from the run; --device
cuda without a GPU stops with a clear message. No speed-up is asserted."""

import math
from dataclasses import replace
import re

import numpy as np
import pytest
import torch

from sparse_kernels.cli import main
from sparse_kernels.train import demo
from sparse_kernels.train.data import batchify, bptt_batches
from sparse_kernels.train.synthetic import InterleavedChains, InterleavedSpec

SENTENCE = re.compile(r"90% sparse: (\d+\.\d)x (faster|slower) training, (\d+\.\d)x (faster|slower) inference, "
                      r"(\d+\.\d)x (less|more) memory, test perplexity ([+-]\d+\.\d)% over dense; small dense of "
                      r"equal recurrent size ([+-]\d+\.\d)% over sparse\.")
TINY = ["--hidden", "16", "--epochs", "2", "--train-tokens", "1500", "--eval-tokens", "400", "--no-progress"]


def test_demo_tiny_writes_table_sentence_and_plot(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), *TINY])
    out = capsys.readouterr().out
    assert rc == 0
    for name in ("dense LSTM", "90% sparse", "small dense LSTM", "optimum", "test ppl", "train s/epoch",
                 "inference tokens/s (batch 1)", "weights + optimizer"):
        assert name in out
    results = (tmp_path / "results.md").read_text()
    table, sentence = results.split("\n\n")[:2]
    assert len(table.splitlines()) == 5          # header, rule, three models
    assert SENTENCE.fullmatch(sentence), sentence
    assert sentence in out
    # Two panels side by side: the image is wider than tall.
    from matplotlib import image
    height, width = image.imread(tmp_path / "learning_curves.png").shape[:2]
    assert width > 2 * height * 0.9


def test_demo_figures_are_the_runs_own(tmp_path):
    """The sentence restates the table's figures: ratios recomputed from the
    results agree with it."""
    settings = demo.DemoSettings(hidden_size=12, epochs=1, train_tokens=1500, eval_tokens=400, inference_tokens=70,
                                 language=InterleavedSpec(streams=3, symbols=4, successors=2))
    out = demo.run_demo(tmp_path, settings, progress=False, plot=False, log=lambda *a: None)
    (_, dense), (_, sparse), (_, small) = out["results"]
    f = out["figures"]
    assert [x["ppl"] for x in f] == [dense.test_ppl, sparse.test_ppl, small.test_ppl]
    assert [x["epoch_s"] for x in f] == [dense.seconds_per_epoch, sparse.seconds_per_epoch, small.seconds_per_epoch]
    assert all(x["tokens_s"] > 0 and x["memory"] > 0 for x in f)
    m = SENTENCE.fullmatch(out["summary"])
    assert m
    training = f[0]["epoch_s"] / f[1]["epoch_s"]
    expected = training if m.group(2) == "faster" else 1 / training
    assert float(m.group(1)) == pytest.approx(expected, abs=0.051)
    assert float(m.group(7)) == pytest.approx((f[1]["ppl"] / f[0]["ppl"] - 1) * 100, abs=0.051)
    assert float(m.group(8)) == pytest.approx((f[2]["ppl"] / f[1]["ppl"] - 1) * 100, abs=0.051)
    # the small model stores about as many recurrent weights as the sparse one
    assert small.config.hidden_size == demo.matching_hidden_size(sparse.params["recurrent_stored"])


def test_result_sentence_words():
    dense = {"ppl": 20.0, "epoch_s": 10.0, "tokens_s": 100.0, "memory": 800}
    sparse = {"ppl": 20.5, "epoch_s": 4.0, "tokens_s": 50.0, "memory": 100}
    small = {"ppl": 23.0, "epoch_s": 1.0, "tokens_s": 900.0, "memory": 90}
    assert demo.result_sentence(0.9, dense, sparse, small) == (
        "90% sparse: 2.5x faster training, 2.0x slower inference, 8.0x less memory, test perplexity +2.5% over "
        "dense; small dense of equal recurrent size +12.2% over sparse.")


def test_split_optimum_is_the_source_on_each_column():
    source = InterleavedChains(InterleavedSpec(streams=3, symbols=5, successors=2))
    ids = torch.from_numpy(source.sample(np.random.default_rng(0), 4001))
    columns = ids[:4000].view(4, 1000)
    nats = sum(source.log_prob(c[:1].numpy()) - source.log_prob(c.numpy()) for c in columns)
    assert demo.split_optimum(source, ids, 4) == pytest.approx(math.exp(nats / (4 * 999)))
    # Short columns start more often with the chains unknown: further from the entropy rate.
    assert demo.split_optimum(source, ids, 200) > demo.split_optimum(source, ids, 2) > source.optimal_perplexity() * 0.97


def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["demo", "--out", str(tmp_path), "--device", "cuda", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("sparse-rnn: error: --device cuda: no CUDA GPU is visible")
    assert not (tmp_path / "run1").exists()     # stopped before any training


def test_device_must_be_cpu_or_cuda(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--device", "tpu", *TINY])
    assert rc == 2 and "--device must be cpu or cuda" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_demo_tiny_on_cuda(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--device", "cuda", *TINY])
    out = capsys.readouterr().out
    assert rc == 0 and "cuDNN" in out and SENTENCE.search(out)


def test_learning_rate_warms_up_then_decays_to_the_final_fraction():
    lrs = [demo.learning_rate(step, 0.01, 10, 110, 0.1) for step in range(111)]
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))          # rising during the warm-up
    assert all(a > b for a, b in zip(lrs[10:110], lrs[11:111]))    # then falling
    assert lrs[110] == pytest.approx(0.001)
    assert lrs[60] == pytest.approx(0.001 + 0.009 * 0.5)            # halfway down the cosine


def test_scheduled_learning_rate_sets_each_step_and_is_removed_after():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    seen = []
    with demo.scheduled_learning_rate(lambda n: 0.5 ** n):
        for _ in range(3):
            weight.grad = torch.tensor([1.0])
            optimizer.step()
            seen.append(optimizer.param_groups[0]["lr"])
    assert seen == [1.0, 0.5, 0.25]
    assert weight.item() == pytest.approx(1.0 - 1.75)              # the steps used those rates
    optimizer.param_groups[0]["lr"] = 2.0
    weight.grad = torch.tensor([1.0])
    optimizer.step()                                               # outside the block: untouched
    assert optimizer.param_groups[0]["lr"] == 2.0 and weight.item() == pytest.approx(-0.75 - 2.0)


def test_every_epoch_has_fresh_text_from_the_source():
    settings = demo.DemoSettings(epochs=3, train_tokens=2000, eval_tokens=300,
                                 language=InterleavedSpec(streams=2, symbols=6, successors=2, stay=0.5))
    corpus, source, chunks = demo.demo_corpus(settings)
    assert [c.numel() for c in chunks] == [2000] * 3
    assert not torch.equal(chunks[0], chunks[1]) and not torch.equal(chunks[1], chunks[2])
    assert all(math.isfinite(source.log_prob(c.numpy())) for c in chunks)   # each a text of the source
    assert torch.equal(corpus.train, torch.cat(chunks))
    # more epochs add text without changing the earlier epochs' or the evaluation splits
    longer, _, more = demo.demo_corpus(replace(settings, epochs=4))
    assert all(torch.equal(a, b) for a, b in zip(chunks, more)) and torch.equal(longer.test, corpus.test)
    windows = list(bptt_batches(batchify(chunks[0], settings.batch_size), settings.bptt))
    assert settings.steps() == 3 * len(windows) == 3 * demo.steps_per_epoch(2000, settings.batch_size, settings.bptt)


def test_inference_timing_takes_turns_of_consecutive_windows():
    """Each model runs its windows in turns of four consecutive ones (the
    first untimed, to re-warm the caches), the turns alternating between
    models; every model reads the stream in order with its state carried,
    and a short text is read again from its start."""
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, window, state):
            calls.append((self.name, window[0, 0].item(), state))
            return window, (state or 0) + 1

    tokens = torch.arange(50)
    speed = demo.inference_tokens_per_second({"a": Recorder("a"), "b": Recorder("b")}, tokens, bptt=5,
                                             device=torch.device("cpu"), rounds=4)
    assert set(speed) == {"a", "b"} and all(v > 0 for v in speed.values())
    # rounds 4, three timed windows a turn -> two turns of four windows per model
    assert [name for name, _, _ in calls] == ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4
    for name in "ab":
        mine = [(first, state) for n, first, state in calls if n == name]
        assert [first for first, _ in mine] == [0, 5, 10, 15, 20, 25, 30, 35]
        assert [state for _, state in mine] == [None, 1, 2, 3, 4, 5, 6, 7]
    calls.clear()
    demo.inference_tokens_per_second({"a": Recorder("a")}, torch.arange(12), bptt=5, device=torch.device("cpu"),
                                     rounds=3)
    assert [first for _, first, _ in calls] == [0, 5, 10, 3]  # 12 tokens, then again from the start
