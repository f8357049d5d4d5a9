"""The embedded data: a synthetic language whose best possible perplexity is
known, and a text-classification task built from it. Nothing is downloaded;
everything is generated deterministically from a seed.

The language is a probabilistic context-free grammar with number-like
agreement classes: a subject's determiner and noun fix the class of its verb,
relative clauses nest between them (``the dog that the cats chase runs``), so
the model must carry agreement across nested, arbitrarily long spans. Word
choices inside each category follow a Zipf law.

The grammar is checked to be LL(1) at construction, hence unambiguous: a
sentence's probability is the probability of its one derivation, so the
entropy of a sentence equals the entropy of its derivation, which is the
solution of a linear system over the nonterminals. Sentences are independent
and ``<eos>``-terminated, so the entropy rate of the token stream is
``H(sentence) / E[tokens per sentence + 1]`` and ``exp`` of it is the lowest
perplexity any model can reach.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

EOS = "<eos>"


def zipf_probs(n: int, exponent: float = 1.0) -> np.ndarray:
    ranks = np.arange(1, n + 1, dtype=np.float64)
    weights = ranks ** -exponent
    return weights / weights.sum()


def _entropy(probs) -> float:
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class Grammar:
    """A PCFG over word categories.

    ``rules``: nonterminal -> list of (probability, right-hand side), a
    right-hand side being a tuple of nonterminals and category names.
    ``categories``: category -> (words, probabilities); every word belongs to
    exactly one category. Raises ValueError if the grammar is not LL(1) over
    categories (then strings could have several derivations and the entropy
    below would be wrong) or not subcritical (infinite expected length).
    """

    def __init__(self, rules: dict, categories: dict, start: str):
        self.rules = {a: [(float(p), tuple(rhs)) for p, rhs in alts] for a, alts in rules.items()}
        self.categories = {c: (list(w), np.asarray(p, dtype=np.float64)) for c, (w, p) in categories.items()}
        self.start = start
        self.word_category = {}
        for cat, (words, probs) in self.categories.items():
            if len(words) != len(probs) or not math.isclose(probs.sum(), 1.0, rel_tol=1e-9):
                raise ValueError(f"category {cat!r}: probabilities must match the words and sum to 1")
            for w in words:
                if w in self.word_category:
                    raise ValueError(f"word {w!r} is in categories {self.word_category[w]!r} and {cat!r}")
                self.word_category[w] = cat
        for a, alts in self.rules.items():
            if not math.isclose(sum(p for p, _ in alts), 1.0, rel_tol=1e-9):
                raise ValueError(f"rules of {a!r} must sum to probability 1")
            for _, rhs in alts:
                for sym in rhs:
                    if sym not in self.rules and sym not in self.categories:
                        raise ValueError(f"rule of {a!r} names unknown symbol {sym!r}")
        self._expected_length, self._derivation_entropy = self._solve_expectations()
        self._table = self._ll1_table()
        # Cumulative probabilities for sampling by bisection (rng.choice(p=...)
        # re-validates p on every call, 20x slower).
        self._word_cdf = {c: np.cumsum(p).tolist() for c, (_, p) in self.categories.items()}
        self._rule_cdf = {a: np.cumsum([p for p, _ in alts]).tolist() for a, alts in self.rules.items()}
        self._word_index = {c: {w: i for i, w in enumerate(words)} for c, (words, _) in self.categories.items()}

    # ------------------------------------------------------------------ expectations
    def _solve_expectations(self):
        """E[length] and H(derivation) of every nonterminal: x = b + M x, with
        M[A, B] the expected number of B's in one expansion of A."""
        names = list(self.rules)
        index = {a: i for i, a in enumerate(names)}
        n = len(names)
        m = np.zeros((n, n))
        length_b, entropy_b = np.zeros(n), np.zeros(n)
        for a, alts in self.rules.items():
            i = index[a]
            entropy_b[i] = _entropy([p for p, _ in alts])
            for p, rhs in alts:
                for sym in rhs:
                    if sym in index:
                        m[i, index[sym]] += p
                    else:
                        length_b[i] += p
                        entropy_b[i] += p * _entropy(self.categories[sym][1])
        if n and max(abs(np.linalg.eigvals(m))) >= 1.0:
            raise ValueError("the grammar is not subcritical: its expected sentence length is infinite")
        solve = lambda b: dict(zip(names, np.linalg.solve(np.eye(n) - m, b)))
        return solve(length_b), solve(entropy_b)

    def expected_length(self, symbol: str | None = None) -> float:
        """Expected number of words (without <eos>) derived from ``symbol``."""
        return float(self._expected_length[symbol or self.start])

    def sentence_entropy(self, symbol: str | None = None) -> float:
        """Entropy in nats of a sentence derived from ``symbol``."""
        return float(self._derivation_entropy[symbol or self.start])

    def entropy_rate(self) -> float:
        """Nats per token of the <eos>-separated stream of sentences."""
        return self.sentence_entropy() / (self.expected_length() + 1.0)

    def optimal_perplexity(self) -> float:
        return math.exp(self.entropy_rate())

    # ------------------------------------------------------------------ LL(1)
    def _ll1_table(self):
        nullable = {a: False for a in self.rules}
        first = {a: set() for a in self.rules}

        def first_of(seq):
            out = set()
            for sym in seq:
                if sym in self.categories:
                    out.add(sym)
                    return out, False
                out |= first[sym]
                if not nullable[sym]:
                    return out, False
            return out, True

        changed = True
        while changed:
            changed = False
            for a, alts in self.rules.items():
                for _, rhs in alts:
                    f, null = first_of(rhs)
                    if not f <= first[a] or (null and not nullable[a]):
                        first[a] |= f
                        nullable[a] = nullable[a] or null
                        changed = True
        follow = {a: set() for a in self.rules}
        follow[self.start].add(EOS)
        changed = True
        while changed:
            changed = False
            for a, alts in self.rules.items():
                for _, rhs in alts:
                    for k, sym in enumerate(rhs):
                        if sym in self.categories:
                            continue
                        f, null = first_of(rhs[k + 1:])
                        add = f | (follow[a] if null else set())
                        if not add <= follow[sym]:
                            follow[sym] |= add
                            changed = True
        table = {}
        for a, alts in self.rules.items():
            for p, rhs in alts:
                f, null = first_of(rhs)
                for lookahead in f | (follow[a] if null else set()):
                    if (a, lookahead) in table:
                        raise ValueError(f"the grammar is not LL(1): {a!r} has two rules for {lookahead!r}")
                    table[a, lookahead] = (p, rhs)
        return table

    def log_prob(self, words: list[str]) -> float:
        """Natural-log probability of one sentence (without <eos>), by parsing
        it; -inf if the grammar cannot derive it."""
        cats = []
        for w in words:
            if w not in self.word_category:
                return -math.inf
            cats.append(self.word_category[w])
        cats.append(EOS)
        total, pos, stack = 0.0, 0, [self.start]
        while stack:
            sym = stack.pop()
            if sym in self.categories:
                if cats[pos] != sym:
                    return -math.inf
                total += math.log(self.categories[sym][1][self._word_index[sym][words[pos]]])
                pos += 1
                continue
            rule = self._table.get((sym, cats[pos]))
            if rule is None:
                return -math.inf
            total += math.log(rule[0])
            stack.extend(reversed(rule[1]))
        return total if cats[pos] == EOS else -math.inf

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, symbol: str | None = None) -> list[str]:
        """One sentence (a list of words, without <eos>)."""
        out, stack = [], [symbol or self.start]
        while stack:
            sym = stack.pop()
            if sym in self.categories:
                words, cdf = self.categories[sym][0], self._word_cdf[sym]
                out.append(words[min(bisect.bisect_right(cdf, rng.random()), len(words) - 1)])
            else:
                alts, cdf = self.rules[sym], self._rule_cdf[sym]
                k = min(bisect.bisect_right(cdf, rng.random()), len(alts) - 1) if len(alts) > 1 else 0
                stack.extend(reversed(alts[k][1]))
        return out

    @property
    def vocabulary(self) -> list[str]:
        return [w for words, _ in self.categories.values() for w in words]


@dataclass(frozen=True)
class LanguageSpec:
    """Sizes of the default synthetic language (every count per agreement class)."""
    classes: int = 3
    nouns: int = 120
    intransitive_verbs: int = 30
    transitive_verbs: int = 30
    determiners: int = 2
    adjectives: int = 60
    adverbs: int = 20
    relative_clause_prob: float = 0.3
    object_prob: float = 0.4
    adjective_prob: float = 0.3
    adverb_prob: float = 0.25
    zipf_exponent: float = 1.0


def agreement_grammar(spec: LanguageSpec = LanguageSpec()) -> Grammar:
    """S -> CL_a;  CL_a -> NP_a VP_a ADVS;  NP_a -> DET_a ADJS N_a REL;
    REL -> '' | that RC;  RC -> NP_b TV_b;  VP_a -> IV_a | TV_a OBJ;
    OBJ -> NP_c.  Classes (a, b, c) are drawn uniformly; each class has its own
    determiners, nouns and verbs, so a verb must agree with a subject that a
    nested relative clause may have pushed far back."""
    k = spec.classes
    zipf = lambda n: zipf_probs(n, spec.zipf_exponent)
    categories = {"THAT": (["that"], [1.0]),
                  "ADJ": ([f"adj{i}" for i in range(spec.adjectives)], zipf(spec.adjectives)),
                  "ADV": ([f"adv{i}" for i in range(spec.adverbs)], zipf(spec.adverbs))}
    uniform = 1.0 / k
    rules = {"S": [(uniform, (f"CL{a}",)) for a in range(k)],
             "NP": [(uniform, (f"NP{a}",)) for a in range(k)],
             "RC": [(uniform, (f"RC{a}",)) for a in range(k)],
             "REL": [(1 - spec.relative_clause_prob, ()), (spec.relative_clause_prob, ("THAT", "RC"))],
             "ADJS": [(1 - spec.adjective_prob, ()), (spec.adjective_prob, ("ADJ", "ADJS"))],
             "ADVS": [(1 - spec.adverb_prob, ()), (spec.adverb_prob, ("ADV", "ADVS"))]}
    for a in range(k):
        categories[f"DET{a}"] = ([f"det{a}_{i}" for i in range(spec.determiners)], zipf(spec.determiners))
        categories[f"N{a}"] = ([f"noun{a}_{i}" for i in range(spec.nouns)], zipf(spec.nouns))
        categories[f"IV{a}"] = ([f"iverb{a}_{i}" for i in range(spec.intransitive_verbs)],
                                zipf(spec.intransitive_verbs))
        categories[f"TV{a}"] = ([f"tverb{a}_{i}" for i in range(spec.transitive_verbs)],
                                zipf(spec.transitive_verbs))
        rules[f"CL{a}"] = [(1.0, (f"NP{a}", f"VP{a}", "ADVS"))]
        rules[f"NP{a}"] = [(1.0, (f"DET{a}", "ADJS", f"N{a}", "REL"))]
        rules[f"RC{a}"] = [(1.0, (f"NP{a}", f"TV{a}"))]
        rules[f"VP{a}"] = [(1 - spec.object_prob, (f"IV{a}",)), (spec.object_prob, (f"TV{a}", "NP"))]
    return Grammar(rules, categories, start="S")


@dataclass
class SyntheticCorpus:
    """Train/valid/test sentences of the synthetic language and its optimum."""
    train: list[list[str]]
    valid: list[list[str]]
    test: list[list[str]]
    grammar: Grammar

    @property
    def optimal_perplexity(self) -> float:
        return self.grammar.optimal_perplexity()

    def empirical_optimal_perplexity(self, split: str = "test") -> float:
        """exp(-mean log p) per token (<eos> included) of a split under the
        source itself: what a perfect model scores on exactly this text."""
        sentences = getattr(self, split)
        nats = -sum(self.grammar.log_prob(s) for s in sentences)
        return math.exp(nats / sum(len(s) + 1 for s in sentences))


def _sentences_for_tokens(grammar: Grammar, rng, tokens: int) -> list[list[str]]:
    out, count = [], 0
    while count < tokens:
        s = grammar.sample(rng)
        out.append(s)
        count += len(s) + 1
    return out


def synthetic_corpus(train_tokens: int = 200_000, valid_tokens: int = 20_000, test_tokens: int = 20_000,
                     *, seed: int = 0, spec: LanguageSpec = LanguageSpec()) -> SyntheticCorpus:
    """Sentences of :func:`agreement_grammar`, each split from its own stream
    of a seeded generator (so a split does not change with the others' sizes)."""
    for name, value in (("train_tokens", train_tokens), ("valid_tokens", valid_tokens),
                        ("test_tokens", test_tokens)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    grammar = agreement_grammar(spec)
    rngs = [np.random.default_rng([seed, k]) for k in range(3)]
    splits = [_sentences_for_tokens(grammar, rng, n)
              for rng, n in zip(rngs, (train_tokens, valid_tokens, test_tokens))]
    return SyntheticCorpus(*splits, grammar=grammar)


def synthetic_classification(train_docs: int = 2000, test_docs: int = 500, *, sentences: tuple = (2, 5),
                             seed: int = 0, spec: LanguageSpec = LanguageSpec()):
    """Documents of several sentences (joined by '.'); the label is the
    agreement class of the first sentence's main clause, which the rest of
    the document (other sentences of random classes) buries, so a model must
    carry it to the end. Returns (train, test), lists of (label, text); the
    labels are the class indices 0..classes-1 as strings."""
    if train_docs <= 0 or test_docs <= 0:
        raise ValueError(f"train_docs and test_docs must be positive, got {train_docs}, {test_docs}")
    lo, hi = sentences
    if not 1 <= lo <= hi:
        raise ValueError(f"sentences must be (min, max) with 1 <= min <= max, got {sentences}")
    grammar = agreement_grammar(spec)

    def docs(rng, n):
        out = []
        for _ in range(n):
            label = int(rng.integers(spec.classes))
            words = grammar.sample(rng, f"CL{label}")
            for _ in range(int(rng.integers(lo, hi + 1)) - 1):
                words += ["."] + grammar.sample(rng)
            out.append((str(label), " ".join(words)))
        return out

    return docs(np.random.default_rng([seed, 10]), train_docs), docs(np.random.default_rng([seed, 11]), test_docs)


# ---------------------------------------------------------------------- interleaved chains
@dataclass(frozen=True)
class InterleavedSpec:
    """Sizes of :class:`InterleavedChains`: ``streams`` independent Markov
    chains of ``symbols`` words each; every symbol can be followed (in its own
    chain) by ``successors`` symbols with Zipfian probabilities. ``seed``
    draws the transition tables (the language), not the text."""
    streams: int = 4
    symbols: int = 128
    successors: int = 8
    stay: float = 0.25
    zipf_exponent: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if self.streams < 1:
            raise ValueError(f"streams must be >= 1, got {self.streams}")
        if self.symbols < 2:
            raise ValueError(f"symbols must be >= 2, got {self.symbols}")
        if not 1 <= self.successors <= self.symbols:
            raise ValueError(f"successors must be in [1, symbols={self.symbols}], got {self.successors}")
        if not 0.0 <= self.stay < 1.0:
            raise ValueError(f"stay must be in [0, 1), got {self.stay}")


class InterleavedChains:
    """A channel shared by independent processes: ``streams`` first-order
    Markov chains, each over its own ``symbols`` words (``c{k}_{j}``: chain k,
    symbol j). At every position one chain advances one step and emits its
    new symbol while the others wait: the chain that spoke last speaks again
    with probability ``stay``, else a chain drawn uniformly (possibly the
    same) speaks.

    Predicting the next word needs the last symbol of *every* chain at once
    (a chain may speak again after an unbounded pause), so the state a model
    must carry grows with streams x symbols: a wide hidden layer holds it, a
    narrow one cannot, whatever it learns. That is what makes capacity
    matter here, unlike in :func:`agreement_grammar`'s language. ``stay``
    makes runs of one chain common, so its transitions are learnt early from
    adjacent words, before the long-range part.

    Each chain starts from its stationary distribution and the first
    speaker is uniform, so the process is stationary (the speaker's
    stationary law is uniform), and its entropy rate is exact: the
    speaker's entropy given the previous one plus
    ``mean_k sum_i pi_k(i) H(P_k[i, :])`` nats per word (given the speaker,
    the word depends on that chain's last symbol only). Every chain's
    transitions include ``j -> j + 1 (mod symbols)``, so each chain is
    irreducible and its stationary distribution unique.
    """

    def __init__(self, spec: InterleavedSpec = InterleavedSpec()):
        spec.validate()
        self.spec = spec
        k, n, s = spec.streams, spec.symbols, spec.successors
        rng = np.random.default_rng([spec.seed, 1000])
        self.transitions = np.zeros((k, n, n))
        for chain in range(k):
            for i in range(n):
                # (i + 1) mod n first (irreducibility), then s - 1 other symbols;
                # the Zipf weights go to the successors in a random order.
                others = rng.permutation(np.delete(np.arange(n), (i + 1) % n))[: s - 1]
                successors = np.concatenate([[(i + 1) % n], others])
                self.transitions[chain, i, successors] = zipf_probs(s, spec.zipf_exponent)[rng.permutation(s)]
        self.stationary = np.stack([self._stationary(p) for p in self.transitions])
        self._cdf = np.cumsum(self.transitions, axis=2)
        self._stationary_cdf = np.cumsum(self.stationary, axis=1)

    @staticmethod
    def _stationary(p: np.ndarray) -> np.ndarray:
        """pi with pi P = pi, sum 1 (unique: the chain is irreducible)."""
        n = p.shape[0]
        a = np.vstack([p.T - np.eye(n), np.ones((1, n))])
        b = np.concatenate([np.zeros(n), [1.0]])
        pi = np.linalg.lstsq(a, b, rcond=None)[0]
        return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()

    @property
    def vocabulary(self) -> list[str]:
        """Word of token id ``chain * symbols + symbol``."""
        return [f"c{c}_{j}" for c in range(self.spec.streams) for j in range(self.spec.symbols)]

    def speaker_probs(self) -> np.ndarray:
        """P(next speaker | previous speaker) as (same, each other chain)."""
        k, stay = self.spec.streams, self.spec.stay
        return np.array([stay + (1 - stay) / k, (1 - stay) / k])

    def _speaker_entropy(self) -> float:
        """Nats of the next speaker given the previous one."""
        same, other = self.speaker_probs()
        return _entropy([same] + [other] * (self.spec.streams - 1))

    def _transition_entropy(self) -> float:
        """Nats of a chain's next symbol given its last one, at stationarity,
        averaged over the chains (each speaks equally often)."""
        row_entropy = np.array([[_entropy(row) for row in p] for p in self.transitions])
        return float((self.stationary * row_entropy).sum(axis=1).mean())

    def entropy_rate(self) -> float:
        """Nats per word of the stationary process."""
        return self._speaker_entropy() + self._transition_entropy()

    def optimal_perplexity(self) -> float:
        return math.exp(self.entropy_rate())

    def previous_word_entropy(self) -> float:
        """Nats per word of the best predictor that sees only the previous
        word (no memory): it knows the chain that spoke and that chain's
        symbol; any other chain's symbol is at its stationary law (the
        chains are independent and stationary), and so is that chain's next
        word (pi P = pi). The gap to :meth:`entropy_rate` is what memory of
        the other chains is worth."""
        same, other = self.speaker_probs()
        stationary = float(np.mean([_entropy(pi) for pi in self.stationary]))
        return (self._speaker_entropy() + same * self._transition_entropy()
                + (self.spec.streams - 1) * other * stationary)

    def previous_word_perplexity(self) -> float:
        return math.exp(self.previous_word_entropy())

    def sample(self, rng: np.random.Generator, tokens: int) -> np.ndarray:
        """``tokens`` word ids of the stationary process (int64)."""
        k, n = self.spec.streams, self.spec.symbols
        state = np.array([min(int(np.searchsorted(self._stationary_cdf[c], u, side="right")), n - 1)
                          for c, u in enumerate(rng.random(k))])
        stays = rng.random(tokens) < self.spec.stay
        chains = rng.integers(k, size=tokens)
        uniforms = rng.random(tokens)
        out = np.empty(tokens, dtype=np.int64)
        cdf = self._cdf
        c = chains[0]
        for t in range(tokens):  # sequential by nature: each chain's step depends on its last symbol
            if t == 0 or not stays[t]:
                c = chains[t]
            j = min(int(np.searchsorted(cdf[c, state[c]], uniforms[t], side="right")), n - 1)
            state[c] = j
            out[t] = c * n + j
        return out

    def log_prob(self, ids) -> float:
        """Natural-log probability of a text (word ids) that starts the
        process: a chain not seen yet is at its stationary distribution."""
        n = self.spec.symbols
        same, other = np.log(self.speaker_probs())
        last: dict[int, int] = {}
        total, previous = 0.0, None
        for word in np.asarray(ids, dtype=np.int64).tolist():
            c, j = divmod(word, n)
            total += -math.log(self.spec.streams) if previous is None else (same if c == previous else other)
            p = self.transitions[c, last[c], j] if c in last else self.stationary[c, j]
            total += math.log(p) if p > 0 else -math.inf
            last[c], previous = j, c
        return total


def interleaved_corpus(train_tokens: int, valid_tokens: int, test_tokens: int, *, seed: int = 0,
                       spec: InterleavedSpec = InterleavedSpec()) -> tuple[InterleavedChains, dict]:
    """The source and its three splits (word-id arrays), each from its own
    stream of a seeded generator (a split does not change with the others'
    sizes). Every split starts the process afresh."""
    for name, value in (("train_tokens", train_tokens), ("valid_tokens", valid_tokens),
                        ("test_tokens", test_tokens)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    source = InterleavedChains(spec)
    splits = {name: source.sample(np.random.default_rng([seed, 20 + k]), n)
              for k, (name, n) in enumerate((("train", train_tokens), ("valid", valid_tokens),
                                             ("test", test_tokens)))}
    return source, splits
