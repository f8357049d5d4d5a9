"""`sparse-rnn`: the subcommands run end to end on tiny sizes, and every
mistake a user can make ends with one line on stderr and exit status 2."""

import re
import subprocess
import sys

import pytest

from sparse_kernels.cli import main
from sparse_kernels.train.data import write_ptb

TINY = ["--hidden", "12", "--layers", "1", "--epochs", "1", "--no-progress", "--seed", "1"]


@pytest.fixture
def ptb(tmp_path):
    words = [f"w{i}" for i in range(8)]
    sentences = [[words[(i * k) % 8] for k in range(1, 6)] for i in range(60)]
    return write_ptb(tmp_path / "ptb", {"train": sentences[:40], "valid": sentences[40:50], "test": sentences[50:]})


def one_error_line(capsys, rc):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and re.match(r"sparse-rnn( [\w-]+)?: error: ", err[0]), err
    return err[0]


def test_train_lm_on_ptb_folder(ptb, tmp_path, capsys):
    rc = main(["train-lm", "--data", str(ptb), "--out", str(tmp_path / "run"), "--method", "static",
               "--sparsity", "0.5", "--batch-size", "4", "--bptt", "5", *TINY])
    out = capsys.readouterr().out
    assert rc == 0 and "test ppl" in out and "stored parameters" in out
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_train_cls_on_tsv(tmp_path, capsys):
    path = tmp_path / "data.tsv"
    path.write_text("".join(f"{i % 2}\t{'good' if i % 2 else 'bad'} text {i}\n" for i in range(30)))
    rc = main(["train-cls", "--data", str(path), "--out", str(tmp_path / "run"), "--batch-size", "8", *TINY])
    assert rc == 0 and "test accuracy" in capsys.readouterr().out


def test_train_lm_block_sparse_dst_and_resume(ptb, tmp_path, capsys):
    """--block-shape: the recurrent weights are BSR (4x4 blocks), dynamic sparse
    training (SET) updates them by block, and a resumed run keeps the shape
    (a different one is refused as incompatible)."""
    import torch
    args = ["train-lm", "--data", str(ptb), "--method", "set", "--sparsity", "0.5", "--batch-size", "4",
            "--bptt", "5", "--hidden", "12", "--layers", "1", "--no-progress", "--seed", "1", "--block-shape", "4x4"]
    assert main(args + ["--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    assert "test ppl" in capsys.readouterr().out
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    assert tuple(state["rnn.weight_hh_l0.values"].shape[1:]) == (4, 4)
    assert "rnn.weight_hh_l0.block_col_idx" in state
    assert main(args + ["--epochs", "2", "--out", str(tmp_path / "a"), "--resume", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    other = [a if a != "4x4" else "2x2" for a in args]
    rc = main(other + ["--epochs", "3", "--out", str(tmp_path / "a"), "--resume", str(tmp_path / "a")])
    assert "block_shape" in one_error_line(capsys, rc)


@pytest.mark.parametrize("argv, message", [
    (["train-lm", "--block-shape", "4"], "must be ROWSxCOLS"),
    (["train-lm", "--block-shape", "0x4"], "must be ROWSxCOLS"),
    (["train-lm", "--block-shape", "4x4", "--method", "dense"], "block_shape needs a sparse method"),
    (["train-lm", "--block-shape", "5x5", "--method", "static", "--hidden", "12"], "must divide hidden_size"),
    (["train-lm", "--data", "/nonexistent/corpus"], "data folder not found"),
    (["train-lm", "--method", "magic"], "invalid choice: 'magic'"),
    (["train-lm", "--sparsity", "1.0"], "must be in [0, 1)"),
    (["train-lm", "--sparsity", "-0.5"], "must be in [0, 1)"),
    (["train-cls", "--data", "/nonexistent/file.tsv"], "not found"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    try:
        rc = main(argv + ["--no-progress"])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert message in one_error_line(capsys, rc)


def test_empty_file_and_incompatible_resume(ptb, tmp_path, capsys):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert "file is empty" in one_error_line(capsys, main(["train-cls", "--data", str(empty), *TINY]))
    args = ["train-lm", "--data", str(ptb), "--batch-size", "4", "--bptt", "5", "--layers", "1", "--epochs", "1",
            "--no-progress"]
    assert main(args + ["--hidden", "12", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    rc = main(args + ["--hidden", "14", "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "a")])
    assert "incompatible checkpoint" in one_error_line(capsys, rc)


def test_module_entry_point_exit_status():
    proc = subprocess.run([sys.executable, "-m", "sparse_kernels", "train-lm", "--data", "/nonexistent"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("sparse-rnn: error:")
