"""Shao 2014: a sparse Elman RNN language model trained with iterative hard
thresholding inside BPTT, against the dense Elman model; and growth: a small
IHT-trained Elman network enlarged to the full hidden size by replicating
hidden neurons (the same function), then trained on with IHT."""

import torch
from dataclasses import replace

from recipe import LMConfig, lm_corpus, main, run_rows, sparse_settings
from sparse_kernels.train import train_lm
from sparse_kernels.train.models import grow_language_model


def run(args):
    hidden = 1000 if args.paper else 128
    base = LMConfig(model="rnn", hidden_size=hidden, embedding_size=hidden, num_layers=1, dropout=0.0,
                    epochs=20 if args.paper else 4, lr=1.0 if args.paper else 2.0, clip=0.25,
                    momentum=0.0, **sparse_settings(args))
    corpus = lm_corpus(args)
    rows = [("Dense Elman", replace(base, method="dense"))]
    rows += [(f"IHT {s:.0%}", replace(base, method="iht", sparsity=s)) for s in (0.8, 0.9)]
    # Shao's comparison at equal effective parameters: a dense Elman network
    # sized as the other recipes size their small dense models (hidden and
    # embedding times sqrt(density)), against IHT at 90%.
    small = round(hidden * 0.1 ** 0.5)
    rows.append(("Small dense Elman (as many weights as IHT 90%)",
                 replace(base, method="dense", hidden_size=small, embedding_size=small)))

    def grown_from_half_size(config, run_dir):
        # Stage 1: half the units, half the epochs; stage 2 (the row) continues from its replicated copy.
        small = replace(config, hidden_size=config.hidden_size // 2, epochs=max(config.epochs // 2, 1))
        trained = train_lm(corpus, small, run_dir / "small", progress=not args.no_progress).model
        return grow_language_model(trained, config.hidden_size, generator=torch.Generator().manual_seed(0))

    rows.append(("IHT 90%, grown from half size", replace(base, method="iht", sparsity=0.9),
                 grown_from_half_size))
    run_rows("shao_elman_iht", rows, args, corpus)


if __name__ == "__main__":
    raise SystemExit(main(run))
