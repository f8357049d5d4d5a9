"""Liu et al. 2021, Figs. 2-3: ST-LSTM test accuracy against the pruning
rate (0.1 to 0.9) and against the sparsity level, text classification."""

from dataclasses import replace

from recipe import ClsConfig, cls_data, main, run_rows


def run(args):
    base = ClsConfig(embedding_size=256 if args.paper else 64, hidden_size=256 if args.paper else 64,
                     optimizer="adam", lr=0.001, epochs=20 if args.paper else 3, method="st-rnn",
                     init="erdos_renyi", sparsity=0.9569)
    rates = (0.1, 0.3, 0.5, 0.7, 0.9) if not args.tiny else (0.1, 0.9)
    sparsities = (0.525, 0.8, 0.9, 0.9569, 0.991) if not args.tiny else (0.8, 0.99)
    rows = [("Dense", replace(base, method="dense"))]
    rows += [(f"prune rate {p}", replace(base, prune_rate=p)) for p in rates]
    rows += [(f"sparsity {s}", replace(base, sparsity=s)) for s in sparsities]
    # 10,000 training documents for --quick (as Table 4's recipe): on 2,000 every row, dense too, ended at
    # chance (test accuracy 0.33-0.37, three classes); on 10,000 dense and ST-LSTM reach 0.65-0.67 in
    # three epochs at these sizes (docs/quality.md).
    run_rows("liu_sensitivity", rows, args, cls_data(args, quick_docs=10_000))


if __name__ == "__main__":
    raise SystemExit(main(run))
