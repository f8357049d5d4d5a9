"""Checkpoints that survive a crash at any moment, refuse what is not ours,
and the RNG states that make a resumed run continue exactly where it stopped.

A checkpoint is an ordinary ``torch.save`` file of a dict holding only
tensors, numbers, strings, None and lists/tuples/dicts of them, so it loads
with ``torch.load(path, weights_only=True)``: no class of this project (or
any other code) is pickled, and loading never runs anything read from the
file. The dict carries ``format`` ("sparse-rnn-checkpoint/<version>"),
``kind`` (which loop wrote it) and ``sha256``: a digest of everything else
(every key, number, string and tensor's dtype, shape and bytes), verified on
load, so a file corrupted on disk is refused instead of silently resuming
from damaged weights. Files are written to a temporary file in the target
folder, flushed and fsynced, renamed over the old one and the folder fsynced:
a reader (or a run killed with -9 at any moment) sees the old checkpoint or
the new one, never a partial one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random
import shutil
import struct
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

FORMAT_NAME = "sparse-rnn-checkpoint"
FORMAT_VERSION = 2
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
_ZIP_MAGIC = b"PK\x03\x04"   # torch.save's (zip) format starts with a zip local file header


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, not ours, corrupt,
    truncated, from another run), or an output folder that cannot hold one."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint (or another file of the run folder) could not be
    written: disk full, folder not writable; the previous file is intact."""


# ---------------------------------------------------------------------- content digest
def content_digest(obj) -> str:
    """sha256 over a nested structure of plain values and tensors, in a
    canonical byte encoding (type tags, lengths, float.hex, tensor dtype,
    shape and bytes). Anything else raises TypeError, so a checkpoint that
    would need pickled classes is refused when it is written."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest, obj) -> None:
    kind = type(obj)
    if obj is None:
        digest.update(b"N")
    elif kind is bool:
        digest.update(b"T" if obj else b"F")
    elif kind is int:
        text = str(obj).encode()
        digest.update(b"i" + struct.pack("<Q", len(text)) + text)
    elif kind is float:
        text = obj.hex().encode()
        digest.update(b"f" + struct.pack("<Q", len(text)) + text)
    elif kind is str or kind is bytes:
        data = obj.encode("utf-8") if kind is str else obj
        digest.update((b"s" if kind is str else b"b") + struct.pack("<Q", len(data)) + data)
    elif kind in (list, tuple, torch.Size):
        digest.update((b"l" if kind is list else b"t") + struct.pack("<Q", len(obj)))
        for item in obj:
            _feed(digest, item)
    elif kind in (dict, OrderedDict):
        digest.update(b"d" + struct.pack("<Q", len(obj)))
        for key, value in obj.items():  # insertion order: kept by torch.save/load
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, torch.Tensor) and obj.layout == torch.strided and kind in (torch.Tensor, torch.nn.Parameter):
        t = obj.detach().cpu().contiguous().reshape(-1)
        header = f"{t.dtype}:{tuple(obj.shape)}".encode()
        digest.update(b"x" + struct.pack("<Q", len(header)) + header)
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif kind in (torch.dtype, torch.device):
        text = str(obj).encode()
        digest.update(b"y" + struct.pack("<Q", len(text)) + text)
    else:
        raise TypeError(f"a checkpoint holds only tensors, numbers, strings, None, lists, tuples and dicts; "
                        f"got {kind.__module__}.{kind.__qualname__}")


# ---------------------------------------------------------------------- writing
def atomic_save(obj, path) -> Path:
    """torch.save to a temporary file in the target folder, flush, fsync,
    rename over ``path``, fsync the folder: a reader sees the old file or
    the new one, never a partial one. A failed write (disk full, folder not
    writable) removes the temporary file, leaves the old ``path`` untouched
    and raises CheckpointError saying so."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)  # reopened by name: the file object then says which file it is
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as exc:
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        raise CheckpointWriteError(f"{path}: could not write ({_reason(exc)}); {kept}") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc) or type(exc).__name__


def save_checkpoint(content: dict, path, *, kind: str) -> Path:
    """Write ``content`` (plain values and tensors only) atomically with the
    format, ``kind`` and checksum fields."""
    payload = {"format": FORMAT, "kind": kind, **content}
    payload.pop("sha256", None)
    payload["sha256"] = content_digest(payload)
    return atomic_save(payload, path)


def remove_stale_temporaries(folder, names=("checkpoint.pt", "best.pt")) -> list[Path]:
    """Delete the temporary files that a run killed mid-save left in
    ``folder`` for the files ``names`` (only the names :func:`atomic_save`
    makes for them); returns what was removed."""
    removed = []
    for name in names:
        for p in Path(folder).glob(f".{name}.*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def check_output_folder(folder, needed_bytes: int = 0) -> Path:
    """Before training starts: ``folder`` can be created and written (a
    probe file is written, fsynced and removed) and has ``needed_bytes``
    free. Raises CheckpointError naming the folder and the problem."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot create the output folder ({_reason(exc)})") from None
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: the output folder is not a folder")
    try:
        with tempfile.NamedTemporaryFile(prefix=".write-probe.", suffix=".tmp", dir=folder) as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise CheckpointError(f"{folder}: the output folder is not writable ({_reason(exc)})") from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise CheckpointError(f"{folder}: {free:,} bytes free, the checkpoints need about {needed_bytes:,}")
    return folder


# ---------------------------------------------------------------------- reading
def read_checkpoint(path, kind: str | None = None, map_location="cpu") -> dict:
    """Load and verify a checkpoint written by :func:`save_checkpoint` (a
    folder means its ``checkpoint.pt``); ``kind``: the loop it must come
    from; ``map_location``: as torch.load's. Returns the content without
    the checksum. Raises CheckpointError for a missing, truncated,
    corrupted, foreign or incompatible file."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise CheckpointError(f"{path}: empty file (a truncated checkpoint)")
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path}: not a sparse-rnn checkpoint (not a torch.save file)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a sparse-rnn checkpoint: refused to load objects other than tensors "
                              f"and plain containers ({first[:200]})") from None
    except Exception as exc:  # zip structure or records broken: truncated or overwritten
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or not str(ckpt.get("format", "")).startswith(FORMAT_NAME + "/"):
        raise CheckpointError(f"{path}: not a sparse-rnn checkpoint")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['format']!r}; this version reads {FORMAT!r}")
    stored = ckpt.pop("sha256", None)
    try:
        actual = content_digest(ckpt)
    except TypeError as exc:
        raise CheckpointError(f"{path}: corrupted checkpoint ({exc})") from None
    if stored != actual:
        raise CheckpointError(f"{path}: corrupted checkpoint (checksum mismatch: the file changed after it "
                              "was written)")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: a {ckpt.get('kind')!r} checkpoint cannot be used for a {kind!r} run")
    return ckpt


def load_checkpoint(path, kind: str) -> dict:
    """:func:`read_checkpoint` of a checkpoint to resume a ``kind`` run."""
    return read_checkpoint(path, kind)


def check_compatible(saved: dict, requested: dict, path) -> None:
    """The model-defining settings of a resumed run must be the saved ones."""
    for key, value in requested.items():
        if key in saved and saved[key] != value:
            raise CheckpointError(f"{path}: incompatible checkpoint: it was trained with {key}={saved[key]!r}, "
                                  f"this run asks for {key}={value!r}")


# ---------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors and plain values
    (weights_only-loadable)."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {"python": [version, list(internal), gauss_next],
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
