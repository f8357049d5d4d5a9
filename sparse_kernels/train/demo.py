"""The main job, ``sparse-rnn demo``: on the embedded synthetic language,
train a dense LSTM, a 90%-sparse LSTM with the same hidden size, and a small
dense LSTM with as many recurrent parameters as the sparse one; print one
table (perplexity beside the source's optimum, stored parameters, training
time per epoch, inference speed, weight + optimizer memory) and plot the
learning curves."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import report
from .data import synthetic_lm
from .lm import LMConfig, train_lm
from .synthetic import LanguageSpec

# A small vocabulary (169 words) so that three models reach the source's
# optimum within minutes on two CPU cores; the structure (nested agreement)
# is the full language's.
DEMO_SPEC = LanguageSpec(nouns=30, intransitive_verbs=8, transitive_verbs=8, adjectives=15, adverbs=8)


@dataclass
class DemoSettings:
    hidden_size: int = 256
    sparsity: float = 0.9
    epochs: int = 10
    train_tokens: int = 30_000
    eval_tokens: int = 5_000
    optimizer: str = "adam"
    lr: float = 0.005
    seed: int = 0


def sparse_method() -> str:
    """ST-LSTM (the "st-rnn" schedule) where sparse_kernels.dst exists, else a
    static random topology."""
    try:
        from .. import dst  # noqa: F401
        return "st-rnn"
    except ImportError:
        return "static"


def lstm_parameters(hidden: int) -> int:
    """Parameters of a one-layer nn.LSTM whose input is as wide as its hidden
    state (the tied embedding): 4H(H + H) weights + 8H biases."""
    return 8 * hidden * hidden + 8 * hidden


def matching_hidden_size(parameters: int) -> int:
    """The hidden size whose dense LSTM has closest to ``parameters``."""
    h = max(1, int(math.sqrt(parameters / 8)))
    return min((h - 1, h, h + 1, h + 2), key=lambda x: abs(lstm_parameters(max(x, 1)) - parameters)) or 1


def run_demo(out_dir, settings: DemoSettings = DemoSettings(), *, progress: bool = True, plot: bool = True,
             log=print) -> dict:
    out_dir = Path(out_dir)
    start = time.perf_counter()
    corpus = synthetic_lm(settings.train_tokens, settings.eval_tokens, settings.eval_tokens, seed=settings.seed,
                          spec=DEMO_SPEC)
    log(f"synthetic language: {len(corpus.vocab)} words, {corpus.train.numel()} training tokens; "
        f"optimal perplexity (entropy rate of the source) {corpus.optimal_perplexity:.2f}")
    base = LMConfig(hidden_size=settings.hidden_size, embedding_size=settings.hidden_size, num_layers=1,
                    epochs=settings.epochs, optimizer=settings.optimizer, lr=settings.lr, clip=1.0, dropout=0.1,
                    tie_weights=True, seed=settings.seed, sparsity=settings.sparsity)
    method = sparse_method()
    sparse_name = "ST-LSTM" if method == "st-rnn" else "static sparse LSTM"
    runs = [("dense LSTM", replace(base, method="dense")),
            (f"{sparse_name} {settings.sparsity:.0%} sparse", replace(base, method=method)),
            ("small dense LSTM", None)]
    results = []
    for k, (name, config) in enumerate(runs, 1):
        if config is None:  # as many recurrent parameters as the sparse model stores
            small = matching_hidden_size(results[1][1].params["recurrent_stored"])
            config = replace(base, method="dense", hidden_size=small, embedding_size=small)
        log(f"[{k}/{len(runs)}] {name}, hidden {config.hidden_size}")
        result = train_lm(corpus, config, out_dir / f"run{k}", progress=progress, tensorboard=False)
        if result.interrupted:  # checkpoint written; stop the whole demo
            raise KeyboardInterrupt
        results.append((name, result))
    headers = ["model", "hidden", "test ppl", "optimum", "recurrent params stored", "all params stored",
               "train s/epoch", "inference tokens/s", "weights + optimizer"]
    rows = []
    for name, r in results:
        rows.append([name, r.config.hidden_size, f"{r.test_ppl:.2f}", f"{corpus.optimal_perplexity:.2f}",
                     f"{r.params['recurrent_stored']:,} of {r.params['recurrent_dense']:,}",
                     f"{r.params['stored']:,}", f"{r.seconds_per_epoch:.1f}", f"{r.inference_tokens_per_second:,.0f}",
                     report.human_bytes(r.memory["weights"] + r.memory["optimizer"])])
    table = report.markdown_table(headers, rows)
    dense_ppl, sparse_ppl = results[0][1].test_ppl, results[1][1].test_ppl
    summary = (f"sparse / dense test perplexity: {sparse_ppl / dense_ppl:.3f} "
               f"({(sparse_ppl / dense_ppl - 1) * 100:+.1f}%)")
    log("\n" + table + "\n\n" + summary)
    (out_dir / "results.md").write_text(table + "\n\n" + summary + "\n")
    if plot:
        path = plot_curves(results, corpus.optimal_perplexity, out_dir / "learning_curves.png")
        log(f"learning curves: {path}")
    elapsed = time.perf_counter() - start
    log(f"total time: {elapsed:.0f} s")
    return {"results": results, "table": table, "optimal_perplexity": corpus.optimal_perplexity,
            "seconds": elapsed}


def plot_curves(results, optimum: float, path) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in results:
        epochs = [row["epoch"] for row in r.history]
        ax.plot(epochs, [row["valid_ppl"] for row in r.history], marker="o", label=f"{name} (valid)")
    ax.axhline(optimum, color="black", linestyle="--", label=f"source optimum {optimum:.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("sparse-rnn demo: learning curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
