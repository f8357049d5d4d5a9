"""Demeester et al. 2018: predefined (fixed, block-structured) sparse
recurrent and input matrices, against dense and random static sparsity at
the same parameter count; and their frequency-sized sparse word embeddings
(frequent words keep long embedding prefixes, rare words short ones) under
the predefined-sparse LSTM."""

from dataclasses import replace

from recipe import LMConfig, lm_corpus, main, run_rows, sparse_settings


def run(args):
    hidden = 1500 if args.paper else 200
    base = LMConfig(hidden_size=hidden, embedding_size=hidden, num_layers=1, dropout=0.5 if args.paper else 0.2,
                    epochs=40 if args.paper else 4, lr=20.0, clip=0.25,
                    momentum=0.0, **sparse_settings(args))
    rows = [("Dense", replace(base, method="dense"))]
    for s in (0.5, 0.75):
        rows.append((f"Predefined {s:.0%}", replace(base, method="predefined", sparsity=s)))
        rows.append((f"Random static {s:.0%}", replace(base, method="static", sparsity=s)))
    for s in (0.5, 0.75):
        rows.append((f"Predefined {s:.0%} + sparse embedding {s:.0%}",
                     replace(base, method="predefined", sparsity=s, embedding_density=1.0 - s)))
    run_rows("demeester_predefined", rows, args, lm_corpus(args))


if __name__ == "__main__":
    raise SystemExit(main(run))
