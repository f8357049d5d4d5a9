"""Liu et al. 2021, Table 7: stacked ST-LSTM with and without cross-layer
parameter reallocation by sparse momentum, uniform and Erdős–Rényi
initialisation (the RHN half runs with the table 3 recipe's model)."""

from dataclasses import replace

from recipe import LMConfig, lm_corpus, main, run_rows, sparse_settings


def run(args):
    if args.paper:
        base = LMConfig(hidden_size=1500, embedding_size=1500, num_layers=2, dropout=0.65, epochs=100, lr=2.0,
                        momentum=0.9, clip=10.0, sparsity=0.67, method="st-rnn", **sparse_settings(args))
    else:
        # Table 2's quick preset (momentum SGD lr 1, momentum 0.9, clip 10): the
        # redistribution scores layers by their momentum, which plain SGD does not keep.
        base = LMConfig(hidden_size=200, embedding_size=200, num_layers=2, dropout=0.2, epochs=4, batch_size=20,
                        bptt=35, lr=1.0, momentum=0.9, clip=10.0, sparsity=0.67, method="st-rnn")
    # The paper's row: ST-LSTM (magnitude prune, random regrow) with each update's regrow budget handed to
    # the layers by the mean |momentum| of their weights (redistribute="momentum"); against ST-LSTM without
    # it. SNFS (Dettmers & Zettlemoyer: the same redistribution, regrowth where the momentum is largest) is
    # the third row of each initialisation.
    rows = []
    for init in ("erdos_renyi", "uniform"):
        rows.append((f"{init}, sparse momentum (st-rnn + redistribution)",
                     replace(base, init=init, method_options={"redistribute": "momentum"})))
        rows.append((f"{init}, no redistribution (st-rnn)", replace(base, init=init)))
        rows.append((f"{init}, SNFS (redistribution, momentum regrowth)", replace(base, init=init, method="snfs")))
    run_rows("liu_table7_sparse_momentum", rows, args, lm_corpus(args))


if __name__ == "__main__":
    raise SystemExit(main(run))
