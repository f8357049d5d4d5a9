"""The interleaved-chains source (the demo's language): its tables, its exact
entropy rate against a brute-force computation over the joint chain, its
sampler against its own probabilities, and its errors."""

import itertools
import math

import numpy as np
import pytest

from sparse_kernels.train.synthetic import InterleavedChains, InterleavedSpec, interleaved_corpus


def test_tables_are_stochastic_with_the_stated_support():
    spec = InterleavedSpec(streams=3, symbols=7, successors=3, seed=4)
    source = InterleavedChains(spec)
    p = source.transitions
    assert p.shape == (3, 7, 7)
    np.testing.assert_allclose(p.sum(axis=2), 1.0, atol=1e-12)
    assert ((p > 0).sum(axis=2) == 3).all()
    # j -> j + 1 is always possible (irreducibility)
    assert (p[:, np.arange(7), (np.arange(7) + 1) % 7] > 0).all()
    for chain in range(3):
        np.testing.assert_allclose(source.stationary[chain] @ p[chain], source.stationary[chain], atol=1e-12)
    assert source.vocabulary[0] == "c0_0" and source.vocabulary[-1] == "c2_6" and len(source.vocabulary) == 21


def joint_chain(source: InterleavedChains):
    """The joint chain's states (last speaker, every chain's last symbol), its
    transition matrix and its stationary law, found by power iteration, not
    assumed: an oracle independent of the closed forms."""
    k, n = source.spec.streams, source.spec.symbols
    states = list(itertools.product(range(k), *[range(n)] * k))
    index = {s: i for i, s in enumerate(states)}
    same, other = source.speaker_probs()
    m = np.zeros((len(states), len(states)))
    for s in states:
        speaker, symbols = s[0], s[1:]
        for c in range(k):
            pc = same if c == speaker else other
            for j in range(n):
                if source.transitions[c, symbols[c], j] > 0:
                    nxt = list(symbols)
                    nxt[c] = j
                    m[index[s], index[(c, *nxt)]] += pc * source.transitions[c, symbols[c], j]
    mu = np.full(len(states), 1.0 / len(states))
    for _ in range(5000):
        mu = mu @ m
    return states, m, mu


def brute_force_entropy_rate(source: InterleavedChains) -> float:
    """H(next word | full state) under the joint chain's stationary law."""
    _, m, mu = joint_chain(source)
    # Each successor state is a distinct word (speaker, symbol): the entropy of
    # a row of m is the entropy of the next word.
    row_entropy = np.array([-(r[r > 0] * np.log(r[r > 0])).sum() for r in m])
    return float(mu @ row_entropy)


@pytest.mark.parametrize("spec", [InterleavedSpec(streams=2, symbols=3, successors=2, stay=0.3, seed=1),
                                  InterleavedSpec(streams=3, symbols=3, successors=3, stay=0.0, seed=2),
                                  InterleavedSpec(streams=2, symbols=4, successors=1, stay=0.6, seed=3)])
def test_entropy_rate_matches_the_joint_chain(spec):
    source = InterleavedChains(spec)
    assert source.entropy_rate() == pytest.approx(brute_force_entropy_rate(source), rel=1e-9)


def brute_force_previous_word_entropy(source: InterleavedChains) -> float:
    """H(next word | previous word) from the joint law of two consecutive
    words under the joint chain's stationary law."""
    states, m, mu = joint_chain(source)
    n = source.spec.symbols
    words = [s[0] * n + s[1 + s[0]] for s in states]     # the word the last speaker said
    vocab = source.spec.streams * n
    pair = np.zeros((vocab, vocab))
    for i, j in zip(*np.nonzero(m)):
        pair[words[i], words[j]] += mu[i] * m[i, j]
    prev = pair.sum(axis=1)
    nz = pair > 0
    return float(-(pair[nz] * np.log((pair / prev[:, None])[nz])).sum())


@pytest.mark.parametrize("spec", [InterleavedSpec(streams=2, symbols=3, successors=2, stay=0.3, seed=1),
                                  InterleavedSpec(streams=3, symbols=3, successors=2, stay=0.5, seed=2)])
def test_previous_word_entropy_matches_the_joint_chain(spec):
    source = InterleavedChains(spec)
    assert source.previous_word_entropy() == pytest.approx(brute_force_previous_word_entropy(source), rel=1e-9)
    # memory of the other chains is worth something: the optimum is lower
    assert source.entropy_rate() < source.previous_word_entropy() - 0.05
    assert source.previous_word_perplexity() == pytest.approx(math.exp(source.previous_word_entropy()))


def test_sample_follows_its_own_probabilities():
    spec = InterleavedSpec(streams=5, symbols=6, successors=2, stay=0.4, seed=7)
    source = InterleavedChains(spec)
    ids = source.sample(np.random.default_rng(11), 60_000)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 30
    # Every word is possible under the source, and the mean surprisal is its
    # entropy rate (the process is stationary from the first word).
    per_word = -source.log_prob(ids) / len(ids)
    assert math.isfinite(per_word)
    assert per_word == pytest.approx(source.entropy_rate(), rel=0.02)
    speakers = ids // 6
    same = np.mean(speakers[1:] == speakers[:-1])
    assert same == pytest.approx(source.speaker_probs()[0], abs=0.01)


def test_log_prob_of_an_impossible_transition_is_minus_infinity():
    source = InterleavedChains(InterleavedSpec(streams=2, symbols=5, successors=2, seed=0))
    impossible = int(np.flatnonzero(source.transitions[1, 0] == 0)[0])
    assert source.log_prob([5 + 0, 5 + impossible]) == -math.inf
    assert math.isfinite(source.log_prob([5 + 0, 5 + 1]))   # 0 -> 1 is always allowed


def test_corpus_is_deterministic_and_splits_are_independent_streams():
    spec = InterleavedSpec(streams=4, symbols=8)
    a_source, a = interleaved_corpus(500, 200, 300, seed=3, spec=spec)
    _, b = interleaved_corpus(500, 900, 300, seed=3, spec=spec)
    _, c = interleaved_corpus(500, 200, 300, seed=4, spec=spec)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [500, 200, 300]
    np.testing.assert_array_equal(a["train"], b["train"])     # other split sizes do not change it
    np.testing.assert_array_equal(a["test"], b["test"])
    assert not np.array_equal(a["train"], c["train"])
    assert not np.array_equal(a["train"][:200], a["valid"])
    assert a_source.optimal_perplexity() == pytest.approx(math.exp(a_source.entropy_rate()))


@pytest.mark.parametrize("kwargs, message", [({"streams": 0}, "streams"), ({"symbols": 1}, "symbols"),
                                             ({"successors": 9}, "successors"), ({"stay": 1.0}, "stay")])
def test_bad_spec_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InterleavedChains(InterleavedSpec(**{"symbols": 8, **kwargs}))


def test_bad_corpus_size_is_refused():
    with pytest.raises(ValueError, match="valid_tokens"):
        interleaved_corpus(10, 0, 10)
