"""The first training steps of the language model, one line every few steps:
the training loss and the gradient norm before clipping. It shows whether an
optimiser setting blows the model up early (docs/quality.md, 2 x 650: lr 2 with
momentum 0.9 took the dense model's loss from 8.7 to 13.4 by step 20).

    python python/lm_first_steps.py --data PTB_FOLDER --method dense --lr 2 --steps 41
"""

from __future__ import annotations

import argparse

import torch

from sparse_kernels.train import LMConfig, load_ptb
from sparse_kernels.train.data import batchify, bptt_batches
from sparse_kernels.train.lm import build_lm


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="PTB-format folder")
    p.add_argument("--method", default="dense", help="dense or a sparse method (its topology stays fixed here)")
    p.add_argument("--sparsity", type=float, default=0.0)
    p.add_argument("--hidden", type=int, default=650)
    p.add_argument("--lr", type=float, default=LMConfig.lr)
    p.add_argument("--momentum", type=float, default=LMConfig.momentum)
    p.add_argument("--clip", type=float, default=LMConfig.clip)
    p.add_argument("--steps", type=int, default=41)
    p.add_argument("--every", type=int, default=10, help="print every this many steps")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    corpus = load_ptb(args.data)
    config = LMConfig(method=args.method, sparsity=args.sparsity, hidden_size=args.hidden,
                      embedding_size=args.hidden, lr=args.lr, momentum=args.momentum, clip=args.clip)
    torch.manual_seed(config.seed)
    model = build_lm(config, len(corpus.vocab))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    state = None
    print("step  loss   grad-norm")
    for step, (_, inputs, targets) in enumerate(bptt_batches(batchify(corpus.train, config.batch_size), config.bptt)):
        if step >= args.steps:
            break
        model.train()
        logits, state = model(inputs, state)
        state = tuple(s.detach() for s in state)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        if step % args.every == 0 or step == args.steps - 1:
            print(f"{step:4d}  {loss.item():.3f}  {float(norm):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
