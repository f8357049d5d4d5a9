"""Checkpoints that survive a crash at any moment, and the RNG states that
make a resumed run continue exactly where it stopped."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "sparse-rnn-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupt, or from another run)."""


def atomic_save(obj, path) -> Path:
    """torch.save to a temporary file in the target folder, fsync, then
    rename over ``path``: a reader sees the old file or the new one, never a
    partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path, kind: str) -> dict:
    """Read a checkpoint written by :func:`atomic_save` for the loop ``kind``
    ("lm" or "cls")."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say so in one line
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sparse-rnn checkpoint")
    if ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: a {ckpt.get('kind')!r} checkpoint cannot resume a {kind!r} run")
    return ckpt


def check_compatible(saved: dict, requested: dict, path) -> None:
    """The model-defining settings of a resumed run must be the saved ones."""
    for key, value in requested.items():
        if key in saved and saved[key] != value:
            raise CheckpointError(f"{path}: incompatible checkpoint: it was trained with {key}={saved[key]!r}, "
                                  f"this run asks for {key}={value!r}")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
