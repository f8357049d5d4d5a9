"""What the language-model and classification loops share: the settings that
define a run, optimizer and sparse-training scheduler construction,
checkpoints, the metrics files, progress bars."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
import signal
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

from ..dst.lr_groups import sparse_lr_groups
from . import distributed, report
from .checkpoint import CheckpointError, CheckpointWriteError, check_compatible, check_output_folder, \
    load_checkpoint, read_checkpoint, remove_stale_temporaries, rng_state, save_checkpoint, seed_everything, \
    set_rng_state

# "dense": the torch.nn model; "static": a random sparse topology kept fixed;
# the others are the sparse-training algorithms of sparse_kernels.dst.
DST_METHODS = ("st-rnn", "set", "rigl", "snfs", "gradual", "iht", "predefined")
METHODS = ("dense", "static") + DST_METHODS
DENSE_TO_SPARSE = ("gradual", "iht")
OPTIMIZERS = ("sgd", "adam")
# sparse_lr_scale -> the power of the density each sparse weight's lr is divided by (see sparse_lr_groups).
SPARSE_LR_POWERS = {"fan_in": 1.0, "sqrt_fan_in": 0.5}
SPARSE_LR_SCALES = ("none", *SPARSE_LR_POWERS)
LR_SCHEDULES = ("plateau", "cosine")
NONFINITE = ("skip", "stop")   # what a step with a NaN/inf loss or gradient does


class ConfigError(ValueError):
    """A setting a user gave that cannot work (the message names it)."""


class NonFiniteError(RuntimeError):
    """Training stopped on a NaN/inf loss or gradient (the message says
    where, and which checkpoint is the last good one)."""


@dataclass
class RunConfig:
    """Settings shared by both loops. ``model_keys`` of a subclass lists the
    settings a resumed run must keep."""
    model: str = "lstm"
    method: str = "dense"
    sparsity: float = 0.9
    init: str = "uniform"
    init_scale: str = "dense"    # sparse weights' initial values: the dense layer's bound, or "fan_in" (see storage)
    sparse_lr_scale: str = "none"  # "fan_in" / "sqrt_fan_in": each sparse weight's lr times 1 / its density, or
                                   # 1 / sqrt(density) (see sparse_lr_groups)
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
    update_every: int = 0        # steps between topology updates; 0: updates_per_epoch per epoch
    updates_per_epoch: int = 1   # with update_every 0: topology updates per epoch, evenly spaced
    method_options: dict = field(default_factory=dict)
    device: str = "cpu"
    checkpoint_every: int = 0    # steps between mid-epoch checkpoints; 0: at epoch ends only
    nonfinite: str = "skip"      # a NaN/inf loss or gradient: "skip" the step, or "stop" the run
    nonfinite_limit: int = 10    # "skip" stops the run after this many non-finite steps in a row
    block_shape: tuple[int, int] | None = None  # recurrent weights as dense blocks (BSR) of this shape; None: CSR

    # sparse_lr_scale decides the optimizer's parameter groups, which a resumed run must keep.
    model_keys = ("model", "method", "sparsity", "init", "embedding_size", "hidden_size", "num_layers", "depth",
                  "optimizer", "seed", "block_shape", "sparse_lr_scale")

    def __post_init__(self) -> None:
        # A checkpoint's config comes back with a list (JSON-like round trip): one form.
        if isinstance(self.block_shape, list):
            self.block_shape = tuple(self.block_shape)

    def validate(self) -> None:
        try:
            self._validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.init_scale not in ("dense", "fan_in"):
            raise ValueError(f"init_scale must be 'dense' or 'fan_in', got {self.init_scale!r}")
        if self.sparse_lr_scale not in SPARSE_LR_SCALES:
            raise ValueError(f"sparse_lr_scale must be one of {', '.join(SPARSE_LR_SCALES)}, "
                             f"got {self.sparse_lr_scale!r}")
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
        if self.nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {', '.join(NONFINITE)}, got {self.nonfinite!r}")
        if self.updates_per_epoch < 1:
            raise ValueError(f"updates_per_epoch must be >= 1, got {self.updates_per_epoch}")
        for name in ("checkpoint_every", "nonfinite_limit", "update_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.block_shape is not None:
            shape = self.block_shape
            if not (isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
                raise ValueError(f"block_shape must be two positive integers (rows, columns), got {shape!r}")
            if not self.sparse:
                raise ValueError("block_shape needs a sparse method (the dense model has no blocks)")
            if self.hidden_size % shape[0] or self.hidden_size % shape[1] or self.embedding_size % shape[1]:
                raise ValueError(f"block_shape {shape[0]}x{shape[1]} must divide hidden_size ({self.hidden_size}) "
                                 f"and embedding_size ({self.embedding_size}): the recurrent weights are tiled by it")

    @property
    def sparse(self) -> bool:
        return self.method != "dense"

    @property
    def density(self) -> float:
        """The density the model is built with: dense-to-sparse methods
        (gradual pruning, IHT) start from every weight stored."""
        if not self.sparse or self.method in DENSE_TO_SPARSE:
            return 1.0
        return 1.0 - self.sparsity

    def model_settings(self) -> dict:
        return {k: getattr(self, k) for k in self.model_keys}

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_lr_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """The run's learning-rate schedule, or None. ``lr_schedule`` "plateau"
    (the default, and the only one of configs without the field): every
    group's lr divided by ``lr_decay`` after an epoch whose validation loss
    did not improve (stepped by fit with that loss). "cosine": every group's
    lr times (1 + cos(pi * step / total_steps)) / 2 after each optimizer step,
    reaching 0 at the run's last step (stepped by fit after each step taken:
    a skipped non-finite step does not advance it), so the sparse groups keep
    their lr ratio to group 0."""
    schedule = getattr(config, "lr_schedule", "plateau")
    if schedule == "cosine":
        total = max(total_steps, 1)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    decay = getattr(config, "lr_decay", 1.0)
    if decay > 1.0:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=1.0 / decay,
                                                          patience=0, threshold=0.0)
    return None


def make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The run's optimizer; with a ``sparse_lr_scale`` other than "none" each
    sparse weight in its own parameter group (sparse_lr_groups; group 0 holds
    the rest and its lr is the one logged and decayed alike)."""
    if config.sparse_lr_scale == "none":
        params = list({id(p): p for p in model.parameters()}.values())
    else:
        params = sparse_lr_groups(model, config.lr, SPARSE_LR_POWERS[config.sparse_lr_scale])
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
        raise ConfigError(f"method {config.method!r} needs sparse_kernels.dst, which this version does not "
                         "provide") from None
    options = dict(config.method_options)
    # --sparsity is the final sparsity of the dense-to-sparse methods.
    if config.method == "gradual":
        options.setdefault("final_density", 1.0 - config.sparsity)
    elif config.method == "iht":
        options.setdefault("target_density", 1.0 - config.sparsity)
    try:
        return DynamicSparsity(model, optimizer, method=config.method, total_steps=total_steps,
                               update_every=config.update_every or max(1, steps_per_epoch // config.updates_per_epoch),
                               prune_rate=config.prune_rate,
                               seed=config.seed, **options)
    except (TypeError, ValueError) as exc:  # an unknown or bad --method-options entry
        raise ConfigError(f"method {config.method!r}: {exc}") from None


class MetricsLog:
    """Per-epoch metrics: a CSV rewritten from the full history each epoch
    (so a resumed run's file equals an uninterrupted one's), and TensorBoard
    scalars when tensorboard is installed."""

    def __init__(self, out_dir: Path, history: list[dict], tensorboard: bool = True, write: bool = True):
        self.path = out_dir / "metrics.csv"
        self.history = history
        self.write = write      # False: keep the history only (ranks > 0 of a data-parallel job)
        self.writer = None
        if tensorboard and write:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def append(self, row: dict) -> None:
        self.history.append(row)
        if not self.write:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(self.history)
        tmp = self.path.with_suffix(".csv.tmp")
        try:
            tmp.write_text(buf.getvalue())
            tmp.replace(self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(f"{self.path}: could not write ({exc.strerror or exc}); the previous "
                                       "metrics.csv is unchanged") from exc
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
    save_checkpoint({"config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                     "sparsity_scheduler": sparsity_scheduler.state_dict() if sparsity_scheduler is not None else None,
                     "rng": rng_state(), "progress": progress, "history": history, **(extra or {})}, path, kind=kind)


def checkpoint_bytes_estimate(config: RunConfig, model) -> int:
    """About what ``checkpoint.pt`` and ``best.pt`` take on disk together:
    the model's tensors, once more per optimizer slot (Adam: 2, SGD with
    momentum: 1), once more for best.pt, plus room for the small fields."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()
                      if isinstance(t, torch.Tensor))
    slots = 2 if config.optimizer == "adam" else int(config.momentum > 0)
    return model_bytes * (2 + slots) + (1 << 20)


def clip_or_find_nonfinite(model, loss_value: float, clip: float) -> str | None:
    """After backward: None when the loss and every gradient are finite
    (then the gradients are clipped to norm ``clip`` when it is positive),
    else what is wrong, naming the first parameter with a NaN/inf gradient.
    (Under DistributedDataParallel the gradients are averaged across ranks,
    so their verdict is the same everywhere, but the loss is each rank's
    own: a distributed loop must agree on the verdict, e.g. all-reduce it,
    before skipping, since the sparse-training step is collective.)"""
    if not math.isfinite(loss_value):
        return f"the loss is {loss_value}"
    named = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return None
    norm = torch.nn.utils.get_total_norm([p.grad for _, p in named])
    if not bool(torch.isfinite(norm)):
        bad = next((name for name, p in named if not bool(torch.isfinite(p.grad).all())), None)
        return f"the gradient of {bad} is not finite" if bad else f"the gradient norm overflows ({float(norm)})"
    if clip > 0:
        torch.nn.utils.clip_grads_with_norm_([p for _, p in named], clip, norm)
    return None


def open_resume(path, kind: str, config: RunConfig) -> dict:
    """Load a checkpoint to resume and check it matches ``config``."""
    ckpt = load_checkpoint(path, kind)
    check_compatible(ckpt["config"], config.model_settings(), path)
    # The saved lr scheduler's state is of its schedule's kind (a run saved
    # before lr_schedule existed decayed on a plateau).
    check_compatible({"lr_schedule": ckpt["config"].get("lr_schedule", "plateau")},
                     {"lr_schedule": getattr(config, "lr_schedule", "plateau")}, path)
    return ckpt


def planned_run_steps(ckpt: dict, steps_per_epoch: int) -> int:
    """The steps a checkpoint's run was first planned for: the horizon of its
    lr and sparse-training schedules, kept when a resumed run is given more
    epochs. Checkpoints saved before it was recorded: their run's epochs."""
    planned = ckpt["progress"].get("planned_steps")
    return int(planned) if planned is not None else int(ckpt["config"]["epochs"]) * steps_per_epoch


def check_resumed_length(config: RunConfig, planned_steps: int, steps_per_epoch: int, path) -> None:
    """A resumed run may train longer than first planned, except under a
    cosine lr schedule, which ends at 0 on the planned last step."""
    if getattr(config, "lr_schedule", "plateau") == "cosine" and config.epochs * steps_per_epoch > planned_steps:
        raise ConfigError(f"{path}: this run's cosine lr schedule reaches 0 at its planned end "
                          f"({planned_steps // steps_per_epoch} epochs, {planned_steps} steps); epochs={config.epochs} "
                          "would train on at lr 0: resume with at most the planned epochs, or start a new run")


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


def _stop_progress_monitor() -> None:
    """Stop and join tqdm's monitor thread once no progress bar is open, so
    that a training run leaves no thread behind. tqdm (4.70) starts the
    monitor with its first bar (a disabled one too) and keeps it until the
    interpreter exits, where an atexit hook wakes it: it then races the
    interpreter's finalisation, and CPython before 3.14 ends a daemon thread
    that wants the GIL after finalisation began with pthread_exit, whose
    forced unwinding aborts the process ("terminate called without an
    active exception") if it meets a C++ frame that may not throw. It was
    the only thread left in a finished torchrun rank (gloo's end with
    destroy_process_group) when one aborted at exit that way under torch
    2.15 (issue #16; not reproduced since, so not proven the cause). tqdm
    starts a new monitor with the next bar."""
    monitor = tqdm.monitor
    with tqdm.get_lock():
        if monitor is None or tqdm._instances:
            return
        tqdm.monitor = None
    monitor.exit()  # sets its stop event and joins it


class StepBoundaryInterrupt:
    """Ctrl-C handling for a training loop: the first SIGINT only sets a
    flag, and the loop calls :meth:`check` after each completed step, so the
    checkpoint written on interrupt never holds a half-done step; a second
    SIGINT interrupts at once. Does nothing outside the main thread.

    ``distributed=True`` (a rank of a torchrun job): SIGTERM is caught too
    and repeated signals only keep the flag set, because torchrun forwards
    the terminal's Ctrl-C to every rank a second time and stops them with
    SIGTERM; the ranks then agree on the step to stop after (the loop
    all-reduces the flag) and rank 0 writes the checkpoint."""

    def __init__(self, distributed: bool = False):
        self.requested = False
        self.distributed = distributed
        self._signals = (signal.SIGINT, signal.SIGTERM) if distributed else (signal.SIGINT,)
        self._previous = {}

    def install(self) -> "StepBoundaryInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self._signals}
        return self

    def _handle(self, signum, frame):
        self.requested = True
        if not self.distributed:
            signal.signal(signum, self._previous[signum])

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for s, previous in self._previous.items():
            if previous is not None:  # None: a handler installed outside Python, not restorable
                signal.signal(s, previous)
        self._previous = {}


@dataclass
class FitResult:
    """What :func:`fit` leaves behind (the loops add their test metrics)."""
    config: RunConfig
    history: list = field(default_factory=list)   # per-epoch metrics rows
    best_score: float = math.inf
    params: dict = field(default_factory=dict)
    flops_ratio: float = 1.0
    train_flops_ratio: float = 1.0
    memory: dict = field(default_factory=dict)
    peak_memory: int = 0
    seconds_per_epoch: float = math.nan
    interrupted: bool = False
    model: torch.nn.Module | None = None


def _seed_rank(config: RunConfig, ranks: "distributed.Ranks", step: int) -> None:
    """Random draws in training (dropout) on ranks > 0 of a data-parallel
    job: a stream of the rank's own, re-seeded from (seed, rank, step) at
    every epoch start and on resume. Rank 0 keeps the single-process stream,
    which is the one checkpoints store (their contents do not depend on the
    number of ranks); so resuming from an epoch's checkpoint with the same
    number of ranks is exact, and a mid-epoch resume is exact on rank 0 (on
    every rank without dropout)."""
    if ranks.rank > 0:
        torch.manual_seed(((config.seed * 1_000_003 + ranks.rank) * 1_000_033 + step) % 2**63)


def fit(kind: str, config: RunConfig, out_dir, *, build_model, steps_per_epoch: int, batches, loss_fn, validate,
        score, resume=None, progress: bool = True, on_step=None, tensorboard: bool = True,
        extra: dict | None = None, gather_carry=None, shard_carry=None, check_topology: bool = False) -> FitResult:
    """The epoch loop both training loops share.

    ``build_model()`` makes the model (after seeding); ``batches(epoch)``
    yields that epoch's batches, the same on every call; ``loss_fn(model,
    batch, carry)`` returns (mean loss tensor, items) and may keep state
    between batches in the dict ``carry`` (saved in checkpoints);
    ``validate(model)`` returns a dict of metrics with ``valid_loss`` (which
    drives the learning-rate decay); ``score(metrics)`` is lower-is-better
    and picks the model kept in ``best.pt``. Checkpoints go to
    ``out_dir/checkpoint.pt`` after every epoch, every
    ``config.checkpoint_every`` steps and on Ctrl-C (then the result has
    ``interrupted=True``); ``resume`` continues one exactly. A step whose
    loss or gradient is NaN/inf is skipped (optimizer and sparse-training
    steps not taken, counted in the metrics' ``skipped_steps``) or, with
    ``config.nonfinite == "stop"`` or after ``config.nonfinite_limit`` such
    steps in a row, ends the run with :class:`NonFiniteError`, the last
    checkpoint untouched. The output folder is checked (writable, room for
    the checkpoints) before the first step.

    In a torch.distributed job (see :mod:`.distributed`) every rank calls
    fit: ``batches`` yields this rank's share of each global batch (possibly
    with items = 0), ``validate`` returns metrics reduced over the ranks, and
    ``gather_carry(carry)`` / ``shard_carry(carry)`` turn this rank's carry
    into the whole batch's (a collective) and back, so that checkpoints do
    not depend on the number of ranks (``shard_carry`` also runs in a single
    process, to move a resumed carry to the device). The model is wrapped in
    DistributedDataParallel; each rank's loss is weighted by its share of the
    global batch's items, so the averaged gradient is the single-process
    one. Rank 0 writes every file; the others wait for it at a barrier.
    ``check_topology``: after every topology update, compare the ranks'
    pattern digests and raise :class:`~.distributed.TopologyMismatch` when
    they differ.
    """
    config.validate()
    ranks = distributed.current()
    out_dir = Path(out_dir)
    ckpt = open_resume(resume, kind, config) if resume is not None else None
    for key, value in (extra or {}).items() if ckpt is not None else ():
        if ckpt.get(key) != value:  # e.g. the same vocabulary size, other words
            raise CheckpointError(f"{resume}: incompatible checkpoint: it was trained with another {key}")
    planned_steps = config.epochs * steps_per_epoch
    if ckpt is not None:
        planned_steps = planned_run_steps(ckpt, steps_per_epoch)
        check_resumed_length(config, planned_steps, steps_per_epoch, resume)
    seed_everything(config.seed)
    model = build_model()
    optimizer = make_optimizer(config, model)
    # Both schedules span the run as first planned, also when a resumed run
    # goes on longer (planned_run_steps).
    lr_scheduler = make_lr_scheduler(config, optimizer, planned_steps)
    step_lr = isinstance(lr_scheduler, torch.optim.lr_scheduler.LambdaLR)  # per step, not on a plateau
    sparsity = make_sparsity_scheduler(config, model, optimizer, planned_steps, steps_per_epoch)
    if (ckpt is not None and sparsity is not None and config.epochs * steps_per_epoch > planned_steps
            and ranks.main):
        past = {"gradual": "at its final density", "iht": "thresholded as before",
                "predefined": "on its fixed pattern"}.get(config.method, "with no further prune-and-regrow")
        print(f"resuming for {config.epochs} epochs a run planned for {planned_steps // steps_per_epoch}: "
              f"{config.method}'s schedule keeps its horizon of {planned_steps} steps, and the steps past it "
              f"train {past}", file=sys.stderr, flush=True)
    if ranks.main:  # rank 0 writes every file
        check_output_folder(out_dir, checkpoint_bytes_estimate(config, model))
        remove_stale_temporaries(out_dir)  # left by a run killed while saving
    ps = {"epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "items": 0, "seconds": 0.0,
          "best_score": math.inf, "flops_sum": 0.0, "carry": {}, "skipped": 0, "nonfinite_streak": 0,
          "planned_steps": planned_steps}
    history: list[dict] = []
    if ckpt is not None:
        restore_run(ckpt, resume, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler,
                    sparsity_scheduler=sparsity)
        ps, history = {**ps, **ckpt["progress"]}, list(ckpt["history"])
        if ps["carry"] and shard_carry is not None:
            ps["carry"] = shard_carry(ps["carry"])
    _seed_rank(config, ranks, ps["step"])
    metrics = MetricsLog(out_dir, history, tensorboard=tensorboard, write=ranks.main)
    result = FitResult(config=config, history=history)
    # The module the training forward runs through: DDP around the model
    # in a distributed job (validation and checkpoints use the model).
    net = distributed.DataParallel(model)
    if ranks.distributed and ranks.main:
        sent = distributed.gradient_bytes(model)
        print(f"data parallel: {ranks.world_size} ranks ({torch.distributed.get_backend()}); gradient all-reduce "
              f"{report.human_bytes(sent['total'])} per step, of which sparse weights "
              f"{report.human_bytes(sent['sparse'])} (nnz-sized; dense they would be "
              f"{report.human_bytes(sent['sparse_dense'])})", file=sys.stderr, flush=True)

    saved_step = [ps["step"] if ckpt is not None else None]  # the step of the last good checkpoint

    def checkpoint():
        progress_state = ps
        if ps["carry"] and gather_carry is not None:  # a collective: every rank takes part
            progress_state = {**ps, "carry": gather_carry(ps["carry"])}
        if ranks.main:
            save_run(out_dir / "checkpoint.pt", kind=kind, config=config, model=model, optimizer=optimizer,
                     lr_scheduler=lr_scheduler, sparsity_scheduler=sparsity, progress=progress_state,
                     history=history, extra=extra)
        distributed.barrier()
        saved_step[0] = ps["step"]

    def nonfinite_step(problem: str) -> None:
        """A step with a NaN/inf loss or gradient: nothing was updated; drop
        the carried state it produced, count it, or stop the run."""
        ps["skipped"] += 1
        ps["nonfinite_streak"] += 1
        ps["carry"] = {}
        if sparsity is not None:
            sparsity.skip_step()
        where = f"step {ps['step'] + 1} (epoch {ps['epoch'] + 1}, batch {ps['batch'] + 1})"
        if config.nonfinite == "stop" or ps["nonfinite_streak"] > config.nonfinite_limit:
            why = ("nonfinite='stop'" if config.nonfinite == "stop" else
                   f"{ps['nonfinite_streak']} non-finite steps in a row, more than nonfinite_limit="
                   f"{config.nonfinite_limit}")
            kept = (f"the last good checkpoint {out_dir / 'checkpoint.pt'} (step {saved_step[0]}) is untouched"
                    if saved_step[0] is not None else "no checkpoint was written yet")
            raise NonFiniteError(f"{where}: {problem}; training stopped ({why}); {kept}")

    def sparsity_step(step: int) -> None:
        """The sparse-training scheduler's step for optimizer step ``step``."""
        if sparsity.step():
            net.refresh()
            if check_topology:
                distributed.check_topology(sparsity, step)

    bar = tqdm(total=config.epochs * steps_per_epoch, initial=ps["step"], disable=not (progress and ranks.main),
               desc=f"{config.method} {config.model}", unit="batch", dynamic_ncols=True, leave=False)
    interrupt = StepBoundaryInterrupt(distributed=ranks.distributed).install()
    try:
        while ps["epoch"] < config.epochs:
            model.train()
            if ps["batch"] == 0:
                _seed_rank(config, ranks, ps["step"])
            epoch_start = time.perf_counter() - ps["seconds"]
            for index, batch in enumerate(batches(ps["epoch"])):
                if index < ps["batch"]:
                    continue
                loss, items = loss_fn(net.module, batch, ps["carry"])
                loss_sum, all_items = loss.item() * items, items
                if ranks.distributed:
                    # Weight this rank's mean by its share of the global batch:
                    # DDP's average of the gradients is then the gradient of the
                    # global batch's mean loss.
                    loss_sum, all_items = distributed.all_reduce([loss_sum, items])
                    loss = loss * (items * ranks.world_size / all_items)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Under DDP the gradients are already averaged over the ranks and
                # loss_sum is reduced: every rank reaches the same verdict.
                problem = clip_or_find_nonfinite(model, loss_sum / max(all_items, 1), config.clip)
                if problem is None:
                    optimizer.step()
                    if step_lr:
                        lr_scheduler.step()
                    if sparsity is not None and sparsity.regrows and index + 1 == steps_per_epoch:
                        # A prune-and-regrow update due at the epoch's last
                        # step (every per-epoch schedule's) waits for the
                        # validation, so that it scores the model the epoch
                        # trained, not one whose smallest weights were just
                        # cut and regrown at 0: best.pt and the plateau lr
                        # rule read it. (Gradual pruning's and IHT's updates
                        # are the sparsification itself: scored after.)
                        ps["sparsity_step_pending"] = True
                    elif sparsity is not None:
                        sparsity_step(ps["step"] + 1)
                    ps["loss_sum"] += loss_sum
                    ps["items"] += int(all_items)
                    ps["nonfinite_streak"] = 0
                else:
                    nonfinite_step(problem)
                ps["flops_sum"] += report.flops_ratio(model)
                ps["batch"], ps["step"] = index + 1, ps["step"] + 1
                ps["seconds"] = time.perf_counter() - epoch_start
                train_loss = ps["loss_sum"] / ps["items"] if ps["items"] else math.nan
                bar.update(1)
                shown = {"ppl": f"{perplexity(train_loss):.1f}"} if kind == "lm" else {}
                bar.set_postfix(epoch=ps["epoch"] + 1, loss=f"{train_loss:.3f}", **shown,
                                lr=f"{optimizer.param_groups[0]['lr']:.3g}",
                                **({"skipped": ps["skipped"]} if ps["skipped"] else {}))
                stop = False
                if on_step is not None:
                    try:
                        on_step(ps["step"])
                    except KeyboardInterrupt:
                        if not ranks.distributed:
                            raise
                        stop = True
                if ranks.distributed:
                    # Every rank stops after the same step, or the collectives
                    # of the next one would wait forever.
                    if distributed.any_rank(stop or interrupt.requested):
                        raise KeyboardInterrupt
                else:
                    interrupt.check()
                if config.checkpoint_every and ps["step"] % config.checkpoint_every == 0 \
                        and ps["batch"] < steps_per_epoch:  # the epoch's end writes one anyway
                    checkpoint()
            epoch_seconds = time.perf_counter() - epoch_start
            valid = validate(model)
            train_loss = ps["loss_sum"] / ps["items"] if ps["items"] else math.nan
            params = report.parameter_counts(model)
            row = {"epoch": ps["epoch"] + 1, "step": ps["step"], "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": train_loss, **({"train_ppl": perplexity(train_loss)} if kind == "lm" else {}),
                   **valid, "stored_params": params["stored"], "dense_params": params["dense"],
                   "allreduce_bytes_per_step": distributed.gradient_bytes(model)["total"] if ranks.distributed else 0,
                   "skipped_steps": ps["skipped"], "epoch_seconds": epoch_seconds}
            # Rank 0's row (its clock) on every rank: the histories agree.
            metrics.append(distributed.broadcast_object(row))
            if lr_scheduler is not None and not step_lr:
                lr_scheduler.step(valid["valid_loss"])
            if score(valid) < ps["best_score"]:
                ps["best_score"] = score(valid)
                if ranks.main:
                    save_checkpoint({"config": asdict(config), "model": model.state_dict(), "epoch": ps["epoch"] + 1,
                                     **valid, **(extra or {})}, out_dir / "best.pt", kind=f"{kind}-best")
            if ps.pop("sparsity_step_pending", False):
                sparsity_step(ps["step"])
            ps.update(epoch=ps["epoch"] + 1, batch=0, loss_sum=0.0, items=0, seconds=0.0, carry={}, skipped=0)
            checkpoint()  # its barrier also orders best.pt before anyone reads it
    except KeyboardInterrupt:
        checkpoint()
        result.interrupted = True
    finally:
        interrupt.restore()
        bar.close()
        _stop_progress_monitor()
        metrics.close()

    result.params = report.parameter_counts(model)
    result.flops_ratio = report.flops_ratio(model)
    result.train_flops_ratio = ps["flops_sum"] / ps["step"] if ps["step"] else result.flops_ratio
    result.memory = report.state_bytes(model, optimizer)
    result.peak_memory = report.peak_memory_bytes(config.device)
    result.best_score = ps["best_score"]
    result.model = model
    seconds = [row["epoch_seconds"] for row in history]
    result.seconds_per_epoch = sum(seconds) / len(seconds) if seconds else math.nan
    if not result.interrupted and (out_dir / "best.pt").is_file():
        best = read_checkpoint(out_dir / "best.pt", f"{kind}-best", map_location=config.device)
        model.load_state_dict(best["model"])
    return result
