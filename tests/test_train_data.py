"""The embedded synthetic data (its optimum is right) and the file loaders
(PTB format, labelled texts) with their errors."""

import math

import numpy as np
import pytest
import torch

from sparse_kernels.train import data, synthetic
from sparse_kernels.train.data import DataError


def test_grammar_entropy_matches_sampled_sentences():
    # The linear-system entropy and length must match Monte Carlo estimates
    # from sampled sentences, their log-probabilities obtained by parsing.
    g = synthetic.agreement_grammar()
    rng = np.random.default_rng(123)
    sentences = [g.sample(rng) for _ in range(4000)]
    log_probs = np.array([g.log_prob(s) for s in sentences])
    lengths = np.array([len(s) for s in sentences])
    assert np.isfinite(log_probs).all()
    se = lambda x: x.std() / math.sqrt(len(x))
    assert abs(-log_probs.mean() - g.sentence_entropy()) < 4 * se(log_probs)
    assert abs(lengths.mean() - g.expected_length()) < 4 * se(lengths)
    assert g.optimal_perplexity() == pytest.approx(math.exp(g.sentence_entropy() / (g.expected_length() + 1)))


def test_parser_probability_is_the_derivation_probability():
    # A tiny grammar small enough to enumerate: probabilities of all strings
    # up to a length bound must sum to (almost) 1 and match sampling frequencies.
    g = synthetic.Grammar({"S": [(0.6, ("A",)), (0.4, ("B", "S"))]},
                          {"A": (["a0", "a1"], [0.75, 0.25]), "B": (["b"], [1.0])}, start="S")
    total = sum(math.exp(g.log_prob(["b"] * k + [a])) for k in range(60) for a in ("a0", "a1"))
    assert total == pytest.approx(1.0, abs=1e-9)
    assert g.log_prob(["b", "a1"]) == pytest.approx(math.log(0.4 * 0.6 * 0.25))
    assert g.log_prob(["a0", "b"]) == -math.inf and g.log_prob(["zzz"]) == -math.inf
    # Entropy: H = h(0.6, 0.4) + 0.6 h(0.75, 0.25) + 0.4 H  (geometric number of b's).
    h = lambda *p: -sum(x * math.log(x) for x in p)
    assert g.sentence_entropy() == pytest.approx((h(0.6, 0.4) + 0.6 * h(0.75, 0.25)) / 0.6)
    assert g.expected_length() == pytest.approx(1 / 0.6)


def test_grammar_rejects_ambiguous_and_supercritical():
    cats = {"A": (["a"], [1.0])}
    with pytest.raises(ValueError, match="LL\\(1\\)"):
        synthetic.Grammar({"S": [(0.5, ("A",)), (0.5, ("A", "A"))]}, cats, start="S")
    with pytest.raises(ValueError, match="subcritical"):
        synthetic.Grammar({"S": [(0.4, ("A",)), (0.6, ("S", "S"))]}, cats, start="S")


def test_synthetic_corpus_is_deterministic_and_has_optimum():
    a = data.synthetic_lm(3000, 500, 500, seed=3)
    b = data.synthetic_lm(3000, 500, 500, seed=3)
    c = data.synthetic_lm(3000, 500, 500, seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train[:500], c.train[:500])
    assert a.train.numel() >= 3000 and a.optimal_perplexity > 1
    # The test split under the source scores close to the entropy rate.
    corpus = synthetic.synthetic_corpus(1000, 1000, 30000, seed=0)
    assert corpus.empirical_optimal_perplexity("test") == pytest.approx(corpus.optimal_perplexity, rel=0.05)


def test_synthetic_classification_label_is_first_clause_class():
    train, test = synthetic.synthetic_classification(200, 50, seed=1)
    assert len(train) == 200 and len(test) == 50
    for label, text in train:
        assert text.split()[0].startswith(f"det{label}_")
    assert len({label for label, _ in train}) == synthetic.LanguageSpec().classes


def test_load_ptb_roundtrip_and_unknowns(tmp_path):
    data.write_ptb(tmp_path, {"train": [["a", "b"], ["b", "c"]], "valid": [["a", "z"]], "test": [["c"]]})
    corpus = data.load_ptb(tmp_path)
    v = corpus.vocab
    assert v.itos[:4] == ["a", "b", "<eos>", "c"] and "<unk>" in v.stoi
    assert corpus.train.tolist() == v.encode(["a", "b", "<eos>", "b", "c", "<eos>"])
    assert corpus.valid.tolist() == [v.stoi["a"], v.stoi["<unk>"], v.stoi["<eos>"]]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "data folder not found"),
    (lambda p: p.mkdir(), "train.txt: file not found"),
    (lambda p: (p.mkdir(), *(p.joinpath(f"{k}.txt").write_text(t) for k, t in
                             (("train", "a b\n"), ("valid", " \n"), ("test", "a\n")))), "valid.txt: file is empty"),
])
def test_load_ptb_errors(tmp_path, setup, message):
    folder = tmp_path / "corpus"
    setup(folder)
    with pytest.raises(DataError, match=message):
        data.load_ptb(folder)


def test_batchify_and_bptt_windows():
    stream = torch.arange(23)
    batched = data.batchify(stream, 4)
    assert batched.shape == (5, 4) and batched[:, 1].tolist() == [5, 6, 7, 8, 9]
    windows = list(data.bptt_batches(batched, 3))
    assert [w[1].shape[0] for w in windows] == [3, 1]
    for _, x, y in windows:
        assert torch.equal(y, x + 1)
    with pytest.raises(DataError, match="too few"):
        data.batchify(torch.arange(3), 4)


def test_classification_loader_folder_and_file(tmp_path):
    (tmp_path / "train.tsv").write_text("pos\tGood film, good!\nneg\tBad film.\npos\tgood\n")
    (tmp_path / "test.tsv").write_text("neg\tvery bad\n")
    d = data.load_classification(tmp_path, max_vocab=2)
    assert d.labels == ["neg", "pos"]
    assert d.vocab.itos == ["<pad>", "<unk>", "good", "film"]
    tokens, label = d.test[0]
    assert label == 0 and tokens.tolist() == [1, 1]
    single = tmp_path / "all.csv"
    single.write_text("".join(f"{i % 2},text number {i}\n" for i in range(10)))
    d = data.load_classification(single, test_fraction=0.3)
    assert len(d.train) == 7 and len(d.test) == 3


@pytest.mark.parametrize("content, message", [("", "file is empty"), ("pos only-one-column\n", "expected 'label'")])
def test_classification_loader_errors(tmp_path, content, message):
    path = tmp_path / "data.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        data.load_classification(path)
    with pytest.raises(DataError, match="not found"):
        data.load_classification(tmp_path / "missing")
