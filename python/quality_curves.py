"""Plots and tables for docs/quality.md: validation perplexity per epoch of
`sparse-rnn train-lm` runs, read from each run folder's metrics.csv, and the
test perplexity from the run's log (the line "best valid ppl X; test ppl Y",
which train-lm prints at the end; the log is RUN_FOLDER.log beside the folder).

    python python/quality_curves.py --out docs/quality_ptb_old.png --title "..." runs/q/dense runs/q/st67 ...
    python python/quality_curves.py --per-epoch --train --out docs/quality_brown_650.png runs/dense runs/st67

The summary table gives each run's best validation perplexity and whether the
run has converged by issue #17's test: a validation perplexity flat for three
epochs, read as no new best in the last three epochs. --per-epoch adds, epoch
by epoch, each run's validation perplexity (its learning rate), its training
perplexity (dropout on) and its ratio to the first run's validation perplexity.
--train also draws the training perplexities (dotted) on the plot, so that a
run that fits faster but generalises worse shows as a wider gap.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

FLAT_EPOCHS = 3  # issue #17: "valid perplexity flat for 3 epochs"


def read_run(folder: Path) -> dict:
    with open(folder / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{folder / 'metrics.csv'} has no epochs yet")
    log = folder.with_suffix(".log")
    test = None
    if log.is_file():
        found = re.findall(r"test ppl ([0-9.]+)", log.read_text())
        test = float(found[-1]) if found else None

    def column(name: str) -> list[float | None]:
        return [float(r[name]) if r.get(name) not in (None, "") else None for r in rows]

    return {"name": folder.name, "epoch": [int(r["epoch"]) for r in rows], "valid": column("valid_ppl"),
            "train": column("train_ppl"), "lr": column("lr"), "seconds": column("epoch_seconds"),
            "test": test}


def converged(valid: list[float], flat: int = FLAT_EPOCHS) -> bool:
    """No new best validation perplexity in the last ``flat`` epochs."""
    best = min(range(len(valid)), key=valid.__getitem__)
    return len(valid) - 1 - best >= flat


def summary_table(labels: list[str], runs: list[dict]) -> list[str]:
    lines = ["| run | valid ppl per epoch | best valid (epoch) | converged | test ppl | s/epoch |",
             "|---|---|---:|---|---:|---:|"]
    for label, r in zip(labels, runs):
        valid = r["valid"]
        curve = " ".join(f"{v:.0f}" for v in valid)
        best = min(range(len(valid)), key=valid.__getitem__)
        flat = f"yes ({FLAT_EPOCHS} epochs without a new best)" if converged(valid) else "no"
        test = f"{r['test']:.1f}" if r["test"] is not None else "-"
        seconds = [s for s in r["seconds"] if s is not None]
        pace = f"{sum(seconds) / len(seconds):.0f}" if seconds else "-"
        lines.append(f"| {label} | {curve} | {valid[best]:.2f} ({r['epoch'][best]}) | {flat} | {test} | {pace} |")
    return lines


def per_epoch_table(labels: list[str], runs: list[dict]) -> list[str]:
    """Epoch by epoch: valid ppl (lr), train ppl of each run, and each later
    run's valid over the first run's."""
    head = ["epoch"]
    for label in labels:
        head += [f"{label} valid ppl (lr)", f"{label} train ppl"]
    head += [f"{label} / {labels[0]} (valid)" for label in labels[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    by_epoch = [dict(zip(r["epoch"], range(len(r["epoch"])))) for r in runs]
    for epoch in sorted(set().union(*by_epoch)):
        cells = [str(epoch)]
        for r, index in zip(runs, by_epoch):
            i = index.get(epoch)
            if i is None:
                cells += ["", ""]
                continue
            lr = f" ({r['lr'][i]:.3g})" if r["lr"][i] is not None else ""
            cells.append(f"{r['valid'][i]:.2f}{lr}")
            cells.append(f"{r['train'][i]:.1f}" if r["train"][i] is not None else "")
        first = by_epoch[0].get(epoch)
        for r, index in zip(runs[1:], by_epoch[1:]):
            i = index.get(epoch)
            ratio = r["valid"][i] / runs[0]["valid"][first] if i is not None and first is not None else None
            cells.append(f"{ratio:.3f}" if ratio is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(labels: list[str], runs: list[dict], out: Path, title: str, with_train: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for label, r in zip(labels, runs):
        style = "--" if label.startswith(("dense", "small")) else "-"
        (line,) = ax.plot(r["epoch"], r["valid"], style, marker="o", markersize=3, label=label)
        if with_train:
            points = [(e, t) for e, t in zip(r["epoch"], r["train"]) if t is not None]
            if points:
                ax.plot(*zip(*points), ":", color=line.get_color(), label=f"{label} (training)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity" if with_train else "validation perplexity")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (train-lm --out)")
    p.add_argument("--out", type=Path, help="PNG to write (default: only print the table)")
    p.add_argument("--title", default="")
    p.add_argument("--labels", help="comma-separated labels, one per run (default: folder names)")
    p.add_argument("--per-epoch", action="store_true",
                   help="also print the runs side by side per epoch (valid (lr), train, ratio to the first run)")
    p.add_argument("--train", action="store_true", help="also plot the training perplexities (dotted)")
    args = p.parse_args(argv)
    runs = [read_run(r) for r in args.runs]
    labels = args.labels.split(",") if args.labels else [r["name"] for r in runs]
    if len(labels) != len(runs):
        p.error(f"--labels gives {len(labels)} labels for {len(runs)} runs")
    print("\n".join(summary_table(labels, runs)))
    if args.per_epoch:
        print()
        print("\n".join(per_epoch_table(labels, runs)))
    if args.out:
        plot(labels, runs, args.out, args.title, args.train)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
