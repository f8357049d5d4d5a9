"""Liu et al. 2021, Table 3: recurrent highway network (depth 10, 830
units) on PTB; dense, small dense and ST-RHN (uniform and Erdős–Rényi) at
the paper's 11.1M of 23.5M parameters (53% sparsity).

Deviation: the paper's variational dropout with four rates (embedding 0.20,
input 0.65, hidden units 0.25, output 0.65) is approximated here by the
training loop's one (non-variational) rate, 0.65, on the embedding output
and on the RHN output; the hidden units get none."""

from dataclasses import replace

from recipe import LMConfig, lm_corpus, main, run_rows, sparse_settings

SPARSITY = 1 - 11.1 / 23.5


def run(args):
    if args.paper:  # section 4.1.2: lr 2, decay 1.11, 200 epochs, weight tying
        base = LMConfig(model="rhn", hidden_size=830, embedding_size=830, num_layers=1, depth=10, dropout=0.65,
                        epochs=200, lr=2.0, momentum=0.9, lr_decay=1.11, clip=10.0, tie_weights=True,
                        **sparse_settings(args))
        small_hidden = 830 * 0.472 ** 0.5
    else:
        base = LMConfig(model="rhn", hidden_size=128, embedding_size=128, num_layers=1, depth=3, dropout=0.2,
                        epochs=4, lr=20.0, clip=0.25, tie_weights=True,
                        momentum=0.0)
        small_hidden = 128 * 0.472 ** 0.5
    small = round(small_hidden)
    rows = [("Dense", replace(base, method="dense")),
            ("Small dense", replace(base, method="dense", hidden_size=small, embedding_size=small)),
            ("ST-RHN ER", replace(base, method="st-rnn", sparsity=SPARSITY, init="erdos_renyi")),
            ("ST-RHN uniform", replace(base, method="st-rnn", sparsity=SPARSITY, init="uniform"))]
    run_rows("liu_table3_rhn", rows, args, lm_corpus(args))


if __name__ == "__main__":
    raise SystemExit(main(run))
