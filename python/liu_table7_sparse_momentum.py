"""Liu et al. 2021, Table 7: stacked ST-LSTM with and without cross-layer
parameter reallocation by sparse momentum, uniform and Erdős–Rényi
initialisation (the RHN half runs with the table 3 recipe's model)."""

from dataclasses import replace

from recipe import LMConfig, lm_corpus, main, run_rows


def run(args):
    if args.paper:
        base = LMConfig(hidden_size=1500, embedding_size=1500, num_layers=2, dropout=0.65, epochs=100, lr=2.0,
                        momentum=0.9, clip=10.0, sparsity=0.67, method="st-rnn",
                        # masks over a dense init and one lr for all weights, as the paper's code
                        init_scale="dense", sparse_lr_scale="none")
    else:
        base = LMConfig(hidden_size=200, embedding_size=200, num_layers=2, dropout=0.2, epochs=4, lr=20.0,
                        clip=0.25, momentum=0.0, sparsity=0.67, method="st-rnn")
    # sparse_kernels.dst redistributes by sparse momentum in its "snfs" method
    # (which regrows by gradient, where the paper's ST-LSTM + sparse momentum
    # regrows at random); "st-rnn" is the no-redistribution row.
    rows = []
    for init in ("erdos_renyi", "uniform"):
        rows.append((f"{init}, sparse momentum (snfs)", replace(base, init=init, method="snfs")))
        rows.append((f"{init}, no redistribution (st-rnn)", replace(base, init=init, method="st-rnn")))
    run_rows("liu_table7_sparse_momentum", rows, args, lm_corpus(args))


if __name__ == "__main__":
    raise SystemExit(main(run))
