"""Corpora as token tensors: word-level language modelling in the PTB format
and labelled texts for classification, from files or from the embedded
synthetic generator.

Every problem a user can cause (missing folder, missing or empty file, a bad
line) raises :class:`DataError` with one line saying which file and why.
"""

from __future__ import annotations

import collections
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .synthetic import EOS

UNK, PAD = "<unk>", "<pad>"
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Unusable input data (the message names the file)."""


class Vocabulary:
    """Word <-> index. Unknown words map to ``<unk>``."""

    def __init__(self, words):
        self.itos = list(dict.fromkeys(words))
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def index(self, word: str) -> int:
        return self.stoi.get(word, self.stoi.get(UNK, -1))

    def encode(self, words) -> list[int]:
        return [self.index(w) for w in words]


@dataclass
class LMCorpus:
    """Token ids of the three splits (1-D int64) and the vocabulary."""
    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    optimal_perplexity: float | None = None   # known for the synthetic source only
    name: str = ""


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, a byte order mark dropped (it would otherwise
    stick to the first word or label), line ends as "\n"."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines. Lines end at "\n" only:
    str.splitlines would also cut a line at a form feed, U+0085 or U+2028
    inside a sentence or a text."""
    return [(number, line) for number, line in enumerate(_read_text(path).split("\n"), 1) if line.strip()]


def _lm_from_sentences(splits: dict, *, name: str, optimal_perplexity=None) -> LMCorpus:
    """splits: split -> list of word lists (no <eos>); the vocabulary comes
    from train, in order of first appearance, with <unk> added if any other
    split needs it."""
    vocab_words = [w for s in splits["train"] for w in s + [EOS]]
    known = set(vocab_words)
    if any(w not in known for k in ("valid", "test") for s in splits[k] for w in s):
        vocab_words.append(UNK)
    vocab = Vocabulary(vocab_words)
    tensors = {k: torch.tensor([i for s in v for i in vocab.encode(s + [EOS])], dtype=torch.long)
               for k, v in splits.items()}
    return LMCorpus(vocab, tensors["train"], tensors["valid"], tensors["test"], optimal_perplexity, name)


def load_ptb(folder) -> LMCorpus:
    """A PTB-format folder: ``train.txt``, ``valid.txt``, ``test.txt``, one
    sentence per line, words separated by spaces; ``<eos>`` is appended to
    each line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found (expected train.txt, valid.txt, test.txt)")
    splits = {k: [line.split() for _, line in _read_lines(folder / f"{k}.txt")] for k in SPLITS}
    return _lm_from_sentences(splits, name=str(folder))


def synthetic_lm(train_tokens: int = 200_000, valid_tokens: int = 20_000, test_tokens: int = 20_000,
                 *, seed: int = 0, spec=None) -> LMCorpus:
    """The embedded synthetic language (see :mod:`.synthetic`; ``spec``: its
    sizes, a :class:`~.synthetic.LanguageSpec`) with its optimal perplexity."""
    from .synthetic import LanguageSpec, synthetic_corpus
    c = synthetic_corpus(train_tokens, valid_tokens, test_tokens, seed=seed, spec=spec or LanguageSpec())
    return _lm_from_sentences({"train": c.train, "valid": c.valid, "test": c.test},
                              name=f"synthetic(seed={seed})", optimal_perplexity=c.optimal_perplexity)


def write_ptb(folder, splits: dict) -> Path:
    """Write split -> list of word lists as a PTB-format folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k in SPLITS:
        (folder / f"{k}.txt").write_text("".join(" ".join(s) + "\n" for s in splits[k]), encoding="utf-8")
    return folder


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A 1-D token stream as (steps, batch) columns, the tail that does not
    fill a column dropped (the usual word-LM layout)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    steps = data.numel() // batch_size
    if steps < 2:
        raise DataError(f"{data.numel()} tokens are too few for batch size {batch_size}")
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous()


def bptt_batches(source: torch.Tensor, bptt: int):
    """(start, input, target) windows of at most ``bptt`` steps over
    batchified data; the target is the input shifted by one step."""
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt <= 0:
        raise ValueError(f"bptt must be a positive int, got {bptt!r}")
    for start in range(0, source.size(0) - 1, bptt):
        length = min(bptt, source.size(0) - 1 - start)
        yield start, source[start:start + length], source[start + 1:start + 1 + length]


# ---------------------------------------------------------------------- classification
TOKEN_RE = re.compile(r"[\w<>']+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks."""
    return TOKEN_RE.findall(text.lower())


@dataclass
class ClassificationData:
    """Token-id sequences (lists of 1-D int64 tensors) and label ids."""
    vocab: Vocabulary
    labels: list[str]
    train: list = field(default_factory=list)   # [(tokens, label_id)]
    test: list = field(default_factory=list)
    valid: list = field(default_factory=list)
    name: str = ""


def _read_labelled(path: Path) -> list[tuple[str, str]]:
    """``label<TAB>text`` lines (.tsv / .txt) or two-column CSV (.csv; quote
    a text holding commas)."""
    if path.suffix == ".csv":
        # strict: a quote left open would otherwise swallow the rest of the file.
        reader = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
        try:
            numbered = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not CSV ({exc})") from None
        expected = "a 'label' column then a comma then the text"
    else:
        numbered = [(number, line.split("\t", 1)) for number, line in _read_lines(path)]
        expected = "'label' then a tab then the text"
    out = []
    for number, row in numbered:
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            got = f"{len(row)} columns" if len(row) > 2 else repr("\t".join(row) if len(row) < 2 else row[0])
            raise DataError(f"{path}:{number}: expected {expected}, got {got}"[:300])
        out.append((row[0].strip(), row[1]))
    return out


def _find_split(folder: Path, split: str) -> Path | None:
    for ext in (".tsv", ".csv", ".txt"):
        if (folder / f"{split}{ext}").is_file():
            return folder / f"{split}{ext}"
    return None


def classification_from_rows(splits: dict, *, max_vocab: int = 20_000, max_length: int = 100,
                             name: str = "") -> ClassificationData:
    """splits: split -> [(label, text)]. The vocabulary is the ``max_vocab``
    most frequent training tokens (ties by first appearance), plus <pad> = 0
    and <unk> = 1; texts are cut to ``max_length`` tokens."""
    for arg, value in (("max_vocab", max_vocab), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    train_tokens = [tokenize(text)[:max_length] for _, text in splits["train"]]
    counts = collections.Counter(w for toks in train_tokens for w in toks)
    vocab = Vocabulary([PAD, UNK] + [w for w, _ in counts.most_common(max_vocab)])
    labels = sorted({label for label, _ in splits["train"]})
    label_ids = {label: i for i, label in enumerate(labels)}
    data = ClassificationData(vocab, labels, name=name)
    for split, rows in splits.items():
        encoded = []
        for label, text in rows:
            if label not in label_ids:
                raise DataError(f"{name or 'data'}: label {label!r} of the {split} split never occurs in train")
            tokens = vocab.encode(tokenize(text)[:max_length]) or [vocab.index(UNK)]
            encoded.append((torch.tensor(tokens, dtype=torch.long), label_ids[label]))
        setattr(data, split, encoded)
    return data


def load_classification(path, *, max_vocab: int = 20_000, max_length: int = 100, test_fraction: float = 0.2,
                        seed: int = 0) -> ClassificationData:
    """A folder with ``train`` and ``test`` (and optionally ``valid``) files
    (.tsv, .csv or .txt), or one file split at random into train/test by
    ``test_fraction``."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    path = Path(path)
    if path.is_dir():
        splits = {}
        for split in ("train", "valid", "test"):
            found = _find_split(path, split)
            if found is None and split != "valid":
                raise DataError(f"{path}: no {split}.tsv, {split}.csv or {split}.txt in the data folder")
            if found is not None:
                splits[split] = _read_labelled(found)
    elif path.is_file():
        rows = _read_labelled(path)
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test = max(1, int(round(len(rows) * test_fraction)))
        if len(rows) - n_test < 1:
            raise DataError(f"{path}: too few lines ({len(rows)}) to split into train and test")
        splits = {"test": [rows[i] for i in order[:n_test]], "train": [rows[i] for i in order[n_test:]]}
    else:
        raise DataError(f"{path}: data file or folder not found")
    return classification_from_rows(splits, max_vocab=max_vocab, max_length=max_length, name=str(path))


def synthetic_classification_data(train_docs: int = 2000, test_docs: int = 500, *, seed: int = 0,
                                  max_vocab: int = 20_000, max_length: int = 100) -> ClassificationData:
    from .synthetic import synthetic_classification
    train, test = synthetic_classification(train_docs, test_docs, seed=seed)
    return classification_from_rows({"train": train, "test": test}, max_vocab=max_vocab, max_length=max_length,
                                     name=f"synthetic-classification(seed={seed})")
