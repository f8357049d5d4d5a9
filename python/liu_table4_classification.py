"""Liu et al. 2021, Table 4: one-layer LSTM text classification, dense vs
ST-LSTM with Erdős–Rényi ε = 10 (95.69% sparsity), embedding and hidden 256,
100 words per text, 20,000-word vocabulary, Adam."""

from dataclasses import replace

from recipe import ClsConfig, cls_data, main, run_rows

SPARSITY = 0.9569  # ε = 10 at these sizes, as the paper reports


def run(args):
    base = ClsConfig(embedding_size=256, hidden_size=256, num_layers=1, optimizer="adam", lr=0.001,
                     batch_size=64, max_vocab=20_000, max_length=100, epochs=20 if args.paper else 3)
    rows = [("Dense", replace(base, method="dense")),
            ("ST-LSTM", replace(base, method="st-rnn", sparsity=SPARSITY, init="erdos_renyi", prune_rate=0.4))]
    run_rows("liu_table4_classification", rows, args, cls_data(args))


if __name__ == "__main__":
    raise SystemExit(main(run))
