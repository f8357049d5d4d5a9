"""Validation perplexity after each of a few training steps around the end of
epoch 1, where a sparse-training method makes its first topology update
(`train-lm`'s defaults, one update an epoch). It tells the update's effect on
the model apart from what one optimizer step does anyway (docs/quality.md,
session J: at lr 20 with clip 0.25 one step moved the 2 x 650 dense model's
valid perplexity by up to 20%, and ST-RNN 67%'s by up to 56% just after its
update).

    python python/lm_valid_steps.py --data PTB_FOLDER --method st-rnn --sparsity 0.67 [--before 2 --after 2]

Prints "step N: valid ppl X" for the last `--before` steps of epoch 1 and the
first `--after` of epoch 2; the update runs within the last step of epoch 1,
after its optimizer step (so that step's line already includes it). The model
is built before train_lm seeds its generators, so the run is not the same
sample as `train-lm --seed S` (its curve differs; the step-to-step swings are
what to read).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from sparse_kernels.train import LMConfig, load_ptb
from sparse_kernels.train.data import batchify, bptt_batches
from sparse_kernels.train.lm import build_lm, evaluate_lm, train_lm
from sparse_kernels.train.loop import perplexity


class _StopRun(KeyboardInterrupt):
    """Ends train_lm after the last step of interest (train_lm treats a
    KeyboardInterrupt from on_step as Ctrl-C: it checkpoints and returns)."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="PTB-format folder")
    p.add_argument("--method", default="st-rnn", help="dense, static or a sparse-training method")
    p.add_argument("--sparsity", type=float, default=0.67)
    p.add_argument("--hidden", type=int, default=650)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--before", type=int, default=2, help="steps of epoch 1 to report, its last one included")
    p.add_argument("--after", type=int, default=2, help="steps of epoch 2 to report")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    corpus = load_ptb(args.data)
    config = LMConfig(method=args.method, sparsity=args.sparsity if args.method != "dense" else 0.0,
                      hidden_size=args.hidden, embedding_size=args.hidden, epochs=2, seed=args.seed)
    steps_per_epoch = sum(1 for _ in bptt_batches(batchify(corpus.train, config.batch_size), config.bptt))
    first = max(1, steps_per_epoch - args.before + 1)
    last = steps_per_epoch + args.after
    valid = batchify(corpus.valid, config.eval_batch_size)
    model = build_lm(config, len(corpus.vocab))
    updates = args.method not in ("dense", "static")  # the methods whose topology changes

    def on_step(step: int) -> None:
        if first <= step <= last:
            loss, _ = evaluate_lm(model, valid, config.bptt)
            model.train()
            where = "end of epoch 1" + (", after the update" if updates else "") if step == steps_per_epoch else ""
            print(f"step {step}: valid ppl {perplexity(loss):.1f}  {where}".rstrip(), flush=True)
        if step >= last:
            raise _StopRun

    with tempfile.TemporaryDirectory() as out:
        train_lm(corpus, config, out, progress=False, tensorboard=False, on_step=on_step, initial_model=model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
