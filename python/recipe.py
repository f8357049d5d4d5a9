"""What every recipe shares: the --quick / --paper presets, the data
(embedded synthetic data by default, a real corpus with --data), running a
list of named configurations through the library's training loops, and
writing the results table as markdown."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from sparse_kernels.train import (ClsConfig, LMConfig, load_classification, load_ptb, synthetic_classification_data,
                                  synthetic_lm, train_cls, train_lm)
from sparse_kernels.train.report import markdown_table


def parse_args(description: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="minutes on a laptop CPU (default)")
    preset.add_argument("--paper", action="store_true", help="the paper's settings (needs --data and a GPU)")
    p.add_argument("--data", help="corpus path (default: the embedded synthetic data)")
    p.add_argument("--out", default=None, help="folder for the runs and results.md")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (CI)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def lm_corpus(args, quick_tokens: int = 60_000):
    if args.data:
        return load_ptb(args.data)
    tokens = 1_500 if args.tiny else quick_tokens if not args.paper else 1_000_000
    return synthetic_lm(tokens, max(tokens // 10, 300), max(tokens // 10, 300))


def cls_data(args, quick_docs: int = 2_000):
    if args.data:
        return load_classification(args.data)
    docs = 120 if args.tiny else quick_docs if not args.paper else 100_000
    return synthetic_classification_data(docs, max(docs // 4, 30), max_length=100)


def sparse_settings(args) -> dict:
    """The sparse weights' initial values and learning rate: under --paper one
    lr for every weight over a dense init, as the papers' code; otherwise the
    library's defaults (fan-in init, each sparse weight's lr divided by its
    density: LMConfig's)."""
    return dict(init_scale="dense", sparse_lr_scale="none") if args.paper else {}


def shrink(config, args):
    """--tiny: the same experiment at smoke-test size."""
    if not args.tiny:
        return replace(config, device=args.device)
    small = dict(hidden_size=12, embedding_size=12, epochs=1, device=args.device)
    if isinstance(config, LMConfig):
        small.update(batch_size=4, eval_batch_size=4, bptt=8)
    else:
        small.update(batch_size=16)
    return replace(config, **small)


def run_rows(name: str, rows: list[tuple], args, data) -> str:
    """Train every (label, config) or (label, config, initial_model) and
    write ``results.md``; returns the table. ``initial_model(config, run_dir)``
    (language models) returns the model to start from, e.g. a grown one."""
    out = Path(args.out or f"runs/{name}")
    table_rows, start = [], time.perf_counter()
    for k, (label, config, *initial) in enumerate(rows):
        config = shrink(config, args)
        run_dir = out / f"{k:02d}"
        if isinstance(config, LMConfig):
            model = initial[0](config, run_dir) if initial else None
            r = train_lm(data, config, run_dir, progress=not args.no_progress, initial_model=model)
            opt = f"{data.optimal_perplexity:.2f}" if data.optimal_perplexity else "-"
            quality = [f"{r.best_valid_ppl:.2f}", f"{r.test_ppl:.2f}", opt]
        else:
            r = train_cls(data, config, run_dir, progress=not args.no_progress)
            quality = [f"{r.best_valid_accuracy:.4f}", f"{r.test_accuracy:.4f}"]
        table_rows.append([label, config.method, f"{config.sparsity if config.sparse else 0:.2f}", *quality,
                           f"{r.params['stored']:,}", f"{r.train_flops_ratio:.3f}x", f"{r.flops_ratio:.3f}x",
                           f"{r.seconds_per_epoch:.1f}"])
        print(f"{label}: {' / '.join(quality)}", flush=True)
    quality_headers = (["valid ppl", "test ppl", "optimum"] if isinstance(rows[0][1], LMConfig)
                       else ["valid acc", "test acc"])
    table = markdown_table(["run", "method", "sparsity", *quality_headers, "params stored", "FLOPs train",
                            "FLOPs test", "s/epoch"], table_rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"# {name}\n\n{table}\n\nFLOPs normalised by the dense model; "
                                    f"{time.perf_counter() - start:.0f} s in all.\n")
    print("\n" + table + f"\n\nwritten to {out / 'results.md'}")
    return table


def main(run, argv=None) -> int:
    """Run a recipe's ``run(args)``, a data or config mistake as one line."""
    from sparse_kernels.train import CheckpointError, DataError
    from sparse_kernels.train.loop import ConfigError
    args = parse_args(run.__doc__, argv)
    try:
        run(args)
    except (DataError, CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["ClsConfig", "LMConfig", "cls_data", "lm_corpus", "main", "run_rows"]
