"""Word-level language modelling: truncated BPTT over batchified token
streams, SGD with the learning rate divided on a validation plateau (Liu et
al.: lr 2 -> / 1.33), gradient clipping, a sparse-training scheduler by name,
per-epoch metrics and checkpoints, exact resume."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import report
from .checkpoint import atomic_save, seed_everything
from .data import LMCorpus, batchify, bptt_batches
from .loop import MetricsLog, RunConfig, StepBoundaryInterrupt, make_optimizer, make_sparsity_scheduler, open_resume, perplexity, \
    restore_run, save_run
from .models import LanguageModel, detach_state


@dataclass
class LMConfig(RunConfig):
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    tie_weights: bool = False
    lr_decay: float = 1.33       # lr /= lr_decay when the validation loss stops decreasing

    model_keys = RunConfig.model_keys + ("tie_weights",)

    def validate(self) -> None:
        super().validate()
        for name in ("batch_size", "eval_batch_size", "bptt"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr_decay < 1.0:
            raise ValueError(f"lr_decay must be >= 1, got {self.lr_decay}")


@dataclass
class LMResult:
    config: LMConfig
    history: list = field(default_factory=list)   # per-epoch metrics rows
    test_loss: float = math.nan
    best_valid_loss: float = math.nan
    params: dict = field(default_factory=dict)
    flops_ratio: float = 1.0
    train_flops_ratio: float = 1.0
    memory: dict = field(default_factory=dict)
    peak_memory: int = 0
    seconds_per_epoch: float = math.nan
    inference_tokens_per_second: float = math.nan
    interrupted: bool = False
    optimal_perplexity: float | None = None
    model: torch.nn.Module | None = None

    @property
    def test_ppl(self) -> float:
        return perplexity(self.test_loss)

    @property
    def best_valid_ppl(self) -> float:
        return perplexity(self.best_valid_loss)


def build_lm(config: LMConfig, vocab_size: int) -> LanguageModel:
    return LanguageModel(vocab_size, embedding_size=config.embedding_size, hidden_size=config.hidden_size,
                         num_layers=config.num_layers, model=config.model, dropout=config.dropout,
                         tie_weights=config.tie_weights, sparse=config.sparse, density=config.density,
                         init=config.init, seed=config.seed, depth=config.depth).to(config.device)


@torch.no_grad()
def evaluate_lm(model: LanguageModel, source: torch.Tensor, bptt: int) -> tuple[float, float]:
    """(mean loss per token, tokens per second) over batchified ``source``."""
    model.eval()
    total, count, state = 0.0, 0, None
    start = time.perf_counter()
    for _, inputs, targets in bptt_batches(source, bptt):
        logits, state = model(inputs, state)
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    elapsed = time.perf_counter() - start
    return total / max(count, 1), count / elapsed if elapsed > 0 else math.nan


def train_lm(corpus: LMCorpus, config: LMConfig, out_dir, *, resume=None, progress: bool = True,
             on_step=None, tensorboard: bool = True) -> LMResult:
    """Train, keeping ``out_dir/checkpoint.pt`` (every epoch and on Ctrl-C),
    ``out_dir/best.pt`` (the best validation model) and
    ``out_dir/metrics.csv``; then evaluate the best model on test.

    ``resume``: a checkpoint file or run folder to continue from exactly.
    ``on_step(step)`` is called after every optimizer step (a hook for
    tests and callers; raising KeyboardInterrupt there acts like Ctrl-C).
    On KeyboardInterrupt the checkpoint is written and the result returned
    with ``interrupted=True``.
    """
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = open_resume(resume, "lm", config) if resume is not None else None
    seed_everything(config.seed)
    device = torch.device(config.device)
    train_data = batchify(corpus.train, config.batch_size).to(device)
    valid_data = batchify(corpus.valid, config.eval_batch_size).to(device)
    test_data = batchify(corpus.test, config.eval_batch_size).to(device)
    steps_per_epoch = math.ceil((train_data.size(0) - 1) / config.bptt)

    model = build_lm(config, len(corpus.vocab))
    optimizer = make_optimizer(config, model)
    lr_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=1.0 / config.lr_decay,
                                                              patience=0, threshold=0.0)
    sparsity = make_sparsity_scheduler(config, model, optimizer, config.epochs * steps_per_epoch, steps_per_epoch)
    progress_state = {"epoch": 0, "window": 0, "step": 0, "loss_sum": 0.0, "tokens": 0, "seconds": 0.0,
                      "best_valid_loss": math.inf, "density_sum": 0.0, "state": None}
    history: list[dict] = []
    if ckpt is not None:
        restore_run(ckpt, resume, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler,
                    sparsity_scheduler=sparsity)
        progress_state, history = ckpt["progress"], list(ckpt["history"])
    metrics = MetricsLog(out_dir, history, tensorboard=tensorboard)
    result = LMResult(config=config, history=history, optimal_perplexity=corpus.optimal_perplexity)
    ps = progress_state

    def checkpoint():
        save_run(out_dir / "checkpoint.pt", kind="lm", config=config, model=model, optimizer=optimizer,
                 lr_scheduler=lr_scheduler, sparsity_scheduler=sparsity, progress=ps, history=history,
                 extra={"vocab": corpus.vocab.itos})

    bar = tqdm(total=config.epochs * steps_per_epoch, initial=ps["step"], disable=not progress,
               desc=f"{config.method} {config.model}", unit="batch", dynamic_ncols=True, leave=False)
    interrupt = StepBoundaryInterrupt().install()
    try:
        while ps["epoch"] < config.epochs:
            model.train()
            epoch_start = time.perf_counter() - ps["seconds"]
            state = ps["state"]
            for window, (_, inputs, targets) in enumerate(bptt_batches(train_data, config.bptt)):
                if window < ps["window"]:
                    continue
                state = detach_state(state)
                logits, state = model(inputs, state)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                optimizer.step()
                if sparsity is not None:
                    sparsity.step()
                ps["loss_sum"] += loss.item() * targets.numel()
                ps["tokens"] += targets.numel()
                ps["density_sum"] += report.flops_ratio(model)
                ps["window"], ps["step"] = window + 1, ps["step"] + 1
                ps["state"], ps["seconds"] = detach_state(state), time.perf_counter() - epoch_start
                train_loss = ps["loss_sum"] / ps["tokens"]
                bar.update(1)
                bar.set_postfix(epoch=ps["epoch"] + 1, loss=f"{train_loss:.3f}", ppl=f"{perplexity(train_loss):.1f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.3g}")
                if on_step is not None:
                    on_step(ps["step"])
                interrupt.check()
            epoch_seconds = time.perf_counter() - epoch_start
            valid_loss, _ = evaluate_lm(model, valid_data, config.bptt)
            train_loss = ps["loss_sum"] / max(ps["tokens"], 1)
            params = report.parameter_counts(model)
            metrics.append({"epoch": ps["epoch"] + 1, "step": ps["step"], "lr": optimizer.param_groups[0]["lr"],
                            "train_loss": train_loss, "train_ppl": perplexity(train_loss),
                            "valid_loss": valid_loss, "valid_ppl": perplexity(valid_loss),
                            "stored_params": params["stored"], "dense_params": params["dense"],
                            "epoch_seconds": epoch_seconds})
            lr_scheduler.step(valid_loss)
            if valid_loss < ps["best_valid_loss"]:
                ps["best_valid_loss"] = valid_loss
                atomic_save({"config": config.__dict__, "model": model.state_dict(), "epoch": ps["epoch"] + 1,
                             "valid_loss": valid_loss, "vocab": corpus.vocab.itos}, out_dir / "best.pt")
            ps.update(epoch=ps["epoch"] + 1, window=0, loss_sum=0.0, tokens=0, seconds=0.0, state=None)
            checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        result.interrupted = True
    finally:
        interrupt.restore()
        bar.close()
        metrics.close()

    result.params = report.parameter_counts(model)
    result.flops_ratio = report.flops_ratio(model)
    result.train_flops_ratio = ps["density_sum"] / ps["step"] if ps["step"] else result.flops_ratio
    result.memory = report.state_bytes(model, optimizer)
    result.peak_memory = report.peak_memory_bytes(device)
    result.best_valid_loss = ps["best_valid_loss"]
    result.model = model
    seconds = [row["epoch_seconds"] for row in history]
    result.seconds_per_epoch = sum(seconds) / len(seconds) if seconds else math.nan
    if not result.interrupted and (out_dir / "best.pt").is_file():
        model.load_state_dict(torch.load(out_dir / "best.pt", map_location=device, weights_only=False)["model"])
        result.test_loss, result.inference_tokens_per_second = evaluate_lm(model, test_data, config.bptt)
    return result
