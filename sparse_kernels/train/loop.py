"""What the language-model and classification loops share: the settings that
define a run, optimizer and sparse-training scheduler construction,
checkpoints, the metrics files, progress bars."""

from __future__ import annotations

import csv
import io
import math
import signal
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .checkpoint import FORMAT, CheckpointError, atomic_save, check_compatible, load_checkpoint, rng_state, \
    set_rng_state

# "dense": the torch.nn model; "static": a random sparse topology kept fixed;
# the others are the sparse-training algorithms of sparse_kernels.dst.
DST_METHODS = ("st-rnn", "set", "rigl", "snfs", "gradual", "iht", "predefined")
METHODS = ("dense", "static") + DST_METHODS
OPTIMIZERS = ("sgd", "adam")


@dataclass
class RunConfig:
    """Settings shared by both loops. ``model_keys`` of a subclass lists the
    settings a resumed run must keep."""
    model: str = "lstm"
    method: str = "dense"
    sparsity: float = 0.9
    init: str = "uniform"
    embedding_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    depth: int = 1               # recurrence depth (RHN)
    dropout: float = 0.5
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 20.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 0.25
    seed: int = 0
    prune_rate: float = 0.5
    update_every: int = 0        # steps between topology updates; 0: once per epoch
    method_options: dict = field(default_factory=dict)
    device: str = "cpu"

    model_keys = ("model", "method", "sparsity", "init", "embedding_size", "hidden_size", "num_layers", "depth",
                  "optimizer", "seed")

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not (0.0 <= self.sparsity < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        for name in ("embedding_size", "hidden_size", "num_layers", "depth", "epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    @property
    def sparse(self) -> bool:
        return self.method != "dense"

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity if self.sparse else 1.0

    def model_settings(self) -> dict:
        return {k: getattr(self, k) for k in self.model_keys}

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = list({id(p): p for p in model.parameters()}.values())
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_sparsity_scheduler(config: RunConfig, model, optimizer, total_steps: int, steps_per_epoch: int):
    """The sparse-training scheduler of ``config.method`` (None for dense and
    static sparse models, whose topology never changes)."""
    if config.method not in DST_METHODS:
        return None
    try:
        from ..dst import DynamicSparsity
    except ImportError:
        raise ValueError(f"method {config.method!r} needs sparse_kernels.dst, which this version does not "
                         "provide") from None
    return DynamicSparsity(model, optimizer, method=config.method, total_steps=total_steps,
                           update_every=config.update_every or steps_per_epoch, prune_rate=config.prune_rate,
                           seed=config.seed, **config.method_options)


class MetricsLog:
    """Per-epoch metrics: a CSV rewritten from the full history each epoch
    (so a resumed run's file equals an uninterrupted one's), and TensorBoard
    scalars when tensorboard is installed."""

    def __init__(self, out_dir: Path, history: list[dict], tensorboard: bool = True):
        self.path = out_dir / "metrics.csv"
        self.history = history
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def append(self, row: dict) -> None:
        self.history.append(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(self.history)
        tmp = self.path.with_suffix(".csv.tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(self.path)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def save_run(path: Path, *, kind: str, config: RunConfig, model, optimizer, lr_scheduler, sparsity_scheduler,
             progress: dict, history: list, extra: dict | None = None) -> None:
    atomic_save({"format": FORMAT, "kind": kind, "config": asdict(config), "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(),
                 "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                 "sparsity_scheduler": sparsity_scheduler.state_dict() if sparsity_scheduler is not None else None,
                 "rng": rng_state(), "progress": progress, "history": history, **(extra or {})}, path)


def open_resume(path, kind: str, config: RunConfig) -> dict:
    """Load a checkpoint to resume and check it matches ``config``."""
    ckpt = load_checkpoint(path, kind)
    check_compatible(ckpt["config"], config.model_settings(), path)
    return ckpt


def restore_run(ckpt: dict, path, *, model, optimizer, lr_scheduler, sparsity_scheduler) -> None:
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if lr_scheduler is not None and ckpt.get("lr_scheduler") is not None:
            lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if sparsity_scheduler is not None:
            sparsity_scheduler.load_state_dict(ckpt["sparsity_scheduler"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: incompatible checkpoint: {first}") from None
    set_rng_state(ckpt["rng"])


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


class StepBoundaryInterrupt:
    """Ctrl-C handling for a training loop: the first SIGINT only sets a
    flag, and the loop calls :meth:`check` after each completed step, so the
    checkpoint written on interrupt never holds a half-done step; a second
    SIGINT interrupts at once. Does nothing outside the main thread."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self) -> "StepBoundaryInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
