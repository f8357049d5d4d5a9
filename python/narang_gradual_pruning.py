"""Narang et al. 2017: gradual magnitude pruning during training (a
monotonically rising threshold) to ~90% sparsity, against the dense model
and a dense model with as many parameters."""

from dataclasses import replace

from recipe import LMConfig, lm_corpus, main, run_rows, sparse_settings


def run(args):
    hidden = 1500 if args.paper else 200
    base = LMConfig(hidden_size=hidden, embedding_size=hidden, num_layers=2, dropout=0.65 if args.paper else 0.2,
                    epochs=40 if args.paper else 4, lr=20.0, clip=0.25,
                    momentum=0.0, **sparse_settings(args))
    small = round(hidden * 0.1 ** 0.5)
    rows = [("Dense", replace(base, method="dense")),
            ("Small dense", replace(base, method="dense", hidden_size=small, embedding_size=small))]
    rows += [(f"Gradual pruning to {s:.0%}", replace(base, method="gradual", sparsity=s)) for s in (0.8, 0.9)]
    run_rows("narang_gradual_pruning", rows, args, lm_corpus(args))


if __name__ == "__main__":
    raise SystemExit(main(run))
