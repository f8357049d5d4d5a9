"""Shao 2014: a sparse Elman RNN language model trained with iterative hard
thresholding inside BPTT, against the dense Elman model. (Growing a trained
small model by replicating hidden neurons is not built.)"""

from dataclasses import replace

from recipe import LMConfig, lm_corpus, main, run_rows


def run(args):
    hidden = 1000 if args.paper else 128
    base = LMConfig(model="rnn", hidden_size=hidden, embedding_size=hidden, num_layers=1, dropout=0.0,
                    epochs=20 if args.paper else 4, lr=1.0 if args.paper else 2.0, clip=0.25)
    rows = [("Dense Elman", replace(base, method="dense"))]
    rows += [(f"IHT {s:.0%}", replace(base, method="iht", sparsity=s)) for s in (0.8, 0.9)]
    run_rows("shao_elman_iht", rows, args, lm_corpus(args))


if __name__ == "__main__":
    raise SystemExit(main(run))
