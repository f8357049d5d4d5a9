"""Plots and tables for docs/quality.md: validation perplexity per epoch of
`sparse-rnn train-lm` runs, read from each run folder's metrics.csv, and the
test perplexity from the run's log (the line "best valid ppl X; test ppl Y",
which train-lm prints at the end; the log is RUN_FOLDER.log beside the folder).

    python python/quality_curves.py --out docs/quality_ptb_old.png --title "..." runs/q/dense runs/q/st67 ...
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path


def read_run(folder: Path) -> dict:
    with open(folder / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    log = folder.with_suffix(".log")
    test = None
    if log.is_file():
        found = re.findall(r"test ppl ([0-9.]+)", log.read_text())
        test = float(found[-1]) if found else None
    return {"name": folder.name, "valid": [float(r["valid_ppl"]) for r in rows],
            "seconds": [float(r["epoch_seconds"]) for r in rows], "test": test}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (train-lm --out)")
    p.add_argument("--out", type=Path, help="PNG to write (default: only print the table)")
    p.add_argument("--title", default="")
    p.add_argument("--labels", help="comma-separated labels, one per run (default: folder names)")
    args = p.parse_args(argv)
    runs = [read_run(r) for r in args.runs]
    labels = args.labels.split(",") if args.labels else [r["name"] for r in runs]
    if len(labels) != len(runs):
        p.error(f"--labels gives {len(labels)} labels for {len(runs)} runs")
    print("| run | valid ppl per epoch | best valid | test ppl | s/epoch |")
    print("|---|---|---:|---:|---:|")
    for label, r in zip(labels, runs):
        curve = " ".join(f"{v:.0f}" for v in r["valid"])
        test = f"{r['test']:.1f}" if r["test"] is not None else "-"
        print(f"| {label} | {curve} | {min(r['valid']):.1f} | {test} | {sum(r['seconds']) / len(r['seconds']):.0f} |")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
        for label, r in zip(labels, runs):
            style = "--" if label.startswith(("dense", "small")) else "-"
            ax.plot(range(1, len(r["valid"]) + 1), r["valid"], style, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation perplexity")
        ax.set_yscale("log")
        ax.set_title(args.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
