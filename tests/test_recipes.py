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
    "liu_table7_sparse_momentum": (4, ["dst"]),
    "narang_gradual_pruning": (4, ["dst"]),
    "demeester_predefined": (7, ["dst"]),
    "shao_elman_iht": (4, ["dst", "SparseRNN"]),
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
    # recipe.py: the shared runner; quality_curves.py and lm_first_steps.py: docs/quality.md's tools.
    assert {p.stem for p in RECIPES.glob("*.py")} - {"recipe", "quality_curves", "lm_first_steps"} == set(CASES)


def test_lm_first_steps_prints_each_step(tmp_path, monkeypatch, capsys):
    from sparse_kernels.train.data import write_ptb
    words = [f"w{i}" for i in range(8)]
    sentences = [[words[(i * k) % 8] for k in range(1, 6)] for i in range(200)]
    ptb = write_ptb(tmp_path / "ptb", {"train": sentences[:160], "valid": sentences[160:180],
                                       "test": sentences[180:]})
    monkeypatch.syspath_prepend(str(RECIPES))
    module = importlib.import_module("lm_first_steps")
    assert module.main(["--data", str(ptb), "--hidden", "8", "--steps", "2", "--every", "1",
                        "--method", "static", "--sparsity", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["step", "loss", "grad-norm"]
    steps = [line.split() for line in lines[1:]]
    assert [int(s[0]) for s in steps] == [0, 1]
    assert all(0 < float(s[1]) < 10 and float(s[2]) > 0 for s in steps)


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
