"""Faults and safety of the training loop: checkpoints load with
weights_only=True and are verified (foreign, truncated, corrupted, unsafe
files refused with a clear message, nothing in them executed); a NaN/inf
loss or gradient skips the step or stops the run without touching the last
good checkpoint; a full disk or an unwritable output folder is a clear error
before training or at the failed save, never a lost checkpoint."""

import collections
import errno
import hashlib
import io
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_kernels.cli import main
from sparse_kernels.train import (CheckpointError, CheckpointWriteError, LMConfig, NonFiniteError, read_checkpoint,
                                  synthetic_lm, train_lm)
from sparse_kernels.train import checkpoint as ckpt_mod
from sparse_kernels.train import lm as lm_mod
from sparse_kernels.train.checkpoint import FORMAT, content_digest, rng_state, save_checkpoint, set_rng_state
from sparse_kernels.train.data import write_ptb


@pytest.fixture(scope="module")
def corpus():
    return synthetic_lm(600, 200, 200, seed=2)


def tiny(**overrides):
    settings = dict(hidden_size=12, embedding_size=12, num_layers=1, batch_size=4, eval_batch_size=4, bptt=10,
                    epochs=2, lr=2.0, dropout=0.0, clip=0.5, seed=5, method="st-rnn", sparsity=0.6, update_every=3,
                    momentum=0.0, init_scale="dense")  # the settings these tests were written for (before issue #17)
    settings.update(overrides)
    return LMConfig(**settings)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def ptb(tmp_path):
    words = [f"w{i}" for i in range(8)]
    sentences = [[words[(i * k) % 8] for k in range(1, 6)] for i in range(60)]
    return write_ptb(tmp_path / "ptb", {"train": sentences[:40], "valid": sentences[40:50], "test": sentences[50:]})


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    """A finished 1-epoch st-rnn run (Adam: optimizer state in the file too)."""
    out = tmp_path_factory.mktemp("run")
    train_lm(corpus, tiny(epochs=1, optimizer="adam", lr=0.01), out, progress=False, tensorboard=False)
    return out


# ---------------------------------------------------------------------- format and safety
def test_checkpoint_loads_with_weights_only_and_verifies(run_dir):
    for name, kind in (("checkpoint.pt", "lm"), ("best.pt", "lm-best")):
        raw = torch.load(run_dir / name, weights_only=True)  # no pickled class of ours in the file
        assert raw["format"] == FORMAT and raw["kind"] == kind and len(raw["sha256"]) == 64
        content = read_checkpoint(run_dir / name, kind)
        assert "sha256" not in content and content_digest(content) == raw["sha256"]
    ckpt = read_checkpoint(run_dir, "lm")  # a folder means its checkpoint.pt
    assert ckpt["sparsity_scheduler"]["steps"] == ckpt["progress"]["step"] > 0
    assert ckpt["optimizer"]["state"]  # Adam moments are in it


def test_rng_state_round_trips_through_weights_only(tmp_path):
    random.seed(11), np.random.seed(12), torch.manual_seed(13)
    np.random.standard_normal()  # leaves a cached gaussian in NumPy's state
    saved = rng_state()
    expected = (random.random(), np.random.standard_normal(3), torch.rand(3))
    save_checkpoint({"rng": saved}, tmp_path / "rng.pt", kind="test")
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.standard_normal(3), torch.rand(3))
    assert again[0] == expected[0] and np.array_equal(again[1], expected[1]) and torch.equal(again[2], expected[2])


def test_content_digest_sees_every_change():
    base = {"a": [1, 2.5, "x", None, True], "t": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    d = content_digest(base)
    changed = [
        {**base, "a": [1, 2.5, "x", None, False]}, {**base, "a": [1, 2.5000001, "x", None, True]},
        {**base, "a": [1, 2.5, "y", None, True]}, {**base, "a": (1, 2.5, "x", None, True)},
        {**base, "t": base["t"].reshape(3, 2)}, {**base, "t": base["t"].double()},
        {**base, "t": base["t"].clone().index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(5.5))},
        {"t": base["t"], "a": base["a"]},
    ]
    assert all(content_digest(c) != d for c in changed)
    assert content_digest({"a": list(base["a"]), "t": base["t"].clone()}) == d
    for bad in (np.zeros(3), np.float64(1.0), object(), {1, 2}):
        with pytest.raises(TypeError, match="only tensors, numbers"):
            content_digest({"x": bad})


def test_save_refuses_non_plain_content_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"x": torch.ones(2)}, path, kind="test")
    before = sha(path)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        save_checkpoint({"x": np.ones(2)}, path, kind="test")
    assert sha(path) == before and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_truncated_checkpoints_are_refused(run_dir, tmp_path):
    data = (run_dir / "checkpoint.pt").read_bytes()
    rng = random.Random(0)
    cuts = [0, 1, 3, 100, len(data) // 2, len(data) - 1] + [rng.randrange(len(data)) for _ in range(6)]
    for cut in cuts:
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|corrupted|not a torch.save file") as info:
            read_checkpoint(tmp_path / "cut.pt", "lm")
        assert str(tmp_path / "cut.pt") in str(info.value)


def test_corrupted_checkpoints_are_refused(run_dir, tmp_path):
    # A value changed after writing (the zip still reads): only the checksum can tell.
    raw = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    name = next(k for k in raw["model"] if k.endswith("values"))
    raw["model"][name][0] += 1.0
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(tmp_path / "edited.pt", "lm")
    raw.pop("sha256")
    torch.save(raw, tmp_path / "unsigned.pt")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(tmp_path / "unsigned.pt", "lm")
    # Bytes flipped on disk inside a tensor record: refused by the zip reader or by the checksum.
    data = bytearray((run_dir / "checkpoint.pt").read_bytes())
    with zipfile.ZipFile(run_dir / "checkpoint.pt") as z:
        records = [i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 8]
    for info in records[:5]:
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        flipped = bytearray(data)
        flipped[offset + info.file_size // 2] ^= 0x40
        (tmp_path / "flipped.pt").write_bytes(flipped)
        with pytest.raises(CheckpointError, match="corrupted"):
            read_checkpoint(tmp_path / "flipped.pt", "lm")


def test_foreign_files_are_refused(run_dir, tmp_path):
    cases = {
        "text.pt": (lambda p: p.write_bytes(b"hello, not a checkpoint"), "not a torch.save file"),
        "state_dict.pt": (lambda p: torch.save({"weight": torch.ones(2)}, p), "not a sparse-rnn checkpoint"),
        "list.pt": (lambda p: torch.save([1, 2], p), "not a sparse-rnn checkpoint"),
        "old.pt": (lambda p: torch.save({"format": "sparse-rnn-checkpoint/1", "kind": "lm"}, p),
                   "this version reads 'sparse-rnn-checkpoint/2'"),
        "empty.pt": (lambda p: p.write_bytes(b""), "empty file"),
    }
    for name, (write, message) in cases.items():
        write(tmp_path / name)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(tmp_path / name, "lm")
    with pytest.raises(CheckpointError, match="'lm-best' checkpoint cannot be used for a 'lm' run"):
        read_checkpoint(run_dir / "best.pt", "lm")


class _Payload:
    """Unpickling this would create ``marker``: what a malicious file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_files_that_would_run_code_are_refused_and_nothing_runs(ptb, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"format": FORMAT, "kind": "lm", "model": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load objects other than tensors"):
        read_checkpoint(tmp_path / "evil.pt", "lm")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"format": FORMAT, "x": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="not a torch.save file"):
        read_checkpoint(tmp_path / "evil.pkl", "lm")
    # The same path through the CLI: one line, exit status 2, nothing executed.
    rc = main(["train-lm", "--data", str(ptb), "--resume", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "run"),
               "--no-progress", "--hidden", "8", "--layers", "1", "--epochs", "1", "--batch-size", "4"])
    assert rc == 2 and not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # proves the payload is live
    assert marker.exists()


# ---------------------------------------------------------------------- disk full, unwritable folder
NO_SPACE = r"could not write \(no space left on device\); the previous checkpoint.pt is unchanged"


def _failing_torch_save(real_save, fail_for, calls):
    """torch.save that writes part of the file, then fails like a full disk,
    for target files whose name contains ``fail_for``."""
    def save(obj, f, *args, **kwargs):
        name = getattr(f, "name", "")
        if isinstance(name, str) and fail_for in Path(name).name:
            calls.append(name)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)
    return save


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"x": torch.arange(5)}, path, kind="test")
    before, calls = sha(path), []
    monkeypatch.setattr(torch, "save", _failing_torch_save(torch.save, ".checkpoint.pt.", calls))
    with pytest.raises(CheckpointWriteError, match=NO_SPACE):
        save_checkpoint({"x": torch.arange(7)}, path, kind="test")
    assert calls and sha(path) == before and torch.equal(read_checkpoint(path, "test")["x"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # the partial temporary file is gone
    with pytest.raises(CheckpointWriteError, match="nothing was written"):
        save_checkpoint({"x": torch.arange(7)}, tmp_path / "sub" / "checkpoint.pt", kind="test")


def test_disk_full_mid_run_stops_with_the_last_checkpoint_resumable(corpus, tmp_path, monkeypatch):
    config = tiny(epochs=2)
    full = train_lm(corpus, config, tmp_path / "full", progress=False, tensorboard=False)
    steps_per_epoch = full.history[0]["step"]
    calls, real_save = [], torch.save

    def fill_disk(step):  # the disk fills up during the second epoch
        if step == steps_per_epoch + 1:
            monkeypatch.setattr(torch, "save", _failing_torch_save(real_save, ".checkpoint.pt.", calls))

    with pytest.raises(CheckpointWriteError, match=NO_SPACE):
        train_lm(corpus, config, tmp_path / "run", progress=False, tensorboard=False, on_step=fill_disk)
    assert calls
    monkeypatch.setattr(torch, "save", real_save)
    kept = read_checkpoint(tmp_path / "run", "lm")
    assert kept["progress"]["epoch"] == 1 and kept["progress"]["step"] == steps_per_epoch
    resumed = train_lm(corpus, config, tmp_path / "run", resume=tmp_path / "run", progress=False, tensorboard=False)
    assert resumed.test_loss == full.test_loss


DiskUsage = collections.namedtuple("DiskUsage", "total used free")


def test_unusable_output_folder_fails_before_training(corpus, tmp_path, monkeypatch):
    steps = []
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CheckpointError, match="cannot create the output folder"):
        train_lm(corpus, tiny(), tmp_path / "a-file" / "run", progress=False, on_step=steps.append)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    # (Tests may run as root, which ignores chmod: fake the refusal instead.)
    with monkeypatch.context() as m:
        m.setattr(ckpt_mod.tempfile, "NamedTemporaryFile", denied)
        with pytest.raises(CheckpointError, match="the output folder is not writable \\(Permission denied\\)"):
            train_lm(corpus, tiny(), tmp_path / "ro", progress=False, on_step=steps.append)
    with monkeypatch.context() as m:
        m.setattr(ckpt_mod.shutil, "disk_usage", lambda p: DiskUsage(10**9, 10**9 - 1000, 1000))
        with pytest.raises(CheckpointError, match="1,000 bytes free, the checkpoints need about"):
            train_lm(corpus, tiny(), tmp_path / "full", progress=False, on_step=steps.append)
    assert steps == [] and not list((tmp_path / "full").glob("*.pt"))


def test_cli_reports_an_unwritable_output_folder_in_one_line(ptb, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    rc = main(["train-lm", "--data", str(ptb), "--out", str(tmp_path / "a-file" / "run"), "--no-progress",
               "--hidden", "8", "--layers", "1", "--batch-size", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot create the output folder" in err[0]


def test_stale_temporaries_of_a_killed_save_are_removed(corpus, tmp_path):
    train_lm(corpus, tiny(epochs=1), tmp_path, progress=False, tensorboard=False)
    stale = [tmp_path / ".checkpoint.pt.abc123.tmp", tmp_path / ".best.pt.xyz.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    (tmp_path / ".other.tmp").write_bytes(b"not ours")
    train_lm(corpus, tiny(epochs=2), tmp_path, resume=tmp_path, progress=False, tensorboard=False)
    assert not any(p.exists() for p in stale) and (tmp_path / ".other.tmp").exists()


# ---------------------------------------------------------------------- NaN / inf
class NonFiniteInjector:
    """Wraps the LM loss: at the chosen steps (1-based) the loss, or one
    parameter's gradient, becomes NaN/inf. Records the parameters before and
    after every step, so a skipped step can be shown to change nothing."""

    def __init__(self, monkeypatch, steps, *, where="loss", value=float("nan")):
        self.steps, self.where, self.value = set(steps), where, value
        self.calls, self.snapshots = 0, []
        self.real = lm_mod._lm_loss
        monkeypatch.setattr(lm_mod, "_lm_loss", self)

    def __call__(self, model, batch, carry):
        self.calls += 1
        self.snapshots.append([p.detach().clone() for p in model.parameters()])
        loss, items = self.real(model, batch, carry)
        if self.calls in self.steps:
            if self.where == "loss":
                loss = loss * self.value
            else:
                handle = [None]

                def poison(grad):
                    handle[0].remove()
                    return grad * self.value
                handle[0] = model.decoder.weight.register_hook(poison)
        return loss, items


def test_nonfinite_steps_are_skipped_and_counted(corpus, tmp_path, monkeypatch):
    config = tiny(epochs=2, update_every=2)
    bad = {3, 4, 9}  # (update_every=2: a skipped step does not advance the sparse-training schedule)
    injector = NonFiniteInjector(monkeypatch, bad)
    result = train_lm(corpus, config, tmp_path, progress=False, tensorboard=False)
    steps = result.history[-1]["step"]
    assert [row["skipped_steps"] for row in result.history] == [3, 0]
    for s in range(1, steps):  # snapshots[s] is before step s+1, i.e. after step s
        before, after = injector.snapshots[s - 1], injector.snapshots[s]
        same = all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(before, after))
        assert same == (s in bad), s
    ckpt = read_checkpoint(tmp_path, "lm")
    assert ckpt["sparsity_scheduler"]["steps"] == steps - len(bad)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(np.isfinite(row["train_loss"]) for row in result.history)


@pytest.mark.parametrize("where, value, message", [
    ("loss", float("inf"), "the loss is inf"),
    ("grad", float("nan"), "the gradient of decoder.weight is not finite"),
])
def test_nonfinite_stop_leaves_the_last_good_checkpoint_untouched(corpus, tmp_path, monkeypatch, where, value,
                                                                    message):
    config = tiny(epochs=2, nonfinite="stop")
    steps_per_epoch = train_lm(corpus, tiny(epochs=1), tmp_path / "probe", progress=False,
                               tensorboard=False).history[0]["step"]
    digests = {}

    def remember(step):
        if step == steps_per_epoch + 1:  # the epoch-1 checkpoint and best.pt are written by now
            digests.update({n: sha(tmp_path / "run" / n) for n in ("checkpoint.pt", "best.pt", "metrics.csv")})

    NonFiniteInjector(monkeypatch, {steps_per_epoch + 3}, where=where, value=value)
    with pytest.raises(NonFiniteError) as info:
        train_lm(corpus, config, tmp_path / "run", progress=False, tensorboard=False, on_step=remember)
    text = str(info.value)
    assert f"step {steps_per_epoch + 3} (epoch 2, batch 3)" in text and message in text
    assert f"checkpoint.pt (step {steps_per_epoch}) is untouched" in text
    assert digests and all(sha(tmp_path / "run" / n) == d for n, d in digests.items())
    assert read_checkpoint(tmp_path / "run", "lm")["progress"]["step"] == steps_per_epoch


def test_skip_mode_stops_after_too_many_nonfinite_steps_in_a_row(corpus, tmp_path, monkeypatch):
    NonFiniteInjector(monkeypatch, range(5, 10_000))
    with pytest.raises(NonFiniteError, match=r"step 8 .*4 non-finite steps in a row, more than nonfinite_limit=3"
                                             r".*no checkpoint was written yet"):
        train_lm(corpus, tiny(nonfinite_limit=3), tmp_path, progress=False, tensorboard=False)


def test_cli_nonfinite_stop_is_one_line_exit_1(ptb, tmp_path, capsys, monkeypatch):
    NonFiniteInjector(monkeypatch, {2})
    args = ["train-lm", "--data", str(ptb), "--out", str(tmp_path / "run"), "--hidden", "8", "--layers", "1",
            "--batch-size", "4", "--bptt", "5", "--epochs", "1", "--no-progress"]
    rc = main(args + ["--nonfinite", "stop"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert re.fullmatch(r"sparse-rnn: error: step 2 \(epoch 1, batch 2\): the loss is nan; training stopped "
                        r"\(nonfinite='stop'\); no checkpoint was written yet", err[0]), err
    with pytest.raises(SystemExit):
        main(args + ["--nonfinite", "ignore"])
    assert "invalid choice: 'ignore'" in capsys.readouterr().err


def test_nonfinite_config_errors(corpus, tmp_path):
    with pytest.raises(ValueError, match="nonfinite must be one of skip, stop"):
        train_lm(corpus, tiny(nonfinite="ignore"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        train_lm(corpus, tiny(checkpoint_every=-1), tmp_path, progress=False)
