"""Property-based tests of the data loaders (sparse_kernels.train.data) and
the CLI's --data: random corpora written in every accepted form (PTB
folders; label<TAB>text, CSV, folders and single files; LF or CRLF line
ends, with or without a UTF-8 byte order mark) must load to exactly the
tokens and labels written; malformed files (missing, empty, blank, binary,
another encoding, a line without its label column, a label only seen outside
train) must raise DataError (a ValueError) naming the file, and the CLI must
end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from sparse_kernels import cli
from sparse_kernels.train import data
from sparse_kernels.train.data import DataError
from sparse_kernels.train.synthetic import EOS
from fuzz_helpers import expect_error, tried

# Words: letters (some non-ASCII), digits and punctuation, no whitespace.
WORD_CHARS = st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,;:!?'-_<>éüßøæ漢字") + ["Ω", "ç"])
words = st.text(WORD_CHARS, min_size=1, max_size=6)
sentences = st.lists(words, min_size=1, max_size=8)
corpora = st.lists(sentences, min_size=1, max_size=6)
labels = st.text(st.sampled_from(list("abcxyzPOSNEG0123_-")), min_size=1, max_size=5)
line_ends = st.sampled_from(["\n", "\r\n"])
# Whitespace that may sit between two words of a line; the last four are
# also line boundaries for str.splitlines, but not in these files.
separators = st.sampled_from([" ", "\t", "  ", "\x0b", "\x0c", "\x85", "\u2028"])
DATA_SETTINGS = settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _encode(lines, end, bom):
    return (b"\xef\xbb\xbf" if bom else b"") + "".join(line + end for line in lines).encode("utf-8")


def _decode_corpus(tensor, vocab):
    return [vocab.itos[i] for i in tensor.tolist()]


# ----------------------------------------------------------------------------- PTB folders
@DATA_SETTINGS
@given(st.fixed_dictionaries({k: corpora for k in data.SPLITS}), line_ends, st.booleans(), separators)
def test_ptb_folder_loads_exactly_what_was_written(splits, end, bom, sep):
    tried("data.load_ptb valid")
    with tempfile.TemporaryDirectory() as folder:
        for k, sents in splits.items():
            (Path(folder) / f"{k}.txt").write_bytes(_encode([sep.join(s) for s in sents], end, bom))
        corpus = data.load_ptb(folder)
    known = {w for s in splits["train"] for w in s} | {EOS}
    for k, sents in splits.items():
        want = [w if (k == "train" or w in known) else data.UNK for s in sents for w in s + [EOS]]
        assert _decode_corpus(getattr(corpus, k), corpus.vocab) == want


BAD_CONTENTS = {
    "empty": b"",
    "blank lines only": b"  \n\t\n\r\n",
    "binary": bytes(range(256)) * 2,
    "gzip header": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xfe",
    "UTF-16 text": "pos\tgood film\n".encode("utf-16"),
    "Latin-1 text": "neg\tcaf\xe9 cr\xe8me\n".encode("latin-1"),
    "a lone surrogate escape": b"pos\tbad \xed\xa0\x80 bytes\n",
}


@settings(max_examples=10)
@given(st.sampled_from(data.SPLITS), st.sampled_from(sorted(BAD_CONTENTS) + ["missing", "a folder"]), corpora)
def test_ptb_folder_rejects_bad_files_naming_them(split, problem, good):
    tried("data.load_ptb bad file")
    with tempfile.TemporaryDirectory() as folder:
        for k in data.SPLITS:
            (Path(folder) / f"{k}.txt").write_text("".join(" ".join(s) + "\n" for s in good), encoding="utf-8")
        target = Path(folder) / f"{split}.txt"
        if problem == "missing":
            target.unlink()
        elif problem == "a folder":
            target.unlink()
            target.mkdir()
        else:
            target.write_bytes(BAD_CONTENTS[problem])
        exc = expect_error(lambda: data.load_ptb(folder), (DataError,), (str(target),))
        assert "\n" not in str(exc)


def test_ptb_rejects_a_missing_folder_and_a_file_given_as_folder(tmp_path):
    tried("data.load_ptb bad folder", 2)
    expect_error(lambda: data.load_ptb(tmp_path / "nowhere"), (DataError,), ("nowhere",))
    (tmp_path / "file.txt").write_text("a b\n")
    expect_error(lambda: data.load_ptb(tmp_path / "file.txt"), (DataError,), ("file.txt",))


# ----------------------------------------------------------------------------- labelled texts
texts = st.tuples(st.lists(words, min_size=1, max_size=8), separators).map(lambda ws: ws[1].join(ws[0]))
rows = st.lists(st.tuples(labels, texts), min_size=2, max_size=8)


def _write_rows(path: Path, rows, fmt: str, end: str, bom: bool):
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=end).writerows(rows)
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8"))
    else:
        path.write_bytes(_encode([f"{label}\t{text}" for label, text in rows], end, bom))


@DATA_SETTINGS
@given(st.fixed_dictionaries({"train": rows, "test": rows}), st.sampled_from(["tsv", "csv", "txt"]), line_ends,
       st.booleans(), st.integers(1, 12))
def test_classification_folder_loads_exactly_what_was_written(splits, fmt, end, bom, max_length):
    tried("data.load_classification valid")
    train_labels = {label for label, _ in splits["train"]}
    splits["test"] = [(label if label in train_labels else splits["train"][0][0], text)
                      for label, text in splits["test"]]
    with tempfile.TemporaryDirectory() as folder:
        for k, split_rows in splits.items():
            _write_rows(Path(folder) / f"{k}.{fmt}", split_rows, fmt, end, bom)
        loaded = data.load_classification(folder, max_length=max_length)
    assert loaded.labels == sorted(train_labels)
    vocab = loaded.vocab
    for k, split_rows in splits.items():
        got = getattr(loaded, k)
        assert len(got) == len(split_rows)
        for (tokens, label_id), (label, text) in zip(got, split_rows):
            assert loaded.labels[label_id] == label
            want = [w if w in vocab.stoi else data.UNK for w in data.tokenize(text)[:max_length]] or [data.UNK]
            assert [vocab.itos[i] for i in tokens.tolist()] == want


def _bad_labelled_files(good_rows):
    """(label, file bytes, suffix, what the message must name besides the file)."""
    good = [f"{label}\t{text}" for label, text in good_rows]
    cases = [(name, content, ".tsv") for name, content in BAD_CONTENTS.items()]
    cases += [
        ("a line without its label column", "\n".join(good + ["just some text"]).encode(), ".tsv"),
        ("a line with an empty label", "\n".join(good + ["\tsome text"]).encode(), ".tsv"),
        ("a line with an empty text", "\n".join(good + ["pos\t   "]).encode(), ".tsv"),
        ("only labels", "\n".join(label for label, _ in good_rows).encode(), ".tsv"),
        ("a CSV line with one column", "\n".join([f"{lb},{t}" for lb, t in good_rows] + ["lonely"]).encode(), ".csv"),
        ("a CSV line with three columns", "\n".join([f"{lb},{t}" for lb, t in good_rows] + ["7,pos,text"]).encode(),
         ".csv"),
        ("a CSV field left open", "\n".join([f"{lb},{t}" for lb, t in good_rows] + ['pos,"text']).encode(), ".csv"),
        ("a CSV line with an empty label", "\n".join([f"{lb},{t}" for lb, t in good_rows] + [",text"]).encode(),
         ".csv"),
    ]
    return cases


@settings(max_examples=10)
@given(rows)
def test_classification_rejects_bad_files_naming_them(good_rows):
    cases = _bad_labelled_files(good_rows)
    tried("data.load_classification bad file", 2 * len(cases))
    with tempfile.TemporaryDirectory() as folder:
        for label, content, suffix in cases:
            single = Path(folder) / f"single{suffix}"
            single.write_bytes(content)
            exc = expect_error(lambda: data.load_classification(single), (DataError,), (str(single),))
            assert "\n" not in str(exc), label
            # The same file as the train split of a folder.
            sub = Path(folder) / label.replace(" ", "_")
            sub.mkdir()
            (sub / f"train{suffix}").write_bytes(content)
            (sub / f"test{suffix}").write_bytes("\n".join(f"{lb}\t{t}" for lb, t in good_rows).encode()
                                                if suffix != ".csv" else
                                                "\n".join(f"{lb},{t}" for lb, t in good_rows).encode())
            expect_error(lambda: data.load_classification(sub), (DataError,), (str(sub / f"train{suffix}"),))


@settings(max_examples=10)
@given(rows, rows)
def test_classification_rejects_labels_unseen_in_train_and_missing_splits(train, test):
    tried("data.load_classification bad folder", 3)
    unseen = [row for row in test if row[0] not in {label for label, _ in train}]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        _write_rows(folder / "train.tsv", train, "tsv", "\n", False)
        expect_error(lambda: data.load_classification(folder), (DataError,), ("test",))
        _write_rows(folder / "test.tsv", test, "tsv", "\n", False)
        if unseen:
            expect_error(lambda: data.load_classification(folder), (DataError,), (repr(unseen[0][0]),))
        else:
            data.load_classification(folder)
        expect_error(lambda: data.load_classification(folder / "nothing.tsv"), (DataError,), ("nothing.tsv",))


@settings(max_examples=20)
@given(rows, st.one_of(st.floats(allow_nan=True), st.integers(-3, 3)))
def test_single_file_split_and_its_fraction(good_rows, fraction):
    tried("data.load_classification test_fraction")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "all.tsv"
        _write_rows(path, good_rows, "tsv", "\n", False)
        ok = 0 < fraction < 1 and len(good_rows) - max(1, round(len(good_rows) * fraction)) >= 1
        if ok:
            try:
                loaded = data.load_classification(path, test_fraction=fraction)
            except DataError as exc:  # a test label not in the train part
                assert "never occurs in train" in str(exc)
                return
            assert len(loaded.train) + len(loaded.test) == len(good_rows)
        else:
            expect_error(lambda: data.load_classification(path, test_fraction=fraction), (ValueError,),
                         ("test_fraction", "too few lines"))


# ----------------------------------------------------------------------------- batching
@settings(max_examples=30)
@given(st.integers(0, 40), st.one_of(st.integers(-2, 8), st.floats(-1, 4), st.none()), st.integers(-2, 6))
def test_batchify_and_bptt_windows(n_tokens, batch_size, bptt):
    tried("data.batchify/bptt_batches")
    stream = torch.arange(n_tokens)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        expect_error(lambda: data.batchify(stream, batch_size), (TypeError, ValueError), ("batch_size",))
        return
    if n_tokens // batch_size < 2:
        expect_error(lambda: data.batchify(stream, batch_size), (DataError,), ("tokens",))
        return
    columns = data.batchify(stream, batch_size)
    steps = n_tokens // batch_size
    assert torch.equal(columns.t().reshape(-1), stream[: steps * batch_size])
    if bptt <= 0:
        expect_error(lambda: list(data.bptt_batches(columns, bptt)), (ValueError,), ("bptt",))
        return
    windows = list(data.bptt_batches(columns, bptt))
    inputs = torch.cat([x for _, x, _ in windows])
    targets = torch.cat([y for _, _, y in windows])
    assert torch.equal(inputs, columns[:-1]) and torch.equal(targets, columns[1:])


# ----------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("command, problem", [
    (command, problem) for command in ("train-lm", "train-cls")
    for problem in ("missing", "empty", "binary", "UTF-16 text", "no label column")
    if (command, problem) != ("train-lm", "no label column")])  # a PTB line has no label column
def test_cli_reports_bad_data_in_one_line(tmp_path, capsys, command, problem):
    tried("cli --data bad file")
    if command == "train-lm":
        target = tmp_path / "ptb" / "valid.txt"
        target.parent.mkdir()
        for k in data.SPLITS:
            (target.parent / f"{k}.txt").write_text("the cat sat\na dog ran\n")
        path = target.parent
    else:
        target = tmp_path / "reviews.tsv"
        target.write_text("pos\tgood\nneg\tbad\npos\tfine\n")
        path = target
    if problem == "missing":
        target.unlink()
    elif problem == "no label column":
        target.write_text("a b c\nd e f\n")
    elif problem == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(BAD_CONTENTS[problem])
    status = cli.main([command, "--data", str(path), "--epochs", "1", "--hidden", "4", "--no-progress",
                       "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("sparse-rnn: error: ") and str(target) in err, err
